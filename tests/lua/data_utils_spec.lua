-- data_utils_spec.lua: the torch.utils.data pieces in ramtorch/data/utils.lua: Subset, ConcatDataset,
-- random_split (integer lengths, fractions with PyTorch's round-robin remainder, exact partitions for
-- a seed), BatchSampler, SubsetRandomSampler, WeightedRandomSampler (exact index sequences from the
-- generator's uniform draws, frequencies, no repeats without replacement), every error message, and
-- the DataLoader with batch_sampler= and with these samplers (gather/prefetch and per-sample paths).
local torch = require("ramtorch")
local data = require("ramtorch.data")

local function err_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  return tostring(err)
end

-- x row i = {i, i + 0.5}, y = i * 10
local function dataset(n)
  local xs, ys = {}, {}
  for i = 0, n - 1 do
    xs[#xs + 1] = { i, i + 0.5 }
    ys[#ys + 1] = i * 10
  end
  return data.TensorDataset(torch.tensor(xs), torch.tensor(ys))
end

-- a Lua dataset (no C gather): sample i is { tensor{i}, i }
local function lua_dataset(n, offset)
  local D = data.Dataset:extend("D")
  function D:__len() return n end
  function D:get(i)
    if i < 0 or i >= n then error("D: bad index " .. i) end
    return { torch.tensor({ i + (offset or 0) }), i + (offset or 0) }
  end
  return D()
end

-- the y column (labels) of every batch, flattened, and the batch sizes
local function labels_of(loader)
  local seen, sizes = {}, {}
  for _, y in loader:iter() do
    local t = y:totable()
    sizes[#sizes + 1] = #t
    for _, v in ipairs(t) do seen[#seen + 1] = v end
  end
  return seen, sizes
end

local function times(list, k)
  local out = {}
  for i, v in ipairs(list) do out[i] = v * k end
  return out
end

local function flatten(batches)
  local out = {}
  for _, b in ipairs(batches) do for _, v in ipairs(b) do out[#out + 1] = v end end
  return out
end

local function sorted(list)
  local s = { unpack(list) }
  table.sort(s)
  return s
end

-- A small FashionMNIST-like dataset: uint8 images converted to float32 / 255 inside the C gather.
local FakeMNIST = data.TensorDataset:extend("FakeMNIST")
function FakeMNIST:__init(n)
  self.data = torch.randint(0, 256, { n, 4, 4 }, { dtype = torch.uint8 })
  self.targets = torch.randint(0, 10, { n })
  self.convert = { { torch.float32, 255 } }
  data.TensorDataset.__init(self, self.data, self.targets)
end
function FakeMNIST:_finish_sample(s) return { s[1]:view(1, 4, 4), s[2]:item() } end
function FakeMNIST:_finish_batch(b) return { b[1]:view(b[1]:size(0), 1, 4, 4), b[2] } end

describe("Subset", function()
  it("maps indices, has their length and refuses bad indices", function()
    local ds = dataset(10)
    local s = data.Subset(ds, { 7, 2, 2, 9 })
    assert.are.equal(4, data.len(s))
    assert.are.equal(4, s:len())
    assert.are.equal("Subset(4 samples)", tostring(s))
    assert.are.same({ 7, 7.5 }, s:get(0)[1]:totable())
    assert.are.equal(90, s:get(3)[2]:item())
    assert.are.equal(20, s:get(2)[2]:item())
    assert.are.same({ 7, 2, 2, 9 }, s.indices)
    assert.are.same({ 3, 1 }, data.Subset(ds, torch.tensor({ 3, 1 })).indices) -- a tensor of indices
    assert.are.equal(0, data.len(data.Subset(ds, {})))
    assert.matches("Subset: index 4 out of range for 4 samples %(indices are 0%-based%)", err_of(s.get, s, 4))
    assert.matches("Subset: index %-1 out of range for 4 samples", err_of(s.get, s, -1))
    assert.matches("Subset: index 0.5 out of range", err_of(s.get, s, 0.5))
    assert.matches("Subset: index 10 at position 2 is out of range for a dataset of 10 samples %(indices are 0%-based%)",
                   err_of(data.Subset, ds, { 1, 10 }))
    assert.matches("Subset: indices at position 1 is %-1; expected a 0%-based integer index >= 0",
                   err_of(data.Subset, ds, { -1 }))
    assert.matches("Subset: indices at position 2 is 1.5", err_of(data.Subset, ds, { 0, 1.5 }))
    assert.matches("Subset: expected indices to be a list of indices or a 1%-d tensor, got number",
                   err_of(data.Subset, ds, 3))
    assert.matches("Subset: expected indices to hold integers, got a torch.float32 tensor",
                   err_of(data.Subset, ds, torch.zeros(2)))
    assert.matches("Subset: expected indices to be a 1%-d tensor or a list, got shape %[1, 2%]",
                   err_of(data.Subset, ds, torch.zeros(1, 2, { dtype = torch.int64 })))
    assert.matches("Subset: expected dataset to be a dataset %(with get%(i%) and a length%), got number",
                   err_of(data.Subset, 5, { 0 }))
  end)

  it("gathers through the underlying dataset in C, with and without prefetch, as the per-sample path", function()
    local ds = dataset(20)
    local s = data.Subset(ds, { 19, 3, 3, 0, 11, 7, 5 })
    assert.is_true(s:supports_gather())
    local function run(opts)
      opts.batch_size = 3
      local out = {}
      for x, y in data.DataLoader(s, opts):iter() do out[#out + 1] = { x:totable(), y:totable() } end
      return out
    end
    local pre = run({ prefetch = true })
    assert.are.same({ { { 19, 19.5 }, { 3, 3.5 }, { 3, 3.5 } }, { 190, 30, 30 } }, pre[1])
    assert.are.same({ { { 5, 5.5 } }, { 50 } }, pre[3])
    assert.are.same(pre, run({ prefetch = false }))
    assert.are.same(pre, run({ collate_fn = data.default_collate }))
    -- a Subset of a Lua dataset takes the per-sample path
    local ls = data.Subset(lua_dataset(6), { 5, 0 })
    assert.is_false(ls:supports_gather())
    assert.are.same({ 5, 0 }, (labels_of(data.DataLoader(ls, { batch_size = 2 }))))
  end)

  it("works in a DataLoader over a FashionMNIST-like uint8 dataset, converted in the gather", function()
    local ds = FakeMNIST(30)
    local idx = { 29, 0, 14, 3, 3, 8, 21 }
    local s = data.Subset(ds, idx)
    local seen, n = {}, 0
    for _, workers in ipairs({ 0, 2 }) do
      seen, n = {}, 0
      for xb, yb in data.DataLoader(s, { batch_size = 3, num_workers = workers }):iter() do
        assert.are.equal(torch.float32, xb.dtype)
        assert.are.equal(torch.int64, yb.dtype)
        assert.are.equal(4, xb:dim())
        for r = 0, xb:size(0) - 1 do
          n = n + 1
          local want = (ds.data[idx[n] + 1]:to(torch.float32) / 255):view(1, 4, 4)
          assert.are.same(want:totable(), xb[r + 1]:totable())
          seen[#seen + 1] = yb[r + 1]:item()
        end
      end
      assert.are.equal(7, n)
      for k = 1, 7 do assert.are.equal(ds.targets[idx[k] + 1]:item(), seen[k]) end
    end
    -- a sample equals its row of a batch
    assert.are.same(s:get(2)[1]:totable(), (ds.data[15]:to(torch.float32) / 255):view(1, 4, 4):totable())
  end)

  it("works over the real FashionMNIST test set when installed", function()
    local root = os.getenv("RAMTORCH_FASHION_MNIST") or "/usr/share/datasets/fashion-mnist"
    local f = io.open(root .. "/t10k-labels-idx1-ubyte.gz", "rb")
    if not f then
      pending("dataset-fashion-mnist is not installed")
      return
    end
    f:close()
    local test = data.datasets.FashionMNIST(root, { train = false })
    local s = data.Subset(test, { 4, 0, 1, 2, 3 })
    local xb, yb = data.DataLoader(s, { batch_size = 5 }):iter()()
    assert.are.same({ 5, 1, 28, 28 }, xb.shape)
    assert.are.same({ 6, 9, 2, 1, 1 }, yb:totable()) -- the first test labels are 9, 2, 1, 1, 6
    assert.are.same(test:get(4)[1]:totable(), xb[1]:totable())
  end)
end)

describe("ConcatDataset", function()
  it("concatenates lengths and maps indices across datasets", function()
    local a, b, c = dataset(3), lua_dataset(0), lua_dataset(4, 100)
    local cd = data.ConcatDataset({ a, b, c, data.Subset(a, { 2 }) })
    assert.are.equal(8, data.len(cd))
    assert.are.same({ 3, 3, 7, 8 }, cd.cumulative_sizes)
    assert.are.equal(0, cd:get(0)[2]:item())
    assert.are.equal(20, cd:get(2)[2]:item())
    assert.are.equal(100, cd:get(3)[2]) -- the first of c (b is empty)
    assert.are.equal(103, cd:get(6)[2])
    assert.are.equal(20, cd:get(7)[2]:item())
    assert.matches("ConcatDataset: index 8 out of range for 8 samples %(indices are 0%-based%)", err_of(cd.get, cd, 8))
    assert.matches("ConcatDataset: index %-1 out of range for 8 samples", err_of(cd.get, cd, -1))
    assert.matches("ConcatDataset: index 1.5 out of range", err_of(cd.get, cd, 1.5))
  end)

  it("refuses an empty list, a non-list and a non-dataset", function()
    assert.matches("ConcatDataset: datasets should not be an empty iterable", err_of(data.ConcatDataset, {}))
    assert.matches("ConcatDataset: expected a list of datasets, got a single dataset",
                   err_of(data.ConcatDataset, dataset(2)))
    assert.matches("ConcatDataset: expected a list of datasets, got number", err_of(data.ConcatDataset, 3))
    assert.matches("ConcatDataset: expected datasets%[2%] to be a dataset %(with get%(i%) and a length%), got string",
                   err_of(data.ConcatDataset, { dataset(2), "x" }))
  end)

  it("batches across dataset boundaries in a DataLoader", function()
    local cd = data.ConcatDataset({ dataset(3), dataset(4) })
    assert.is_false(cd:supports_gather())
    local seen, sizes = labels_of(data.DataLoader(cd, { batch_size = 3 }))
    assert.are.same({ 0, 10, 20, 0, 10, 20, 30 }, seen)
    assert.are.same({ 3, 3, 1 }, sizes)
    local sh = labels_of(data.DataLoader(cd, { batch_size = 2, shuffle = true, generator = 4 }))
    local want = {}
    for k, i in ipairs(data.RandomSampler(cd, { generator = 4 }):indices()) do want[k] = i < 3 and i * 10 or (i - 3) * 10 end
    assert.are.same(want, sh)
  end)
end)

describe("random_split", function()
  it("splits by integer lengths into Subsets of one seeded permutation", function()
    local ds = dataset(10)
    local parts = data.random_split(ds, { 3, 7 }, 42)
    assert.are.equal(2, #parts)
    assert.are.equal(data.Subset, getmetatable(parts[1]))
    assert.are.equal(3, data.len(parts[1]))
    assert.are.equal(7, data.len(parts[2]))
    local perm = data.Generator(42):randperm(10)
    assert.are.same({ perm[1], perm[2], perm[3] }, parts[1].indices)
    assert.are.same({ unpack(perm, 4, 10) }, parts[2].indices)
    assert.are.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, sorted(flatten({ parts[1].indices, parts[2].indices })))
    assert.are.same(parts[1].indices, data.random_split(ds, { 3, 7 }, data.Generator(42))[1].indices)
    assert.are_not.same(parts[1].indices, data.random_split(ds, { 3, 7 }, 43)[1].indices)
    assert.are.same(parts[2].dataset, ds)
    -- without a generator: a seed from the global stream
    torch.manual_seed(5)
    local a = data.random_split(ds, { 5, 5 })[1].indices
    torch.manual_seed(5)
    assert.are.same(a, data.random_split(ds, { 5, 5 })[1].indices)
    -- zero-length splits are allowed
    local z = data.random_split(ds, { 0, 10, 0 }, 1)
    assert.are.same({ 0, 10, 0 }, { data.len(z[1]), data.len(z[2]), data.len(z[3]) })
  end)

  it("splits by fractions: floor, then the remainder one by one round-robin", function()
    local function lens(n, fr)
      local out = {}
      for k, p in ipairs(data.random_split(dataset(n), fr, 0)) do out[k] = data.len(p) end
      return out
    end
    assert.are.same({ 4, 3, 3 }, lens(10, { 0.33, 0.33, 0.34 }))
    assert.are.same({ 2, 2, 2, 1 }, lens(7, { 0.25, 0.25, 0.25, 0.25 }))
    assert.are.same({ 8, 2 }, lens(10, { 0.8, 0.2 }))
    assert.are.same({ 1, 1, 0 }, lens(2, { 0.3, 0.3, 0.4 }))
    assert.are.same({ 7, 0 }, lens(7, { 1, 0 }))
    assert.are.same({ 1, 0, 2 }, lens(3, { 0.1, 0.1, 0.8 })) -- floors 0, 0, 2; the remainder 1 goes to the first
    local parts = data.random_split(dataset(10), { 0.5, 0.5 }, 9)
    local perm = data.Generator(9):randperm(10)
    assert.are.same({ unpack(perm, 1, 5) }, parts[1].indices)
    assert.are.same({ unpack(perm, 6, 10) }, parts[2].indices)
  end)

  it("names every bad input", function()
    local ds = dataset(10)
    assert.matches("random_split: Sum of input lengths does not equal the length of the input dataset! %(lengths sum to 9, the dataset has 10 samples%)",
                   err_of(data.random_split, ds, { 4, 5 }))
    assert.matches("random_split: Fraction at position 2 is not between 0 and 1",
                   err_of(data.random_split, ds, { 0.5, -0.5, 1 }))
    assert.matches("random_split: length at position 1 is 2.5; expected a non%-negative integer %(or fractions summing to 1%)",
                   err_of(data.random_split, ds, { 2.5, 7.5 }))
    assert.matches("random_split: length at position 2 is %-2; expected a non%-negative integer",
                   err_of(data.random_split, ds, { 12, -2 }))
    assert.matches("random_split: length at position 2 is x; expected a number", err_of(data.random_split, ds, { 1, "x" }))
    assert.matches("random_split: expected lengths to be a non%-empty list of numbers, got an empty table",
                   err_of(data.random_split, ds, {}))
    assert.matches("random_split: expected lengths to be a non%-empty list of numbers, got number",
                   err_of(data.random_split, ds, 10))
    assert.matches("random_split: expected generator to be a data.Generator or an integer seed, got string",
                   err_of(data.random_split, ds, { 5, 5 }, "seed"))
    assert.matches("random_split: expected dataset to be a dataset", err_of(data.random_split, nil, { 1 }))
  end)
end)

describe("BatchSampler", function()
  it("groups a sampler's indices, with a short last batch unless drop_last", function()
    local seq = data.SequentialSampler(dataset(10))
    local b = data.BatchSampler(seq, 3, false)
    assert.are.equal(4, data.len(b))
    assert.are.same({ { 0, 1, 2 }, { 3, 4, 5 }, { 6, 7, 8 }, { 9 } }, b:batches())
    local d = data.BatchSampler(seq, 3, true)
    assert.are.equal(3, d:len())
    assert.are.same({ { 0, 1, 2 }, { 3, 4, 5 }, { 6, 7, 8 } }, d:batches())
    assert.are.same({ { 4, 1 }, { 1 } }, data.BatchSampler({ 4, 1, 1 }, 2):batches()) -- a list; drop_last defaults to false
    assert.are.equal(0, data.len(data.BatchSampler({}, 2, false)))
    local got = {}
    for batch in b:iter() do got[#got + 1] = batch end
    assert.are.same(b:batches(), got)
    -- over a random sampler: the sampler's pass, cut into batches
    local rs = data.BatchSampler(data.RandomSampler(dataset(7), { generator = 3 }), 2, false)
    assert.are.same(data.RandomSampler(dataset(7), { generator = 3 }):indices(), flatten(rs:batches()))
  end)

  it("names every bad argument", function()
    local seq = data.SequentialSampler(dataset(4))
    assert.matches("BatchSampler: batch_size should be a positive integer value, but got batch_size=0",
                   err_of(data.BatchSampler, seq, 0, false))
    assert.matches("batch_size should be a positive integer value, but got batch_size=1.5",
                   err_of(data.BatchSampler, seq, 1.5, false))
    assert.matches("batch_size should be a positive integer value, but got batch_size=nil", err_of(data.BatchSampler, seq))
    assert.matches("BatchSampler: drop_last should be a boolean value, but got drop_last=1",
                   err_of(data.BatchSampler, seq, 2, 1))
    assert.matches("BatchSampler: expected sampler to be a sampler %(with indices%(%)%) or a list of indices, got number",
                   err_of(data.BatchSampler, 3, 2, false))
    assert.matches("BatchSampler: sampler is already a BatchSampler",
                   err_of(data.BatchSampler, data.BatchSampler(seq, 2, false), 2, false))
  end)
end)

describe("SubsetRandomSampler", function()
  it("gives each index once per pass, in a new seeded order each pass", function()
    local idx = { 10, 3, 7, 42, 0, 5 }
    local s = data.SubsetRandomSampler(idx, 11)
    assert.are.equal(6, data.len(s))
    local g = data.Generator(11)
    for _ = 1, 3 do
      local want = {}
      for k, p in ipairs(g:randperm(6)) do want[k] = idx[p + 1] end -- indices[randperm(n)], as PyTorch
      local got = s:indices()
      assert.are.same(want, got)
      assert.are.same(sorted(idx), sorted(got))
    end
    local e1 = data.SubsetRandomSampler(idx, { generator = 2 }):indices()
    assert.are.same(e1, data.SubsetRandomSampler(idx, data.Generator(2)):indices())
    local s2 = data.SubsetRandomSampler(idx, 2)
    s2:indices()
    assert.are_not.same(e1, s2:indices()) -- a new order on the second pass
    -- without a generator: reproducible under torch.manual_seed
    torch.manual_seed(3)
    local a = data.SubsetRandomSampler(idx):indices()
    torch.manual_seed(3)
    assert.are.same(a, data.SubsetRandomSampler(idx):indices())
    assert.are.same({ 8, 9 }, sorted(data.SubsetRandomSampler(torch.tensor({ 9, 8 }), 0):indices()))
    assert.are.same({}, data.SubsetRandomSampler({}, 0):indices())
  end)

  it("names bad arguments", function()
    assert.matches("SubsetRandomSampler: indices at position 2 is %-3; expected a 0%-based integer index >= 0",
                   err_of(data.SubsetRandomSampler, { 1, -3 }))
    assert.matches("SubsetRandomSampler: expected indices to be a list of indices or a 1%-d tensor, got nil",
                   err_of(data.SubsetRandomSampler))
    assert.matches("SubsetRandomSampler: expected generator to be a data.Generator or an integer seed, got string",
                   err_of(data.SubsetRandomSampler, { 1 }, "x"))
    assert.matches("SubsetRandomSampler: unknown option 'seed'", err_of(data.SubsetRandomSampler, { 1 }, { seed = 1 }))
  end)
end)

describe("WeightedRandomSampler", function()
  it("with replacement inverts the cumulative weights of the generator's uniform draws", function()
    local s = data.WeightedRandomSampler({ 1, 0, 3 }, 50, true, 8)
    assert.are.equal(50, data.len(s))
    local u = data.Generator(8):uniform(50)
    local want = {}
    for k = 1, 50 do want[k] = u[k - 1] < 0.25 and 0 or 2 end
    assert.are.same(want, s:indices())
    local w = data.WeightedRandomSampler(torch.tensor({ 2, 1, 1 }), 40, true, 1) -- tensor weights
    local u2 = data.Generator(1):uniform(40)
    for k, i in ipairs(w:indices()) do
      local x = u2[k - 1]
      assert.are.equal(x < 0.5 and 0 or (x < 0.75 and 1 or 2), i)
    end
    -- replacement defaults to true: repeats happen
    local r = data.WeightedRandomSampler({ 1, 1 }, 10, nil, 0):indices()
    assert.are.equal(10, #r)
  end)

  it("draws with frequencies proportional to the weights, never a zero weight", function()
    local weights = { 1, 2, 0, 3, 4 }
    local n = 40000
    local got = data.WeightedRandomSampler(weights, n, true, 123):indices()
    local count = { [0] = 0, 0, 0, 0, 0 }
    for _, i in ipairs(got) do count[i] = count[i] + 1 end
    assert.are.equal(0, count[2])
    for i, wi in pairs({ [0] = 1, 2, 0, 3, 4 }) do
      assert.is_true(math.abs(count[i] / n - wi / 10) < 0.01, ("index %d: %d of %d"):format(i, count[i], n))
    end
  end)

  it("without replacement never repeats and takes PyTorch's top-k of w / Exp(1)", function()
    local weights = { 5, 0, 1, 3, 0.5, 2 }
    local s = data.WeightedRandomSampler(weights, 4, false, 17)
    local g = data.Generator(17)
    for _ = 1, 3 do -- each pass draws anew
      local u = g:uniform(6)
      local keys, order = {}, {}
      for k = 1, 6 do
        keys[k] = weights[k] / -math.log(1 - u[k - 1])
        order[k] = k - 1
      end
      table.sort(order, function(a, b) return keys[a + 1] > keys[b + 1] end)
      local got = s:indices()
      assert.are.same({ order[1], order[2], order[3], order[4] }, got)
      local seen = {}
      for _, i in ipairs(got) do
        assert.is_nil(seen[i])
        assert.are_not.equal(1, i) -- zero weight
        seen[i] = true
      end
    end
    -- as many samples as nonzero weights: all of them, once
    assert.are.same({ 0, 2, 3, 4, 5 }, sorted(data.WeightedRandomSampler(weights, 5, false, 2):indices()))
    -- the first pick follows the weights: P(first = i) = w_i / sum
    local first, passes = { [0] = 0, 0, 0 }, 3000
    local f = data.WeightedRandomSampler({ 1, 1, 2 }, 2, { replacement = false, generator = 5 })
    for _ = 1, passes do
      local i = f:indices()[1]
      first[i] = first[i] + 1
    end
    assert.is_true(math.abs(first[2] / passes - 0.5) < 0.04, tostring(first[2]))
    assert.is_true(math.abs(first[0] / passes - 0.25) < 0.04, tostring(first[0]))
  end)

  it("names every bad input", function()
    local W = data.WeightedRandomSampler
    local W_ = "WeightedRandomSampler: "
    assert.matches(W_ .. "invalid multinomial distribution %(encountering probability entry < 0%) at position 2",
                   err_of(W, { 1, -1 }, 2))
    assert.matches(W_ .. "invalid multinomial distribution %(encountering probability entry = infinity or NaN%) at position 1",
                   err_of(W, { math.huge, 1 }, 2))
    assert.matches("encountering probability entry = infinity or NaN%) at position 3", err_of(W, { 1, 1, 0 / 0 }, 2))
    assert.matches(W_ .. "invalid multinomial distribution %(sum of probabilities <= 0%)", err_of(W, { 0, 0 }, 2))
    assert.matches(W_ .. "invalid multinomial distribution %(sum of probabilities <= 0%)", err_of(W, {}, 1))
    assert.matches(W_ .. "invalid multinomial distribution %(the weights sum to infinity%)", err_of(W, { 1e308, 1e308 }, 1))
    assert.matches(W_ .. "num_samples should be a positive integer value, but got num_samples=0", err_of(W, { 1 }, 0))
    assert.matches("but got num_samples=2.5", err_of(W, { 1 }, 2.5))
    assert.matches("but got num_samples=nil", err_of(W, { 1 }))
    assert.matches(W_ .. "replacement should be a boolean value, but got replacement=1", err_of(W, { 1 }, 1, 1))
    assert.matches(W_ .. "cannot sample n_sample > prob_dist.size%(%-1%) samples without replacement %(num_samples=3, 2 weights%)",
                   err_of(W, { 1, 1 }, 3, false))
    assert.matches(W_ .. "cannot draw 2 samples without replacement: only 1 of the 3 weights are nonzero",
                   err_of(W, { 0, 1, 0 }, 2, false))
    assert.matches(W_ .. "weights should be a 1d sequence but given weights have shape %[2, 2%]",
                   err_of(W, torch.ones(2, 2), 1))
    assert.matches(W_ .. "weights should be a 1d sequence of numbers but weight at position 2 is a string",
                   err_of(W, { 1, "2" }, 1))
    assert.matches(W_ .. "expected weights to be a list of numbers or a 1%-d tensor, got number", err_of(W, 3, 1))
    assert.matches(W_ .. "unknown option 'replace'", err_of(W, { 1 }, 1, { replace = true }))
    assert.matches(W_ .. "expected generator to be a data.Generator or an integer seed, got boolean",
                   err_of(W, { 1 }, 1, true, true))
  end)
end)

describe("DataLoader with batch_sampler and the new samplers", function()
  it("gives the batches of a batch_sampler, through gather (with and without prefetch) and per sample", function()
    local ds = dataset(13)
    local function make() return data.BatchSampler(data.RandomSampler(ds, { generator = 6 }), 4, false) end
    local want = make():batches()
    assert.are.equal(4, #want)
    for _, opts in ipairs({ { prefetch = true }, { prefetch = false }, { collate_fn = data.default_collate } }) do
      opts.batch_sampler = make()
      local loader = data.DataLoader(ds, opts)
      assert.are.equal(4, data.len(loader))
      assert.is_nil(loader.batch_size)
      local seen, sizes = labels_of(loader)
      assert.are.same({ 4, 4, 4, 1 }, sizes)
      assert.are.same(times(flatten(want), 10), seen)
    end
    -- drop_last lives in the BatchSampler
    local l = data.DataLoader(ds, { batch_sampler = data.BatchSampler(data.SequentialSampler(ds), 5, true) })
    assert.are.equal(2, data.len(l))
    local seen, sizes = labels_of(l)
    assert.are.same({ 5, 5 }, sizes)
    assert.are.same(times({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, 10), seen)
    -- a plain list of lists, batches of different sizes, and batch_size = 1 (PyTorch's default) allowed
    local ll = data.DataLoader(ds, { batch_sampler = { { 12 }, { 0, 5, 5 }, { 2, 1 } }, batch_size = 1 })
    assert.are.equal(3, data.len(ll))
    seen, sizes = labels_of(ll)
    assert.are.same({ 1, 3, 2 }, sizes)
    assert.are.same({ 120, 0, 50, 50, 20, 10 }, seen)
    -- over a Lua dataset (per-sample path) too
    seen = labels_of(data.DataLoader(lua_dataset(5), { batch_sampler = { { 4, 0 }, { 2 } } }))
    assert.are.same({ 4, 0, 2 }, seen)
  end)

  it("takes SubsetRandomSampler and WeightedRandomSampler as sampler, giving their indices", function()
    local ds = dataset(20)
    local sr = labels_of(data.DataLoader(ds, { batch_size = 3, sampler = data.SubsetRandomSampler({ 1, 4, 9, 16 }, 3) }))
    assert.are.same(times(data.SubsetRandomSampler({ 1, 4, 9, 16 }, 3):indices(), 10), sr)
    for _, repl in ipairs({ true, false }) do
      local function make() return data.WeightedRandomSampler({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1 },
                                                              12, repl, 21) end
      local loader = data.DataLoader(ds, { batch_size = 5, sampler = make(), num_workers = 2 })
      assert.are.equal(3, data.len(loader))
      local seen, sizes = labels_of(loader)
      assert.are.same({ 5, 5, 2 }, sizes)
      assert.are.same(times(make():indices(), 10), seen)
    end
    -- and inside a BatchSampler
    local bs = data.BatchSampler(data.WeightedRandomSampler({ 1, 1, 1 }, 7, true, 4), 2, true)
    local seen = labels_of(data.DataLoader(dataset(3), { batch_sampler = bs }))
    local w = data.WeightedRandomSampler({ 1, 1, 1 }, 7, true, 4):indices()
    assert.are.same(times({ unpack(w, 1, 6) }, 10), seen)
  end)

  it("works with a Subset from random_split and a SubsetRandomSampler over it", function()
    local ds = FakeMNIST(25)
    local train, val = unpack(data.random_split(ds, { 0.8, 0.2 }, 1))
    assert.are.equal(20, data.len(train))
    assert.are.equal(5, data.len(val))
    local n, labels = 0, {}
    for xb, yb in data.DataLoader(train, { batch_size = 8, shuffle = true, generator = 2 }):iter() do
      assert.are.equal(torch.float32, xb.dtype)
      n = n + xb:size(0)
      for _, v in ipairs(yb:totable()) do labels[#labels + 1] = v end
    end
    assert.are.equal(20, n)
    local want = {}
    for k, i in ipairs(data.RandomSampler(train, { generator = 2 }):indices()) do
      want[k] = ds.targets[train.indices[i + 1] + 1]:item()
    end
    assert.are.same(want, labels)
  end)

  it("refuses batch_sampler with batch_size, shuffle, sampler or drop_last, as PyTorch", function()
    local ds = dataset(6)
    local bs = data.BatchSampler(data.SequentialSampler(ds), 2, false)
    local msg = "DataLoader: batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last"
    local esc = msg:gsub("%p", "%%%0")
    assert.matches(esc, err_of(data.DataLoader, ds, { batch_sampler = bs, batch_size = 2 }))
    assert.matches(esc, err_of(data.DataLoader, ds, { batch_sampler = bs, batch_size = false }))
    assert.matches(esc, err_of(data.DataLoader, ds, { batch_sampler = bs, shuffle = true }))
    assert.matches(esc, err_of(data.DataLoader, ds, { batch_sampler = bs, sampler = data.SequentialSampler(ds) }))
    assert.matches(esc, err_of(data.DataLoader, ds, { batch_sampler = bs, drop_last = true }))
    assert.matches("DataLoader: batch_sampler must have batches%(%) %(a data.BatchSampler%) or be a list of lists of indices",
                   err_of(data.DataLoader, ds, { batch_sampler = { 1, 2 } }))
    assert.matches("batch_sampler must have batches", err_of(data.DataLoader, ds, { batch_sampler = 3 }))
    assert.matches("DataLoader: sampler is a BatchSampler %(it yields lists of indices%); pass it as batch_sampler",
                   err_of(data.DataLoader, ds, { sampler = bs }))
    assert.matches("DataLoader: batch_sampler gave an empty list as batch 2; expected a non%-empty list of indices",
                   err_of(function() for _ in data.DataLoader(ds, { batch_sampler = { { 1 }, {} } }):iter() do end end))
    assert.matches("DataLoader: sampler index 0.5 at position 2 is not an integer",
                   err_of(function() for _ in data.DataLoader(ds, { batch_sampler = { { 1, 0.5 } } }):iter() do end end))
  end)

  it("refuses a sampler table that is not a list (it read as an empty list: zero batches) and a non-boolean replacement", function()
    local ds = dataset(10)
    assert.matches("DataLoader: sampler must have indices%(%) %(a data sampler%) or be a list of indices",
                   err_of(function() return data.DataLoader(ds, { sampler = { foo = 1 } }) end))
    assert.matches("DataLoader: sampler must have indices",
                   err_of(function() return data.DataLoader(ds, { sampler = { 1, 2, [5] = 3 } }) end))
    assert.are.equal(0, #data.DataLoader(ds, { sampler = {} })) -- a real empty list stays allowed
    assert.matches("RandomSampler: replacement should be a boolean value, but got replacement=1",
                   err_of(function() return data.RandomSampler(ds, { replacement = 1 }) end))
    assert.matches("RandomSampler: unknown option 'num_sample'",
                   err_of(function() return data.RandomSampler(ds, { num_sample = 3 }) end))
  end)
end)
