-- optim_semantics_regress_spec.lua: places where ramtorch's optimizers, LR schedulers and GradScaler
-- differed from PyTorch 2.x, each failing on the code before its fix: MultiStepLR silently ignored an
-- options table {milestones=, gamma=} (the lr never changed) and ConstantLR / ExponentialLR / LambdaLR
-- refused one; a scheduler whose optimizer gained a param group after construction wrote lr = nil into
-- it (PyTorch's zip leaves it alone); AdamW / SGD silently ignored misspelt options (PyTorch raises on
-- an unexpected keyword); GradScaler.scale wrapped integer outputs around (PyTorch promotes them to
-- float32) and GradScaler.step before any scale() blamed unscale_; optimizer constructor errors
-- pointed at optimizer.lua instead of the caller. Expected values come from
-- PyTorch's documented formulas, computed here in plain Lua.
local torch = require("ramtorch")
local optim = require("ramtorch.optim")
local amp = require("ramtorch.amp")

local S = optim.lr_scheduler

local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return tostring(e)
end

local function sgd(lrs)
  local groups = {}
  for i, lr in ipairs(lrs) do
    groups[i] = { params = { torch.zeros({ 2 }, { dtype = torch.float64 }):requires_grad_() }, lr = lr }
  end
  return optim.SGD(groups, { lr = 0.1 })
end

-- Steps `sched` n times, checking every group's lr (and get_last_lr) against want(epoch, group).
local function follows(opt, sched, want, n)
  for e = 0, n do
    for i, g in ipairs(opt.param_groups) do
      local w = want(e, i)
      assert(math.abs(g.lr - w) <= 1e-12 * math.max(1, math.abs(w)),
             ("epoch %d group %d: lr %.17g, expected %.17g"):format(e, i, g.lr, w))
      assert.are.equal(g.lr, sched:get_last_lr()[i])
    end
    sched:step()
  end
end

describe("lr_scheduler options tables", function()
  local base = { 0.1, 0.03 }

  it("MultiStepLR takes {milestones=, gamma=} (it was a silent no-op)", function()
    local o = sgd(base)
    local s = S.MultiStepLR(o, { milestones = { 3, 7, 7 }, gamma = 0.5 })
    follows(o, s, function(e, i)
      local n = 0
      for _, m in ipairs({ 3, 7, 7 }) do if m <= e then n = n + 1 end end
      return base[i] * 0.5 ^ n
    end, 12)
  end)

  it("ConstantLR, ExponentialLR and LambdaLR take options tables too", function()
    local o = sgd(base)
    follows(o, S.ConstantLR(o, { factor = 0.5, total_iters = 3 }),
            function(e, i) return base[i] * (e >= 3 and 1 or 0.5) end, 8)
    o = sgd(base)
    follows(o, S.ExponentialLR(o, { gamma = 0.8 }), function(e, i) return base[i] * 0.8 ^ e end, 8)
    o = sgd(base)
    follows(o, S.LambdaLR(o, { lr_lambda = function(e) return 1 / (e + 1) end }),
            function(e, i) return base[i] / (e + 1) end, 8)
  end)

  it("still validates the options given in a table", function()
    assert.matches("ConstantLR: Constant multiplicative factor expected to be between 0 and 1",
                   err_of(S.ConstantLR, sgd(base), { factor = 2 }), 1, true)
    assert.matches("MultiStepLR: expected a table of milestones", err_of(S.MultiStepLR, sgd(base), 3), 1, true)
    assert.matches("ExponentialLR: expected a number gamma", err_of(S.ExponentialLR, sgd(base), {}), 1, true)
  end)
end)

describe("lr_scheduler with a param group added after it was built", function()
  it("leaves the new group's lr alone where PyTorch's zip stops (LambdaLR)", function()
    local f64 = { dtype = torch.float64 }
    local a, b = torch.ones({ 2 }, f64):requires_grad_(), torch.ones({ 2 }, f64):requires_grad_()
    local o = optim.SGD({ a }, { lr = 0.1 })
    local s = S.LambdaLR(o, function(e) return 0.5 ^ e end)
    o:add_param_group({ params = { b }, lr = 0.3 })
    s:step()
    assert.are.equal(0.05, o.param_groups[1].lr)
    assert.are.equal(0.3, o.param_groups[2].lr)
    assert.are.same({ 0.05, 0.3 }, s:get_last_lr())
    b.grad = torch.ones({ 2 }, f64)
    o:step() -- used to fail: lr was nil
    assert.are.same({ 1 - 0.3, 1 - 0.3 }, b:tolist())
  end)
end)

describe("optimizer options", function()
  local p = torch.zeros({ 2 }):requires_grad_()

  it("AdamW and SGD refuse an unknown option (PyTorch: unexpected keyword argument)", function()
    assert.matches("AdamW: unexpected option 'weight_deacy'",
                   err_of(optim.AdamW, { p }, { lr = 1e-3, weight_deacy = 0.1 }), 1, true)
    assert.matches("SGD: unexpected option 'momentun'",
                   err_of(optim.SGD, { p }, { lr = 0.1, momentun = 0.9 }), 1, true)
    assert.matches("SGD: expected an options table (or a number, the lr), got boolean",
                   err_of(optim.SGD, { p }, true), 1, true)
    assert.matches("AdamW: expected an options table (or a number, the lr), got a Tensor",
                   err_of(optim.AdamW, { p }, torch.ones({ 1 })), 1, true)
  end)

  it("constructor errors point at the caller's line, not at the class machinery", function()
    local here = "optim_semantics_regress_spec.lua:"
    assert.matches(here, err_of(function() optim.SGD({}) end), 1, true)
    assert.matches(here, err_of(function() optim.SGD({ { params = { p }, lr = -1 } }) end), 1, true)
    assert.matches(here, err_of(function() optim.AdamW({ p * 2 }) end), 1, true)
    assert.matches(here, err_of(function() optim.AdamW({ p }, { betas = { 2, 0.9 } }) end), 1, true)
  end)

  it("accept PyTorch's implementation switches (foreach, fused, ...) without effect", function()
    local o = optim.AdamW({ p }, { lr = 0.1, foreach = true, fused = false, capturable = false, differentiable = false })
    assert.are.equal(0.1, o.param_groups[1].lr)
    o = optim.SGD({ p }, { lr = 0.1, momentum = 0.9, foreach = false, fused = false, differentiable = false })
    assert.are.equal(0.9, o.param_groups[1].momentum)
  end)
end)

describe("GradScaler", function()
  it("scales integer and bool outputs into float32 as PyTorch's promotion does", function()
    local sc = amp.GradScaler()
    local u = sc:scale(torch.tensor({ 200 }, { dtype = torch.uint8 }))
    assert.are.equal(torch.float32, u.dtype)
    assert.are.same({ 200 * 65536 }, u:tolist())
    local i = sc:scale(torch.tensor({ 40000 }, { dtype = torch.int32 }))
    assert.are.equal(torch.float32, i.dtype)
    assert.are.same({ 40000 * 65536 }, i:tolist())
    local b = sc:scale(torch.tensor({ true, false }, { dtype = torch.bool }))
    assert.are.equal(torch.float32, b.dtype)
    assert.are.same({ 65536, 0 }, b:tolist())
    local d = sc:scale(torch.tensor({ 0.5 }, { dtype = torch.float64 }))
    assert.are.equal(torch.float64, d.dtype)
  end)

  it("step() before any scale() raises naming step", function()
    local p = torch.ones({ 2 }):requires_grad_()
    local o = optim.SGD({ p }, { lr = 1 })
    p.grad = torch.ones({ 2 })
    local e = err_of(function() amp.GradScaler():step(o) end)
    assert.matches("GradScaler.step: attempted step but the scale is not set", e, 1, true)
    assert.matches("optim_semantics_regress_spec", e, 1, true) -- the caller's line
    assert.are.same({ 1, 1 }, p:tolist())
  end)

  it("schedulers refuse misspelt options and options tables in a later position (they were ignored)", function()
    local e = err_of(function() return S.StepLR(sgd({ 1 }), { step_size = 2, gama = 0.5 }) end)
    assert.matches("StepLR: unexpected option 'gama' (expected gamma, last_epoch, step_size)", e, 1, true)
    e = err_of(function() return S.StepLR(sgd({ 1 }), 3, { gamma = 0.5 }) end)
    assert.matches("StepLR: expected a number gamma, got table (pass options as the only table", e, 1, true)
    e = err_of(function() return S.MultiStepLR(sgd({ 1 }), { milestone = { 2 } }) end)
    assert.matches("MultiStepLR: unexpected option 'milestone'", e, 1, true)
    e = err_of(function() return S.CosineAnnealingLR(sgd({ 1 }), { T_max = 5, eta_mn = 0.1 }) end)
    assert.matches("CosineAnnealingLR: unexpected option 'eta_mn'", e, 1, true)
    e = err_of(function() return S.LinearLR(sgd({ 1 }), "a") end)
    assert.matches("LinearLR: expected a number start_factor, got string", e, 1, true)
    e = err_of(function() return S.ConstantLR(sgd({ 1 }), { factor = 0.5, total_iter = 3 }) end)
    assert.matches("ConstantLR: unexpected option 'total_iter'", e, 1, true)
    e = err_of(function() return S.ExponentialLR(sgd({ 1 }), { gama = 0.5 }) end)
    assert.matches("ExponentialLR: unexpected option 'gama'", e, 1, true)
    -- the right spellings still work
    local o = sgd({ 1 })
    local s = S.StepLR(o, { step_size = 1, gamma = 0.5 })
    o:step()
    s:step()
    assert.are.equal(0.5, o.param_groups[1].lr)
  end)
end)

