-- tests/lua/inplace_overlap_regress_spec.lua: in-place writes into a tensor whose elements share
-- memory through an expanded dim (stride 0) are refused, as PyTorch refuses them: several writes land
-- on one element (racing on the GPU, order-dependent on the CPU). fill_ stays allowed (idempotent,
-- as in PyTorch).
local torch = require("ramtorch")

local function refused(fn, op)
  local ok, err = pcall(fn)
  assert.is_false(ok, op .. " was accepted")
  assert.matches("more than one element of the written%-to tensor refers to a single memory location",
                 tostring(err))
  assert.matches(op, tostring(err), 1, true)
end

describe("in-place writes into expanded tensors", function()
  it("refuses copy_, add_, mul_ by a number, uniform_, normal_ and index_add_", function()
    local base = torch.zeros({ 1, 3 })
    local e = base:expand(4, 3)
    refused(function() e:copy_(torch.arange(12):view(4, 3):float()) end, "copy_")
    refused(function() e:add_(torch.ones({ 4, 3 })) end, "add_")
    refused(function() e:mul_(2) end, "mul_")
    refused(function() e:uniform_() end, "uniform_")
    refused(function() e:normal_() end, "normal_")
    refused(function() e:index_add_(0, torch.tensor({ 0 }):long(), torch.ones({ 1, 3 })) end, "index_add_")
    assert.are.same({ { 0, 0, 0 } }, base:totable()) -- nothing written
  end)

  it("still allows fill_ on an expanded tensor and every write into a plain view", function()
    local base = torch.zeros({ 1, 3 })
    base:expand(4, 3):fill_(2)
    assert.are.same({ { 2, 2, 2 } }, base:totable())
    local m = torch.zeros({ 4, 3 })
    m:narrow(0, 1, 2):add_(1)
    m:t():mul_(3)
    assert.are.same({ { 0, 0, 0 }, { 3, 3, 3 }, { 3, 3, 3 }, { 0, 0, 0 } }, m:totable())
    local one = torch.zeros({ 1, 3 }):expand(1, 3) -- size-1 dims with stride 0 share nothing
    one:add_(1)
    assert.are.same({ { 1, 1, 1 } }, one:totable())
  end)
end)
