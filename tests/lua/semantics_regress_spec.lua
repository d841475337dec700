-- tests/lua/semantics_regress_spec.lua: places where the runtime gave a silent wrong answer, or a
-- result PyTorch 2.x would refuse or type differently: subtraction with bool tensors, a fractional
-- alpha with an integer result, clamp/relu of bool tensors, index_add_ of a float source into an
-- integer tensor, where() with a non-bool condition or int64 values beyond 2^53, integer powers
-- beyond 2^53 (or wrapping in int32), tensor() of integral values outside int64, and scalars that do
-- not fit the dtype they fill or clamp.
local torch = require("ramtorch")

local function err_of(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

describe("subtraction with bool tensors", function()
  local b = function() return torch.tensor({ true, false, true }) end
  local i = function() return torch.tensor({ 1, 2, 3 }) end

  it("refuses two bool tensors, out of place and in place, and names the alternative", function()
    local e = err_of(function() return b() - b() end)
    assert.matches("sub: subtraction, the `%-` operator, with two bool tensors is not supported", e)
    assert.matches("ne", e)
    assert.matches("sub_: subtraction", err_of(function() local x = b(); x:sub_(b()) end))
    assert.matches("two bool tensors", err_of(function() return b() - torch.tensor(true) end))
  end)

  it("refuses a bool tensor with a number or another dtype, either side", function()
    for _, f in ipairs({
      function() return b() - 1 end,
      function() return 1 - b() end,
      function() return i() - b() end,
      function() return b() - i() end,
      function() return torch.tensor({ 1.5 }) - torch.tensor({ true }) end,
      function() return torch.sub(i(), b(), 2) end,
      function() local x = i(); x:sub_(b()) end,
    }) do
      assert.matches("sub_?: subtraction, the `%-` operator, with a bool tensor is not supported", err_of(f))
    end
    local x = i()
    pcall(function() x:sub_(b()) end)
    assert.are.same({ 1, 2, 3 }, x:totable()) -- nothing written
  end)

  it("still adds and multiplies bools and subtracts other dtypes", function()
    assert.are.same({ true, false, true }, (b() + b()):totable())
    assert.are.same({ 0, 1, 2 }, (i() - 1):totable())
    assert.are.same({ 2, 1, 0 }, (3 - i()):totable())
  end)
end)

describe("alpha of add and sub", function()
  it("refuses a fractional alpha when the result is integral, as PyTorch does", function()
    local i = torch.tensor({ 1, 2, 3 })
    assert.matches("add: for integral input tensors, argument alpha must not be a floating point number",
                   err_of(function() return i:add(i, 0.5) end))
    assert.matches("sub: for integral", err_of(function() return torch.sub(i, 1, 0.5) end))
    assert.matches("add_: for integral", err_of(function() local x = i:clone(); x:add_(i, 0.5) end))
  end)

  it("keeps integral alphas and float results", function()
    local i = torch.tensor({ 1, 2, 3 })
    assert.are.same({ 3, 6, 9 }, i:add(i, 2):totable())
    assert.are.equal(torch.int64, i:add(i, 2).dtype)
    assert.are.same({ 1.5, 3, 4.5 }, i:float():add(i, 0.5):totable())
    assert.are.same({ 1.25, 2.25, 3.25 }, i:add(0.5, 0.5):totable()) -- a float number: float result
  end)
end)

describe("clamp and relu of bool tensors", function()
  it("clamp promotes a bool tensor with number bounds to int64", function()
    local b = torch.tensor({ true, false, true })
    local c = b:clamp(2)
    assert.are.equal(torch.int64, c.dtype)
    assert.are.same({ 2, 2, 2 }, c:totable())
    assert.are.same({ 1, 0, 1 }, b:clamp(0, 5):totable())
    assert.are.equal(torch.int64, b:clamp(0, 5).dtype)
    assert.are.equal(torch.float32, b:clamp(0.5).dtype)
    assert.are.same({ 1, 0.5, 1 }, b:clamp(0.5):totable())
  end)

  it("relu refuses a bool tensor", function()
    assert.matches("relu: Boolean inputs not supported for relu",
                   err_of(function() return torch.tensor({ true }):relu() end))
  end)
end)

describe("index_add_ into an integer or bool tensor", function()
  it("refuses a source that cannot be cast back (float into int, number into bool)", function()
    local x = torch.zeros(3, { dtype = torch.int64 })
    local e = err_of(function() x:index_add_(0, { 0, 0 }, torch.tensor({ 0.6, 0.6 })) end)
    assert.matches("index_add_: source dtype float32 can't be cast to the desired output type int64", e)
    assert.are.same({ 0, 0, 0 }, x:totable())
    local bt = torch.zeros(3, { dtype = torch.bool })
    assert.matches("index_add_: source dtype int64 can't be cast",
                   err_of(function() bt:index_add_(0, { 0 }, torch.tensor({ 2 })) end))
  end)

  it("still converts within a category (int into float, float64 into float32)", function()
    local x = torch.zeros(3)
    x:index_add_(0, { 0, 0 }, torch.tensor({ 1, 2 }))
    assert.are.same({ 3, 0, 0 }, x:totable())
    x:index_add_(0, { 1 }, torch.tensor({ 0.5 }, { dtype = torch.float64 }))
    assert.are.same({ 3, 0.5, 0 }, x:totable())
  end)
end)

describe("where", function()
  it("refuses a condition that is not bool, as PyTorch 2.x does", function()
    local i = torch.tensor({ 1, 0, 3 })
    assert.matches("where: expected condition to be a boolean tensor, but got a tensor with dtype int64",
                   err_of(function() return torch.where(i, i, i) end))
    assert.matches("dtype float32", err_of(function() return torch.where(torch.tensor({ 0.5, 0, 1 }), i, i) end))
    assert.matches("dtype uint8", err_of(function() return torch.where(i:byte(), i, i) end))
  end)

  it("keeps int64 values beyond 2^53 exact", function()
    local big = torch.tensor({ 2 ^ 53, 2 ^ 53 }) + torch.tensor({ 1, 3 }) -- exact int64
    local w = torch.where(torch.tensor({ true, false }), big, torch.tensor({ 0, 0 }))
    assert.are.same({ 1, -(2 ^ 53) }, (w - torch.tensor({ 2 ^ 53, 2 ^ 53 })):totable())
    w = torch.where(torch.tensor({ false, true }), torch.tensor({ 0, 0 }):int(), big)
    assert.are.same({ 1, 0 }, (w - torch.tensor({ 2 ^ 53, 0 })):totable())
  end)
end)

describe("integer powers", function()
  it("are exact beyond 2^53 and wrap like integer multiplication", function()
    local x = torch.tensor({ 94906267, 3 })
    assert.are.same({ 0, 0 }, ((x ^ 2) - x * x):totable())
    assert.are.same({ 0, 0 }, ((x ^ torch.tensor({ 2, 2 })) - x * x):totable())
    local i32 = torch.tensor({ 65536, 3 }, { dtype = torch.int32 })
    assert.are.same({ 0, 9 }, (i32 ^ 2):totable()) -- 2^32 wraps to 0 in int32
    assert.are.same({ 0, -1, 1, 0, 1 }, (torch.tensor({ 2, -1, 1, 0, -1 }) ^ torch.tensor({ -1, -1, -2, 1, -2 })):totable())
    assert.are.same({ 0, 2 }, (2 ^ torch.tensor({ -1, 1 })):totable())
  end)
end)

describe("tensor() of integral numbers outside int64", function()
  it("gives the default float dtype instead of wrapped int64", function()
    local t = torch.tensor({ 1e20, 1 })
    assert.are.equal(torch.float32, t.dtype)
    assert.is_true(math.abs(t:totable()[1] - 1e20) < 1e13)
    assert.are.equal(torch.float32, torch.tensor({ -2 ^ 63 * 2 }).dtype)
    assert.are.equal(torch.int64, torch.tensor({ 2 ^ 62 }).dtype)
  end)
end)

describe("scalars that do not fit the dtype they fill or clamp", function()
  it("full and fill_ refuse a value out of the dtype's range", function()
    assert.matches("full: value 300 cannot be converted to type uint8 without overflow",
                   err_of(torch.full, { 1 }, 300, { dtype = torch.uint8 }))
    assert.matches("value 1e%+20 cannot be converted to type int64 without overflow",
                   err_of(torch.full, { 1 }, 1e20, { dtype = torch.int64 }))
    assert.matches("fill_: value %-1000000000 cannot be converted to type float16 without overflow",
                   err_of(function() torch.zeros(2, { dtype = torch.float16 }):fill_(-1e9) end))
    assert.matches("fill_: value nan cannot be converted to type int32",
                   err_of(function() torch.zeros(2, { dtype = torch.int32 }):fill_(0 / 0) end))
  end)

  it("still fills what fits, truncates fractions, wraps small negatives into uint8, allows inf and NaN in floats", function()
    assert.are.same({ 2, 2 }, torch.zeros(2, { dtype = torch.int64 }):fill_(2.5):totable())
    assert.are.same({ 255 }, torch.full({ 1 }, -1, { dtype = torch.uint8 }):totable())
    assert.are.same({ -math.huge }, torch.full({ 1 }, -math.huge, { dtype = torch.float16 }):totable())
    assert.are.same({ 65504 }, torch.full({ 1 }, 65504, { dtype = torch.float16 }):totable())
    local n = torch.full({ 1 }, 0 / 0, { dtype = torch.bfloat16 }):totable()[1]
    assert.is_true(n ~= n)
  end)

  it("clamp refuses a bound that does not fit an integer result", function()
    assert.matches("clamp: value 300 cannot be converted to type uint8 without overflow",
                   err_of(function() return torch.tensor({ 3 }, { dtype = torch.uint8 }):clamp(300) end))
    assert.matches("clamp: value 1099511627776 cannot be converted to type int32",
                   err_of(function() return torch.tensor({ 3 }, { dtype = torch.int32 }):clamp(nil, 2 ^ 40) end))
    assert.are.same({ 5 }, torch.tensor({ 3 }, { dtype = torch.int32 }):clamp(5, 2 ^ 20):totable())
  end)
end)
