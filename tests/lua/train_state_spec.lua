-- train_state_spec.lua: resumable training (ramtorch/train_state.lua) and activation checkpointing
-- (ramtorch/utils/checkpoint.lua). A tiny GPT with dropout, AdamW and a cosine schedule, batches drawn
-- from the generator: N steps straight must equal N/2 steps, save_checkpoint, fresh objects built
-- from another seed, load_checkpoint, N/2 more steps, bit for bit. Checkpointed blocks must give
-- exactly the gradients of the plain ones under the same generator state.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local optim = require("ramtorch.optim")
local gpt = require("ramtorch.models.gpt")
local ts = require("ramtorch.train_state")
local testing = require("ramtorch.testing")

local function tmpname() return os.tmpname() .. ".safetensors" end

local CFG = { vocab_size = 13, block_size = 8, n_layer = 2, n_head = 2, n_embd = 16, dropout = 0.1 }

local function build(seed)
  torch.manual_seed(seed)
  local model = gpt.GPT(CFG)
  local opt = optim.AdamW(model:parameters(), { lr = 1e-2, weight_decay = 0.1 })
  local sched = optim.lr_scheduler.CosineAnnealingLR(opt, 10)
  return model, opt, sched
end

local data -- a fixed "corpus"
local function train_steps(model, opt, sched, pos, n, losses)
  for _ = 1, n do
    local starts = torch.randint(0, data:numel() - CFG.block_size - 1, { 3 }):totable()
    local xs, ys = {}, {}
    for i, s in ipairs(starts) do
      xs[i] = data:narrow(0, s, CFG.block_size)
      ys[i] = data:narrow(0, s + 1, CFG.block_size)
    end
    local _, loss = model(torch.stack(xs), torch.stack(ys))
    opt:zero_grad()
    loss:backward()
    opt:step()
    sched:step()
    pos = pos + 1
    losses[#losses + 1] = loss:item()
  end
  return pos
end

describe("save_checkpoint / load_checkpoint", function()
  it("a resumed run reproduces the uninterrupted losses bit for bit", function()
    torch.manual_seed(0)
    data = torch.randint(0, CFG.vocab_size, { 300 })
    local N = 8
    local straight = {}
    local m, o, s = build(42)
    train_steps(m, o, s, 0, N, straight)

    local resumed = {}
    m, o, s = build(42)
    local pos = train_steps(m, o, s, 0, N / 2, resumed)
    local path = tmpname()
    torch.save_checkpoint(path, { model = m, optimizer = o, scheduler = s, step = pos, data_position = pos * 3,
                                  extra = { note = "half", best = 1.5, ema = torch.ones({ 2 }) } })
    -- a fresh process state: other seed, other objects, the generator disturbed
    m, o, s = build(7)
    torch.rand({ 100 })
    local info = torch.load_checkpoint(path, { model = m, optimizer = o, scheduler = s })
    assert.are.equal(N / 2, info.step)
    assert.are.equal(N / 2 * 3, info.data_position)
    assert.are.equal("half", info.extra.note)
    assert.are.equal(1.5, info.extra.best)
    testing.assert_close(info.extra.ema, { 1, 1 }, 0, 0)
    train_steps(m, o, s, info.step, N / 2, resumed)
    os.remove(path)
    assert.are.equal(N, #resumed)
    for i = 1, N do
      assert.are.equal(straight[i], resumed[i], ("step %d: %.17g vs %.17g"):format(i, straight[i], resumed[i]))
    end
    -- and the schedule really moved: the learning rate is not the initial one
    assert.are_not.equal(1e-2, o.param_groups[1].lr)
  end)

  it("JSON metadata round-trips numbers exactly, number keys, nested tables and non-finite values", function()
    local v = { a = 0.1, b = { 1, 2, 3 }, c = { [0] = { step = 3 }, [5] = "x" }, d = 1 / 3, e = math.huge,
                f = "quote \" and \\ and \n", g = true, h = -2 ^ 60 }
    local back = ts.json_decode(ts.json_encode(v))
    assert.are.same(v, back)
  end)

  it("errors name the problem", function()
    local ok, err = pcall(torch.save_checkpoint, tmpname(), { extra = { f = function() end } })
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("checkpoint.extra.f is a function", 1, true))
    local path = tmpname()
    torch.save({ x = torch.ones({ 1 }) }, path)
    ok, err = pcall(torch.load_checkpoint, path, {})
    os.remove(path)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("not written by save_checkpoint", 1, true))
  end)
end)

describe("utils.checkpoint", function()
  it("gives exactly the gradients of the plain run, dropout included", function()
    torch.manual_seed(3)
    local block = gpt.Block(setmetatable({ n_embd = 16, n_head = 2, dropout = 0.2, bias = true, rotary = false,
                                           layer_norm_epsilon = 1e-5, activation = "gelu_new" }, nil))
    local lin = nn.Linear(16, 16)
    local x0 = torch.randn({ 2, 5, 16 })
    local function run(use_ck)
      for _, p in ipairs(block:parameters()) do p.grad = nil end
      lin.weight.grad = nil
      local x = x0:clone():requires_grad_(true)
      torch.manual_seed(11)
      local h = lin(x)
      local y = use_ck and torch.utils.checkpoint(function(a) return block(a) end, h) or block(h)
      local z = torch.nn.functional.dropout(y, 0.3) -- draws after the block: the generator must line up
      z:square():sum():backward()
      local g = { x = x.grad:clone(), lw = lin.weight.grad:clone(), rng = torch.get_rng_state() }
      for n, p in block:named_parameters() do g[n] = p.grad:clone() end
      return g, y.grad_fn
    end
    local plain, fn1 = run(false)
    local ck, fn2 = run(true)
    assert.are.equal("CustomFunctionBackward", fn2)
    assert.are_not.equal(fn1, fn2)
    for k, v in pairs(plain) do
      if torch.is_tensor(v) then testing.assert_close(ck[k], v, 0, 0, k) else assert.are.same(v, ck[k]) end
    end
  end)

  it("passes through without grad mode and rejects non-callables", function()
    local y = torch.no_grad(function() return torch.utils.checkpoint(function(a) return a * 2 end, torch.ones({ 2 })) end)
    testing.assert_close(y, { 2, 2 }, 0, 0)
    local ok, err = pcall(torch.utils.checkpoint, 3, torch.ones({ 1 }))
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("checkpoint: expected a function", 1, true))
  end)
end)
