-- creation_semantics_regress_spec.lua: torch.tensor / factory semantics that once diverged from
-- PyTorch 2.x (found by the creation and dtype-conversion audit).
local torch = require("ramtorch")

describe("torch.tensor from nested tables", function()
  it("refuses a table with holes instead of silently truncating it", function()
    -- #{1, nil, 3} is 1 or 3 depending on the table's layout: tensor([1]) was a silent wrong answer
    assert.has_error(function() torch.tensor({ 1, nil, 3 }) end,
      "tensor: table at [] has a hole (nil) before index 3")
    assert.has_error(function() torch.tensor({ { 1, 2 }, { 3, nil, 5 } }) end,
      "tensor: table at [2] has a hole (nil) before index 3")
  end)

  it("names the position of a ragged sub-table", function()
    assert.has_error(function() torch.tensor({ { 1, 2 }, { 3 } }) end,
      "tensor: ragged nested table: expected length 2 at dim 1, got 1 at [2]")
    assert.has_error(function() torch.tensor({ { 1, 2 }, 3 }) end,
      "tensor: ragged nested table: expected a table of length 2 at [2], got a number")
    assert.has_error(function() torch.tensor({ 1, { 2, 3 } }) end,
      "tensor: ragged nested table: expected a scalar at [2], got a table")
  end)

  it("reports a deep ragged table at the caller's line", function()
    local ok, msg = pcall(function()
      local t = torch.tensor({ { 1, { 2 } }, { 3, 4 } })
      return t
    end)
    assert.is_false(ok)
    assert.matches("creation_semantics_regress_spec.lua:%d+: tensor: ragged nested table", msg)
  end)

  it("takes 0-d tensors as scalars, with their dtype in the promotion (as PyTorch)", function()
    local t = torch.tensor({ torch.tensor(1.5), torch.tensor(2.5) })
    assert.are.same({ 2 }, t.shape)
    assert.are.equal(torch.float32, t.dtype)
    assert.are.same({ 1.5, 2.5 }, t:tolist())
    local d = torch.tensor({ torch.tensor(1.5, { dtype = torch.float64 }), 2 })
    assert.are.equal(torch.float64, d.dtype)
    local i = torch.tensor({ { torch.tensor(3, { dtype = torch.int32 }) }, { torch.tensor(-4, { dtype = torch.int32 }) } })
    assert.are.equal(torch.int32, i.dtype)
    assert.are.same({ { 3 }, { -4 } }, i:tolist())
    assert.are.equal(torch.int64, torch.tensor({ torch.tensor(3, { dtype = torch.int32 }), 4 }).dtype)
    assert.are.equal(torch.float32, torch.tensor({ torch.tensor(3), 0.5 }).dtype)
    assert.are.equal(torch.float16, torch.tensor({ torch.tensor(1, { dtype = torch.float16 }), 2 }).dtype)
    assert.are.equal(torch.float32,
      torch.tensor({ torch.tensor(1, { dtype = torch.float16 }), torch.tensor(1, { dtype = torch.bfloat16 }) }).dtype)
    local b = torch.tensor({ torch.tensor(true), false })
    assert.are.equal(torch.bool, b.dtype)
    assert.are.same({ true, false }, b:tolist())
    assert.are.same({ 2.5 }, torch.tensor({ torch.tensor(2.5) }, { dtype = torch.float64 }):tolist())
  end)

  it("refuses n-d tensors inside a table, naming the position", function()
    assert.has_error(function() torch.tensor({ torch.tensor({ 1, 2 }), torch.tensor({ 3, 4 }) }) end,
      "tensor: element at [1] is a tensor of shape [2]; only 0-d tensors are taken as scalars "
        .. "(use torch.stack to join tensors)")
  end)
end)

describe("torch.linspace", function()
  it("hits both endpoints exactly in float64 (PyTorch fills the second half from the end)", function()
    -- start + (end - start) * i / (steps - 1) missed the end by an ulp for half of random inputs
    local t = torch.linspace(-0.3, 0.7000000000000001, 7, { dtype = torch.float64 })
    assert.are.equal(-0.3, t[1]:item())
    assert.are.equal(0.7000000000000001, t[7]:item())
    local bad = 0
    for k = 1, 200 do
      local a, b, n = -k * 0.37, k * 1.13 + 0.1, 2 + k % 17
      local u = torch.linspace(a, b, n, { dtype = torch.float64 })
      if u[1]:item() ~= a or u[n]:item() ~= b then bad = bad + 1 end
    end
    assert.are.equal(0, bad)
    -- PyTorch's values: start + step * i below steps // 2, end - step * (steps - 1 - i) from there
    local step = (5 - 0.1) / 4
    assert.are.same({ 0.1, 0.1 + step, 5 - step * 2, 5 - step, 5 },
      torch.linspace(0.1, 5, 5, { dtype = torch.float64 }):tolist())
    assert.are.same({ 3 }, torch.linspace(3, 7, 1):tolist()) -- steps == 1 gives start, as in PyTorch
    assert.are.same({ 0, 3, 6, 10 }, torch.linspace(0, 10, 4, { dtype = torch.int64 }):tolist())
  end)
end)
