-- tests/lua/elementwise_semantics_regress_spec.lua: elementwise ops that gave silently different
-- answers from PyTorch 2.x: div's rounding_mode was ignored (floor/trunc division came back as
-- true division; now computed by ramtorch/ops_round.lua), and an integer tensor compared with a
-- fractional number compared in double where PyTorch compares in float32 (the number's promotion type).
local torch = require("ramtorch")

local function err_of(f)
  local ok, err = pcall(f)
  assert.is_false(ok)
  return tostring(err)
end

describe("div rounding_mode", function()
  it("rounds for 'floor' and 'trunc' instead of returning true division", function()
    local a = torch.tensor({ -7, 7 }):long()
    -- PyTorch: div(a, 2, rounding_mode='floor') == {-4, 3}, 'trunc' == {-3, 3} (not {-3.5, 3.5})
    assert.are.same({ -4, 3 }, torch.div(a, 2, { rounding_mode = "floor" }):totable())
    assert.are.equal(torch.int64, torch.div(a, 2, { rounding_mode = "floor" }).dtype)
    assert.are.same({ -3, 3 }, a:div(torch.tensor({ 2, 2 }):long(), "trunc"):totable())
    local f = torch.tensor({ -7.5, 7.5 })
    f:div_(2, { rounding_mode = "floor" })
    assert.are.same({ -4, 3 }, f:totable())
    assert.are.same({ -3, 3 }, torch.divide(torch.tensor({ -7.5, 7.5 }), 2, { rounding_mode = "trunc" }):totable())
  end)

  it("refuses an unknown rounding_mode with PyTorch's message", function()
    local err = err_of(function() return torch.div(torch.tensor({ 1 }):float(), 2, { rounding_mode = "round" }) end)
    assert.matches("div expected rounding_mode to be one of None, 'trunc', or 'floor' but found 'round'", err, 1,
                   true)
    err = err_of(function() return torch.div(torch.tensor({ 1 }):float(), 2, 5) end)
    assert.matches("div: expected rounding_mode", err, 1, true)
  end)

  it("keeps true division for no rounding_mode", function()
    local a = torch.tensor({ -7, 7 }):long()
    assert.are.same({ -3.5, 3.5 }, torch.div(a, 2):totable())
    assert.are.same({ -3.5, 3.5 }, torch.div(a, 2, {}):totable())
    assert.are.same({ -3.5, 3.5 }, a:div(2, nil):totable())
    assert.are.same({ -3.5, 3.5 }, torch.true_divide(a, 2):totable())
    assert.are.equal(torch.float32, (a / torch.tensor({ 2, 2 }):long()).dtype)
    local f = torch.tensor({ 3 }):float()
    assert.are.same({ 1.5 }, f:div_(2):totable())
  end)
end)

describe("integer tensor compared with a fractional number", function()
  it("compares in float32 as PyTorch does", function()
    -- PyTorch: result_type(int64 tensor, 3.0000001) is float32, and float32(3.0000001) == 3
    local a = torch.tensor({ 3, 4 }):long()
    assert.are.same({ true, false }, a:eq(3.0000001):totable())
    assert.are.same({ false, true }, a:ne(3.0000001):totable())
    assert.are.same({ false, false }, a:lt(3.0000001):totable())
    assert.are.same({ true, true }, a:ge(3.0000001):totable())
    assert.are.same({ true, false }, torch.le(a, 2.9999999):totable())
    assert.are.same({ true, false }, torch.ge(3.0000001, a):totable())
    local b = torch.tensor({ true, false })
    assert.are.same({ true, false }, b:eq(1.00000001):totable())
  end)

  it("still compares clearly fractional numbers exactly", function()
    local a = torch.tensor({ 2, 3 }):int()
    assert.are.same({ true, false }, a:lt(2.5):totable())
    assert.are.same({ false, false }, a:eq(2.5):totable())
    assert.are.same({ false, true }, torch.gt(a, 2.5):totable())
  end)
end)
