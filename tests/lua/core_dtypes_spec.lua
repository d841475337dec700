-- core_dtypes_spec.lua: creation in all 8 dtypes (empty, zeros, ones, full, arange, rand, randn, randint,
-- tensor from nested tables), to(dtype) between every pair, bf16/f16 rounding on store as seen from Lua,
-- bf16/f16 arithmetic rounded once from f32, and int64 arithmetic exact beyond 2^53.
local torch = require("ramtorch")

local ALL = { torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int32,
              torch.uint8, torch.bool }
local FLOATS = { torch.float32, torch.bfloat16, torch.float16, torch.float64 }

describe("creation in every dtype", function()
  for _, dt in ipairs(ALL) do
    it(tostring(dt), function()
      local e = torch.empty(2, 3, { dtype = dt })
      assert.are.equal(dt, e.dtype)
      assert.are.same({ 2, 3 }, e.shape)
      local z = torch.zeros({ 2, 3 }, { dtype = dt })
      local o = torch.ones(2, 3, { dtype = dt })
      assert.are.equal(dt, z.dtype)
      local zero, one = 0, 1
      if dt == torch.bool then zero, one = false, true end
      assert.are.same({ { zero, zero, zero }, { zero, zero, zero } }, z:totable())
      assert.are.same({ { one, one, one }, { one, one, one } }, o:totable())
      local f = torch.full({ 4 }, dt == torch.bool and 1 or 3, { dtype = dt })
      assert.are.equal(dt, f.dtype)
      assert.are.same(dt == torch.bool and { true, true, true, true } or { 3, 3, 3, 3 }, f:totable())
      if dt ~= torch.bool then
        local a = torch.arange(0, 5, { dtype = dt })
        assert.are.equal(dt, a.dtype)
        assert.are.same({ 0, 1, 2, 3, 4 }, a:totable())
        local r = torch.randint(0, 7, { 100 }, { dtype = dt })
        assert.are.equal(dt, r.dtype)
        for _, v in ipairs(r:totable()) do assert.is_true(v >= 0 and v < 7 and v == math.floor(v)) end
      end
      local t = torch.tensor({ { 1, 0 }, { 1, 1 } }, { dtype = dt })
      assert.are.equal(dt, t.dtype)
      if dt == torch.bool then
        assert.are.same({ { true, false }, { true, true } }, t:totable())
      else
        assert.are.same({ { 1, 0 }, { 1, 1 } }, t:totable())
      end
    end)
  end

  for _, dt in ipairs(FLOATS) do
    it("rand and randn in " .. tostring(dt), function()
      torch.manual_seed(3)
      local r = torch.rand(1000, { dtype = dt })
      local n = torch.randn(1000, { dtype = dt })
      assert.are.equal(dt, r.dtype)
      assert.are.equal(dt, n.dtype)
      local rmin, rmax = r:min():item(), r:max():item()
      assert.is_true(rmin >= 0 and rmax < 1, ("rand range [%g, %g]"):format(rmin, rmax))
      assert.is_true(math.abs(n:double():mean():item()) < 0.15)
    end)
  end

  it("rejects rand/randn for integer dtypes and names the expectation", function()
    local ok, err = pcall(torch.rand, 3, { dtype = torch.int64 })
    assert.is_false(ok)
    assert.matches("rand: expected a floating%-point dtype, got int64", err)
    ok, err = pcall(torch.randn, 3, { dtype = torch.bool })
    assert.matches("randn: expected a floating%-point dtype, got bool", err)
  end)

  it("infers dtypes from nested tables like torch.tensor", function()
    assert.are.equal(torch.int64, torch.tensor({ { 1, 2 }, { 3, 4 } }).dtype)
    assert.are.equal(torch.float32, torch.tensor({ 1, 2.5 }).dtype)
    assert.are.equal(torch.bool, torch.tensor({ { true }, { false } }).dtype)
    assert.are.equal(torch.float32, torch.tensor(1.5).dtype)
    assert.are.same({}, torch.tensor(7).shape)
    assert.are.equal(7, torch.tensor(7):item())
    assert.are.same({ 2, 2, 1 }, torch.tensor({ { { 1 }, { 2 } }, { { 3 }, { 4 } } }).shape)
    local ok, err = pcall(torch.tensor, { { 1, 2 }, { 3 } })
    assert.is_false(ok)
    assert.matches("ragged", err)
  end)

  it("arange follows PyTorch's dtype and length rules", function()
    assert.are.equal(torch.int64, torch.arange(5).dtype)
    assert.are.equal(torch.float32, torch.arange(0, 1, 0.25).dtype)
    assert.are.same({ 0, 0.25, 0.5, 0.75 }, torch.arange(0, 1, 0.25):totable())
    assert.are.same({ 5, 3, 1 }, torch.arange(5, 0, -2):totable())
    assert.are.equal(0, torch.arange(3, 3):numel())
  end)
end)

describe("to(dtype) between every pair", function()
  for _, from in ipairs(ALL) do
    for _, to in ipairs(ALL) do
      it(tostring(from) .. " -> " .. tostring(to), function()
        local src = torch.tensor({ 0, 1, 2, 3 }, { dtype = from })
        local dst = src:to(to)
        assert.are.equal(to, dst.dtype)
        local want = { 0, 1, 2, 3 }
        if from == torch.bool then want = { 0, 1, 1, 1 } end
        if to == torch.bool then want = { false, true, true, true } end
        assert.are.same(want, dst:totable())
        if from == to then assert.are.equal(src:data_ptr(), dst:data_ptr()) end
      end)
    end
  end

  it("float to integer truncates toward zero, negative to uint8 wraps", function()
    local x = torch.tensor({ -2.7, -0.5, 0.5, 2.7 }, { dtype = torch.float64 })
    assert.are.same({ -2, 0, 0, 2 }, x:to(torch.int64):totable())
    assert.are.same({ -2, 0, 0, 2 }, x:to(torch.int32):totable())
    assert.are.same({ 254, 0, 0, 2 }, x:to(torch.uint8):totable())
    assert.are.same({ true, true, true, true }, x:to(torch.bool):totable())
  end)
end)

describe("reduced float types", function()
  it("round to nearest even on store", function()
    local bf = function(v) return torch.tensor({ v }, { dtype = torch.float64 }):to(torch.bfloat16):item() end
    local hf = function(v) return torch.tensor({ v }, { dtype = torch.float64 }):to(torch.float16):item() end
    assert.are.equal(1, bf(1 + 2 ^ -8))                    -- tie, even below
    assert.are.equal(1 + 2 ^ -6, bf(1 + 3 * 2 ^ -8))       -- tie, odd below: up
    assert.are.equal(1 + 2 ^ -7, bf(1 + 2 ^ -8 + 2 ^ -12)) -- above the tie
    assert.are.equal(math.huge, bf(3.4e38))                -- above bf16 max: inf
    assert.are.equal(1, hf(1 + 2 ^ -11))
    assert.are.equal(1 + 2 ^ -9, hf(1 + 3 * 2 ^ -11))
    assert.are.equal(65504, hf(65519))
    assert.are.equal(math.huge, hf(65520))
    assert.are.equal(-math.huge, hf(-1e5))
    assert.are.equal(2 ^ -24, hf(2 ^ -24))                 -- smallest subnormal
    assert.are.equal(0, hf(2 ^ -25))                       -- tie to even: 0
    assert.are.equal(2 * 2 ^ -24, hf(1.5 * 2 ^ -24))       -- tie to even: 2
    local n = hf(0 / 0)
    assert.is_true(n ~= n)
    n = bf(0 / 0)
    assert.is_true(n ~= n)
  end)

  it("compute in f32 and round once", function()
    for _, dt in ipairs({ torch.bfloat16, torch.float16 }) do
      torch.manual_seed(5)
      local a, b = torch.randn(500, { dtype = dt }), torch.randn(500, { dtype = dt })
      for _, op in ipairs({ "add", "sub", "mul", "div" }) do
        local want = a:float()[op](a:float(), b:float()):to(dt)
        local got = a[op](a, b)
        assert.are.equal(dt, got.dtype)
        assert.are.same(want:totable(), got:totable())
      end
      local want = (a:float() * 0.3):to(dt)
      assert.are.same(want:totable(), (a * 0.3):totable())
      local e = a:float():exp():to(dt)
      assert.are.same(e:totable(), a:exp():totable())
    end
  end)

  it("promote bf16 with f16 to f32 and bf16 with f32 to f32", function()
    local a, b = torch.ones(2, { dtype = torch.bfloat16 }), torch.ones(2, { dtype = torch.float16 })
    assert.are.equal(torch.float32, (a + b).dtype)
    assert.are.equal(torch.float32, (a + torch.ones(2)).dtype)
    assert.are.equal(torch.bfloat16, (a + 1).dtype)
    assert.are.equal(torch.float64, (torch.ones(2, { dtype = torch.int64 }) + torch.ones(2, { dtype = torch.float64 })).dtype)
  end)

  it("let a 0-dim tensor promote only across categories, as PyTorch's result_type", function()
    local f32, bf = torch.ones(3), torch.ones(3, { dtype = torch.bfloat16 })
    local i32, i64 = torch.ones(3, { dtype = torch.int32 }), torch.ones(3, { dtype = torch.int64 })
    local z64 = torch.tensor(2.0, { dtype = torch.float64 })
    local z32 = torch.tensor(2.0, { dtype = torch.float32 })
    local zi = torch.tensor(2, { dtype = torch.int64 })
    local zb = torch.tensor(true)
    local cases = {
      { f32, z64, torch.float32 }, { z64, f32, torch.float32 }, { bf, z32, torch.bfloat16 },
      { i64, z32, torch.float32 }, { i32, zi, torch.int32 }, { i32, zb, torch.int32 },
      { torch.tensor({ true, false }), zi, torch.int64 }, { z64, zi, torch.float64 },
      { torch.ones(3, { dtype = torch.float64 }), z32, torch.float64 },
    }
    for k, c in ipairs(cases) do
      assert.are.equal(c[3], (c[1] + c[2]).dtype, "case " .. k)
      assert.are.equal(c[3], (c[1] * c[2]).dtype, "case " .. k)
    end
    assert.are.equal(torch.float32, torch.where(torch.tensor({ true, false, true }), f32, z64).dtype)
    assert.are.same({ 3, 3, 3 }, (f32 + z64):totable())
    -- gradients come back in each input's own dtype
    local x = torch.ones(3, { requires_grad = true })
    local y = torch.tensor(3.0, { dtype = torch.float64, requires_grad = true })
    ;(x * y):sum():backward()
    assert.are.equal(torch.float32, x.grad.dtype)
    assert.are.equal(torch.float64, y.grad.dtype)
    assert.are.equal(3, y.grad:item())
    assert.are.same({ 3, 3, 3 }, x.grad:totable())
  end)
end)

describe("int64", function()
  it("stays exact beyond 2^53 on the integer kernel paths", function()
    local big = torch.full({ 2 }, 2 ^ 53, { dtype = torch.int64 })
    local one = torch.ones(2, { dtype = torch.int64 })
    local b1 = big + one                     -- 2^53 + 1: not a double
    assert.are.same({ 1, 1 }, (b1 - big):totable())
    assert.are.same({ false, false }, b1:eq(big):totable())
    assert.are.same({ true, true }, b1:gt(big):totable())
    assert.are.same({ 1, 1 }, ((big + 1) - big):totable()) -- scalar path
    assert.are.same({ 3, 3 }, ((b1 * 3) - big * 3):totable())
    assert.are.same({ 3, 3 }, ((b1 * one * 3) - (big * one * 3)):totable())
    local sum = b1:sum() - big:sum()          -- (2^54 + 2) - 2^54
    assert.are.equal(2, sum:item())
    assert.are.equal(torch.int64, b1:sum().dtype)
  end)

  it("keeps int dtype for integral scalars, goes to float for fractional ones and division", function()
    local a = torch.tensor({ 1, 2, 3 })
    assert.are.equal(torch.int64, (a + 2).dtype)
    assert.are.equal(torch.float32, (a + 0.5).dtype)
    assert.are.equal(torch.float32, (a / 2).dtype)
    assert.are.same({ 0.5, 1, 1.5 }, (a / 2):totable())
    assert.are.equal(torch.int64, torch.tensor({ true, false }):sum().dtype)
  end)

  it("refuses in-place results that cannot be cast back (PyTorch's canCast), instead of truncating", function()
    local function err(f)
      local ok, e = pcall(f)
      assert.is_false(ok)
      return tostring(e)
    end
    local msg = "add_: result type float32 can't be cast to the desired output type int64"
    assert.truthy(err(function() torch.tensor({ 1, 2 }):add_(0.5) end):find(msg, 1, true))
    assert.truthy(err(function() torch.tensor({ 1, 2 }):add_(torch.tensor({ 0.5, 0.5 })) end):find(msg, 1, true))
    assert.truthy(err(function() torch.tensor({ 1, 2 }):div_(2) end)
                  :find("div_: result type float32 can't be cast to the desired output type int64", 1, true))
    assert.truthy(err(function() torch.tensor({ 1, 2 }):mul_(torch.tensor(2.5)) end):find("mul_: result type float32", 1, true))
    assert.truthy(err(function() torch.tensor({ true, false }):add_(1) end)
                  :find("add_: result type int64 can't be cast to the desired output type bool", 1, true))
    -- what does fit stays allowed, and the tensor is unchanged after a refusal
    local a = torch.tensor({ 1, 2, 3 })
    pcall(function() a:add_(0.5) end)
    assert.are.same({ 1, 2, 3 }, a:totable())
    a:add_(2)
    a:mul_(torch.tensor({ 2, 2, 2 }, { dtype = torch.int32 }))
    assert.are.same({ 6, 8, 10 }, a:totable())
    local f = torch.tensor({ 1.5, 2.5 })
    f:add_(torch.tensor({ 1, 1 }))
    assert.are.same({ 2.5, 3.5 }, f:totable())
    local i32 = torch.tensor({ 1, 2 }, { dtype = torch.int32 })
    i32:add_(torch.tensor(5)) -- a 0-dim int64 fits an int32 target
    assert.are.same({ 6, 7 }, i32:totable())
  end)
end)
