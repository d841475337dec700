-- autograd_semantics_regress_spec.lua: places where the autograd engine gave a silently wrong gradient
-- (or none) where PyTorch 2.x raises: in-place fills, copies and random draws into an op's output,
-- copy_ from a tensor that requires grad, custom Functions returning too few gradients or gradients of
-- the wrong shape, and custom Functions reading saved tensors that were changed in place or freed.
local torch = require("ramtorch")
local autograd = require("ramtorch.autograd")

local function f32(t, rg) return torch.tensor(t, { dtype = torch.float32, requires_grad = rg }) end

local function raises(pattern, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.truthy(tostring(err):find(pattern), tostring(err))
end

describe("in-place writes that autograd does not record", function()
  it("refuses fill_/zero_ on an op's output in grad mode (PyTorch: the gradient through it is 0)", function()
    local x = f32({ 1, 1, 1 }, true)
    local y = x * 2
    raises("fill_: in%-place operations on a tensor that requires grad %(from MulBackward%)", function() y:fill_(1) end)
    raises("fill_: in%-place operations", function() y:zero_() end)
    -- the refused write left the graph as it was
    y:sum():backward()
    assert.are.same({ 2, 2, 2 }, x.grad:totable())
  end)

  it("refuses copy_, uniform_, normal_ and index_add_ into an op's output or a view of a leaf", function()
    local x = f32({ 1, 1, 1 }, true)
    local y = x * 2
    raises("copy_: in%-place operations on a tensor that requires grad", function() y:copy_(torch.ones(3)) end)
    raises("uniform_: in%-place operations", function() y:uniform_() end)
    raises("normal_: in%-place operations", function() y:normal_() end)
    raises("index_add_: in%-place operations", function()
      y:index_add_(0, torch.tensor({ 0 }), torch.ones(1))
    end)
    raises("fill_: in%-place operations", function() x:narrow(0, 0, 2):fill_(0) end)
    -- under no_grad they run (and the version check guards saved tensors)
    torch.no_grad(function() y:fill_(5) end)
    assert.are.same({ 5, 5, 5 }, y:totable())
  end)

  it("refuses copy_ from a tensor that requires grad in grad mode (its gradient would be lost)", function()
    local w = f32({ 1, 2, 3 }, true)
    local buf = torch.zeros(3)
    raises("copy_: the source requires grad", function() buf:copy_(w * 3) end)
    torch.no_grad(function() buf:copy_(w) end)
    assert.are.same({ 1, 2, 3 }, buf:totable())
    buf:copy_(w:detach())
    assert.are.same({ 1, 2, 3 }, buf:totable())
  end)
end)

describe("custom Function backward results", function()
  it("refuses fewer gradients than inputs when a missing one requires grad", function()
    local Bad = autograd.Function({
      forward = function(_, x, w) return x * w end,
      backward = function(_, g) return g end,
    })
    local x, w = f32({ 1, 1 }, true), f32({ 1, 1 }, true)
    raises("backward of a custom Function returned 1 gradient%(s%) for 2 input%(s%)", function()
      Bad(x, w):sum():backward()
    end)
    -- a non-tensor (or no-grad) trailing input may be left out, as Lua drops trailing nils
    local Scale = autograd.Function({
      forward = function(_, x, k) return x * k end,
      backward = function(_, g) return g * 3 end,
    })
    local z = f32({ 1, 1 }, true)
    Scale(z, 3):sum():backward()
    assert.are.same({ 3, 3 }, z.grad:totable())
  end)

  it("refuses extra non-nil gradients", function()
    local Many = autograd.Function({
      forward = function(_, x) return x * 1 end,
      backward = function(_, g) return g, g end,
    })
    raises("backward of a custom Function returned 2 gradient%(s%) for 1 input", function()
      Many(f32({ 1 }, true)):sum():backward()
    end)
  end)

  it("refuses a gradient whose shape is not its input's, also when the input is an op's output", function()
    local Wide = autograd.Function({
      forward = function(_, x) return x * 1 end,
      backward = function(_, g) return torch.ones(2, 3) end,
    })
    local x = f32({ 1, 1, 1 }, true)
    -- AddBackward would sum the [2, 3] gradient down to [3]: 2s instead of an error
    raises("CustomFunctionBackward returned a gradient of shape %[2, 3%] for input 0 of shape %[3%]", function()
      Wide(x + torch.zeros(3)):sum():backward()
    end)
    assert.is_nil(x.grad)
  end)
end)

describe("custom Function saved tensors", function()
  local Sq = autograd.Function({
    forward = function(ctx, x)
      ctx:save_for_backward(x)
      return x * x
    end,
    backward = function(ctx, g)
      local x = table.unpack and table.unpack(ctx.saved_tensors) or unpack(ctx.saved_tensors)
      return g * 2 * x
    end,
  })

  it("raises when a saved tensor was modified in place after it was saved", function()
    local x = f32({ 3, 3 }, true)
    local y = Sq(x):sum()
    torch.no_grad(function() x:mul_(10) end)
    raises("saved_tensors: a tensor saved by a custom Function was modified in place", function() y:backward() end)
  end)

  it("raises on a second backward without retain_graph, accumulates with it", function()
    local x = f32({ 3, 3 }, true)
    local y = Sq(x)
    y:sum():backward()
    assert.are.same({ 6, 6 }, x.grad:totable())
    raises("a second time", function() y:sum():backward() end)
    local x2 = f32({ 3, 3 }, true)
    local y2 = Sq(x2)
    y2:sum():backward({ retain_graph = true })
    y2:sum():backward()
    assert.are.same({ 12, 12 }, x2.grad:totable())
  end)
end)
