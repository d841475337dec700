-- reduce_semantics_regress_spec.lua: reductions and numerically delicate ops against PyTorch 2.x, each
-- case failing on the code before its fix: amax/amin over a non-empty dim of a tensor that is empty
-- elsewhere give an empty result (only a reduced dim of size 0 has no identity); sum/mean take
-- PyTorch's keyword options {dim=, keepdim=, dtype=} (keepdim without dim, dtype casting first) and
-- refuse unknown keys instead of ignoring them; clip_grad_norm_ computes the norm of float16 /
-- bfloat16 gradients in float32 (PyTorch's vector_norm accumulates in float), so gradients above 256
-- do not make it inf and zero every gradient.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local testing = require("ramtorch.testing")
local assert_close = testing.assert_close
local assert_error_has = testing.assert_error_has

local f32, f64 = torch.float32, torch.float64

describe("amax / amin of an empty tensor", function()
  it("reduce a non-empty dim of a tensor empty elsewhere to an empty result", function()
    -- torch.zeros(0, 3).amax(1) -> tensor([]) of shape (0,); the identity is only needed along dim 1
    local e = torch.zeros({ 0, 3 })
    local r = e:amax(1)
    assert.are.same({ 0 }, r.shape)
    assert.are.same({ 0, 1 }, e:amin(-1, true).shape)
    assert.are.same({ 0 }, torch.zeros({ 2, 0, 3 }):amax({ 0, 2 }).shape)
    -- and the backward of such a reduction is an empty gradient
    local x = torch.zeros({ 0, 3 }, { requires_grad = true })
    x:amax(1):sum():backward()
    assert.are.same({ 0, 3 }, x.grad.shape)
  end)

  it("still raises when a reduced dim has size 0, or for the full reduction", function()
    local e = torch.zeros({ 0, 3 })
    assert_error_has(function() return e:amax(0) end, "empty")
    assert_error_has(function() return e:amin({ 0, 1 }) end, "empty")
    assert_error_has(function() return e:max() end, "empty")
  end)
end)

describe("sum / mean keyword options", function()
  local x = torch.tensor({ { 1, 2 }, { 3, 4 } })

  it("keepdim without dim keeps every dim with size 1", function()
    -- x.sum(keepdim=True) -> tensor([[10]])
    local r = x:sum({ keepdim = true })
    assert.are.same({ 1, 1 }, r.shape)
    assert.are.equal(10, r:item())
    assert.are.same({ 1, 1 }, x:float():mean({ keepdim = true }).shape)
  end)

  it("dtype casts the input before reducing", function()
    -- x.sum(dim=0, dtype=torch.float64) -> tensor([4., 6.], dtype=torch.float64)
    local r = x:sum({ dim = 0, dtype = f64 })
    assert.are.equal(f64, r.dtype)
    assert.are.same({ 4, 6 }, r:totable())
    -- mean of an integer tensor is allowed once a floating dtype is given
    local m = torch.mean(x, { dim = 1, dtype = f32 })
    assert.are.equal(f32, m.dtype)
    assert_close(m, torch.tensor({ 1.5, 3.5 }, { dtype = f32 }))
    -- a float tensor summed as int64 is truncated first, as PyTorch's cast
    local s = torch.tensor({ 1.5, 2.5 }, { dtype = f32 }):sum({ dtype = "int64" })
    assert.are.equal(torch.int64, s.dtype)
    assert.are.equal(3, s:item())
    -- the cast is differentiable
    local w = torch.tensor({ 1, 2 }, { dtype = f32, requires_grad = true })
    w:sum({ dtype = f64 }):backward()
    assert_close(w.grad, torch.ones({ 2 }))
  end)

  it("refuses unknown keys rather than ignoring them", function()
    assert_error_has(function() return x:sum({ dims = 0 }) end, "sum: unknown option 'dims'")
    assert_error_has(function() return x:float():mean({ dim = 0, keep_dim = true }) end,
                     "mean: unknown option 'keep_dim'")
  end)
end)

describe("clip_grad_norm_ with half-precision gradients", function()
  it("computes the norm in float32 (no overflow above 256 in float16)", function()
    local p = torch.zeros({ 2 }, { dtype = torch.float16 }):requires_grad_()
    p.grad = torch.tensor({ 300, 400 }, { dtype = torch.float16 })
    local n = nn.utils.clip_grad_norm_({ p }, 1e6)
    assert.are.equal(500, n:item())
    assert.are.same({ 300, 400 }, p.grad:totable()) -- max_norm is far above: left alone
    -- clipped to 1: scaled by 1 / (500 + 1e-6), not zeroed
    nn.utils.clip_grad_norm_({ p }, 1)
    assert_close(p.grad:float(), torch.tensor({ 0.6, 0.8 }, { dtype = f32 }), 1e-3, 1e-3)
  end)
end)
