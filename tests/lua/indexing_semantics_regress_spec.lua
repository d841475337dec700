-- tests/lua/indexing_semantics_regress_spec.lua: indexing, slicing and views against PyTorch 2.x.
-- Each case was a silent wrong answer (or an out-of-bounds view) before its fix: narrow's range
-- check overflowing, in-place ops and copy_ reading an input that partially overlaps the tensor they
-- write (PyTorch refuses: "some elements of the input tensor and the written-to tensor refer to a
-- single memory location"), index_add_ with a source aliasing its target, squeeze(dim) with a very
-- negative dim squeezing every dim, and out-of-range dims accepted on 0-dim tensors.
local torch = require("ramtorch")

local function raises(fn, pattern)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.matches(pattern, tostring(err))
end

local OVERLAP = "some elements of the input tensor and the written%-to tensor refer to a single memory location"

describe("narrow range checks", function()
  it("refuses a start + length that overflows int64 instead of making a huge view", function()
    local x = torch.arange(12):reshape(3, 4)
    -- 2048 + 9223372036854774784 wraps negative in int64 arithmetic
    raises(function() return x:narrow(1, 2048, 9223372036854774784) end, "narrow: range start 2048")
    raises(function() return x:narrow(1, 5, 0) end, "narrow: range start 5")
    assert.are.same({ {}, {}, {} }, x:narrow(1, 4, 0):totable()) -- start == size, length 0: allowed
    assert.are.same({ { 3 }, { 7 }, { 11 } }, x:narrow(1, -1, 1):totable())
  end)
end)

describe("in-place ops whose input partially overlaps the written tensor", function()
  it("refuse add_, sub_ and mul_ with a transposed or shifted view of the target", function()
    local t = torch.arange(16):view(4, 4)
    raises(function() t:add_(t:t()) end, "add_: .*" .. OVERLAP)
    local s = torch.arange(5)
    raises(function() s:narrow(0, 1, 4):sub_(s:narrow(0, 0, 4)) end, "sub_: .*" .. OVERLAP)
    raises(function() s:narrow(0, 1, 4):mul_(s:narrow(0, 0, 4)) end, "mul_: .*" .. OVERLAP)
    assert.are.same({ 0, 1, 2, 3, 4 }, s:totable()) -- nothing written
    assert.are.same(0 + 1, t:totable()[1][2])
  end)

  it("allow the input being the target itself, or a disjoint view of the same storage", function()
    local t = torch.arange(4)
    t:add_(t)
    assert.are.same({ 0, 2, 4, 6 }, t:totable())
    local m = torch.arange(6):view(2, 3)
    m:select(0, 0):add_(m:select(0, 1))
    assert.are.same({ { 3, 5, 7 }, { 3, 4, 5 } }, m:totable())
    local n = torch.arange(4):view(2, 2) -- non-dense views: PyTorch cannot tell, and allows them
    n:select(1, 0):add_(n:select(1, 1))
    assert.are.same({ { 1, 1 }, { 5, 3 } }, n:totable())
  end)

  it("refuse copy_ from a partially overlapping view (a transpose of the target)", function()
    local t = torch.arange(4):view(2, 2)
    raises(function() t:copy_(t:t()) end, "copy_: .*" .. OVERLAP)
    local s = torch.arange(5)
    raises(function() s:narrow(0, 1, 4):copy_(s:narrow(0, 0, 4)) end, "copy_: .*" .. OVERLAP)
    assert.are.same({ { 0, 1 }, { 2, 3 } }, t:totable())
    t:copy_(t) -- the same memory: allowed, a no-op
    assert.are.same({ { 0, 1 }, { 2, 3 } }, t:totable())
  end)

  it("refuse index_add_ whose source aliases the target", function()
    local t = torch.arange(4)
    raises(function() t:index_add_(0, { 1, 2, 3, 0 }, t) end, "index_add_: .*" .. OVERLAP)
    assert.are.same({ 0, 1, 2, 3 }, t:totable())
  end)
end)

describe("dims on squeeze, transpose and flatten", function()
  it("squeeze refuses a dim below -ndim instead of squeezing every dim", function()
    local x = torch.zeros(1, 3, 1)
    raises(function() return x:squeeze(-10) end, "squeeze: dimension %-10 out of range")
    raises(function() return x:squeeze(-1000) end, "squeeze: dimension %-1000 out of range")
    assert.are.same({ 3 }, x:squeeze().shape)
  end)

  it("0-dim tensors accept only dims 0 and -1, as in PyTorch", function()
    local s = torch.tensor(2)
    raises(function() return s:squeeze(1) end, "squeeze: dimension 1 out of range")
    raises(function() return s:transpose(1, 5) end, "transpose: dimension 1 out of range")
    raises(function() return s:flatten(1) end, "flatten: dimension out of range")
    assert.are.same({}, s:squeeze(-1).shape)
    assert.are.same({}, s:transpose(0, -1).shape)
    assert.are.same({ 1 }, s:flatten(0, -1).shape)
  end)
end)
