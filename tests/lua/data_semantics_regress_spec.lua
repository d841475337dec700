-- data_semantics_regress_spec.lua: regressions from an audit of ramtorch.data against PyTorch 2.x's
-- torch.utils.data, each a silent wrong answer (or an error without its index) before the fix:
-- default_collate batched tables with a missing key or sequences of unequal length into short
-- columns, turned +-inf among integers into int64 garbage and took anything after a boolean for a
-- boolean; a DataLoader over a dataset of strings handed each string of a batch to its own loop
-- variable; batch_size = false (PyTorch's batch_size=None) batched by 1 instead of turning batching
-- off; a sampler index like 1.5 was truncated by the C gather; an error in a dataset's get did not
-- say which sample; RandomSampler over an empty dataset drew index -1 (replacement) or nothing.
local torch = require("ramtorch")
local data = require("ramtorch.data")

local function err_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  return tostring(err)
end

local function dataset_of(get, n)
  local D = data.Dataset:extend("D")
  function D:__len() return n end
  D.get = function(_, i) return get(i) end
  return D()
end

describe("default_collate as PyTorch", function()
  it("refuses a table sample that lacks a key of sample 1", function()
    assert.matches("default_collate: sample 2 has no key 'b'",
                   err_of(data.default_collate, { { a = 1, b = 2 }, { a = 3 } }))
  end)

  it("refuses sequences of unequal length", function()
    assert.matches("default_collate: each element in list of batch should be of equal size %(sample 1 has 2, sample 2 has 1%)",
                   err_of(data.default_collate, { { 1, 2 }, { 3 } }))
    assert.matches("sample 1 has 1, sample 2 has 2", err_of(data.default_collate, { { 1 }, { 3, 4 } }))
  end)

  it("keeps infinities as float64 rather than int64 garbage", function()
    local t = data.default_collate({ 1, math.huge, -math.huge })
    assert.are.equal(torch.float64, t.dtype)
    assert.are.same({ 1, math.huge, -math.huge }, t:totable())
  end)

  it("refuses a non-boolean after a boolean", function()
    assert.matches("default_collate: sample 2 is a number where sample 1 is a boolean",
                   err_of(data.default_collate, { true, 2 }))
  end)
end)

describe("DataLoader as PyTorch", function()
  it("gives a batch of strings as one list", function()
    local ds = dataset_of(function(i) return "s" .. i end, 5)
    local got = {}
    for names, extra in data.DataLoader(ds, { batch_size = 2 }):iter() do
      assert.is_nil(extra)
      got[#got + 1] = names
    end
    assert.are.same({ { "s0", "s1" }, { "s2", "s3" }, { "s4" } }, got)
  end)

  it("batch_size = false turns batching off (PyTorch's batch_size=None)", function()
    local x = torch.arange(6):view(3, 2)
    local loader = data.DataLoader(data.TensorDataset(x, torch.arange(3)), { batch_size = false })
    assert.are.equal(3, data.len(loader))
    local rows = {}
    for xi, yi in loader:iter() do
      assert.are.same({ 2 }, xi.shape)
      assert.are.equal(0, yi:dim())
      rows[#rows + 1] = { xi:totable(), yi:item() }
    end
    assert.are.same({ { { 0, 1 }, 0 }, { { 2, 3 }, 1 }, { { 4, 5 }, 2 } }, rows)
    -- a collate_fn then applies to each sample, as PyTorch
    local seen = {}
    for v in data.DataLoader(dataset_of(function(i) return i end, 2),
                             { batch_size = false, collate_fn = function(s) return s * 10 end }):iter() do
      seen[#seen + 1] = v
    end
    assert.are.same({ 0, 10 }, seen)
    assert.matches("DataLoader: batch_size=false option disables auto%-batching and is mutually exclusive with drop_last",
                   err_of(data.DataLoader, data.TensorDataset(x), { batch_size = false, drop_last = true }))
  end)

  it("refuses a non-integer sampler index on the gather path too", function()
    local ds = data.TensorDataset(torch.arange(4))
    for _, workers in ipairs({ 0, 2 }) do
      local loader = data.DataLoader(ds, { sampler = { 0, 1.5 }, batch_size = 2, num_workers = workers })
      assert.matches("DataLoader: sampler index 1.5 at position 2 is not an integer",
                     err_of(function() for _ in loader:iter() do end end))
    end
  end)

  it("names the sample whose get raised, with and without workers", function()
    local ds = dataset_of(function(i)
      if i == 3 then error("disk on fire") end
      return torch.tensor({ i })
    end, 5)
    for _, workers in ipairs({ 0, 2 }) do
      local msg = err_of(function() for _ in data.DataLoader(ds, { batch_size = 2, num_workers = workers }):iter() do end end)
      assert.matches("DataLoader: D:get%(3%) failed: .*disk on fire", msg)
    end
    -- a non-string error object passes through untouched
    local obj = {}
    local ds2 = dataset_of(function() error(obj) end, 1)
    local ok, e = pcall(function() for _ in data.DataLoader(ds2):iter() do end end)
    assert.is_false(ok)
    assert.are.equal(obj, e)
  end)
end)

describe("RandomSampler on an empty dataset", function()
  local empty = data.TensorDataset(torch.zeros(0, 3))

  it("raises as PyTorch instead of drawing index -1 or nothing", function()
    assert.matches("RandomSampler: num_samples should be a positive integer value, but got num_samples=0",
                   err_of(data.RandomSampler, empty))
    assert.matches("RandomSampler: num_samples should be a positive integer value, but got num_samples=0",
                   err_of(data.DataLoader, empty, { shuffle = true }))
    assert.matches("RandomSampler: cannot draw 3 samples from an empty data source",
                   err_of(data.RandomSampler, empty, { replacement = true, num_samples = 3 }))
    -- without shuffling, an empty dataset simply gives no batches
    local n = 0
    for _ in data.DataLoader(empty, { batch_size = 2 }):iter() do n = n + 1 end
    assert.are.equal(0, n)
  end)
end)
