-- optim_spec.lua: optimizers (AdamW, SGD) against float64 re-implementations of PyTorch's formulas over
-- ten steps, parameter groups, state dicts, error messages, and the LR schedulers against PyTorch's
-- closed forms over twenty steps.
local torch = require("ramtorch")
local optim = require("ramtorch.optim")
local rffi = require("ramtorch.ffi")
local ref = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "optim_reference.lua")

local lr_scheduler = optim.lr_scheduler

local function flat(t) return t:to(torch.float64):reshape(-1):totable() end

-- Run `steps` steps of optimizer `make(params)` on two parameters with given gradients, and the Lua
-- reference `ref_step(p, g, state, group_opts, t)` alongside; return the worst relative error.
local function compare(dtype, make, ref_step, group_opts, steps)
  torch.manual_seed(7)
  local w0 = torch.randn({ 5, 4 }, { dtype = torch.float64 })
  local b0 = torch.randn({ 4 }, { dtype = torch.float64 }) * 0.1
  local w = w0:to(dtype):requires_grad_(true)
  local b = b0:to(dtype):requires_grad_(true)
  local opt = make(w, b)
  local refp = { flat(w), flat(b) }
  local refstate = { {}, {} }
  local worst = 0
  for t = 1, steps do
    local gw = torch.randn({ 5, 4 }, { dtype = torch.float64 })
    local gb = torch.randn({ 4 }, { dtype = torch.float64 }) * 0.5
    w.grad = gw:to(dtype)
    b.grad = gb:to(dtype)
    opt:step()
    local gs = { flat(gw:to(dtype)), flat(gb:to(dtype)) }
    for i = 1, 2 do ref_step(refp[i], gs[i], refstate[i], group_opts[i], t) end
    worst = math.max(worst, ref.rel_err(w, refp[1]), ref.rel_err(b, refp[2]))
  end
  return worst, opt, w, b
end

local adamw_groups = {
  { lr = 1e-2, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.1 },
  { lr = 5e-3, beta1 = 0.8, beta2 = 0.99, eps = 1e-6, weight_decay = 0 },
}
local function make_adamw(w, b)
  return optim.AdamW({
    { params = { w }, lr = 1e-2, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 0.1 },
    { params = { b }, lr = 5e-3, betas = { 0.8, 0.99 }, eps = 1e-6, weight_decay = 0 },
  })
end
local function adamw_ref(p, g, st, o, t)
  st.m = st.m or ref.zeros(#p)
  st.v = st.v or ref.zeros(#p)
  ref.adamw_step(p, g, st.m, st.v, t, o)
end

local sgd_groups = {
  { lr = 0.05, momentum = 0.9, dampening = 0, weight_decay = 0.01, nesterov = true },
  { lr = 0.03, momentum = 0.8, dampening = 0.25, weight_decay = 0.001, nesterov = false },
}
local function make_sgd(w, b)
  return optim.SGD({
    { params = { w }, lr = 0.05, momentum = 0.9, weight_decay = 0.01, nesterov = true },
    { params = { b }, lr = 0.03, momentum = 0.8, dampening = 0.25, weight_decay = 0.001 },
  })
end
local function sgd_ref(p, g, st, o) st.buf = ref.sgd_step(p, g, st.buf, o) end

describe("AdamW", function()
  it("matches a float64 re-implementation over ten steps in float32 (rel < 1e-6)", function()
    local err = compare(torch.float32, make_adamw, adamw_ref, adamw_groups, 10)
    assert.is_true(err < 1e-6, ("relative error %g"):format(err))
  end)

  it("matches it in float64 to rounding (rel < 1e-12)", function()
    local err = compare(torch.float64, make_adamw, adamw_ref, adamw_groups, 10)
    assert.is_true(err < 1e-12, ("relative error %g"):format(err))
  end)

  it("keeps float32 state for bfloat16 parameters and rounds the parameter once per step", function()
    local err, opt, w = compare(torch.bfloat16, make_adamw, adamw_ref, adamw_groups, 10)
    assert.are.equal(torch.bfloat16, w.dtype)
    local st = opt.state[w]
    assert.are.equal(torch.float32, st.exp_avg.dtype)
    assert.are.equal(torch.float32, st.exp_avg_sq.dtype)
    assert.are.equal(10, st.step)
    -- bf16 has 8 significant bits: a few roundings of relative size 2^-9
    assert.is_true(err < 2e-2, ("relative error %g"):format(err))
  end)

  it("has PyTorch's defaults and exposes itself as ramtorch.AdamW", function()
    local p = torch.zeros(2):requires_grad_(true)
    local opt = torch.AdamW({ p })
    local g = opt.param_groups[1]
    assert.are.equal(1e-3, g.lr)
    assert.are.same({ 0.9, 0.999 }, g.betas)
    assert.are.equal(1e-8, g.eps)
    assert.are.equal(1e-2, g.weight_decay)
    assert.are.equal(optim.AdamW, torch.AdamW)
  end)

  it("skips parameters without a gradient", function()
    local p = torch.ones(3):requires_grad_(true)
    local q = torch.ones(3):requires_grad_(true)
    local opt = optim.AdamW({ p, q }, { lr = 0.1 })
    q.grad = torch.ones(3)
    opt:step()
    assert.are.same({ 1, 1, 1 }, p:totable())
    assert.is_nil(opt.state[p])
    assert.is_true(q:totable()[1] < 1)
  end)

  it("rejects bad options with PyTorch's messages", function()
    local p = torch.zeros(2):requires_grad_(true)
    local ok, err = pcall(optim.AdamW, { p }, { lr = -1 })
    assert.is_false(ok)
    assert.matches("Invalid learning rate: %-1", err)
    ok, err = pcall(optim.AdamW, { p }, { betas = { 1.0, 0.9 } })
    assert.is_false(ok)
    assert.matches("Invalid beta parameter at index 0: 1", err)
    ok, err = pcall(optim.AdamW, { p }, { amsgrad = true })
    assert.is_false(ok)
    assert.matches("amsgrad is not supported", err)
  end)
end)

describe("SGD", function()
  it("matches a float64 re-implementation over ten steps (nesterov, dampening, weight decay)", function()
    local err = compare(torch.float32, make_sgd, sgd_ref, sgd_groups, 10)
    assert.is_true(err < 1e-6, ("relative error %g"):format(err))
    err = compare(torch.float64, make_sgd, sgd_ref, sgd_groups, 10)
    assert.is_true(err < 1e-12, ("relative error %g"):format(err))
  end)

  it("without momentum is plain gradient descent and keeps no buffer", function()
    local p = torch.tensor({ 1, 2, 3 }, { dtype = torch.float64 }):requires_grad_(true)
    local opt = optim.SGD({ p }, { lr = 0.5 })
    p.grad = torch.tensor({ 2, 2, 2 }, { dtype = torch.float64 })
    opt:step()
    assert.are.same({ 0, 1, 2 }, p:totable())
    assert.is_nil(opt.state[p].momentum_buffer)
  end)

  it("maximize ascends the gradient", function()
    local p = torch.tensor({ 1, 2 }, { dtype = torch.float64 }):requires_grad_(true)
    local opt = optim.SGD({ p }, { lr = 0.5, maximize = true })
    p.grad = torch.tensor({ 2, -2 }, { dtype = torch.float64 })
    opt:step()
    assert.are.same({ 2, 1 }, p:totable())
  end)

  it("rejects nesterov without momentum", function()
    local p = torch.zeros(2):requires_grad_(true)
    local ok, err = pcall(optim.SGD, { p }, { lr = 0.1, nesterov = true })
    assert.is_false(ok)
    assert.matches("Nesterov momentum requires a momentum and zero dampening", err)
  end)
end)

describe("Optimizer", function()
  it("fills group options from the defaults and keeps per-group values", function()
    local a, b = torch.zeros(2):requires_grad_(true), torch.zeros(3):requires_grad_(true)
    local opt = optim.SGD({ { params = { a } }, { params = { b }, lr = 0.5 } }, { lr = 0.1, momentum = 0.9 })
    assert.are.equal(0.1, opt.param_groups[1].lr)
    assert.are.equal(0.5, opt.param_groups[2].lr)
    assert.are.equal(0.9, opt.param_groups[2].momentum)
    local c = torch.zeros(1):requires_grad_(true)
    opt:add_param_group({ params = c, weight_decay = 0.2 })
    assert.are.equal(3, #opt.param_groups)
    assert.are.equal(0.2, opt.param_groups[3].weight_decay)
    assert.are.equal(0.1, opt.param_groups[3].lr)
  end)

  it("refuses a parameter in two groups, an empty list and a module", function()
    local a = torch.zeros(2):requires_grad_(true)
    local opt = optim.SGD({ a }, { lr = 0.1 })
    local ok, err = pcall(opt.add_param_group, opt, { params = { a } })
    assert.is_false(ok)
    assert.matches("some parameters appear in more than one parameter group", err)
    ok, err = pcall(optim.SGD, {}, { lr = 0.1 })
    assert.is_false(ok)
    assert.matches("optimizer got an empty parameter list", err)
    local nn = require("ramtorch.nn")
    ok, err = pcall(optim.SGD, nn.Linear(2, 2), { lr = 0.1 })
    assert.is_false(ok)
    assert.matches("pass model:parameters%(%)", err)
  end)

  it("zero_grad sets gradients to nil by default, or to zeros", function()
    local a = torch.ones(2):requires_grad_(true)
    local opt = optim.SGD({ a }, { lr = 0.1 })
    a.grad = torch.ones(2)
    opt:zero_grad(false)
    assert.are.same({ 0, 0 }, a.grad:totable())
    opt:zero_grad()
    assert.is_nil(a.grad)
  end)

  it("round-trips its state dict exactly (AdamW)", function()
    torch.manual_seed(3)
    local w1 = torch.randn(4, 3):requires_grad_(true)
    local w2 = w1:detach():clone():requires_grad_(true)
    local grads = {}
    for i = 1, 6 do grads[i] = torch.randn(4, 3) end
    local o1 = optim.AdamW({ w1 }, { lr = 0.05, weight_decay = 0.1 })
    for i = 1, 3 do
      w1.grad = grads[i]
      o1:step()
    end
    local sd = o1:state_dict()
    assert.are.equal(3, sd.state[0].step)
    assert.are.same({ 0 }, sd.param_groups[1].params)
    assert.are.equal(0.05, sd.param_groups[1].lr)
    -- the second optimizer starts with other options; loading restores them
    torch.no_grad(function() w2:copy_(w1) end)
    local o2 = optim.AdamW({ w2 }, { lr = 1 })
    o2:load_state_dict(sd)
    assert.are.equal(0.05, o2.param_groups[1].lr)
    -- the loaded state is a copy: changing the source afterwards does not reach it
    assert.are_not.equal(tostring(o1.state[w1].exp_avg:data_ptr()), tostring(o2.state[w2].exp_avg:data_ptr()))
    for i = 4, 6 do
      w1.grad = grads[i]
      w2.grad = grads[i]:clone()
      o1:step()
      o2:step()
    end
    assert.are.same(w1:totable(), w2:totable())
    assert.are.same(o1.state[w1].exp_avg_sq:totable(), o2.state[w2].exp_avg_sq:totable())
    assert.are.equal(6, o2.state[w2].step)
  end)

  it("round-trips its state dict exactly (SGD with momentum)", function()
    torch.manual_seed(4)
    local w1 = torch.randn(3):requires_grad_(true)
    local o1 = optim.SGD({ w1 }, { lr = 0.1, momentum = 0.9 })
    w1.grad = torch.randn(3)
    o1:step()
    local w2 = w1:detach():clone():requires_grad_(true)
    local o2 = optim.SGD({ w2 }, { lr = 0.1, momentum = 0.9 })
    o2:load_state_dict(o1:state_dict())
    local g = torch.randn(3)
    w1.grad, w2.grad = g, g:clone()
    o1:step()
    o2:step()
    assert.are.same(w1:totable(), w2:totable())
  end)

  it("refuses a state dict whose groups do not match", function()
    local a, b = torch.zeros(2):requires_grad_(true), torch.zeros(2):requires_grad_(true)
    local sd = optim.SGD({ a, b }, { lr = 0.1 }):state_dict()
    local o = optim.SGD({ { params = { a } }, { params = { b } } }, { lr = 0.1 })
    local ok, err = pcall(o.load_state_dict, o, sd)
    assert.is_false(ok)
    assert.matches("different number of parameter groups %(1, expected 2%)", err)
    o = optim.SGD({ a }, { lr = 0.1 })
    ok, err = pcall(o.load_state_dict, o, sd)
    assert.is_false(ok)
    assert.matches("doesn't match the size of optimizer's group", err)
  end)

  it("runs the closure and returns its loss", function()
    local a = torch.ones(1):requires_grad_(true)
    local opt = optim.SGD({ a }, { lr = 0.1 })
    local loss = opt:step(function()
      opt:zero_grad()
      local l = (a * a):sum()
      l:backward()
      return l
    end)
    assert.are.equal(1, loss:item())
    assert.is_true(math.abs(a:item() - 0.8) < 1e-6)
  end)
end)

describe("fused optimizer kernels (C)", function()
  local C = rffi.C
  local ffi = require("ffi")
  local function last() return ffi.string(C.rt_last_error()) end

  it("validate shapes, dtypes, contiguity and options with clear messages", function()
    local p, g3 = torch.zeros(2), torch.zeros(3)
    local m, v = torch.zeros(2), torch.zeros(2)
    assert.is_true(C.rt_adamw_step(p.p, g3.p, m.p, v.p, 0.1, 0.9, 0.999, 1e-8, 0, 1) < 0)
    assert.matches("adamw_step: grad has shape %[3%] but the parameter has shape %[2%]", last())
    local mi = torch.zeros(2, { dtype = torch.int64 })
    assert.is_true(C.rt_adamw_step(p.p, p.p, mi.p, v.p, 0.1, 0.9, 0.999, 1e-8, 0, 1) < 0)
    assert.matches("adamw_step: exp_avg has dtype int64; expected float32 or float64", last())
    assert.is_true(C.rt_adamw_step(p.p, p.p, m.p, v.p, 0.1, 0.9, 0.999, 1e-8, 0, 0) < 0)
    assert.matches("step must be >= 1", last())
    assert.is_true(C.rt_adamw_step(p.p, p.p, m.p, v.p, 0.1, 1.5, 0.999, 1e-8, 0, 1) < 0)
    assert.matches("invalid beta1 1.5", last())
    local pt = torch.zeros(2, 3):t()
    local gt = torch.zeros(3, 2)
    assert.is_true(C.rt_sgd_step(pt.p, gt.p, nil, 0.1, 0, 0, 0, 0, 0) < 0)
    assert.matches("sgd_step: param must be contiguous", last())
    assert.is_true(C.rt_sgd_step(p.p, p.p, nil, 0.1, 0.9, 0, 0, 0, 1) < 0)
    assert.matches("sgd_step: momentum 0.9 needs a momentum buffer", last())
    assert.is_true(C.rt_sgd_step(p.p, p.p, m.p, 0.1, 0.9, 0.5, 0, 1, 1) < 0)
    assert.matches("nesterov momentum requires a momentum > 0 and zero dampening", last())
  end)

  it("give results independent of the thread count", function()
    torch.manual_seed(11)
    local n = 100003 -- above the parallel grain
    local p0, g = torch.randn(n), torch.randn(n)
    local function run(threads)
      local before = torch.get_num_threads()
      torch.set_num_threads(threads)
      local p = p0:clone():requires_grad_(true)
      local opt = optim.AdamW({ p }, { lr = 0.01 })
      for _ = 1, 3 do
        p.grad = g
        opt:step()
      end
      torch.set_num_threads(before)
      return p
    end
    local a, b = run(1), run(2)
    assert.is_true((a - b):abs():max():item() == 0)
  end)
end)

-- ---- LR schedulers ---------------------------------------------------------------------------------------

local function close(a, b) return math.abs(a - b) <= 1e-12 * math.max(1, math.abs(b)) end

local function new_opt(lrs)
  local groups = {}
  for i, lr in ipairs(lrs) do groups[i] = { params = { torch.zeros(1):requires_grad_(true) }, lr = lr } end
  return optim.SGD(groups, { lr = 1 })
end

-- Check scheduler values at epochs 0..20 against closed(base_lr, epoch), for every group.
local function check_schedule(make, closed, lrs)
  lrs = lrs or { 0.1, 0.02 }
  local opt = new_opt(lrs)
  local sched = make(opt)
  for e = 0, 20 do
    local got = sched:get_last_lr()
    for i, base in ipairs(lrs) do
      local want = closed(base, e)
      assert.is_true(close(got[i], want), ("epoch %d group %d: got %.17g, expected %.17g"):format(e, i, got[i], want))
      assert.are.equal(got[i], opt.param_groups[i].lr)
    end
    sched:step()
  end
  return sched, opt
end

describe("lr_scheduler", function()
  it("StepLR follows base * gamma^floor(epoch / step_size)", function()
    check_schedule(function(o) return lr_scheduler.StepLR(o, 3, 0.5) end,
                   function(b, e) return b * 0.5 ^ math.floor(e / 3) end)
  end)

  it("CosineAnnealingLR follows the closed form (and goes back up past T_max)", function()
    local T, eta = 8, 0.001
    check_schedule(function(o) return lr_scheduler.CosineAnnealingLR(o, T, eta) end,
                   function(b, e) return eta + (b - eta) * (1 + math.cos(math.pi * e / T)) / 2 end)
  end)

  it("LinearLR ramps from start_factor to end_factor over total_iters", function()
    check_schedule(function(o) return lr_scheduler.LinearLR(o, 0.25, 1.0, 6) end,
                   function(b, e) return b * (0.25 + 0.75 * math.min(6, e) / 6) end)
  end)

  it("LambdaLR multiplies the base lr by the function of the epoch", function()
    check_schedule(function(o) return lr_scheduler.LambdaLR(o, function(e) return 0.9 ^ e end) end,
                   function(b, e) return b * 0.9 ^ e end)
  end)

  it("SequentialLR runs a linear warmup then cosine annealing", function()
    local W, T = 5, 15
    check_schedule(function(o)
      return lr_scheduler.SequentialLR(o, {
        lr_scheduler.LinearLR(o, 0.1, 1.0, W),
        lr_scheduler.CosineAnnealingLR(o, T, 0),
      }, { W })
    end, function(b, e)
      if e < W then return b * (0.1 + 0.9 * e / W) end
      return b * (1 + math.cos(math.pi * (e - W) / T)) / 2
    end)
  end)

  it("round-trips its state dict", function()
    local function make(o)
      return lr_scheduler.SequentialLR(o, { lr_scheduler.LinearLR(o, 0.1, 1.0, 4), lr_scheduler.CosineAnnealingLR(o, 10) }, { 4 })
    end
    local o1 = new_opt({ 0.1 })
    local s1 = make(o1)
    for _ = 1, 7 do s1:step() end
    local sd = s1:state_dict()
    local o2 = new_opt({ 0.1 })
    local s2 = make(o2)
    s2:load_state_dict(sd)
    o2.param_groups[1].lr = o1.param_groups[1].lr
    for _ = 1, 6 do
      s1:step()
      s2:step()
      assert.are.equal(s1:get_last_lr()[1], s2:get_last_lr()[1])
    end
  end)

  it("refuses mismatched milestones and a missing optimizer", function()
    local o = new_opt({ 0.1 })
    local ok, err = pcall(lr_scheduler.SequentialLR, o, { lr_scheduler.StepLR(o, 2) }, { 3 })
    assert.is_false(ok)
    assert.matches("expects number of schedulers provided to be one more than the number of milestone points", err)
    ok, err = pcall(lr_scheduler.StepLR, nil, 2)
    assert.is_false(ok)
    assert.matches("StepLR: expected an optimizer", err)
  end)
end)
