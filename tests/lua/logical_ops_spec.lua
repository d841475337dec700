-- logical_ops_spec.lua: the predicates and logical ops of ramtorch/ops_logical.lua (isnan, isinf,
-- isposinf, isneginf, isfinite, isreal, nan_to_num / nan_to_num_, logical_not/and/or/xor, isclose,
-- allclose, equal) and torch.where with two scalars (ops.lua): values against expected tables on
-- f32/f64/bf16/f16/int64/uint8/bool inputs holding NaN, +-inf and -0.0, broadcasting shapes, result
-- dtypes, nan_to_num's gradient (gradcheck on finite inputs, 0 at NaN/inf), and every refusal's message.
local torch = require("ramtorch")
local testing = require("ramtorch.testing")
local assert_error_has = testing.assert_error_has

local NAN, INF = 0 / 0, math.huge
local FLOATS = { torch.float32, torch.float64, torch.bfloat16, torch.float16 }
local ALL = { torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.int32,
              torch.uint8, torch.bool }

-- exact comparison of nested tables: NaN matches NaN, -0.0 only matches -0.0
local function same(a, b)
  if type(a) == "table" then
    if type(b) ~= "table" or #a ~= #b then return false end
    for i = 1, #a do
      if not same(a[i], b[i]) then return false end
    end
    return true
  end
  if a ~= a then return b ~= b end
  if a == 0 and b == 0 then return 1 / a == 1 / b end
  return a == b
end
local function show(v)
  if type(v) ~= "table" then return tostring(v) end
  local s = {}
  for i = 1, #v do s[i] = show(v[i]) end
  return "{" .. table.concat(s, ", ") .. "}"
end
local function expect_values(t, expected, dtype)
  assert.is_true(torch.is_tensor(t))
  if dtype then assert.are.equal(dtype, t.dtype) end
  local got = t:totable()
  assert(same(got, expected), ("expected %s, got %s"):format(show(expected), show(got)))
end

-- the special values of a float tensor: 1.5, NaN, +inf, -inf, -0.0, 0, -2
local SPECIAL = { 1.5, NAN, INF, -INF, -0.0, 0, -2 }
local function special(dt) return torch.tensor(SPECIAL, { dtype = dt }) end

describe("float classification", function()
  it("isnan / isinf / isposinf / isneginf / isfinite on every float dtype", function()
    for _, dt in ipairs(FLOATS) do
      local x = special(dt)
      expect_values(torch.isnan(x), { false, true, false, false, false, false, false }, torch.bool)
      expect_values(x:isinf(), { false, false, true, true, false, false, false }, torch.bool)
      expect_values(torch.isposinf(x), { false, false, true, false, false, false, false }, torch.bool)
      expect_values(x:isneginf(), { false, false, false, true, false, false, false }, torch.bool)
      expect_values(x:isfinite(), { true, false, false, false, true, true, true }, torch.bool)
      expect_values(torch.isreal(x), { true, true, true, true, true, true, true }, torch.bool)
    end
  end)

  it("keep the shape (2-d, 0-d, empty) and work on non-contiguous views", function()
    local x = torch.tensor({ { 1, NAN, 3 }, { INF, 5, -INF } }, { dtype = torch.float64 })
    expect_values(x:t():isnan(), { { false, false }, { true, false }, { false, false } })
    expect_values(x:t():isfinite(), { { true, false }, { false, true }, { true, false } })
    expect_values(torch.tensor(NAN):isnan(), true)
    local e = torch.zeros(0, 3):isinf()
    assert.are.same({ 0, 3 }, e.shape)
    assert.are.equal(torch.bool, e.dtype)
  end)

  it("answer all-false / all-true for integer and bool inputs", function()
    for _, dt in ipairs({ torch.int64, torch.int32, torch.uint8, torch.bool }) do
      local x = torch.tensor({ { 1, 0 }, { 1, 1 } }, { dtype = dt })
      local F, T = { { false, false }, { false, false } }, { { true, true }, { true, true } }
      expect_values(x:isnan(), F, torch.bool)
      expect_values(x:isinf(), F, torch.bool)
      expect_values(x:isposinf(), F, torch.bool)
      expect_values(x:isneginf(), F, torch.bool)
      expect_values(x:isfinite(), T, torch.bool)
      expect_values(x:isreal(), T, torch.bool)
    end
  end)

  it("record no graph on inputs that require grad", function()
    local x = torch.tensor({ 1, NAN }, { dtype = torch.float64 }):requires_grad_()
    for _, name in ipairs({ "isnan", "isinf", "isposinf", "isneginf", "isfinite", "isreal" }) do
      local r = x[name](x)
      assert.is_false(r.requires_grad)
      assert.is_nil(r.grad_fn)
    end
  end)

  it("refuse a non-tensor argument", function()
    for _, name in ipairs({ "isnan", "isinf", "isposinf", "isneginf", "isfinite", "isreal", "nan_to_num" }) do
      assert_error_has(function() return torch[name](1.5) end, name .. ": expected input to be a Tensor, got 1.5")
    end
    assert_error_has(function() return torch.isnan({ 1 }) end, "isnan: expected input to be a Tensor, got a table")
  end)
end)

describe("nan_to_num", function()
  local MAX = { [torch.float32] = 3.4028234663852886e38, [torch.float64] = 1.7976931348623157e308,
                [torch.bfloat16] = 3.3895313892515355e38, [torch.float16] = 65504 }

  it("defaults: NaN -> 0, +-inf -> the dtype's largest / lowest finite value; -0.0 stays", function()
    for _, dt in ipairs(FLOATS) do
      local m = MAX[dt]
      expect_values(torch.nan_to_num(special(dt)), { 1.5, 0, m, -m, -0.0, 0, -2 }, dt)
      expect_values(special(dt):nan_to_num(), { 1.5, 0, m, -m, -0.0, 0, -2 }, dt)
    end
  end)

  it("takes nan / posinf / neginf positionally or as options", function()
    local x = special(torch.float32)
    expect_values(x:nan_to_num(7, 8, -9), { 1.5, 7, 8, -9, -0.0, 0, -2 }, torch.float32)
    expect_values(x:nan_to_num({ posinf = 100 }), { 1.5, 0, 100, -MAX[torch.float32], -0.0, 0, -2 })
    expect_values(x:nan_to_num(nil, nil, -1), { 1.5, 0, MAX[torch.float32], -1, -0.0, 0, -2 })
    expect_values(torch.nan_to_num(special(torch.float64), { nan = 0.25, neginf = -5 }),
                  { 1.5, 0.25, MAX[torch.float64], -5, -0.0, 0, -2 }, torch.float64)
  end)

  it("returns a copy of integer and bool inputs", function()
    local i = torch.tensor({ 3, -4, 0 })
    local r = i:nan_to_num(1, 2, 3)
    expect_values(r, { 3, -4, 0 }, torch.int64)
    r:fill_(9)
    expect_values(i, { 3, -4, 0 }) -- a copy, not the input itself
    expect_values(torch.tensor({ true, false }):nan_to_num(), { true, false }, torch.bool)
    expect_values(torch.tensor({ 200, 0 }, { dtype = torch.uint8 }):nan_to_num(), { 200, 0 }, torch.uint8)
  end)

  it("nan_to_num_ replaces in place and returns the tensor", function()
    local x = torch.tensor({ NAN, INF, -INF, 2 })
    local v = x:view(2, 2)
    local r = x:nan_to_num_(-1, 10, -10)
    assert.are.equal(x.p, r.p)
    expect_values(v, { { -1, 10 }, { -10, 2 } })
    local i = torch.tensor({ 1, 2 })
    assert.are.equal(i.p, i:nan_to_num_().p)
    torch.no_grad(function()
      local w = torch.tensor({ NAN, 1 }):requires_grad_()
      w:nan_to_num_()
      expect_values(w, { 0, 1 })
    end)
  end)

  it("nan_to_num_ refuses a tensor that requires grad (as add_ does)", function()
    local w = torch.tensor({ NAN, 1 }):requires_grad_()
    assert_error_has(function() w:nan_to_num_() end,
                     "nan_to_num_: a leaf tensor that requires grad is being used in an in-place operation")
    local y = w * 2
    assert_error_has(function() y:nan_to_num_() end, "nan_to_num_: a tensor that requires grad")
  end)

  it("passes gradcheck on finite inputs", function()
    local x = torch.randn(3, 4, { dtype = torch.float64 }):requires_grad_()
    testing.gradcheck(function(t) return t:nan_to_num() end, { x })
    testing.gradcheck(function(t) return torch.nan_to_num(t * t, 1, 2, 3) end, { x })
  end)

  it("has gradient 1 where x was finite and 0 at NaN and +-inf", function()
    local x = torch.tensor({ 1, NAN, INF, -INF, -0.0, 3 }, { dtype = torch.float64 }):requires_grad_()
    local y = x:nan_to_num()
    assert.are.equal("WhereBackward", (y.grad_fn or ""):sub(1, 13))
    local s = (y * torch.tensor({ 2, 3, 4, 5, 6, 7 }, { dtype = torch.float64 })):sum()
    s:backward()
    expect_values(x.grad, { 2, 0, 0, 0, 6, 7 })
  end)

  it("refuses bad arguments", function()
    local x = torch.ones(2)
    assert_error_has(function() x:nan_to_num("0") end, "nan_to_num: expected nan to be a number or nil, got a string")
    assert_error_has(function() x:nan_to_num(0, true) end, "nan_to_num: expected posinf to be a number or nil, got true")
    assert_error_has(function() x:nan_to_num(0, 1, {}) end, "nan_to_num: expected neginf to be a number or nil, got a table")
    assert_error_has(function() x:nan_to_num({ inf = 1 }) end,
                     "nan_to_num: unknown option 'inf' (expected nan, posinf, neginf)")
    assert_error_has(function() x:nan_to_num({ nan = 1 }, 2) end, "nan_to_num: the options table must be the last argument")
    assert_error_has(function() x:nan_to_num_("a") end, "nan_to_num_: expected nan to be a number or nil, got a string")
  end)
end)

describe("logical ops", function()
  it("logical_not: zero (and -0.0) is false, everything else (NaN, inf) true, on every dtype", function()
    for _, dt in ipairs(FLOATS) do
      expect_values(special(dt):logical_not(), { false, false, false, false, true, true, false }, torch.bool)
    end
    expect_values(torch.logical_not(torch.tensor({ 0, 5, -1 })), { true, false, false }, torch.bool)
    expect_values(torch.tensor({ 0, 255 }, { dtype = torch.uint8 }):logical_not(), { true, false }, torch.bool)
    expect_values(torch.tensor({ true, false }):logical_not(), { false, true }, torch.bool)
  end)

  it("and / or / xor: truth tables on mixed dtypes, bool out", function()
    -- a: 0, 1, 0, NaN ; b: 0, 0, -0.0 (false), 2
    local a = torch.tensor({ 0, 1, 0, NAN }, { dtype = torch.float32 })
    for _, dt in ipairs({ torch.float64, torch.bfloat16, torch.float32 }) do
      local b = torch.tensor({ 0, 0, -0.0, 2 }, { dtype = dt })
      expect_values(torch.logical_and(a, b), { false, false, false, true }, torch.bool)
      expect_values(torch.logical_or(a, b), { false, true, false, true }, torch.bool)
      expect_values(torch.logical_xor(a, b), { false, true, false, false }, torch.bool)
    end
    local i = torch.tensor({ 0, 3, 0, -7 })
    local u = torch.tensor({ 0, 0, 9, 1 }, { dtype = torch.uint8 })
    expect_values(i:logical_and(u), { false, false, false, true }, torch.bool)
    expect_values(i:logical_or(u), { false, true, true, true }, torch.bool)
    expect_values(i:logical_xor(u), { false, true, true, false }, torch.bool)
    local p, q = torch.tensor({ true, true, false, false }), torch.tensor({ true, false, true, false })
    expect_values(p:logical_and(q), { true, false, false, false }, torch.bool)
    expect_values(p:logical_or(q), { true, true, true, false }, torch.bool)
    expect_values(p:logical_xor(q), { false, true, true, false }, torch.bool)
    expect_values(p:logical_and(i), { false, true, false, false }, torch.bool)
  end)

  it("broadcast: [2,1] with [3], and with a 0-d tensor", function()
    local col = torch.tensor({ { 1 }, { 0 } })
    local row = torch.tensor({ INF, 0, NAN }, { dtype = torch.float64 })
    expect_values(torch.logical_and(col, row), { { true, false, true }, { false, false, false } }, torch.bool)
    expect_values(torch.logical_or(col, row), { { true, true, true }, { true, false, true } }, torch.bool)
    expect_values(torch.logical_xor(col, row), { { false, true, false }, { true, false, true } }, torch.bool)
    expect_values(torch.logical_or(row, torch.tensor(false)), { true, false, true }, torch.bool)
    expect_values(torch.logical_and(torch.tensor(1), row), { true, false, true }, torch.bool)
    assert_error_has(function() return torch.logical_and(torch.ones(2), torch.ones(3)) end, "[2]", "[3]")
  end)

  it("record no graph", function()
    local x = torch.randn(3, { dtype = torch.float64 }):requires_grad_()
    assert.is_false(x:logical_not().requires_grad)
    assert.is_false(x:logical_and(x).requires_grad)
    assert.is_false(x:logical_or(x).requires_grad)
    assert.is_false(x:logical_xor(x).requires_grad)
  end)

  it("refuse non-tensor operands", function()
    assert_error_has(function() return torch.logical_not(0) end, "logical_not: expected input to be a Tensor, got 0")
    assert_error_has(function() return torch.logical_and(torch.ones(2), 1) end,
                     "logical_and: expected other to be a Tensor, got 1")
    assert_error_has(function() return torch.logical_or(true, torch.ones(2)) end,
                     "logical_or: expected input to be a Tensor, got true")
    assert_error_has(function() return torch.ones(2):logical_xor(nil) end,
                     "logical_xor: expected other to be a Tensor, got nil")
  end)
end)

describe("torch.where with scalars", function()
  local c = torch.tensor({ { true, false }, { false, true } })

  it("two integral numbers give int64; a fractional / inf / NaN one gives the default dtype", function()
    expect_values(torch.where(c, 1, -2), { { 1, -2 }, { -2, 1 } }, torch.int64)
    expect_values(torch.where(c, 1.5, 0), { { 1.5, 0 }, { 0, 1.5 } }, torch.float32)
    expect_values(torch.where(c, 0, INF), { { 0, INF }, { INF, 0 } }, torch.float32)
    expect_values(torch.where(c, NAN, 1), { { NAN, 1 }, { 1, NAN } }, torch.float32)
    torch.set_default_dtype(torch.float64)
    local ok, r = pcall(torch.where, c, 0.1, 2)
    torch.set_default_dtype(torch.float32)
    assert.is_true(ok, r)
    expect_values(r, { { 0.1, 2 }, { 2, 0.1 } }, torch.float64)
  end)

  it("two booleans give bool; a boolean with a number takes the number's dtype", function()
    expect_values(torch.where(c, true, false), { { true, false }, { false, true } }, torch.bool)
    expect_values(torch.where(c, true, 5), { { 1, 5 }, { 5, 1 } }, torch.int64)
    expect_values(torch.where(c, 2.5, false), { { 2.5, 0 }, { 0, 2.5 } }, torch.float32)
  end)

  it("has cond's shape (0-d and empty too)", function()
    expect_values(torch.where(torch.tensor(true), 3, 4), 3, torch.int64)
    assert.are.same({ 0, 2 }, torch.where(torch.zeros(0, 2):eq(0), 1, 2).shape)
  end)

  it("the tensor forms still work", function()
    local x = torch.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = torch.float64 })
    expect_values(torch.where(c, x, 0), { { 1, 0 }, { 0, 4 } }, torch.float64)
    expect_values(x:where(c, -1), { { 1, -1 }, { -1, 4 } }, torch.float64)
  end)

  it("refuses bad arguments", function()
    assert_error_has(function() return torch.where(c) end,
                     "where: the single-argument form where(cond) (indices of the true elements) is not supported")
    assert_error_has(function() return torch.where(c, "1", 2) end, "where: expected a Tensor or a number value, got a string")
    assert_error_has(function() return torch.where(c, 1, {}) end, "where: expected a Tensor or a number value, got a table")
    assert_error_has(function() return torch.where(c, 1, nil) end, "where: expected a Tensor or a number value, got nil")
    assert_error_has(function() return torch.where(c, nil, 1) end, "where: expected a Tensor or a number value, got nil")
    assert_error_has(function() return torch.where(torch.ones(2), 1, 2) end,
                     "where: expected condition to be a boolean tensor, but got a tensor with dtype float32")
    assert_error_has(function() return torch.where(1, 1, 2) end, "where: expected a Tensor, got number")
  end)
end)

describe("isclose / allclose / equal", function()
  it("isclose: defaults rtol=1e-5, atol=1e-8; equal infinities close, NaN not", function()
    for _, dt in ipairs({ torch.float32, torch.float64 }) do
      local a = torch.tensor({ 1, 1 + 1e-4, 100, 0, NAN, INF, INF, -INF, 0 }, { dtype = dt })
      local b = torch.tensor({ 1, 1, 100.0009, 5e-9, NAN, INF, -INF, -INF, -0.0 }, { dtype = dt })
      expect_values(torch.isclose(a, b), { true, false, true, true, false, true, false, true, true }, torch.bool)
      expect_values(a:isclose(b, { equal_nan = true }),
                    { true, false, true, true, true, true, false, true, true }, torch.bool)
    end
  end)

  it("isclose: rtol scales |other| (not symmetric), atol adds; zero tolerances are equality", function()
    local a, b = torch.tensor({ 10, 1 }, { dtype = torch.float64 }), torch.tensor({ 11, 0 }, { dtype = torch.float64 })
    expect_values(torch.isclose(a, b, 0.095, 0), { true, false })
    expect_values(torch.isclose(b, a, 0.095, 0), { false, false })
    expect_values(torch.isclose(a, b, 0, 1), { true, true })
    expect_values(torch.isclose(a, b, 0, 0), { false, false })
    expect_values(torch.isclose(torch.tensor({ NAN }), torch.tensor({ NAN }), 0, 0, true), { true })
    expect_values(torch.isclose(torch.tensor({ 1, 2 }), torch.tensor({ 1, 2 }), 0, 0), { true, true }, torch.bool)
  end)

  it("isclose on bf16, int64, uint8 and bool; broadcasting", function()
    local a = torch.tensor({ 1, 1.0078125, NAN }, { dtype = torch.bfloat16 })
    expect_values(torch.isclose(a, torch.tensor({ 1, 1, NAN }, { dtype = torch.bfloat16 }), 0.01, 0),
                  { true, true, false }, torch.bool)
    expect_values(torch.isclose(torch.tensor({ 5, 7, -3 }), torch.tensor({ 6, 7, 3 }), 0, 1),
                  { true, true, false }, torch.bool)
    expect_values(torch.isclose(torch.tensor({ 5, 7 }, { dtype = torch.uint8 }), torch.tensor({ 5, 9 }, { dtype = torch.uint8 })),
                  { true, false }, torch.bool)
    expect_values(torch.isclose(torch.tensor({ true, false, true }), torch.tensor({ true, true, false })),
                  { true, false, false }, torch.bool)
    expect_values(torch.isclose(torch.tensor({ { 1 }, { 2 } }, { dtype = torch.float64 }), torch.tensor({ 1, 2 }, { dtype = torch.float64 })),
                  { { true, false }, { false, true } }, torch.bool)
  end)

  it("allclose returns a Lua boolean", function()
    local a = torch.tensor({ 1, 2, 3 }, { dtype = torch.float64 })
    assert.are.equal(true, torch.allclose(a, a + 1e-9))
    assert.are.equal(false, torch.allclose(a, a + 1e-3))
    assert.are.equal(true, a:allclose(a + 1e-3, 1e-3))
    assert.are.equal(true, a:allclose(a + 1e-3, { atol = 2e-3 }))
    local n = torch.tensor({ NAN, 1 })
    assert.are.equal(false, torch.allclose(n, n))
    assert.are.equal(true, torch.allclose(n, n, { equal_nan = true }))
    assert.are.equal(true, torch.allclose(torch.zeros(0), torch.zeros(0)))
    assert.are.equal(true, torch.allclose(torch.ones(2, 3), torch.ones(3))) -- broadcasts, as PyTorch
  end)

  it("equal: same shape and values (dtypes may differ), NaN equals nothing, no broadcasting", function()
    local a = torch.tensor({ { 1, 2 }, { 3, 4 } })
    assert.are.equal(true, torch.equal(a, a:clone()))
    assert.are.equal(true, torch.equal(a, a:to(torch.float32)))
    assert.are.equal(false, a:equal(torch.tensor({ { 1, 2 }, { 3, 5 } })))
    assert.are.equal(false, torch.equal(a, a:reshape(4)))
    assert.are.equal(false, torch.equal(torch.ones(1, 2), torch.ones(2)))
    assert.are.equal(false, torch.equal(torch.tensor({ NAN }), torch.tensor({ NAN })))
    assert.are.equal(true, torch.equal(torch.tensor({ -0.0 }), torch.tensor({ 0.0 })))
    assert.are.equal(true, torch.equal(torch.zeros(0, 2), torch.zeros(0, 2)))
    assert.are.equal(true, torch.equal(torch.tensor({ true, false }), torch.tensor({ 1, 0 }, { dtype = torch.uint8 })))
    assert.are.equal(true, torch.equal(torch.tensor({ 1, 2 }, { dtype = torch.bfloat16 }), torch.tensor({ 1, 2 })))
  end)

  it("refuse bad arguments", function()
    local f, d = torch.ones(2), torch.ones(2, { dtype = torch.float64 })
    assert_error_has(function() return torch.isclose(f, d) end,
                     "isclose: expected both tensors to have the same dtype, got float32 and float64")
    assert_error_has(function() return torch.allclose(f, torch.ones(2, { dtype = torch.int64 })) end,
                     "allclose: expected both tensors to have the same dtype, got float32 and int64")
    assert_error_has(function() return torch.isclose(f, f, -1) end,
                     "isclose: rtol must be greater than or equal to zero, but got -1")
    assert_error_has(function() return torch.isclose(f, f, 0, -0.5) end,
                     "isclose: atol must be greater than or equal to zero, but got -0.5")
    assert_error_has(function() return torch.isclose(f, f, "1") end, "isclose: expected rtol to be a number, got a string")
    assert_error_has(function() return torch.isclose(f, f, NAN) end, "isclose: expected rtol to be a number, got nan")
    assert_error_has(function() return torch.isclose(f, f, 0, 0, 1) end, "isclose: expected equal_nan to be a boolean, got 1")
    assert_error_has(function() return torch.isclose(f, f, { tol = 1 }) end,
                     "isclose: unknown option 'tol' (expected rtol, atol, equal_nan)")
    assert_error_has(function() return torch.isclose(f, f, { rtol = 1 }, 2) end,
                     "isclose: the options table must be the last argument")
    assert_error_has(function() return torch.isclose(f, 1) end, "isclose: expected other to be a Tensor, got 1")
    assert_error_has(function() return torch.allclose(1, f) end, "allclose: expected input to be a Tensor, got 1")
    assert_error_has(function() return torch.equal(f, { 1, 1 }) end, "equal: expected other to be a Tensor, got a table")
    assert_error_has(function() return torch.isclose(torch.ones(2), torch.ones(3)) end, "[2]", "[3]")
  end)
end)

describe("coverage of every dtype", function()
  it("each op answers bool (nan_to_num: the input dtype) for every dtype", function()
    for _, dt in ipairs(ALL) do
      local x = torch.tensor({ 1, 0 }, { dtype = dt })
      for _, name in ipairs({ "isnan", "isinf", "isposinf", "isneginf", "isfinite", "isreal", "logical_not" }) do
        assert.are.equal(torch.bool, torch[name](x).dtype, name .. " on " .. dt.name)
      end
      for _, name in ipairs({ "logical_and", "logical_or", "logical_xor", "isclose" }) do
        assert.are.equal(torch.bool, torch[name](x, x).dtype, name .. " on " .. dt.name)
      end
      assert.are.equal(dt, torch.nan_to_num(x).dtype)
      assert.are.equal(true, torch.allclose(x, x))
      assert.are.equal(true, torch.equal(x, x))
      expect_values(x:logical_not(), { false, true })
    end
  end)
end)
