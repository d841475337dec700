-- cpu_regress_spec.lua: regression specs for review findings in the CPU kernels and tensor creation
-- (embedding backward with an empty embedding dim, attention hiding NaN, scalar comparisons of float
-- tensors, shapes whose byte size overflows), each failing on the code before its fix.
local torch = require("ramtorch")
local F = torch.nn.functional

describe("embedding backward", function()
  -- the column blocking computed a block width of 0 and divided by it: SIGFPE killed the process
  it("gives an empty gradient for an embedding dim of 0", function()
    local w = torch.zeros({ 5, 0 })
    w.requires_grad = true
    local y = F.embedding(torch.tensor({ 1, 2 }, { dtype = torch.int64 }), w)
    assert.are.same({ 2, 0 }, y.shape)
    y:sum():backward()
    assert.are.same({ 5, 0 }, w.grad.shape)
  end)
end)

describe("scaled_dot_product_attention", function()
  local function all_nan(t)
    for _, v in ipairs(t:flatten():totable()) do
      if v == v then return false end
    end
    return true
  end

  -- a row whose scores were all NaN passed for a fully masked row and came out 0 (PyTorch: NaN)
  it("propagates NaN in the query instead of returning zeros", function()
    local q = torch.full({ 1, 1, 2, 4 }, 0 / 0)
    local k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    assert.is_true(all_nan(F.scaled_dot_product_attention(q, k, v)))
    assert.is_true(all_nan(F.scaled_dot_product_attention(q:double(), k:double(), v:double())))
  end)

  it("propagates a NaN additive mask", function()
    local q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    local out = F.scaled_dot_product_attention(q, k, v, { attn_mask = torch.full({ 2, 3 }, 0 / 0) })
    assert.is_true(all_nan(out))
  end)

  it("still gives 0 for a fully masked row", function()
    local q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    local mask = torch.tensor({ { false, false, false }, { true, true, true } })
    local out = F.scaled_dot_product_attention(q, k, v, { attn_mask = mask })
    assert.are.same({ 0, 0, 0, 0 }, out[1][1][1]:totable())
  end)
end)

describe("comparisons of a float tensor with a number", function()
  -- the number was compared in double, so float32(0.1) == 0.1 was false (PyTorch: true)
  it("compare in the tensor's dtype, as PyTorch", function()
    local x = torch.tensor({ 0.1, 0.2 })
    assert.are.same({ true, false }, x:eq(0.1):totable())
    assert.are.same({ false, true }, x:ne(0.1):totable())
    assert.are.same({ false, true }, x:gt(0.1):totable())
    assert.are.same({ true, false }, x:le(0.1):totable())
    local b = torch.tensor({ 0.1 }, { dtype = torch.bfloat16 })
    assert.are.same({ true }, b:eq(0.1):totable())
    local h = torch.tensor({ 0.1 }, { dtype = torch.float16 })
    assert.are.same({ true }, h:eq(0.1):totable())
    assert.are.same({ false }, h:lt(0.1):totable())
  end)

  it("keep float64 exact", function()
    local d = torch.tensor({ 0.1 }, { dtype = torch.float64 })
    assert.are.same({ true }, d:eq(0.1):totable())
    assert.are.same({ false }, d:eq(0.1 + 2 ^ -40):totable())
  end)
end)

describe("tensor creation with a huge shape", function()
  -- numel * itemsize wrapped around: 2^61 float64 elements got a 0-byte buffer, and filling it
  -- wrote past the allocation
  it("refuses a shape whose byte size overflows", function()
    local ok, err = pcall(torch.empty, { 2 ^ 61 }, { dtype = torch.float64 })
    assert.is_false(ok)
    assert.matches("empty: shape %[2305843009213693952%] of float64 is too large", tostring(err))
    ok, err = pcall(torch.zeros, { 2 ^ 32, 2 ^ 32 })
    assert.is_false(ok)
    assert.matches("too large", tostring(err))
  end)

  it("still allows an empty tensor with other huge dims, as PyTorch", function()
    local t = torch.empty({ 0, 2 ^ 40 })
    assert.are.equal(0, t:numel())
  end)
end)
