-- matmul_semantics_regress_spec.lua: the matmul family against PyTorch 2.x. Failing on the code before
-- its fix: torch.mm / Tensor:mm accepted 1-d and 3-d operands (they were matmul), PyTorch raises "self
-- must be a matrix"; torch.bmm accepted 2-d / 4-d operands and broadcast a batch of 1 against a batch
-- of 5, PyTorch raises (bmm needs 3-d operands with equal batch sizes); matmul's batch-broadcast error
-- named only the batch dims ([2] and [3]) instead of the operands' shapes. The rest guards the rules
-- that already held: 1-d promotion and removal, batch broadcasting with summed gradients, strided and
-- expanded operands, empty dims, refused integer / mixed dtypes, f32 accumulation of bf16 / f16.
local torch = require("ramtorch")
local testing = require("ramtorch.testing")
local assert_close = testing.assert_close
local assert_error_has = testing.assert_error_has

local f64 = torch.float64
local function rn(shape, rg) return torch.randn(shape, { dtype = f64, requires_grad = rg or nil }) end

-- reference product of two 2-d float64 tensors, by hand
local function ref_mm(a, b)
  local ta, tb = a:contiguous():totable(), b:contiguous():totable()
  local out = {}
  for i = 1, #ta do
    out[i] = {}
    for j = 1, #tb[1] do
      local s = 0
      for p = 1, #tb do s = s + ta[i][p] * tb[p][j] end
      out[i][j] = s
    end
  end
  return torch.tensor(out, { dtype = f64 })
end

describe("mm", function()
  it("refuses operands that are not matrices, naming the shapes", function()
    local a3, b3 = rn({ 2, 3, 4 }), rn({ 2, 4, 2 })
    assert_error_has(function() return torch.mm(a3, b3) end, "mm", "2-d", "[2, 3, 4]", "[2, 4, 2]")
    assert_error_has(function() return a3:mm(rn({ 4, 2 })) end, "mm", "2-d", "[2, 3, 4]")
    assert_error_has(function() return torch.mm(rn({ 4 }), rn({ 4, 2 })) end, "mm", "2-d", "[4]")
    assert_error_has(function() return torch.mm(rn({ 3, 4 }), rn({ 4 })) end, "mm", "2-d", "[4]")
  end)

  it("refuses mismatched inner dims, naming the shapes", function()
    assert_error_has(function() return torch.mm(rn({ 3, 4 }), rn({ 5, 2 })) end, "mm", "[3, 4]", "[5, 2]")
  end)

  it("multiplies matrices, transposed ones included", function()
    local a, b = rn({ 4, 3 }), rn({ 5, 4 })
    assert_close(torch.mm(a:t(), b:t()), ref_mm(a:t(), b:t()))
    assert_close(a:t():mm(b:t()), ref_mm(a:t(), b:t()))
  end)
end)

describe("bmm", function()
  it("refuses operands that are not 3-d, naming the shapes", function()
    assert_error_has(function() return torch.bmm(rn({ 3, 4 }), rn({ 4, 2 })) end, "bmm", "3-d", "[3, 4]")
    assert_error_has(function() return torch.bmm(rn({ 2, 2, 3, 4 }), rn({ 2, 2, 4, 2 })) end, "bmm", "3-d",
                     "[2, 2, 3, 4]")
  end)

  it("does not broadcast the batch dim", function()
    assert_error_has(function() return torch.bmm(rn({ 1, 3, 4 }), rn({ 5, 4, 2 })) end, "bmm", "[1, 3, 4]",
                     "[5, 4, 2]")
    assert_error_has(function() return rn({ 2, 3, 4 }):bmm(rn({ 5, 4, 2 })) end, "bmm", "[2, 3, 4]", "[5, 4, 2]")
  end)

  it("refuses mismatched inner dims, naming the shapes", function()
    assert_error_has(function() return torch.bmm(rn({ 2, 3, 4 }), rn({ 2, 5, 2 })) end, "bmm", "[2, 3, 4]",
                     "[2, 5, 2]")
  end)

  it("multiplies batches, and its gradients pass gradcheck", function()
    local a, b = rn({ 2, 3, 4 }), rn({ 2, 4, 2 })
    local r = torch.bmm(a, b)
    for i = 1, 2 do assert_close(r[i], ref_mm(a[i], b[i])) end
    assert.is_true(testing.gradcheck(torch.bmm, { rn({ 2, 3, 4 }, true), rn({ 2, 4, 2 }, true) }))
  end)
end)

describe("matmul shape rules", function()
  it("1-d @ 1-d is a 0-d dot product", function()
    local a, b = torch.tensor({ 1, 2, 3 }, { dtype = f64 }), torch.tensor({ 4, 5, 6 }, { dtype = f64 })
    local r = torch.matmul(a, b)
    assert.are.same({}, r.shape)
    assert.are.equal(32, r:item())
  end)

  it("1-d operands are promoted then their dim removed", function()
    local v, m = rn({ 4 }), rn({ 4, 3 })
    local r = torch.matmul(v, m)
    assert.are.same({ 3 }, r.shape)
    assert_close(r, ref_mm(v:unsqueeze(0), m):squeeze(0))
    local m2 = rn({ 3, 4 })
    assert_close(torch.matmul(m2, v), ref_mm(m2, v:unsqueeze(1)):squeeze(1))
    local b3 = rn({ 2, 4, 3 })
    local r3 = torch.matmul(v, b3)
    assert.are.same({ 2, 3 }, r3.shape)
    for i = 1, 2 do assert_close(r3[i], ref_mm(v:unsqueeze(0), b3[i]):squeeze(0)) end
  end)

  it("broadcasts batch dims: (2,1,3,4) @ (5,4,2) -> (2,5,3,2)", function()
    local a, b = rn({ 2, 1, 3, 4 }), rn({ 5, 4, 2 })
    local r = torch.matmul(a, b)
    assert.are.same({ 2, 5, 3, 2 }, r.shape)
    for i = 1, 2 do
      for j = 1, 5 do assert_close(r[i][j], ref_mm(a[i][1], b[j])) end
    end
  end)

  it("names both operands' shapes when batch dims cannot be broadcast", function()
    assert_error_has(function() return torch.matmul(rn({ 2, 3, 4 }), rn({ 3, 4, 2 })) end, "matmul",
                     "[2, 3, 4]", "[3, 4, 2]")
  end)

  it("takes narrowed, transposed and expanded (stride 0) operands", function()
    local a = rn({ 3, 8 }):narrow(1, 2, 4)
    local b = rn({ 1, 5 }):expand(4, 5)
    assert_close(torch.matmul(a, b), ref_mm(a, b))
    local c = rn({ 5, 9 }):narrow(1, 1, 4):t()
    local e = rn({ 5, 1 }):expand(5, 3)
    assert_close(torch.matmul(c, e), ref_mm(c, e))
    local x = rn({ 1, 3, 4 }):expand(6, 3, 4)
    local y = rn({ 6, 4, 2 })
    local r = torch.matmul(x, y)
    for i = 1, 6 do assert_close(r[i], ref_mm(x[i], y[i])) end
  end)

  it("k = 0 gives zeros, m = 0 or n = 0 an empty result", function()
    local z = torch.matmul(rn({ 3, 0 }), rn({ 0, 2 }))
    assert.are.same({ 3, 2 }, z.shape)
    assert.are.equal(0, z:abs():sum():item())
    assert.are.equal(0, torch.matmul(rn({ 0 }), rn({ 0 })):item())
    assert.are.same({ 0, 2 }, torch.matmul(rn({ 0, 4 }), rn({ 4, 2 })).shape)
    assert.are.same({ 3, 0 }, torch.matmul(rn({ 3, 4 }), rn({ 4, 0 })).shape)
  end)

  it("refuses integer, bool and mixed dtypes with a clear error", function()
    assert_error_has(function() return torch.matmul(torch.ones({ 2, 3 }):long(), torch.ones({ 3, 2 }):long()) end,
                     "matmul", "int64")
    assert_error_has(function() return torch.matmul(torch.ones({ 2, 3 }):bool(), torch.ones({ 3, 2 }):bool()) end,
                     "matmul", "bool")
    assert_error_has(function() return torch.matmul(torch.ones({ 2, 3 }), rn({ 3, 2 })) end, "matmul", "float32",
                     "float64")
  end)

  it("accumulates bfloat16 / float16 products in float32", function()
    for _, dt in ipairs({ torch.bfloat16, torch.float16 }) do
      local v = torch.ones({ 4096 }):to(dt)
      assert.are.equal(4096, torch.matmul(v, v):double():item())
      local r = torch.matmul(torch.ones({ 2, 4096 }):to(dt), torch.ones({ 4096, 3 }):to(dt))
      assert.are.equal(4096 * 6, r:double():sum():item())
    end
  end)
end)

describe("matmul / linear gradients", function()
  local shapes = {
    { { 4 }, { 4 } }, { { 4 }, { 4, 3 } }, { { 3, 4 }, { 4 } }, { { 4 }, { 2, 4, 3 } }, { { 2, 3, 4 }, { 4 } },
    { { 2, 3, 4 }, { 4, 2 } }, { { 3, 4 }, { 2, 4, 2 } }, { { 2, 1, 3, 4 }, { 5, 4, 2 } },
    { { 1, 3, 4 }, { 2, 4, 2 } },
  }
  for _, s in ipairs(shapes) do
    it(("pass gradcheck for %s @ %s"):format(table.concat(s[1], "x"), table.concat(s[2], "x")), function()
      assert.is_true(testing.gradcheck(torch.matmul, { rn(s[1], true), rn(s[2], true) }))
    end)
  end

  it("sum the gradient of a broadcast operand over the broadcast dims", function()
    local a, b = rn({ 2, 1, 3, 4 }, true), rn({ 5, 4, 2 }, true)
    torch.matmul(a, b):sum():backward()
    assert.are.same({ 2, 1, 3, 4 }, a.grad.shape)
    assert.are.same({ 5, 4, 2 }, b.grad.shape)
    -- d(sum)/dB[j] = sum over i of A[i]^T 1
    local ones = torch.ones({ 3, 2 }, { dtype = f64 })
    local want = ref_mm(a[1][1]:detach():t(), ones) + ref_mm(a[2][1]:detach():t(), ones)
    assert_close(b.grad[3], want)
  end)

  it("linear passes gradcheck for 1-d, 2-d and 3-d inputs", function()
    local F = torch.nn.functional
    assert.is_true(testing.gradcheck(F.linear, { rn({ 4 }, true), rn({ 3, 4 }, true), rn({ 3 }, true) }))
    assert.is_true(testing.gradcheck(F.linear, { rn({ 2, 4 }, true), rn({ 3, 4 }, true), rn({ 3 }, true) }))
    assert.is_true(testing.gradcheck(F.linear, { rn({ 2, 5, 4 }, true), rn({ 3, 4 }, true), rn({ 3 }, true) }))
  end)
end)
