-- tests/lua/rounding_ops_spec.lua: trunc/floor/ceil/round/frac, floor_divide/remainder/fmod, div's
-- rounding_mode and any/all (ramtorch/ops_round.lua) against PyTorch's values: signs of zero, NaN and
-- inf, values near the integral thresholds, dtypes, broadcasting with numbers, gradients, errors.
local torch = require("ramtorch")
local testing = require("ramtorch.testing")

local F64 = { dtype = torch.float64 }
local function neg0(v) return v == 0 and 1 / v < 0 end
-- expected values compared exactly, NaN with NaN, zeros by sign ("-0" marks -0.0)
local function same(expected, t)
  local got = t:reshape(-1):totable()
  assert.are.equal(#expected, #got)
  for i, e in ipairs(expected) do
    local g = got[i]
    if e == "-0" then
      assert.is_true(neg0(g), ("element %d: expected -0.0, got %s"):format(i, tostring(g)))
    elseif e ~= e then
      assert.is_true(g ~= g, ("element %d: expected nan, got %s"):format(i, tostring(g)))
    else
      assert.are.equal(e, g, ("element %d"):format(i))
      if e == 0 then assert.are.equal(neg0(e), neg0(g), ("element %d: the sign of zero"):format(i)) end
    end
  end
end
local function err_of(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok)
  return tostring(err)
end
local NAN, INF = 0 / 0, math.huge

describe("trunc / floor / ceil / round / frac", function()
  local xs = { 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, -2.7, 2.7, 0, -0.0, NAN, INF, -INF }
  local want = {
    trunc = { 0, 1, 2, "-0", -1, -2, -2, 2, 0, "-0", NAN, INF, -INF },
    floor = { 0, 1, 2, -1, -2, -3, -3, 2, 0, "-0", NAN, INF, -INF },
    ceil = { 1, 2, 3, "-0", -1, -2, -2, 3, 0, "-0", NAN, INF, -INF },
    round = { 0, 2, 2, "-0", -2, -2, -3, 3, 0, "-0", NAN, INF, -INF },
  }
  for _, dt in ipairs({ torch.float64, torch.float32, torch.bfloat16, torch.float16 }) do
    it("matches PyTorch in " .. dt.name, function()
      local x = torch.tensor(xs, { dtype = dt })
      for name, w in pairs(want) do
        local r = torch[name](x)
        assert.are.equal(dt, r.dtype)
        if dt == torch.float64 or dt == torch.float32 then same(w, r)
        else -- -2.7 / 2.7 are not exact there: only the rounding directions matter
          local ref = torch[name](x:float()):to(dt)
          same(ref:float():totable(), r:float())
        end
      end
      same(torch.trunc(x):float():totable(), x:fix():float())
    end)
  end

  it("returns values at or beyond the integral thresholds unchanged", function()
    local big = { 2 ^ 52, 2 ^ 52 + 1, -(2 ^ 52 + 3), 2 ^ 60, 2 ^ 52 - 0.5, -(2 ^ 52 - 0.5), 2 ^ 51 + 0.5 }
    local x = torch.tensor(big, F64)
    same({ 2 ^ 52, 2 ^ 52 + 1, -(2 ^ 52 + 3), 2 ^ 60, 2 ^ 52 - 1, -(2 ^ 52 - 1), 2 ^ 51 }, torch.trunc(x))
    same({ 2 ^ 52, 2 ^ 52 + 1, -(2 ^ 52 + 3), 2 ^ 60, 2 ^ 52, -(2 ^ 52), 2 ^ 51 }, torch.round(x))
    same({ 2 ^ 52, 2 ^ 52 + 1, -(2 ^ 52 + 3), 2 ^ 60, 2 ^ 52 - 1, -(2 ^ 52), 2 ^ 51 }, torch.floor(x))
    same({ 2 ^ 52, 2 ^ 52 + 1, -(2 ^ 52 + 3), 2 ^ 60, 2 ^ 52, -(2 ^ 52 - 1), 2 ^ 51 + 1 }, torch.ceil(x))
    local f = torch.tensor({ 2 ^ 23 - 0.5, -(2 ^ 23 - 0.5), 2 ^ 23, 2 ^ 23 + 2, 3e38, 2 ^ 22 + 0.5 })
    same({ 2 ^ 23, -(2 ^ 23), 2 ^ 23, 2 ^ 23 + 2, f[5]:item(), 2 ^ 22 }, torch.round(f))
    same({ 2 ^ 23 - 1, -(2 ^ 23), 2 ^ 23, 2 ^ 23 + 2, f[5]:item(), 2 ^ 22 }, torch.floor(f))
  end)

  it("frac is x - trunc(x) with sign, NaN for infinities", function()
    same({ 0.5, -0.5, 0, 0.25, NAN, NAN, NAN }, torch.frac(torch.tensor({ 2.5, -2.5, -3, -0.75 + 1, NAN, INF, -INF }, F64)))
    assert.matches("frac: not implemented for 'int64'", err_of(torch.frac, torch.tensor({ 1, 2 })), 1, true)
  end)

  it("is the identity on integers (same dtype) and refuses bool", function()
    local i = torch.tensor({ -3, 9007199254740993 * 0 + 5, 2 ^ 62 })
    for _, name in ipairs({ "trunc", "floor", "ceil", "round" }) do
      local r = torch[name](i)
      assert.are.equal(torch.int64, r.dtype)
      assert.are.same(i:totable(), r:totable())
      assert.are.equal(torch.int32, torch[name](i:int()).dtype)
    end
    assert.matches("floor: not implemented for 'Bool'", err_of(torch.floor, torch.tensor({ true })), 1, true)
  end)

  it("round accepts only decimals=0", function()
    same({ 2 }, torch.round(torch.tensor({ 2.5 }, F64), { decimals = 0 }))
    assert.matches("round: decimals=2 is not supported", err_of(torch.round, torch.tensor({ 1.0 }), { decimals = 2 }),
                   1, true)
    assert.matches("round: decimals=1 is not supported", err_of(torch.round, torch.tensor({ 1.0 }), 1), 1, true)
  end)

  it("has zero gradients (frac: one)", function()
    local x = torch.tensor({ 0.3, -1.7, 2.2 }, F64)
    x.requires_grad = true
    for _, name in ipairs({ "trunc", "floor", "ceil", "round" }) do
      x.grad = nil
      local r = torch[name](x)
      assert.is_true(r.requires_grad)
      r:sum():backward()
      same({ 0, 0, 0 }, x.grad)
      testing.gradcheck(torch[name], { x })
    end
    testing.gradcheck(torch.frac, { x })
  end)
end)

describe("floor_divide / remainder / fmod", function()
  it("matches PyTorch on floats", function()
    local a = torch.tensor({ -3, 3, -3, 3, 5.5, -5.5, -4, 4, 1 }, F64)
    local b = torch.tensor({ 2, 2, -2, -2, -2, 2, 2, -2, 0.1 }, F64)
    same({ 1, 1, -1, -1, -0.5, 0.5, "-0", 0, 0.09999999999999995 }, torch.remainder(a, b))
    same({ -1, 1, -1, 1, 1.5, -1.5, "-0", 0, 0.09999999999999995 }, torch.fmod(a, b))
    same({ -2, 1, 1, -2, -3, -3, -2, -2, 9 }, torch.floor_divide(a, b))
    same({ -2, 1, 1, -2, -3, -3, -2, -2, 9 }, torch.div(a, b, { rounding_mode = "floor" }))
    same({ -1, 1, 1, -1, -2, -2, -2, -2, 10 }, torch.div(a, b, "trunc"))
  end)

  it("handles zero, infinite and NaN operands as PyTorch", function()
    local a = torch.tensor({ 1, -1, 0, 1, -1, INF, NAN, 1, -0.0, 0 }, F64)
    local b = torch.tensor({ 0, 0, 0, INF, INF, 2, 2, NAN, 2, -2 }, F64)
    same({ INF, -INF, NAN, 0, -1, NAN, NAN, NAN, "-0", "-0" }, torch.floor_divide(a, b))
    same({ NAN, NAN, NAN, 1, -1, NAN, NAN, NAN, "-0", 0 }, torch.fmod(a, b))
    same({ NAN, NAN, NAN, 1, INF, NAN, NAN, NAN, "-0", 0 }, torch.remainder(a, b))
  end)

  it("matches PyTorch on integers, exactly beyond 2^53", function()
    local a = torch.tensor({ -7, 7, -7, 7, -3, 0 })
    local b = torch.tensor({ 2, -2, -2, 2, 2, 5 })
    same({ -4, -4, 3, 3, -2, 0 }, torch.floor_divide(a, b))
    same({ 1, -1, -1, 1, 1, 0 }, torch.remainder(a, b))
    same({ -1, 1, -1, 1, -1, 0 }, torch.fmod(a, b))
    same({ -3, -3, 3, 3, -1, 0 }, torch.div(a, b, "trunc"))
    assert.are.equal(torch.int64, torch.floor_divide(a, b).dtype)
    assert.are.equal(torch.int32, torch.remainder(a:int(), 3).dtype)
    same({ 2, 1, 2, 1, 0, 0 }, torch.remainder(a:int(), 3))
    -- 2^62 + 1 = 3 * 1537228672809129301 + 2; 2^53 + 1 needs int64 arithmetic (not float64)
    local big = torch.tensor({ 4611686018427387904LL + 1, 9007199254740993LL, -9223372036854775807LL })
    local function exact(expected, t) -- int64 values compared without a trip through double
      assert.is_true(torch.equal(torch.tensor(expected), t), tostring(t))
    end
    exact({ 1537228672809129301LL, 9007199254740993LL / 3, -3074457345618258603LL }, torch.floor_divide(big, 3))
    exact({ 4611686018427387905LL % 7, 9007199254740993LL % 1000000007, 3 },
          torch.remainder(big, torch.tensor({ 7, 1000000007, 10 })))
    exact({ 2, 1, -7 }, torch.fmod(big, torch.tensor({ 4611686018427387903LL, -2, 10 })))
    exact({ 1537228672809129301LL, 9007199254740993LL / 3, -3074457345618258602LL }, torch.div(big, 3, "trunc"))
  end)

  it("raises ZeroDivisionError for integer division by zero", function()
    local a = torch.tensor({ 1, 2 })
    assert.matches("remainder: ZeroDivisionError", err_of(torch.remainder, a, 0), 1, true)
    assert.matches("floor_divide: ZeroDivisionError", err_of(torch.floor_divide, a, torch.tensor({ 1, 0 })), 1, true)
    assert.matches("fmod: ZeroDivisionError", err_of(torch.fmod, a:int(), 0), 1, true)
    assert.matches("div: ZeroDivisionError", err_of(torch.div, a, 0, "floor"), 1, true)
  end)

  it("broadcasts and promotes with numbers and tensors", function()
    local a = torch.tensor({ { -7 }, { 7 } })
    local r = torch.remainder(a, torch.tensor({ 2, -3 }))
    assert.are.same({ 2, 2 }, r.shape)
    same({ 1, -1, 1, -2 }, r)
    same({ 3.5, 1.75 }, torch.remainder(torch.tensor({ -7, 7 }), 5.25))
    assert.are.equal(torch.float32, torch.remainder(torch.tensor({ -7, 7 }), 5.25).dtype)
    same({ 1, 0 }, torch.remainder(-3, torch.tensor({ 2, 3 })))
    same({ -4 }, torch.floor_divide(-7, torch.tensor({ 2 })))
    local bf = torch.tensor({ -3, 5.5 }, { dtype = torch.bfloat16 })
    assert.are.equal(torch.bfloat16, torch.remainder(bf, 2).dtype)
    same({ 1, 1.5 }, torch.remainder(bf, 2):float())
    assert.are.equal(torch.float64, torch.fmod(torch.tensor({ 1.5 }), torch.tensor({ 1.0 }, F64)).dtype)
    same({ -1, 1.5 }, torch.tensor({ -3, 5.5 }):fmod(2))
    assert.matches("remainder: expected a Tensor or a number", err_of(torch.remainder, torch.tensor({ 1 }), "x"), 1, true)
    assert.matches("not implemented for 'Bool'", err_of(torch.remainder, torch.tensor({ true }), torch.tensor({ true })),
                   1, true)
    assert.matches("floor_divide:", err_of(torch.floor_divide, torch.ones(2), torch.ones(3)), 1, true)
  end)

  it("has PyTorch's gradients", function()
    local a = torch.tensor({ { 2.3, -1.7, 5.1 }, { -4.2, 0.6, 3.3 } }, F64)
    local b = torch.tensor({ 1.3, -0.7, 2.1 }, F64)
    a.requires_grad, b.requires_grad = true, true
    testing.gradcheck(torch.remainder, { a, b })
    testing.gradcheck(torch.fmod, { a, b })
    testing.gradcheck(function(x) return torch.remainder(x, 1.5) end, { a })
    a.grad, b.grad = nil, nil
    torch.fmod(a, b):sum():backward()
    same({ 1, 1, 1, 1, 1, 1 }, a.grad)
    -- d/db = -sum over rows of trunc(a / b)
    same({ -(1 - 3), -(2 + 0), -(2 + 1) }, b.grad)
    a.grad, b.grad = nil, nil
    local q = torch.floor_divide(a, b)
    assert.is_true(q.requires_grad)
    q:sum():backward()
    same({ 0, 0, 0, 0, 0, 0 }, a.grad)
    same({ 0, 0, 0 }, b.grad)
  end)
end)

describe("div rounding_mode", function()
  it("works in place, keeping the in-place casting rule", function()
    local t = torch.tensor({ -7, 7 })
    t:div_(2, { rounding_mode = "floor" })
    same({ -4, 3 }, t)
    local f = torch.tensor({ -7.5, 7.5 })
    f:div_(2, "trunc")
    same({ -3, 3 }, f)
    assert.matches("div_: result type float32 can't be cast", err_of(function() t:div_(2.5, "floor") end), 1, true)
  end)
end)

describe("any / all", function()
  it("reduce to bool, NaN counting as true", function()
    local x = torch.tensor({ { 0, 1, 0 }, { 0, 0, 0 } })
    assert.is_true(torch.any(x):item())
    assert.is_false(torch.all(x):item())
    assert.are.equal(torch.bool, x:any().dtype)
    assert.are.same({ true, false }, x:any(1):totable())
    assert.are.same({ false, false }, x:all(1):totable())
    assert.are.same({ { false, true, false } }, x:any({ dim = 0, keepdim = true }):totable())
    assert.is_true(torch.all(torch.tensor({ NAN, 1 })):item())
    assert.is_true(torch.all(torch.zeros(0)):item())
    assert.is_false(torch.any(torch.zeros(0)):item())
    assert.matches("any: unknown option 'foo'", err_of(torch.any, x, { foo = 1 }), 1, true)
  end)
end)

describe("division operands out of range", function()
  it("treats an infinite number as a float and names the op for an overflowing one", function()
    local r = torch.remainder(torch.tensor({ 3, -3 }):int(), -math.huge)
    assert.are.equal(torch.float32, r.dtype)
    same({ -math.huge, -3 }, r)
    local ok, err = pcall(torch.fmod, torch.tensor({ 1 }):int(), 2 ^ 40)
    assert.is_false(ok)
    assert.matches("fmod: full: value", tostring(err), 1, true)
  end)
end)
