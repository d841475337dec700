-- optim_adam_schedulers_spec.lua: optim.Adam (L2 weight decay folded into the gradient before the
-- moments) against a float64 Lua re-implementation of torch.optim.Adam, on the host path (float32
-- CPU parameters: rt_host_adamw_step), the batched path (float64: rt_adamw_step_multi) and the
-- offload engine; and the schedulers PolynomialLR, CosineAnnealingWarmRestarts, CyclicLR,
-- OneCycleLR and ReduceLROnPlateau against closed forms written here from PyTorch's documentation
-- (float64, to 1e-12), their state dicts, and their error messages.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local optim = require("ramtorch.optim")
local testing = require("ramtorch.testing")
local offload = require("ramtorch.offload")

local L = optim.lr_scheduler

local function flat(t) return t:to(torch.float64):reshape(-1):totable() end

local function rel_err(a, b)
  local num, den = 0, 0
  for i = 1, #a do
    num = math.max(num, math.abs(a[i] - b[i]))
    den = math.max(den, math.abs(b[i]))
  end
  return den == 0 and num or num / den
end

local function fails(fn, pattern)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.is_truthy(tostring(err):find(pattern, 1, true), ("error %q does not contain %q"):format(tostring(err), pattern))
end

-- ---- Adam ------------------------------------------------------------------------------------------------

-- torch.optim.Adam's single-tensor update, as its documentation writes it, in Lua doubles.
local function adam_ref_step(p, g, st, o)
  st.t = (st.t or 0) + 1
  st.m = st.m or {}
  st.v = st.v or {}
  local b1, b2 = o.betas[1], o.betas[2]
  local bc1, bc2 = 1 - b1 ^ st.t, 1 - b2 ^ st.t
  for i = 1, #p do
    local d = g[i]
    if o.maximize then d = -d end
    if o.weight_decay ~= 0 then d = d + o.weight_decay * p[i] end
    st.m[i] = b1 * (st.m[i] or 0) + (1 - b1) * d
    st.v[i] = b2 * (st.v[i] or 0) + (1 - b2) * d * d
    local denom = math.sqrt(st.v[i]) / math.sqrt(bc2) + o.eps
    p[i] = p[i] - (o.lr / bc1) * st.m[i] / denom
  end
end

-- Two parameters in two groups (opts[1], opts[2]), `steps` steps of random gradients; returns the
-- worst relative error against the reference, and whether every gradient was left untouched.
local function run_adam(dtype, opts, steps)
  torch.manual_seed(5)
  local w = torch.randn({ 6, 5 }, { dtype = torch.float64 }):to(dtype):requires_grad_(true)
  local b = (torch.randn({ 5 }, { dtype = torch.float64 }) * 0.3):to(dtype):requires_grad_(true)
  local groups = {}
  for i, p in ipairs({ w, b }) do
    local g = { params = { p } }
    for k, v in pairs(opts[i]) do g[k] = v end
    groups[i] = g
  end
  local opt = optim.Adam(groups)
  local full = {}
  for i = 1, 2 do
    full[i] = { lr = 1e-3, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 0, maximize = false }
    for k, v in pairs(opts[i]) do full[i][k] = v end
  end
  local refp, refst = { flat(w), flat(b) }, { {}, {} }
  local worst, untouched = 0, true
  for _ = 1, steps do
    local gw, gb = torch.randn({ 6, 5 }, { dtype = torch.float64 }):to(dtype), torch.randn({ 5 }, { dtype = torch.float64 }):to(dtype)
    w.grad, b.grad = gw, gb
    local keep = { flat(gw), flat(gb) }
    opt:step()
    if rel_err(flat(w.grad), keep[1]) ~= 0 or rel_err(flat(b.grad), keep[2]) ~= 0 then untouched = false end
    for i = 1, 2 do adam_ref_step(refp[i], keep[i], refst[i], full[i]) end
    worst = math.max(worst, rel_err(flat(w), refp[1]), rel_err(flat(b), refp[2]))
  end
  return worst, untouched, opt, w, b
end

local CASES = {
  { "no weight decay", { { lr = 1e-2 }, { lr = 5e-3, betas = { 0.8, 0.99 } } } },
  { "L2 weight decay, per group", { { lr = 1e-2, weight_decay = 0.1 }, { lr = 2e-2, weight_decay = 0.5, eps = 1e-6 } } },
  { "maximize", { { lr = 1e-2, maximize = true }, { lr = 1e-2, maximize = true, betas = { 0.5, 0.9 } } } },
  { "maximize with weight decay (negated first, then the L2 term)",
    { { lr = 1e-2, maximize = true, weight_decay = 0.3 }, { lr = 1e-2, weight_decay = 0.2 } } },
}

describe("optim.Adam", function()
  for _, c in ipairs(CASES) do
    it(c[1] .. ": float64 parameters match torch.optim.Adam's formulas to 1e-12 over 8 steps", function()
      local worst, untouched = run_adam(torch.float64, c[2], 8)
      assert.is_true(worst < 1e-12, "worst relative error " .. worst)
      assert.is_true(untouched, "p.grad was modified")
    end)
    it(c[1] .. ": float32 host parameters match to 1e-5 over 8 steps", function()
      local worst, untouched = run_adam(torch.float32, c[2], 8)
      assert.is_true(worst < 1e-5, "worst relative error " .. worst)
      assert.is_true(untouched, "p.grad was modified")
    end)
  end

  it("differs from AdamW when weight_decay ~= 0 and equals it when 0 (and with decoupled_weight_decay)", function()
    local function run(make)
      torch.manual_seed(9)
      local p = torch.randn({ 7 }, { dtype = torch.float64 }):requires_grad_(true)
      local opt = make(p)
      for _ = 1, 4 do
        p.grad = torch.randn({ 7 }, { dtype = torch.float64 })
        opt:step()
      end
      return flat(p)
    end
    local adam = run(function(p) return optim.Adam({ p }, { lr = 0.1, weight_decay = 0.5 }) end)
    local adamw = run(function(p) return optim.AdamW({ p }, { lr = 0.1, weight_decay = 0.5 }) end)
    local dec = run(function(p) return optim.Adam({ p }, { lr = 0.1, weight_decay = 0.5, decoupled_weight_decay = true }) end)
    assert.is_true(rel_err(adam, adamw) > 1e-3)
    assert.are.same(adamw, dec)
    local a0 = run(function(p) return optim.Adam({ p }, { lr = 0.1 }) end)
    local w0 = run(function(p) return optim.AdamW({ p }, { lr = 0.1, weight_decay = 0 }) end)
    assert.are.same(w0, a0)
  end)

  it("has PyTorch's defaults, and is torch.Adam", function()
    local p = torch.zeros(2):requires_grad_(true)
    local opt = torch.Adam({ p })
    local g = opt.param_groups[1]
    assert.are.equal(1e-3, g.lr)
    assert.are.same({ 0.9, 0.999 }, g.betas)
    assert.are.equal(1e-8, g.eps)
    assert.are.equal(0, g.weight_decay)
    assert.is_false(g.amsgrad)
    assert.is_false(g.maximize)
    assert.is_false(g.decoupled_weight_decay)
    assert.are.equal(optim.Adam, torch.Adam)
    assert.matches("^Adam %(", tostring(opt))
    assert.are.equal(0.5, optim.Adam({ p }, 0.5).param_groups[1].lr)
  end)

  it("round-trips its state dict exactly", function()
    local function make()
      torch.manual_seed(3)
      local w = torch.randn({ 4, 3 }):requires_grad_(true)
      local b = torch.randn({ 3 }, { dtype = torch.float64 }):requires_grad_(true)
      return w, b, optim.Adam({ { params = { w }, weight_decay = 0.1 }, { params = { b }, lr = 0.05, maximize = true } }, { lr = 0.01 })
    end
    local w1, b1, o1 = make()
    torch.manual_seed(4)
    local grads = {}
    for i = 1, 6 do grads[i] = { torch.randn({ 4, 3 }), torch.randn({ 3 }, { dtype = torch.float64 }) } end
    for i = 1, 3 do
      w1.grad, b1.grad = grads[i][1], grads[i][2]
      o1:step()
    end
    local sd = o1:state_dict()
    assert.are.equal(3, sd.state[0].step)
    assert.are.equal(0.1, sd.param_groups[1].weight_decay)
    local w2, b2, o2 = make()
    torch.no_grad(function()
      w2:copy_(w1)
      b2:copy_(b1)
    end)
    o2:load_state_dict(sd)
    for i = 4, 6 do
      w1.grad, b1.grad = grads[i][1], grads[i][2]
      w2.grad, b2.grad = grads[i][1], grads[i][2]
      o1:step()
      o2:step()
    end
    testing.assert_close(w2, w1, 0, 0)
    testing.assert_close(b2, b1, 0, 0)
    testing.assert_close(o2.state[w2].exp_avg_sq, o1.state[w1].exp_avg_sq, 0, 0)
  end)

  it("rejects bad options with PyTorch's messages", function()
    local p = torch.zeros(2):requires_grad_(true)
    fails(function() optim.Adam({ p }, { amsgrad = true }) end, "Adam: amsgrad is not supported")
    fails(function() optim.Adam({ { params = { p }, amsgrad = true } }) end, "Adam: amsgrad is not supported")
    fails(function() optim.Adam({ p }, { lr = -1 }) end, "Adam: Invalid learning rate: -1")
    fails(function() optim.Adam({ p }, { weight_decay = -0.1 }) end, "Adam: Invalid weight_decay value: -0.1")
    fails(function() optim.Adam({ p }, { eps = -1 }) end, "Adam: Invalid epsilon value: -1")
    fails(function() optim.Adam({ p }, { betas = { 0.9, 1.0 } }) end, "Adam: Invalid beta parameter at index 1: 1")
    fails(function() optim.Adam({ p }, { wd = 0.1 }) end, "Adam: unexpected option 'wd'")
    fails(function() optim.Adam({ p }, "fast") end, "Adam: expected an options table")
    fails(function() optim.Adam({ p }, { decoupled_weight_decay = "yes" }) end,
          "Adam: decoupled_weight_decay must be a boolean, got string")
    fails(function() optim.Adam({}) end, "Adam: optimizer got an empty parameter list")
    -- AdamW has no decoupled_weight_decay option (its decay is always decoupled)
    fails(function() optim.AdamW({ p }, { decoupled_weight_decay = true }) end, "AdamW: unexpected option 'decoupled_weight_decay'")
  end)
end)

-- Streamed parameters (torch.Linear) on the CPU offload engine: the host kernel with the L2 term
-- folded in, overlap with the backward (groups with weight decay are updated in step(), others on
-- the engine's worker) and the delayed update all give the plain result.
describe("optim.Adam with the CPU offload engine", function()
  setup(function() offload.enable_cpu_streams(true) end)
  teardown(function() offload.enable_cpu_streams(false) end)
  before_each(function()
    offload.reset_schedule("cpu")
    offload.reset_stats("cpu")
  end)

  local function train(wd, mode)
    torch.manual_seed(7)
    local model = nn.Sequential({ torch.Linear(8, 16), nn.ReLU(), torch.Linear(16, 4) })
    local params = model:parameters()
    local opt = optim.Adam(params, { lr = 1e-2, weight_decay = wd })
    if mode == "overlap" then opt:overlap_with_backward(true) end
    torch.manual_seed(11)
    local early = 0
    for _ = 1, 4 do
      local x, t = torch.randn({ 5, 8 }), torch.randn({ 5, 4 })
      local before
      if mode == "overlap" then
        opt:last_backward()
        before = {}
        for i, p in ipairs(params) do before[i] = p:detach():clone() end
      end
      local d = model(x) - t
      ; (d * d):mean():backward()
      if before then
        for i, p in ipairs(params) do
          if not testing.close(p:detach(), before[i], 0, 0) then early = early + 1 end
        end
      end
      opt:step()
      opt:zero_grad()
    end
    local w = {}
    for i, p in ipairs(params) do w[i] = p:detach():clone() end
    return w, early
  end

  for _, wd in ipairs({ 0, 0.1 }) do
    it(("overlap with the backward gives the plain result (weight_decay %g)"):format(wd), function()
      local plain = train(wd, nil)
      local over, early = train(wd, "overlap")
      for i = 1, #plain do testing.assert_close(over[i], plain[i], 0, 0) end
      if wd == 0 then
        assert.is_true(early > 0, "no parameter was updated during the backward")
      else
        assert.are.equal(0, early) -- the engine's gradient cannot take the L2 term
      end
    end)
  end
end)

-- ---- LR schedulers ------------------------------------------------------------------------------------------

local function close(a, b) return math.abs(a - b) <= 1e-12 * math.max(1, math.abs(b)) end

local function new_sgd(lrs, momentum)
  local groups = {}
  for i, lr in ipairs(lrs) do groups[i] = { params = { torch.zeros(1):requires_grad_(true) }, lr = lr } end
  return optim.SGD(groups, { lr = 1, momentum = momentum or 0 })
end

local function new_adam(lrs)
  local groups = {}
  for i, lr in ipairs(lrs) do groups[i] = { params = { torch.zeros(1):requires_grad_(true) }, lr = lr } end
  return optim.Adam(groups, { betas = { 0.9, 0.98 } })
end

-- Scheduler values at epochs 0..n against want(group index, epoch) for every group; also the
-- optimizer's lr, and momentum(i, e) (beta1 or momentum, per `field`) when given.
local function check(sched, opt, n, want, momentum, field)
  for e = 0, n do
    local got = sched:get_last_lr()
    for i = 1, #opt.param_groups do
      local w = want(i, e)
      assert.is_true(close(got[i], w), ("epoch %d group %d: got %.17g, expected %.17g"):format(e, i, got[i], w))
      assert.are.equal(got[i], opt.param_groups[i].lr)
      if momentum then
        local g = opt.param_groups[i]
        local m = field == "betas" and g.betas[1] or g.momentum
        local wm = momentum(i, e)
        assert.is_true(close(m, wm), ("epoch %d group %d momentum: got %.17g, expected %.17g"):format(e, i, m, wm))
        if field == "betas" then assert.are.equal(0.98, g.betas[2]) end
      end
    end
    if e < n then sched:step() end
  end
end

-- Continue `a` (stepped k times) and a fresh scheduler `b` loaded from a's state dict for n steps:
-- same values. step_args(i) gives the arguments of step i (ReduceLROnPlateau's metrics).
local function check_round_trip(make, k, n, step_args)
  step_args = step_args or function() return nil end
  local o1 = make.opt()
  local s1 = make.sched(o1)
  for i = 1, k do s1:step(step_args(i)) end
  local osd = o1:state_dict()
  local sd = s1:state_dict()
  local o2 = make.opt()
  local s2 = make.sched(o2)
  o2:load_state_dict(osd)
  s2:load_state_dict(sd)
  assert.are.same(s1:get_last_lr(), s2:get_last_lr())
  for i = k + 1, k + n do
    s1:step(step_args(i))
    s2:step(step_args(i))
    assert.are.same(s1:get_last_lr(), s2:get_last_lr())
    assert.are.same(o1.param_groups[1].betas, o2.param_groups[1].betas)
    assert.are.equal(o1.param_groups[1].momentum, o2.param_groups[1].momentum)
  end
end

describe("lr_scheduler.PolynomialLR", function()
  it("follows base * (1 - min(total_iters, epoch) / total_iters) ^ power (recursive form)", function()
    for _, c in ipairs({ { 7, 2.0 }, { 5, 1.0 }, { 10, 0.5 } }) do
      local T, pw = c[1], c[2]
      local o = new_sgd({ 0.1, 0.03 })
      local s = L.PolynomialLR(o, T, pw)
      check(s, o, 14, function(i, e) return ({ 0.1, 0.03 })[i] * (1 - math.min(T, e) / T) ^ pw end)
    end
  end)

  it("has the defaults total_iters 5, power 1, takes an options table, and step(epoch) uses the closed form", function()
    local o = new_sgd({ 0.2 })
    local s = L.PolynomialLR(o)
    assert.are.equal(5, s.total_iters)
    assert.are.equal(1.0, s.power)
    o = new_sgd({ 0.2 })
    s = L.PolynomialLR(o, { total_iters = 8, power = 3 })
    s:step(6)
    assert.is_true(close(s:get_last_lr()[1], 0.2 * (1 - 6 / 8) ^ 3))
    s:step(20)
    assert.are.equal(0, s:get_last_lr()[1])
  end)

  it("round-trips its state dict", function()
    check_round_trip({ opt = function() return new_sgd({ 0.1 }) end,
                       sched = function(o) return L.PolynomialLR(o, { total_iters = 9, power = 2 }) end }, 4, 6)
  end)

  it("rejects bad arguments", function()
    local o = new_sgd({ 0.1 })
    fails(function() L.PolynomialLR(o, 0) end, "PolynomialLR: total_iters must be a positive number, got 0")
    fails(function() L.PolynomialLR(o, { total_iters = 4, power = "two" }) end, "PolynomialLR: power must be a number, got two")
    fails(function() L.PolynomialLR(o, { total_iter = 4 }) end, "PolynomialLR: unexpected option 'total_iter'")
    fails(function() L.PolynomialLR(o, 4, 1, -1, 5) end, "PolynomialLR: takes at most 3 arguments after the optimizer, got 4")
    fails(function() L.PolynomialLR(nil, 4) end, "PolynomialLR: expected an optimizer")
    fails(function() L.PolynomialLR(new_sgd({ 0.1 }), 4, 1, 3) end, "param 'initial_lr' is not specified in param_groups[0]")
  end)
end)

-- SGDR's schedule computed the long way: walk the restarts.
local function sgdr(base, eta, T0, mult, epoch)
  local Ti, t = T0, epoch
  while t >= Ti do
    t = t - Ti
    Ti = Ti * mult
  end
  return eta + (base - eta) * (1 + math.cos(math.pi * t / Ti)) / 2
end

describe("lr_scheduler.CosineAnnealingWarmRestarts", function()
  it("restarts every T_0 * T_mult^k epochs (step())", function()
    for _, c in ipairs({ { 3, 1, 0 }, { 2, 2, 0.001 }, { 1, 3, 0.01 } }) do
      local o = new_sgd({ 0.1, 0.05 })
      local s = L.CosineAnnealingWarmRestarts(o, c[1], c[2], c[3])
      check(s, o, 30, function(i, e) return sgdr(({ 0.1, 0.05 })[i], c[3], c[1], c[2], e) end)
    end
  end)

  it("takes fractional epochs in step(epoch), T_mult 1 and 2", function()
    for _, mult in ipairs({ 1, 2 }) do
      local o = new_sgd({ 0.1 })
      local s = L.CosineAnnealingWarmRestarts(o, { T_0 = 4, T_mult = mult, eta_min = 0.002 })
      local iters = 4
      for epoch = 0, 20 do
        for i = 0, iters - 1 do
          local x = epoch + (i + 0.5) / iters -- off the restart points, where log() could round down
          s:step(x)
          local want = sgdr(0.1, 0.002, 4, mult, x)
          assert.is_true(close(s:get_last_lr()[1], want), ("epoch %.3f: got %.17g, expected %.17g"):format(x, s:get_last_lr()[1], want))
          assert.are.equal(math.floor(x), s.last_epoch)
        end
      end
      -- back to integer steps after step(epoch): continues from the last epoch
      s:step(5)
      s:step()
      assert.is_true(close(s:get_last_lr()[1], sgdr(0.1, 0.002, 4, mult, 6)))
    end
  end)

  it("round-trips its state dict", function()
    check_round_trip({ opt = function() return new_sgd({ 0.1 }) end,
                       sched = function(o) return L.CosineAnnealingWarmRestarts(o, 2, 2) end }, 5, 9)
  end)

  it("rejects bad arguments with PyTorch's messages", function()
    local o = new_sgd({ 0.1 })
    fails(function() L.CosineAnnealingWarmRestarts(o, 0) end, "Expected positive integer T_0, but got 0")
    fails(function() L.CosineAnnealingWarmRestarts(o, 2.5) end, "Expected positive integer T_0, but got 2.5")
    fails(function() L.CosineAnnealingWarmRestarts(o, 2, 0) end, "Expected integer T_mult >= 1, but got 0")
    fails(function() L.CosineAnnealingWarmRestarts(o, { T_0 = 2, eta_min = "x" }) end,
          "Expected float or int eta_min, but got x of type string")
    fails(function() L.CosineAnnealingWarmRestarts(o, { T0 = 2 }) end, "CosineAnnealingWarmRestarts: unexpected option 'T0'")
    local s = L.CosineAnnealingWarmRestarts(o, 2)
    fails(function() s:step(-1) end, "CosineAnnealingWarmRestarts.step: Expected non-negative epoch, but got -1")
    fails(function() s:step("1") end, "CosineAnnealingWarmRestarts.step: expected a number epoch (or nothing), got string")
  end)
end)

-- CyclicLR from its documentation (Smith's triangular policy): with h = step_size_up and
-- d = step_size_down, position in the cycle p = epoch mod (h + d); rising for p <= h.
local function cyclic(base, maxv, h, d, mode, gamma, e)
  local cycle = math.floor(e / (h + d)) + 1
  local p = e - (cycle - 1) * (h + d)
  local f = p <= h and p / h or 1 - (p - h) / d
  local scale = 1
  if mode == "triangular2" then scale = 0.5 ^ (cycle - 1) elseif mode == "exp_range" then scale = gamma ^ e end
  return base + (maxv - base) * f * scale, f * scale
end

describe("lr_scheduler.CyclicLR", function()
  for _, c in ipairs({ { "triangular", 4, 4 }, { "triangular2", 3, 5 }, { "exp_range", 5, 2 } }) do
    local mode, h, d = c[1], c[2], c[3]
    it(mode .. " (up " .. h .. ", down " .. d .. "): lr and the inverse momentum cycle (SGD momentum)", function()
      local o = new_sgd({ 0.5, 0.5 }, 0.5)
      local bases, maxs = { 0.01, 0.002 }, { 0.1, 0.05 }
      local s = L.CyclicLR(o, bases, maxs, { step_size_up = h, step_size_down = d, mode = mode, gamma = 0.97,
                                            base_momentum = 0.8, max_momentum = 0.95 })
      check(s, o, 40, function(i, e) return (cyclic(bases[i], maxs[i], h, d, mode, 0.97, e)) end,
            function(_, e)
              local _, fs = cyclic(0, 1, h, d, mode, 0.97, e)
              return 0.95 - (0.95 - 0.8) * fs
            end, "momentum")
      assert.are.equal(0.95, o.param_groups[1].max_momentum)
      assert.are.equal(0.8, o.param_groups[1].base_momentum)
    end)
  end

  it("cycles beta1 of Adam, sets the groups' lr to base_lr, and takes a scale_fn", function()
    local o = new_adam({ 0.3 })
    local s = L.CyclicLR(o, { base_lr = 0.001, max_lr = 0.01, step_size_up = 3, scale_fn = function(x) return 1 / x end,
                             scale_mode = "cycle" })
    check(s, o, 20, function(_, e)
      local cyc = math.floor(e / 6) + 1
      local lr = cyclic(0.001, 0.01, 3, 3, "triangular", 1, e)
      return 0.001 + (lr - 0.001) / cyc
    end, function(_, e)
      local cyc = math.floor(e / 6) + 1
      local _, f = cyclic(0, 1, 3, 3, "triangular", 1, e)
      return 0.9 - (0.9 - 0.8) * f / cyc
    end, "betas")
    o = new_sgd({ 0.3 })
    s = L.CyclicLR(o, 0.001, 0.01, { step_size_up = 2, scale_fn = function(x) return 0.9 ^ x end, scale_mode = "iterations",
                                     cycle_momentum = false })
    check(s, o, 12, function(_, e)
      local _, f = cyclic(0, 1, 2, 2, "triangular", 1, e)
      return 0.001 + 0.009 * f * 0.9 ^ e
    end)
    assert.are.equal(0, o.param_groups[1].momentum)
  end)

  it("round-trips its state dict", function()
    check_round_trip({ opt = function() return new_sgd({ 0.1 }, 0.9) end,
                       sched = function(o) return L.CyclicLR(o, 0.01, 0.1, 3, 2, "triangular2") end }, 7, 9)
  end)

  it("rejects bad arguments", function()
    local o = new_sgd({ 0.1, 0.2 }, 0.9)
    fails(function() L.CyclicLR(o, { max_lr = 0.1 }) end, "CyclicLR: missing base_lr")
    fails(function() L.CyclicLR(o, 0.01) end, "CyclicLR: missing max_lr")
    fails(function() L.CyclicLR(o, { 0.01 }, 0.1) end,
          "CyclicLR: base_lr must have the same length as optimizer.param_groups. base_lr has 1 values, param_groups has 2.")
    fails(function() L.CyclicLR(o, 0.01, 0.1, { mode = "sine" }) end, "CyclicLR: mode is invalid and scale_fn is None")
    fails(function() L.CyclicLR(o, 0.01, 0.1, { step_size_up = 0 }) end, "CyclicLR: step_size_up must be a positive number, got 0")
    fails(function() L.CyclicLR(o, 0.01, 0.1, { scale_fn = 3 }) end, "CyclicLR: scale_fn must be a function, got number")
    fails(function() L.CyclicLR(o, 0.01, 0.1, { scale_fn = math.sqrt, scale_mode = "epoch" }) end,
          "CyclicLR: scale_mode must be \"cycle\" or \"iterations\", got epoch")
    fails(function() L.CyclicLR(o, 0.01, 0.1, { step_size = 3 }) end, "CyclicLR: unexpected option 'step_size'")
    fails(function() L.CyclicLR(o, 0.01, "high") end, "CyclicLR: max_lr must be a number, got high")
    local fake = { param_groups = { { lr = 0.1 } }, defaults = { lr = 0.1 } }
    fails(function() L.CyclicLR(fake, 0.01, 0.1) end,
          "CyclicLR: optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
    assert.is_truthy(L.CyclicLR(fake, 0.01, 0.1, { cycle_momentum = false }))
  end)
end)

-- OneCycleLR from its documentation: cosine (or linear) annealing from initial_lr = max_lr /
-- div_factor up to max_lr over the first pct_start * total_steps - 1 steps, then down to
-- initial_lr / final_div_factor at step total_steps - 1; momentum the other way.
local function anneal(kind, a, b, pct)
  if kind == "cos" then return b + (a - b) * (1 + math.cos(math.pi * pct)) / 2 end
  return a + (b - a) * pct
end

local function onecycle(kind, maxv, n, pct, div, fdiv, three, e, lo_m, hi_m)
  local init, minv = maxv / div, maxv / div / fdiv
  local p1 = pct * n - 1
  if three then
    local p2 = 2 * pct * n - 2
    if e <= p1 then return anneal(kind, init, maxv, e / p1), anneal(kind, hi_m, lo_m, e / p1) end
    if e <= p2 then return anneal(kind, maxv, init, (e - p1) / (p2 - p1)), anneal(kind, lo_m, hi_m, (e - p1) / (p2 - p1)) end
    return anneal(kind, init, minv, (e - p2) / (n - 1 - p2)), hi_m
  end
  if e <= p1 then return anneal(kind, init, maxv, e / p1), anneal(kind, hi_m, lo_m, e / p1) end
  return anneal(kind, maxv, minv, (e - p1) / (n - 1 - p1)), anneal(kind, lo_m, hi_m, (e - p1) / (n - 1 - p1))
end

describe("lr_scheduler.OneCycleLR", function()
  for _, c in ipairs({ { "cos", false }, { "linear", false }, { "cos", true }, { "linear", true } }) do
    local kind, three = c[1], c[2]
    it(("%s annealing%s: lr and beta1 of Adam over total_steps"):format(kind, three and ", three phases" or ""), function()
      local o = new_adam({ 0.5, 0.5 })
      local maxs = { 0.1, 0.04 }
      local n = 20
      local s = L.OneCycleLR(o, maxs, { total_steps = n, anneal_strategy = kind, three_phase = three, pct_start = 0.25 })
      check(s, o, n - 1, function(i, e) return (onecycle(kind, maxs[i], n, 0.25, 25, 1e4, three, e, 0.85, 0.95)) end,
            function(i, e) return select(2, onecycle(kind, maxs[i], n, 0.25, 25, 1e4, three, e, 0.85, 0.95)) end, "betas")
      -- the documented end points
      assert.is_true(close(o.param_groups[1].lr, 0.1 / 25 / 1e4))
      assert.are.equal(0.1 / 25, o.param_groups[1].initial_lr)
      assert.are.equal(0.1, o.param_groups[1].max_lr)
    end)
  end

  it("reaches max_lr at step pct_start * total_steps - 1 and takes epochs * steps_per_epoch (SGD momentum)", function()
    local o = new_sgd({ 0.5 }, 0.9)
    local s = L.OneCycleLR(o, 0.2, { epochs = 4, steps_per_epoch = 5, div_factor = 10, final_div_factor = 100,
                                     base_momentum = 0.7, max_momentum = 0.9 })
    assert.are.equal(20, s.total_steps)
    assert.is_true(close(s:get_last_lr()[1], 0.02)) -- cos annealing at pct 0 rounds (as PyTorch's)
    assert.are.equal(0.9, o.param_groups[1].momentum)
    for _ = 1, 5 do s:step() end -- 0.3 * 20 - 1 = 5
    assert.is_true(close(s:get_last_lr()[1], 0.2))
    assert.is_true(close(o.param_groups[1].momentum, 0.7))
    check_round_trip({ opt = function() return new_sgd({ 0.5 }, 0.9) end,
                       sched = function(opt) return L.OneCycleLR(opt, 0.2, 20) end }, 8, 12)
  end)

  it("raises past total_steps (PyTorch allows total_steps steps after construction)", function()
    local o = new_sgd({ 0.5 }, 0.9)
    local s = L.OneCycleLR(o, 0.1, 6)
    for _ = 1, 6 do s:step() end
    fails(function() s:step() end, "OneCycleLR.step: Tried to step 7 times. The specified number of total steps is 6")
    assert.are.equal(6, s.last_epoch)
  end)

  it("rejects bad arguments with PyTorch's messages", function()
    local o = new_sgd({ 0.5 }, 0.9)
    fails(function() L.OneCycleLR(o, 0.1) end, "OneCycleLR: You must define either total_steps OR (epochs AND steps_per_epoch)")
    fails(function() L.OneCycleLR(o, 0.1, 0) end, "OneCycleLR: Expected positive integer total_steps, but got 0")
    fails(function() L.OneCycleLR(o, 0.1, { epochs = 2.5, steps_per_epoch = 3 }) end, "Expected positive integer epochs, but got 2.5")
    fails(function() L.OneCycleLR(o, 0.1, { epochs = 2, steps_per_epoch = -3 }) end, "Expected positive integer steps_per_epoch, but got -3")
    fails(function() L.OneCycleLR(o, 0.1, { total_steps = 10, pct_start = 1.5 }) end,
          "Expected float between 0 and 1 pct_start, but got 1.5")
    fails(function() L.OneCycleLR(o, 0.1, { total_steps = 10, anneal_strategy = "exp" }) end,
          "anneal_strategy must be one of 'cos' or 'linear', instead got exp")
    fails(function() L.OneCycleLR(o, { 0.1, 0.2 }, 10) end, "OneCycleLR: max_lr must have the same length as optimizer.param_groups")
    fails(function() L.OneCycleLR(o, { total_steps = 10 }) end, "OneCycleLR: missing max_lr")
    fails(function() L.OneCycleLR(o, 0.1, { total_step = 10 }) end, "OneCycleLR: unexpected option 'total_step'")
    fails(function() L.OneCycleLR(o, 0.1, { total_steps = 10 }, 3) end, "OneCycleLR: an options table must be the last argument")
    fails(function() L.OneCycleLR(o, 0.1, 10, { total_steps = 10 }) end, "got option 'total_steps' both positionally and in the options table")
    fails(function() L.OneCycleLR(new_sgd({ 0.5 }), 0.1, { total_steps = 10, last_epoch = 3 }) end,
          "param 'initial_lr' is not specified in param_groups[0] when resuming an optimizer")
  end)
end)

describe("lr_scheduler.ReduceLROnPlateau", function()
  local function run(opts, metrics, lrs)
    local o = new_sgd(lrs or { 1.0 })
    local s = L.ReduceLROnPlateau(o, opts)
    local out = {}
    for i, m in ipairs(metrics) do
      s:step(m)
      out[i] = s:get_last_lr()
    end
    return out, s, o
  end

  local function firsts(out)
    local r = {}
    for i, v in ipairs(out) do r[i] = v[1] end
    return r
  end

  it("min mode, rel threshold: reduces after more than patience bad epochs", function()
    -- epoch 1 sets best 10; 9 is better; three non-improvements > patience 2 -> lr * 0.5
    local out = run({ patience = 2, factor = 0.5 }, { 10, 9, 9, 9, 9, 8.9995, 8, 8, 8, 8 })
    -- 8.9995 < 9 * (1 - 1e-4) = 8.9991? no: a bad epoch; 8 is better
    assert.are.same({ 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25 }, firsts(out))
  end)

  it("cooldown ignores bad epochs; max mode with abs threshold; min_lr per group; eps", function()
    local out = run({ patience = 0, factor = 0.5, cooldown = 2 }, { 5, 6, 6, 6, 6, 6 })
    -- bad at 2 -> reduce, cooldown 2 (epochs 3, 4 ignored), bad at 5 -> reduce
    assert.are.same({ 1, 0.5, 0.5, 0.5, 0.25, 0.25 }, firsts(out))
    out = run({ mode = "max", threshold_mode = "abs", threshold = 0.5, patience = 1, factor = 0.1 }, { 1, 1.4, 1.6, 2.2, 2.3, 2.4 })
    -- 1.4 not > 1 + 0.5 (bad 1), 1.6 better, 2.2 better, 2.3 bad 1, 2.4 bad 2 -> reduce
    assert.are.same({ 1, 1, 1, 1, 1, 0.1 }, firsts(out))
    local o
    out, _, o = run({ patience = 0, factor = 0.1, min_lr = { 0.05, 0.5 } }, { 1, 2, 3, 4 }, { 1.0, 1.0 })
    assert.are.same({ 0.1, 0.5 }, out[2])
    assert.are.same({ 0.05, 0.5 }, out[3])
    assert.are.same({ 0.05, 0.5 }, { o.param_groups[1].lr, o.param_groups[2].lr })
    -- a change smaller than eps is not made
    out = run({ patience = 0, factor = 0.5, eps = 0.3 }, { 1, 2, 3, 4 })
    assert.are.same({ 1, 0.5, 0.5, 0.5 }, firsts(out))
    -- max mode, rel threshold: must beat best * (1 + threshold)
    out = run({ mode = "max", threshold = 0.1, patience = 0, factor = 0.5 }, { 1, 1.05, 1.2 })
    assert.are.same({ 1, 0.5, 0.5 }, firsts(out))
  end)

  it("takes a one-element Tensor metric, counts epochs, and has PyTorch's defaults", function()
    local o = new_sgd({ 0.1 })
    local s = L.ReduceLROnPlateau(o)
    assert.are.equal("min", s.mode)
    assert.are.equal(0.1, s.factor)
    assert.are.equal(10, s.patience)
    assert.are.equal(1e-4, s.threshold)
    assert.are.equal("rel", s.threshold_mode)
    assert.are.equal(0, s.cooldown)
    assert.are.equal(1e-8, s.eps)
    assert.are.equal(0, s.last_epoch)
    s:step(torch.tensor({ 2.5 }))
    assert.are.equal(2.5, s.best)
    assert.are.equal(1, s.last_epoch)
    s = L.ReduceLROnPlateau(o, "max", 0.5, 3)
    assert.are.equal("max", s.mode)
    assert.are.equal(-math.huge, s.best)
    assert.are.equal(3, s.patience)
  end)

  it("round-trips its state dict (best, bad epochs, cooldown)", function()
    local metrics = { 5, 4, 4, 4, 3, 3, 3, 3, 3, 2, 2, 2, 2 }
    check_round_trip({ opt = function() return new_sgd({ 0.1 }) end,
                       sched = function(o) return L.ReduceLROnPlateau(o, { patience = 1, cooldown = 1, factor = 0.5 }) end },
                     4, 9, function(i) return metrics[i] end)
  end)

  it("rejects bad arguments with PyTorch's messages", function()
    local o = new_sgd({ 0.1, 0.2 })
    fails(function() L.ReduceLROnPlateau(o, { factor = 1.0 }) end, "ReduceLROnPlateau: Factor should be < 1.0.")
    fails(function() L.ReduceLROnPlateau(o, { mode = "mean" }) end, "ReduceLROnPlateau: mode mean is unknown!")
    fails(function() L.ReduceLROnPlateau(o, { threshold_mode = "pct" }) end, "ReduceLROnPlateau: threshold mode pct is unknown!")
    fails(function() L.ReduceLROnPlateau(o, { min_lr = { 0.1 } }) end, "ReduceLROnPlateau: expected 2 min_lrs, got 1")
    fails(function() L.ReduceLROnPlateau(o, { patience = "ten" }) end, "ReduceLROnPlateau: patience must be a number, got ten")
    fails(function() L.ReduceLROnPlateau(o, { verbose = true }) end, "ReduceLROnPlateau: unexpected option 'verbose'")
    fails(function() L.ReduceLROnPlateau(42) end, "ReduceLROnPlateau: expected an optimizer")
    local s = L.ReduceLROnPlateau(o)
    fails(function() s:step() end, "ReduceLROnPlateau.step: expected a number or a one-element Tensor (the metric), got nil")
    fails(function() s:step(torch.ones(2)) end, "ReduceLROnPlateau.step: expected a number or a one-element Tensor")
    fails(function() s:get_lr() end, "ReduceLROnPlateau: get_lr is not defined")
    local sd = s:state_dict()
    sd.mode = "up"
    fails(function() s:load_state_dict(sd) end, "ReduceLROnPlateau: mode up is unknown!")
    -- a group added after construction with per-group min_lrs: PyTorch's RuntimeError
    local s2 = L.ReduceLROnPlateau(o, { min_lr = { 0, 0 }, patience = 0 })
    o:add_param_group({ params = { torch.zeros(1):requires_grad_(true) }, lr = 0.3 })
    s2:step(1)
    fails(function() s2:step(2) end, "The number of param groups in the `optimizer` (3) differs from when `ReduceLROnPlateau` was initialized (2)")
    -- with one min_lr it extends to the new group
    local o3 = new_sgd({ 0.1 })
    local s3 = L.ReduceLROnPlateau(o3, { patience = 0, factor = 0.5 })
    o3:add_param_group({ params = { torch.zeros(1):requires_grad_(true) }, lr = 0.4 })
    s3:step(1)
    s3:step(2)
    assert.are.same({ 0.05, 0.2 }, s3:get_last_lr())
  end)
end)

-- Constructor errors name the caller's line (this file), not a line of the library.
describe("scheduler and Adam constructor errors", function()
  it("point at the caller", function()
    local o = new_sgd({ 0.1 })
    local cases = {
      function() L.StepLR(nil, 2) end,                          -- the base class's optimizer check
      function() L.StepLR(new_sgd({ 0.1 }), 2, 0.5, 4) end,     -- resuming without initial_lr
      function() L.PolynomialLR(nil, 2) end,
      function() L.PolynomialLR(o, { power = "x" }) end,
      function() L.CyclicLR(o, { 0.1, 0.2 }, 0.3) end,
      function() L.OneCycleLR(o, 0.1, { total_steps = 10, bad = 1 }) end,
      function() L.OneCycleLR(o, "x", 10) end,
      function() L.CosineAnnealingWarmRestarts(o, 0) end,
      function() L.ReduceLROnPlateau(o, { eps = "x" }) end,
      function() L.ReduceLROnPlateau(o, { mode = "x" }) end,
      function() optim.Adam({ torch.zeros(1):requires_grad_(true) }, { lr = -1 }) end,
      function() optim.Adam({ torch.zeros(1):requires_grad_(true) }, { decoupled_weight_decay = 1 }) end,
    }
    for i, f in ipairs(cases) do
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("optim_adam_schedulers_spec.lua:", 1, true), ("case %d: %s"):format(i, tostring(err)))
    end
  end)
end)
