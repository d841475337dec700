-- train_state_amp_spec.lua: save_checkpoint / load_checkpoint with an amp.GradScaler (ramtorch/train_state.lua).
-- A small model trained under float16 autocast with a GradScaler, an inf gradient injected before and after
-- the checkpoint (the scale backs off, grows after the interval): N steps straight must equal N/2 steps,
-- save_checkpoint, fresh objects with another seed and another scaler configuration, load_checkpoint,
-- N/2 more steps: the same losses bit for bit and the same scale history. Then the mismatches between a
-- checkpoint and the scaler given to load_checkpoint, which are refused before anything is restored.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local F = require("ramtorch.functional")
local optim = require("ramtorch.optim")
local amp = require("ramtorch.amp")
local ts = require("ramtorch.train_state")
local io_ = require("ramtorch.io")
local testing = require("ramtorch.testing")

local function tmpname() return os.tmpname() .. ".safetensors" end

local SCALER_CFG = { init_scale = 2 ^ 10, growth_interval = 3 }
local POISON = { [3] = math.huge, [8] = 0 / 0 } -- steps whose first gradient element is made inf / NaN

local function build(seed, scaler_cfg)
  torch.manual_seed(seed)
  local model = nn.Sequential({ nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 4) })
  local opt = optim.AdamW(model:parameters(), { lr = 1e-2, weight_decay = 0.1 })
  local sched = optim.lr_scheduler.StepLR(opt, 4, 0.5)
  local scaler = amp.GradScaler("cpu", scaler_cfg or SCALER_CFG)
  return model, opt, sched, scaler
end

-- Steps first+1 .. first+n; batches come from the generator. Records the loss and the scale after update().
local function train_steps(model, opt, sched, scaler, first, n, losses, scales)
  for s = first + 1, first + n do
    local x, t = torch.randn({ 6, 8 }), torch.randn({ 6, 4 })
    opt:zero_grad()
    local loss = amp.autocast("f16", function()
      local y = model(x)
      assert.are.equal(torch.float16, y.dtype)
      return F.mse_loss(y, t)
    end)
    scaler:scale(loss):backward()
    if POISON[s] then
      local g = model:parameters()[1].grad
      torch.no_grad(function() g:view(-1):narrow(0, 0, 1):fill_(POISON[s]) end)
    end
    scaler:step(opt)
    scaler:update()
    sched:step()
    losses[s] = loss:item()
    scales[s] = scaler:get_scale()
  end
  return first + n
end

local function params_of(m)
  local r = {}
  for i, p in ipairs(m:parameters()) do r[i] = p:detach():clone() end
  return r
end

describe("save_checkpoint / load_checkpoint with a GradScaler", function()
  it("a resumed float16 run reproduces the losses and the scale of the uninterrupted one", function()
    local N = 10
    local straight, straight_scales = {}, {}
    local m, o, s, sc = build(42)
    train_steps(m, o, s, sc, 0, N, straight, straight_scales)
    -- the scale really moved: backed off at 3 and 8, grew at 6 (three clean steps 4, 5, 6)
    assert.are.same({ 1024, 1024, 512, 512, 512, 1024, 1024, 512, 512, 512 }, straight_scales)
    assert.are.equal(2, sc:_get_growth_tracker())

    local resumed, resumed_scales = {}, {}
    m, o, s, sc = build(42)
    local pos = train_steps(m, o, s, sc, 0, N / 2, resumed, resumed_scales)
    assert.are.equal(2, sc:_get_growth_tracker()) -- the growth at step 6 depends on it
    local path = tmpname()
    torch.save_checkpoint(path, { model = m, optimizer = o, scheduler = s, scaler = sc, step = pos })
    local _, md = io_.load(path)
    assert.are.same({ enabled = true, scale = 512, growth_factor = 2, backoff_factor = 0.5, growth_interval = 3,
                      _growth_tracker = 2 }, ts.json_decode(md["ramtorch.checkpoint"]).scaler)

    -- fresh objects: another seed, a scaler with other factors, interval and scale; the generator disturbed
    m, o, s, sc = build(7, { init_scale = 2 ^ 16, growth_factor = 4, backoff_factor = 0.25, growth_interval = 2000 })
    torch.rand({ 100 })
    local info = torch.load_checkpoint(path, { model = m, optimizer = o, scheduler = s, scaler = sc })
    assert.are.same({ scale = 512, growth_factor = 2, backoff_factor = 0.5, growth_interval = 3, _growth_tracker = 2 },
                    sc:state_dict())
    train_steps(m, o, s, sc, info.step, N / 2, resumed, resumed_scales)
    for i = 1, N do
      assert.are.equal(straight[i], resumed[i], ("step %d: %.17g vs %.17g"):format(i, straight[i], resumed[i]))
    end
    assert.are.same(straight_scales, resumed_scales)
    assert.are.equal(2, sc:_get_growth_tracker())

    -- control: the same resume with the scaler state dropped does not give the same scales
    local dropped, dropped_scales = {}, {}
    m, o, s, sc = build(7, { init_scale = 2 ^ 16, growth_factor = 4, backoff_factor = 0.25, growth_interval = 2000 })
    info = torch.load_checkpoint(path, { model = m, optimizer = o, scheduler = s, scaler = false })
    train_steps(m, o, s, sc, info.step, N / 2, dropped, dropped_scales)
    assert.are_not.same({ table.unpack(straight_scales, 6, N) }, { table.unpack(dropped_scales, 6, N) })
    os.remove(path)
  end)

  it("refuses a checkpoint of an enabled scaler resumed without scaler=, before restoring anything", function()
    local m, o, s, sc = build(1)
    train_steps(m, o, s, sc, 0, 1, {}, {})
    local path = tmpname()
    torch.save_checkpoint(path, { model = m, optimizer = o, scaler = sc })
    local m2, o2 = build(2)
    local before = params_of(m2)
    local ok, err = pcall(torch.load_checkpoint, path, { model = m2, optimizer = o2 })
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("holds GradScaler state (scale 1024) but no scaler= was given", 1, true), err)
    assert.is_truthy(tostring(err):find("or scaler=false to drop it", 1, true))
    for i, p in ipairs(m2:parameters()) do testing.assert_close(p, before[i], 0, 0, "untouched param " .. i) end
    -- scaler=false drops it on purpose; a model alone never needs it
    torch.load_checkpoint(path, { model = m2, optimizer = o2, scaler = false })
    testing.assert_close(m2:parameters()[1], m:parameters()[1], 0, 0)
    torch.load_checkpoint(path, { model = build(3) })
    os.remove(path)
  end)

  it("refuses optimizer= or scheduler= for a checkpoint without their state, before restoring anything", function()
    local m = build(1)
    local path = tmpname()
    torch.save_checkpoint(path, { model = m })
    local m2, o2, s2 = build(2)
    local before = params_of(m2)
    for _, case in ipairs({ { { model = m2, optimizer = o2 }, "holds no optimizer state" },
                            { { model = m2, scheduler = s2 }, "holds no scheduler state" } }) do
      local ok, err = pcall(torch.load_checkpoint, path, case[1])
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find(case[2], 1, true), err)
      for i, p in ipairs(m2:parameters()) do testing.assert_close(p, before[i], 0, 0, "untouched param " .. i) end
    end
    os.remove(path)
  end)

  it("refuses an enabled scaler for a checkpoint saved without one or with a disabled one", function()
    local m, o, s, sc = build(1)
    local path = tmpname()
    torch.save_checkpoint(path, { model = m, optimizer = o, scheduler = s })
    local ok, err = pcall(torch.load_checkpoint, path, { model = m, optimizer = o, scaler = sc })
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("holds no GradScaler state (saved without scaler=)", 1, true), err)
    assert.are.equal(1024, sc:get_scale())

    local off = amp.GradScaler({ enabled = false })
    torch.save_checkpoint(path, { model = m, optimizer = o, scaler = off })
    local _, md = io_.load(path)
    assert.are.same({ enabled = false }, ts.json_decode(md["ramtorch.checkpoint"]).scaler)
    ok, err = pcall(torch.load_checkpoint, path, { model = m, optimizer = o, scaler = sc })
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("holds the state of a disabled GradScaler (enabled=false) but the given "
                                        .. "scaler is enabled", 1, true), err)
    -- nothing was lost: without a scaler, or with a disabled one, it loads
    torch.load_checkpoint(path, { model = m, optimizer = o })
    torch.load_checkpoint(path, { model = m, optimizer = o, scaler = amp.GradScaler({ enabled = false }) })
    os.remove(path)
  end)

  it("a disabled scaler ignores the saved scale (PyTorch's load_state_dict of a disabled scaler)", function()
    local m, o, s, sc = build(1)
    train_steps(m, o, s, sc, 0, 3, {}, {})
    local path = tmpname()
    torch.save_checkpoint(path, { model = m, optimizer = o, scaler = sc })
    local off = amp.GradScaler({ enabled = false })
    torch.load_checkpoint(path, { model = m, optimizer = o, scaler = off })
    assert.is_false(off:is_enabled())
    assert.are.equal(1.0, off:get_scale())
    assert.are.same({}, off:state_dict())
    os.remove(path)
  end)

  it("rejects something that is not a GradScaler", function()
    local m, o = build(1)
    local path = tmpname()
    local ok, err = pcall(torch.save_checkpoint, path, { model = m, scaler = 3 })
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("save_checkpoint: scaler must be an amp.GradScaler (or false), got 3", 1, true), err)
    torch.save_checkpoint(path, { model = m, optimizer = o })
    ok, err = pcall(torch.load_checkpoint, path, { model = m, scaler = o })
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("load_checkpoint: scaler must be an amp.GradScaler (or false)", 1, true), err)
    os.remove(path)
  end)
end)
