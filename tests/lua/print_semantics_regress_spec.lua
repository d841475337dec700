-- print_semantics_regress_spec.lua: values leaving tensors (item, totable/tolist, tostring) must be exact.
-- Lua numbers are doubles, so int64 values beyond 2^53 come back as int64_t cdata (like 9007199254740993LL)
-- instead of being rounded silently; printing shows their exact digits as PyTorch does. Also pins the
-- special values (-0, nan, inf, denormals, bf16/f16, bool, uint8), empty/0-dim/non-contiguous tensors and
-- summarisation of large tensors.
local torch = require("ramtorch")
local ffi = require("ffi")

local function i64(t) return torch.tensor(t, { dtype = torch.int64 }) end
local TWO53 = 2 ^ 53

describe("values leaving int64 tensors beyond 2^53", function()
  local big -- [2^53 + 1, -(2^53) - 1, 5], computed in int64 (2^53 + 1 has no double)
  before_each(function() big = i64({ TWO53, -TWO53, 4 }) + i64({ 1, -1, 1 }) end)

  it("item() returns the exact value as int64 cdata", function()
    local v = big[1]:item()
    assert.is_true(ffi.istype("int64_t", v))
    assert.are.equal(9007199254740993LL, v)
    assert.are.equal(-9007199254740993LL, big[2]:item())
    -- representable values stay plain Lua numbers
    assert.are.equal("number", type(big[3]:item()))
    assert.are.equal(5, big[3]:item())
    assert.are.equal("number", type(i64({ TWO53 })[1]:item()))
  end)

  it("totable()/tolist() return exact values", function()
    local t = big:totable()
    assert.are.equal(9007199254740993LL, t[1])
    assert.is_true(ffi.istype("int64_t", t[1]))
    assert.are.equal(-9007199254740993LL, t[2])
    assert.are.equal("number", type(t[3]))
    assert.are.equal(9007199254740993LL, big:tolist()[1])
    assert.are.equal(9007199254740993LL, big[1]:totable()) -- 0-dim
  end)

  it("tostring prints the exact digits", function()
    assert.are.equal("tensor([ 9007199254740993, -9007199254740993, " .. (" "):rep(16) .. "5])", tostring(big))
    assert.are.equal("tensor(9007199254740993)", tostring(big[1]))
  end)

  it("tostring prints int64 extremes as integers, not floats", function()
    local lim = i64({ -TWO53 * 1024, 1 }) -- -2^63 is a double
    lim = torch.cat({ lim, lim:narrow(0, 0, 1) - 1 }) -- wraps to 2^63 - 1
    assert.are.equal("tensor([-9223372036854775808, " .. (" "):rep(19) .. "1,  9223372036854775807])",
                     tostring(lim))
  end)

  it("summarised prints are exact too", function()
    local t = i64({ TWO53 }):expand(2000):contiguous() + 1
    assert.are.equal("tensor([9007199254740993, 9007199254740993, 9007199254740993,  ...,\n"
                     .. "        9007199254740993, 9007199254740993, 9007199254740993])", tostring(t))
  end)
end)

describe("special values and layouts (pinned)", function()
  local f32 = function(t) return torch.tensor(t, { dtype = torch.float32 }) end
  it("-0, nan, inf, denormals, extremes", function()
    assert.are.equal("tensor([-0., 1.])", tostring(f32({ -0.0, 1 })))
    assert.are.equal("tensor([nan, inf, -inf, 1.])", tostring(f32({ 0 / 0, math.huge, -math.huge, 1 })))
    assert.are.equal("tensor([1.0000e-310,  1.0000e+00], dtype=torch.float64)",
                     tostring(torch.tensor({ 1e-310, 1 }, { dtype = torch.float64 })))
    assert.are.equal("tensor([1.0000e+30, 1.0000e-30])", tostring(f32({ 1e30, 1e-30 })))
    assert.is_true(1 / f32({ -0.0 })[1]:item() < 0)
  end)
  it("bf16/f16 print their stored values, bool and uint8", function()
    assert.are.equal("tensor([0.1001, 0.3340], dtype=torch.bfloat16)",
                     tostring(torch.tensor({ 0.1, 1 / 3 }, { dtype = torch.bfloat16 })))
    assert.are.equal("tensor([0.1000, 0.3333], dtype=torch.float16)",
                     tostring(torch.tensor({ 0.1, 1 / 3 }, { dtype = torch.float16 })))
    assert.are.equal("tensor([ True, False])", tostring(torch.tensor({ true, false })))
    assert.are.equal(false, torch.tensor({ true, false })[2]:item())
    assert.are.equal("tensor([  0, 255], dtype=torch.uint8)",
                     tostring(torch.tensor({ 0, 255 }, { dtype = torch.uint8 })))
    assert.are.equal(255, torch.tensor({ 255 }, { dtype = torch.uint8 })[1]:item())
  end)
  it("empty, 0-dim, non-contiguous, large", function()
    assert.are.equal("tensor([], size=(3, 0, 2))", tostring(torch.zeros(3, 0, 2)))
    assert.are.equal("tensor([], dtype=torch.int64)", tostring(i64({}):narrow(0, 0, 0)))
    local m = torch.arange(12):reshape(3, 4)
    assert.are.equal("tensor([ 2,  6, 10])", tostring(m:select(1, 2)))
    assert.are.equal("tensor([[ 1,  5,  9],\n        [ 2,  6, 10]])", tostring(m:narrow(1, 1, 2):t()))
    assert.are.same({ { 1, 5, 9 }, { 2, 6, 10 } }, m:narrow(1, 1, 2):t():totable())
    assert.are.equal("tensor([0., 0., 0.,  ..., 0., 0., 0.])", tostring(torch.zeros(1000000)))
  end)
end)
