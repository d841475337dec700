-- tests/lua/int_pow_bool_neg_regress_spec.lua: PyTorch's refusals that used to pass silently: an
-- integer tensor to a negative integer power (gave 0 for every base but 1 and -1) and negation of
-- a bool tensor (gave an int64 tensor of -1 and 0).
local torch = require("ramtorch")

describe("integer powers and bool negation", function()
  it("refuses an integer tensor to a negative integer power, out of place and in place", function()
    local a = torch.tensor({ 1, 2, 3 }):long()
    local ok, err = pcall(function() return a ^ -1 end)
    assert.is_false(ok)
    assert.matches("integers to negative integer powers are not allowed", tostring(err))
    assert.matches("int64", tostring(err))
    ok, err = pcall(function() return a:pow_(-2) end)
    assert.is_false(ok)
    assert.matches("negative integer powers", tostring(err))
    assert.are.same({ 1, 2, 3 }, a:totable()) -- nothing written
  end)

  it("still computes the allowed cases", function()
    local a = torch.tensor({ 1, 2, 3 }):long()
    assert.are.same({ 1, 4, 9 }, (a ^ 2):totable())
    assert.are.same({ 1, 1, 1 }, (a ^ 0):totable())
    assert.are.equal(torch.float32, (a ^ -0.5).dtype) -- a fractional power is a float power
    assert.are.same({ 2, 4, 8 }, (2 ^ a):totable())
    local f = torch.tensor({ 2, 4 }):float()
    assert.are.same({ 0.5, 0.25 }, (f ^ -1):totable())
  end)

  it("refuses to negate a bool tensor and points at logical_not", function()
    local b = torch.tensor({ 1, 0, 1 }):bool()
    local ok, err = pcall(function() return -b end)
    assert.is_false(ok)
    assert.matches("bool tensor is not supported", tostring(err))
    assert.matches("logical_not", tostring(err))
    assert.are.same({ -1, 0, -1 }, (-(b:long())):totable())
  end)
end)
