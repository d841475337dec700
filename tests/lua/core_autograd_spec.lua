-- core_autograd_spec.lua: the autograd contract seen from Lua: accumulation across backwards, no_grad (and
-- errors escaping it), detach, requires_grad_, retain_graph and the "second time" error, the version check
-- on saved tensors, non-scalar backward, .grad of non-leaves, custom Functions (gradcheck, and their
-- contexts freed with the graph), and no tensor leaks after forward/backward.
local torch = require("ramtorch")
local testing = require("ramtorch.testing")

local function f64(t, rg) return torch.tensor(t, { dtype = torch.float64, requires_grad = rg }) end

local function full_gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

describe("autograd", function()
  it("accumulates gradients across two backwards", function()
    local x = f64({ 1, 2, 3 }, true)
    ;(x * x):sum():backward()
    assert.are.same({ 2, 4, 6 }, x.grad:totable())
    ;(x * 3):sum():backward()
    assert.are.same({ 5, 7, 9 }, x.grad:totable())
    x.grad = nil
    assert.is_nil(x.grad)
    x:sum():backward()
    assert.are.same({ 1, 1, 1 }, x.grad:totable())
  end)

  it("accumulates a gradient used twice in one graph", function()
    local x = f64({ 2 }, true)
    local y = x * x + x:exp() + x
    y:sum():backward()
    assert.is_true(math.abs(x.grad:item() - (4 + math.exp(2) + 1)) < 1e-12)
  end)

  it("records nothing under no_grad and restores the mode, also when the body fails", function()
    local x = f64({ 1, 2 }, true)
    local y = torch.no_grad(function() return x * 2 end)
    assert.is_false(y.requires_grad)
    assert.is_nil(y.grad_fn)
    assert.is_true(torch.is_grad_enabled())
    local a, b = torch.no_grad(function(p, q) return p + q, p * q end, 2, 5)
    assert.are.equal(7, a)
    assert.are.equal(10, b)
    local ok, err = pcall(torch.no_grad, function()
      assert.is_false(torch.is_grad_enabled())
      return x + torch.zeros(3, { dtype = torch.float64 })
    end)
    assert.is_false(ok)
    assert.matches("add: shapes %[2%] and %[3%] cannot be broadcast", err)
    assert.is_nil(err:find("core_autograd_spec.lua:%d+:.*core_autograd_spec.lua:%d+:")) -- one position, not two
    assert.is_true(torch.is_grad_enabled())
    ok, err = pcall(torch.no_grad, function() error("boom") end)
    assert.matches("boom", err)
    assert.is_true(torch.is_grad_enabled())
    -- nested scopes
    torch.no_grad(function()
      torch.enable_grad(function()
        assert.is_true(torch.is_grad_enabled())
        assert.is_not_nil((x * 2).grad_fn)
      end)
      assert.is_false(torch.is_grad_enabled())
    end)
  end)

  it("detach shares storage and has no grad", function()
    local x = f64({ 1, 2 }, true)
    local y = x * 2
    local d = y:detach()
    assert.is_false(d.requires_grad)
    assert.is_nil(d.grad_fn)
    assert.is_true(d.is_leaf)
    assert.are.equal(y:data_ptr(), d:data_ptr())
    d:fill_(7)
    assert.are.same({ 7, 7 }, y:totable())
    assert.are.same({ 1, 2 }, x.data:totable())
  end)

  it("requires_grad_ only on floating-point tensors, and not off on non-leaves", function()
    local ok, err = pcall(function() torch.tensor({ 1, 2 }):requires_grad_() end)
    assert.is_false(ok)
    assert.matches("requires_grad_: only floating%-point tensors can require grad, got int64", err)
    ok, err = pcall(function() torch.ones(2, { dtype = torch.bool }).requires_grad = true end)
    assert.matches("got bool", err)
    local x = torch.ones(2):requires_grad_()
    assert.is_true(x.requires_grad)
    local y = x * 2
    ok, err = pcall(function() y:requires_grad_(false) end)
    assert.matches("cannot turn off requires_grad of a non%-leaf tensor", err)
    x:requires_grad_(false)
    assert.is_false(x.requires_grad)
  end)

  it("retain_graph allows a second backward; without it the error says 'second time'", function()
    local x = f64({ 1, 2 }, true)
    local y = (x:exp() * x):sum()
    y:backward({ retain_graph = true })
    local g1 = x.grad:totable()
    y:backward()
    assert.is_true(math.abs(x.grad:totable()[2] - 2 * g1[2]) < 1e-12)
    local ok, err = pcall(function() y:backward() end)
    assert.is_false(ok)
    assert.matches("second time", err)
    assert.matches("retain_graph", err)
  end)

  it("detects in-place modification of a saved tensor", function()
    local x = f64({ 1, 2 }, true)
    local h = x * 1
    local y = (h:exp()):sum() -- exp saves h
    torch.no_grad(function() h:add_(1) end)
    local ok, err = pcall(function() y:backward() end)
    assert.is_false(ok)
    assert.matches("modified in place", err)
    assert.matches("ExpBackward", err)
    -- a leaf that requires grad may not be modified in place with grad on
    ok, err = pcall(function() x:add_(1) end)
    assert.matches("add_: a leaf tensor that requires grad is being used in an in%-place operation", err)
  end)

  it("backward of a non-scalar needs a gradient", function()
    local x = f64({ 1, 2 }, true)
    local y = x * 3
    local ok, err = pcall(function() y:backward() end)
    assert.is_false(ok)
    assert.matches("grad can be implicitly created only for scalar outputs, got shape %[2%]", err)
    y:backward(f64({ 1, 10 }))
    assert.are.same({ 3, 30 }, x.grad:totable())
    ok, err = pcall(function() y:backward(f64({ 1, 2, 3 })) end)
    assert.matches("gradient of shape %[3%] for an output of shape %[2%]", err)
    ok, err = pcall(function() torch.ones(2):sum():backward() end)
    assert.matches("does not require grad", err)
  end)

  it("leaves get .grad, non-leaves do not", function()
    local x = f64({ 1, 2 }, true)
    local h = x * 2
    assert.is_false(h.is_leaf)
    assert.is_true(x.is_leaf)
    h:sum():backward()
    assert.is_nil(h.grad)
    assert.are.same({ 2, 2 }, x.grad:totable())
  end)

  it("does not record through integer results and comparisons", function()
    local x = f64({ 1.5, -2 }, true)
    assert.is_false(x:gt(0).requires_grad)
    assert.is_false(x:to(torch.int64).requires_grad)
  end)
end)

describe("custom autograd functions", function()
  local Cube = torch.autograd.Function({
    forward = function(ctx, x, k)
      ctx:save_for_backward(x)
      ctx.k = k
      return x ^ 3 * k
    end,
    backward = function(ctx, g)
      local x = ctx.saved_tensors[1]
      return g * x * x * (3 * ctx.k), nil
    end,
  })

  it("runs forward without recording and backward through the Lua function", function()
    local x = f64({ 1, 2 }, true)
    local y = Cube(x, 2)
    assert.are.same({ 2, 16 }, y:totable())
    assert.are.equal("CustomFunctionBackward", y.grad_fn)
    y:sum():backward()
    assert.are.same({ 6, 24 }, x.grad:totable())
  end)

  it("passes gradcheck, also inside a larger graph", function()
    torch.manual_seed(5)
    local x = torch.randn(3, 2, { dtype = torch.float64, requires_grad = true })
    testing.gradcheck(function(a) return Cube:apply(a, 1.5) end, { x })
    testing.gradcheck(function(a) return (Cube(a:tanh(), 0.5) * a):exp() end, { x })
  end)

  it("frees its Lua contexts when the graph dies", function()
    full_gc()
    local base = torch.autograd.live_custom_contexts()
    do
      local x = f64({ 1, 2 }, true)
      for _ = 1, 10 do
        local y = Cube(x, 1)
        y:sum():backward()
      end
      local keep = Cube(x, 1) -- graph alive: context alive
      assert.is_true(torch.autograd.live_custom_contexts() > base)
      keep = nil
    end
    full_gc()
    assert.are.equal(base, torch.autograd.live_custom_contexts())
  end)

  it("reports errors from the Lua backward and rejects bad gradients", function()
    local Bad = torch.autograd.Function({
      forward = function(ctx, x) return x * 1 end,
      backward = function(ctx, g) return "nope" end,
    })
    local x = f64({ 1 }, true)
    local ok, err = pcall(function() Bad(x):sum():backward() end)
    assert.is_false(ok)
    assert.matches("backward of a custom Function returned string for input 1", err)
    local Boom = torch.autograd.Function({
      forward = function(ctx, x) return x * 1 end,
      backward = function(ctx, g) error("boom in backward") end,
    })
    ok, err = pcall(function() Boom(x):sum():backward() end)
    assert.matches("boom in backward", err)
    assert.is_true(torch.is_grad_enabled())
    ok, err = pcall(torch.autograd.Function, { forward = function() end })
    assert.matches("expected a table with forward", err)
  end)
end)

describe("no leaks", function()
  it("returns rt_live_tensors to its start value after forward/backward", function()
    full_gc()
    local start = torch.live_tensors()
    do
      local w = torch.randn(8, 4, { dtype = torch.float64, requires_grad = true })
      local b = torch.zeros(4, { dtype = torch.float64, requires_grad = true })
      for _ = 1, 3 do
        local x = torch.randn(5, 8, { dtype = torch.float64 })
        local y = (x:matmul(w) + b):tanh():sum(1):mean()
        y:backward()
      end
      local x = torch.randn(5, 8, { dtype = torch.float64 })
      local y = (x:matmul(w):relu() * 2):narrow(0, 1, 2):reshape(-1):max()
      y:backward({ retain_graph = true })
      assert.is_true(torch.live_tensors() > start)
    end
    full_gc()
    assert.are.equal(start, torch.live_tensors())
  end)
end)

describe("saved tensors", function()
  -- add, sub, sum and mean need only their inputs' shapes in the backward: the graph must not keep the
  -- inputs' memory alive (only the output itself remains live here), and gradients must be unchanged.
  it("are not kept for ops whose backward needs only shapes", function()
    local x = torch.randn({ 64, 64 }, { requires_grad = true, dtype = torch.float64 })
    collectgarbage()
    collectgarbage()
    local base = torch.live_tensors()
    local y = ((x * 2 + 1) - 3):sum()
    collectgarbage()
    collectgarbage()
    assert.are.equal(1, torch.live_tensors() - base)
    y:backward()
    assert.are.same(torch.full({ 64, 64 }, 2, { dtype = torch.float64 }):totable(), x.grad:totable())
    local m = torch.randn({ 8, 5 }, { requires_grad = true, dtype = torch.float64 })
    require("ramtorch.testing").gradcheck(function(a) return (a + 1):mean(1) - 2 end, { m })
  end)

  -- relu's backward needs only where its output is positive: the graph keeps the output (which the
  -- next layer keeps anyway), not the input, so a Linear + ReLU stack holds one activation per layer.
  it("keep relu's output, not its input", function()
    local C = require("ramtorch.ffi").C
    local x = torch.randn({ 256, 256 }, { requires_grad = true })
    collectgarbage()
    collectgarbage()
    local base = tonumber(C.rt_live_storage_bytes())
    local y = (x * 2):relu()
    collectgarbage()
    collectgarbage()
    assert.are.equal(256 * 256 * 4, tonumber(C.rt_live_storage_bytes()) - base) -- y's storage only
    y:sum():backward()
    local want = torch.where(x:detach():gt(0), torch.full({ 256, 256 }, 2.0), torch.zeros({ 256, 256 }))
    assert.are.same(want:totable(), x.grad:totable())
    -- modifying the output in place before the backward is caught (it is what the backward reads)
    local z = (x * 1):relu()
    torch.no_grad(function() z:mul_(3) end) -- in grad mode mul_ itself refuses (not recorded)
    local ok, err = pcall(function() z:sum():backward() end)
    assert.is_false(ok)
    assert.matches("modified in place", tostring(err))
    local m = torch.randn({ 7, 5 }, { requires_grad = true, dtype = torch.float64 })
    require("ramtorch.testing").gradcheck(function(a) return (a * 3 + 0.5):relu() end, { m })
  end)
end)
