-- delayed_update_spec.lua: the opt-in one-step-delayed update of streamed host parameters (issue 6;
-- runtime/host_optim_delay.c, the front/back copies in runtime/offload.c, optim's delay_update) on
-- the CPU offload engine (copy streams and the update as real threads). Every run is compared with a
-- reference computed without the engine, on plain tensors, with the rule applied by hand: iteration
-- k's gradients are taken at the master after update k-2 and applied to the master after update
-- k-1. Outputs, gradients and final weights must match; with the update slowed down (a test hook) or
-- finished before the next forward, a forward that read what the update writes would differ.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local optim = require("ramtorch.optim")
local testing = require("ramtorch.testing")
local offload = require("ramtorch.offload")
local amp = require("ramtorch.amp")
local rffi = require("ramtorch.ffi")

local C, ffi = rffi.C, rffi.ffi

local DIMS = { 16, 32, 24, 8 }

local function make_model(dtype)
  torch.manual_seed(7)
  local s = {}
  for i = 1, #DIMS - 1 do
    s[#s + 1] = torch.Linear(DIMS[i], DIMS[i + 1], { dtype = dtype })
    if i < #DIMS - 1 then s[#s + 1] = nn.ReLU() end
  end
  return nn.Sequential(s)
end

local function make_data(n, dtype)
  torch.manual_seed(11)
  local d = {}
  for i = 1, n do
    d[i] = { torch.randn({ 6, DIMS[1] }):to(dtype or torch.float32), torch.randn({ 6, DIMS[#DIMS] }) }
  end
  return d
end

local function clones(params)
  local r = {}
  for i, p in ipairs(params) do r[i] = p:detach():clone() end
  return r
end

local function new_opt(kind, params)
  if kind == "sgd" then return optim.SGD(params, { lr = 1e-2, momentum = 0.9 }) end
  if kind == "adamw_bf16_state" then return optim.AdamW(params, { lr = 1e-2, state_dtype = "bf16", seed = 3 }) end
  return optim.AdamW(params, { lr = 1e-2 })
end

-- the host optimizer's code paths this CPU has (1 scalar, 2 AVX2, 3 AVX-512)
local function simd_levels()
  local r = {}
  for level = 1, 3 do
    if C.rt_host_optim_set_simd(level) == 0 then r[#r + 1] = level end
  end
  C.rt_host_optim_set_simd(0)
  return r
end
local SIMD_NAME = { "scalar", "AVX2", "AVX-512" }

-- The reference: plain tensors (no engine). front: the weights the forward reads; master: what the
-- optimizer (a plain one, same kernels) updates. o.delay: front of iteration k = master before
-- update k-1; else front = master.
local function reference(o, params0)
  local master, front = {}, {}
  for i, p in ipairs(params0) do
    master[i] = p:clone():requires_grad_(true)
    front[i] = p:clone():requires_grad_(true)
  end
  local opt = new_opt(o.opt, master)
  local data = make_data(o.steps * o.accum, o.dtype)
  local outs, grads = {}, {}
  for s = 1, o.steps do
    for _, f in ipairs(front) do f.grad = nil end
    for a = 1, o.accum do
      local x, t = data[(s - 1) * o.accum + a][1], data[(s - 1) * o.accum + a][2]
      local y = (o.run or function(f) return f() end)(function()
        local h = x
        for l = 1, #DIMS - 1 do
          h = nn.functional.linear(h, front[2 * l - 1], front[2 * l])
          if l < #DIMS - 1 then h = nn.functional.relu(h) end
        end
        return h
      end)
      outs[#outs + 1] = y:detach():float()
      local d = y:float() - t
      ; (d * d):mean():backward()
    end
    grads[s] = {}
    for i, f in ipairs(front) do
      grads[s][i] = f.grad:float()
      master[i].grad = f.grad:clone()
    end
    local before = clones(master)
    opt:step()
    opt:zero_grad()
    local nxt = o.delay and before or master
    for i, f in ipairs(front) do torch.no_grad(function() f:copy_(nxt[i]) end) end
  end
  return { outs = outs, grads = grads, weights = clones(master) }
end

-- The engine run. o.between(s, opt, params): called after step s (the update may be pending).
local function engine(o)
  local model = make_model(o.dtype)
  local params = model:parameters()
  local params0 = clones(params)
  local opt = new_opt(o.opt, params)
  if o.delay then opt:delay_update(true) end
  local data = make_data(o.steps * o.accum, o.dtype)
  local outs, grads = {}, {}
  for s = 1, o.steps do
    for a = 1, o.accum do
      local x, t = data[(s - 1) * o.accum + a][1], data[(s - 1) * o.accum + a][2]
      local y = (o.run or function(f) return f() end)(function() return model(x) end)
      outs[#outs + 1] = y:detach():float()
      local d = y:float() - t
      ; (d * d):mean():backward()
    end
    grads[s] = {}
    for i, p in ipairs(params) do grads[s][i] = p.grad:float() end
    opt:step()
    if o.delay then assert.is_true(opt:update_pending()) end
    opt:zero_grad()
    if o.between then o.between(s, opt, params) end
  end
  local r = { outs = outs, grads = grads, params0 = params0, opt = opt, model = model, params = params }
  if o.final ~= false then
    opt:flush()
    r.weights = clones(params)
  end
  return r
end

local function same(a, b, what, rtol)
  assert.are.equal(#a, #b, what)
  for i = 1, #a do
    if torch.is_tensor(a[i]) then
      testing.assert_close(a[i]:float(), b[i]:float(), rtol or 1e-6, 1e-7, what .. " " .. i)
    else
      same(a[i], b[i], what .. " " .. i, rtol)
    end
  end
end

local function check_against_reference(o, rtol)
  local e = engine(o)
  local r = reference(o, e.params0)
  same(e.outs, r.outs, "output", rtol)
  same(e.grads, r.grads, "gradient", rtol)
  same(e.weights, r.weights, "weight", rtol)
  return e, r
end

describe("delayed update on the CPU offload engine", function()
  setup(function() offload.enable_cpu_streams(true) end)
  teardown(function()
    C.rt_delayed_update_set_test_delay_us(0)
    offload.enable_cpu_streams(false)
  end)
  before_each(function()
    offload.reset_schedule("cpu")
    collectgarbage()
  end)

  for _, kind in ipairs({ "adamw", "sgd" }) do
    it(("%s with delay follows the delayed rule (grads at W(k-2), update on M(k-1))"):format(kind), function()
      check_against_reference({ steps = 5, accum = 1, opt = kind, delay = true })
    end)
    it(("%s with delay off stays the plain synchronous step"):format(kind), function()
      check_against_reference({ steps = 4, accum = 1, opt = kind, delay = false })
    end)
  end

  it("differs from the synchronous run (the delay is real)", function()
    local e = engine({ steps = 4, accum = 1, opt = "adamw", delay = true })
    local r = reference({ steps = 4, accum = 1, opt = "adamw", delay = false }, e.params0)
    assert.is_false(testing.close(e.weights[1], r.weights[1], 1e-6, 1e-7))
  end)

  it("accumulates over 2 micro-batches before the delayed step", function()
    check_against_reference({ steps = 4, accum = 2, opt = "adamw", delay = true })
  end)

  it("sends the bf16 transfer copy of f32 masters under autocast (front and back shadows)", function()
    local run = function(f) return amp.autocast("bf16", f) end
    check_against_reference({ steps = 4, accum = 1, opt = "adamw", delay = true, run = run }, 1e-5)
  end)

  it("updates bf16 weights", function()
    check_against_reference({ steps = 4, accum = 1, opt = "adamw", delay = true, dtype = torch.bfloat16 }, 1e-2)
  end)

  -- The back copies are stores of the fused update pass (the master-dtype copy and the narrow
  -- shadow), on each code path: the forward of iteration k+1 reads what the pass of update k-1
  -- wrote there, so a copy left unwritten (uninitialised or two updates old) or holding the value
  -- before the update changes the outputs. A mixed case sends an f32 master both as f32 and as
  -- bf16 (autocast on every other micro-batch: both backs are written).
  local function every_other_autocast()
    local n = 0
    return function(f)
      n = n + 1
      if n % 2 == 1 then return amp.autocast("bf16", f) end
      return f()
    end
  end
  local COPY_CASES = {
    { "f32 weights sent as f32 (AdamW)", { opt = "adamw" }, 0 },
    { "f32 weights sent as f32 (SGD)", { opt = "sgd" }, 0 },
    { "bf16 weights sent as bf16 (AdamW, f32 states)", { opt = "adamw", dtype = torch.bfloat16 }, 0 },
    { "bf16 weights sent as bf16 (AdamW, bf16 states)", { opt = "adamw_bf16_state", dtype = torch.bfloat16 }, 0 },
    { "f32 weights sent as bf16 under autocast (AdamW)", { opt = "adamw", autocast = true }, 0 },
    { "f32 weights sent as f32 and bf16 (AdamW, accumulated)", { opt = "adamw", mixed = true, accum = 2 }, 0 },
  }
  for _, level in ipairs(simd_levels()) do
    for _, c in ipairs(COPY_CASES) do
      it(("writes the back copy in the update pass (%s, %s path)"):format(c[1], SIMD_NAME[level]), function()
        local o = { steps = 5, accum = c[2].accum or 1, opt = c[2].opt, dtype = c[2].dtype, delay = true }
        if c[2].autocast then o.run = function(f) return amp.autocast("bf16", f) end end
        if c[2].mixed then o.run = every_other_autocast() end
        assert(C.rt_host_optim_set_simd(level) == 0)
        local ok, err = pcall(check_against_reference, o, c[3])
        C.rt_host_optim_set_simd(0)
        assert(ok, err)
      end)
    end
  end

  it("is independent of the update's timing: a slow update overlapping the forward", function()
    C.rt_delayed_update_set_test_delay_us(3000) -- each parameter's update starts 3 ms after the last
    local ok, err = pcall(check_against_reference, { steps = 4, accum = 1, opt = "adamw", delay = true })
    C.rt_delayed_update_set_test_delay_us(0)
    assert(ok, err)
  end)

  it("never lets the forward read what the pending update wrote (update finished before the forward)", function()
    -- after each step, wait until the update has landed in the masters; a forward that read the
    -- masters (no front/back copies) would then see update k instead of update k-1
    -- (landing is detected against the master after the previous update, not a snapshot taken
    -- after step(): the update of the first parameter may land before such a snapshot)
    local landed = 0
    local prev = make_model():parameters()[1]:detach():clone() -- the master before update 1
    local between = function(_, opt, params)
      local t0 = os.clock()
      while opt:update_pending() and testing.close(params[1]:detach():clone(), prev, 0, 0) and os.clock() - t0 < 5 do end
      if not testing.close(params[1]:detach():clone(), prev, 0, 0) then landed = landed + 1 end
      -- the last parameter is updated last: give the others time too
      local t1 = os.clock()
      while os.clock() - t1 < 0.02 do end
      prev = params[1]:detach():clone()
    end
    check_against_reference({ steps = 4, accum = 1, opt = "adamw", delay = true, between = between })
    assert.is_true(landed >= 3, "the update landed in the master before the next forward " .. landed .. " times")
  end)

  it("gives the fully updated weights to state_dict and checkpoints", function()
    local o = { steps = 3, accum = 1, opt = "adamw", delay = true, final = false }
    local e = engine(o)
    local r = reference(o, e.params0)
    assert.is_true(e.opt:update_pending())
    local sd = e.model:state_dict() -- flushes
    assert.is_false(e.opt:update_pending())
    local keys = {}
    for k in pairs(sd) do keys[#keys + 1] = k end
    table.sort(keys)
    local ws = {}
    for i, p in ipairs(e.params) do ws[i] = p:detach():clone() end
    same(ws, r.weights, "weight after state_dict")
    -- the optimizer's own state dict and a checkpoint after another delayed step
    local x = make_data(1)[1][1]
    local y = e.model(x)
    y:sum():backward()
    e.opt:step()
    assert.is_true(e.opt:update_pending())
    local osd = e.opt:state_dict()
    assert.is_false(e.opt:update_pending())
    assert.are.equal(4, osd.state[0].step)
    local path = os.tmpname()
    e.opt:step() -- nothing pending, no gradients: a no-op
    torch.save_checkpoint(path, { model = e.model, optimizer = e.opt, step = 4 })
    local f = torch.io.safe_open(path)
    local w0 = f:get_tensor("model.0.weight")
    f:close()
    os.remove(path)
    testing.assert_close(w0, e.params[1]:detach(), 0, 0)
  end)

  it("flushes when delay is switched off mid-flight, then steps synchronously", function()
    local model = make_model()
    local params = model:parameters()
    local opt = optim.AdamW(params, { lr = 1e-2, delayed_update = true })
    assert.is_true(opt:delay_update_enabled())
    local x = make_data(1)[1][1]
    model(x):sum():backward()
    opt:step()
    assert.is_true(opt:update_pending())
    for _, p in ipairs(params) do assert.is_nil(p.grad) end -- handed to the update
    opt:delay_update(false)
    assert.is_false(opt:update_pending())
    local w = clones(params)
    model(x):sum():backward()
    opt:step()
    assert.is_false(opt:update_pending())
    assert.is_false(testing.close(params[1]:detach(), w[1], 0, 0)) -- updated in step()
    assert.is_not_nil(params[1].grad)
  end)

  it("refuses misuse with clear messages", function()
    local model = make_model()
    local params = model:parameters()
    local opt = optim.AdamW(params, { lr = 1e-2 })
    opt:overlap_with_backward(true)
    assert.has_error(function() opt:delay_update(true) end,
      "AdamW.delay_update: cannot be combined with overlap_with_backward (turn it off first)")
    -- an announced backward (overlap on) must be stepped before switching to delay: a delayed
    -- step() would not collect the updates that ran early, and update those parameters again
    opt:last_backward()
    opt:overlap_with_backward(false)
    assert.has_error(function() opt:delay_update(true) end,
      "AdamW.delay_update: a backward announced with last_backward() has not been stepped yet; call step() first")
    opt:step()
    opt:delay_update(true)
    assert.has_error(function() opt:overlap_with_backward(true) end,
      "AdamW.overlap_with_backward: cannot be combined with delay_update (turn delay_update off first)")
    assert.has_error(function() opt:delay_update("yes") end, "AdamW.delay_update: expected a boolean, got string")
    -- a parameter written while its update is pending is reported by the next step
    local x = make_data(1)[1][1]
    model(x):sum():backward()
    opt:step()
    torch.no_grad(function() params[1]:mul_(1) end)
    model(x):sum():backward()
    local ok, err = pcall(function() opt:step() end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("was changed while its delayed optimizer update was running", 1, true), err)
    opt:flush()
  end)

  it("refuses a second update of a parameter in one step and adds while one is pending (C entry)", function()
    local model = make_model()
    local w = model:parameters()[1]
    model(make_data(1)[1][1]):sum():backward()
    local h = offload.existing_handle(w)
    assert.is_not_nil(h)
    local box = ffi.new("rt_delayed_update *[1]")
    assert.are.equal(0, C.rt_delayed_update_new(box))
    local d = ffi.gc(box[0], C.rt_delayed_update_free)
    local hp = ffi.new("rt_sgd_hparams")
    hp.lr = 0.1
    local g = w.grad:clone()
    assert.are.equal(0, C.rt_delayed_update_add_sgd(d, h, g.p, nil, hp))
    assert.are_not.equal(0, C.rt_delayed_update_add_sgd(d, h, g.p, nil, hp))
    assert.truthy(ffi.string(C.rt_last_error()):find("already in this step's update", 1, true))
    assert.are.equal(0, C.rt_delayed_update_launch(d))
    assert.are_not.equal(0, C.rt_delayed_update_add_sgd(d, h, g.p, nil, hp))
    assert.truthy(ffi.string(C.rt_last_error()):find("previous update is still pending", 1, true))
    assert.are.equal(0, C.rt_delayed_update_wait(d))
    -- another object cannot take a parameter in delayed mode
    assert.are.equal(0, C.rt_delayed_update_new(box))
    local d2 = ffi.gc(box[0], C.rt_delayed_update_free)
    assert.are_not.equal(0, C.rt_delayed_update_add_sgd(d2, h, g.p, nil, hp))
    assert.truthy(ffi.string(C.rt_last_error()):find("another optimizer's delayed update", 1, true))
    assert.are.equal(0, C.rt_delayed_update_flush(d))
    assert.are.equal(0, C.rt_delayed_update_add_sgd(d2, h, g.p, nil, hp))
    assert.are.equal(0, C.rt_delayed_update_flush(d2))
    assert.are.equal(0, C.rt_delayed_update_pending(d2))
  end)
end)
