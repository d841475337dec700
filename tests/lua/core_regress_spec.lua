-- core_regress_spec.lua: regression specs for review findings in the core (autograd on in-place
-- writes, clip_grad_norm_ with non-finite gradients), each failing on the code before its fix.
local torch = require("ramtorch")

local f64 = { dtype = torch.float64 }

describe("in-place ops in grad mode", function()
  -- not recorded by autograd: on an op's output the backward used the wrong derivative
  -- (x * 2 then mul_(3) gave x.grad = 2 where PyTorch gives 6)
  it("refuse a tensor with a grad_fn instead of returning a wrong gradient", function()
    local x = torch.tensor({ 1, 2, 3 }, f64)
    x.requires_grad = true
    local y = x * 2
    local ok, err = pcall(function() y:mul_(3) end)
    assert.is_false(ok)
    assert.matches("mul_: in%-place operations on a tensor that requires grad %(from MulBackward%)", tostring(err))
    y:sum():backward() -- y is untouched, so the gradient is the out-of-place one
    assert.are.same({ 2, 2, 2 }, x.grad:totable())
  end)

  -- a view of a leaf that requires grad wrote through to the leaf with no trace in the graph
  it("refuse a view of a leaf that requires grad", function()
    local w = torch.tensor({ 1, 2, 3 }, f64)
    w.requires_grad = true
    local v = w:narrow(0, 0, 2)
    local ok, err = pcall(function() v:add_(1) end)
    assert.is_false(ok)
    assert.matches("add_: in%-place operations on a tensor that requires grad %(from SliceBackward%)", tostring(err))
    assert.are.same({ 1, 2, 3 }, w:detach():totable())
  end)

  it("still run under no_grad (and are then caught by the saved-tensor version check)", function()
    local x = torch.tensor({ -1, 2, 3 }, f64)
    x.requires_grad = true
    local y = (x * 1):relu()
    torch.no_grad(function() y:mul_(2) end)
    assert.are.same({ 0, 4, 6 }, y:detach():totable())
    local ok, err = pcall(function() y:sum():backward() end)
    assert.is_false(ok)
    assert.matches("modified in place", tostring(err))
  end)
end)

describe("clip_grad_norm_ with non-finite gradients", function()
  local function params()
    local p = torch.tensor({ 1, 2 }, { dtype = torch.float32, requires_grad = true })
    local q = torch.tensor({ 1, 2 }, { dtype = torch.float32, requires_grad = true })
    p.grad = torch.tensor({ 0 / 0, 1 }, { dtype = torch.float32 })
    q.grad = torch.tensor({ 3, 4 }, { dtype = torch.float32 })
    return p, q
  end

  -- math.max(nan, 4) is 4 in LuaJIT: the NaN of an earlier gradient was dropped, so the inf norm
  -- came out finite (4), error_if_nonfinite did not raise and the gradients were clipped by it
  it("the inf norm is NaN when any gradient holds a NaN, and error_if_nonfinite raises", function()
    local p, q = params()
    local ok, err = pcall(torch.nn.utils.clip_grad_norm_, { p, q }, 1.0, math.huge, true)
    assert.is_false(ok)
    assert.matches("total norm of order inf for gradients is non%-finite", tostring(err))
    local total = torch.nn.utils.clip_grad_norm_({ p, q }, 1.0, math.huge)
    assert.is_true(total:item() ~= total:item())
  end)

  -- PyTorch multiplies every gradient by clamp(max_norm / (nan + 1e-6), max=1) = NaN; the
  -- finite gradients were left as they were
  it("a NaN total norm scales every gradient (to NaN), as PyTorch", function()
    local p, q = params()
    local total = torch.nn.utils.clip_grad_norm_({ p, q }, 1.0)
    assert.is_true(total:item() ~= total:item())
    for _, v in ipairs(q.grad:totable()) do assert.is_true(v ~= v) end
  end)

  it("finite norms are unchanged", function()
    local q = torch.tensor({ 1, 2 }, { dtype = torch.float32, requires_grad = true })
    q.grad = torch.tensor({ 3, 4 }, { dtype = torch.float32 })
    local total = torch.nn.utils.clip_grad_norm_({ q }, 10.0, math.huge)
    assert.are.equal(4, total:item())
    assert.are.same({ 3, 4 }, q.grad:totable())
  end)
end)
