-- data_spec.lua: ramtorch.data: TensorDataset, user datasets, default_collate, the DataLoader (batch
-- shapes, drop_last, seeded shuffling, identical batches with and without background prefetch and
-- through the per-sample path), RandomSampler, DistributedSampler (PyTorch's padding, disjoint and
-- covering shares, set_epoch), index_select (the C gather under it, with its gradient), and
-- FashionMNIST from Debian's dataset-fashion-mnist.
local torch = require("ramtorch")
local data = require("ramtorch.data")
local testing = require("ramtorch.testing")

local function err_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  return tostring(err)
end

-- All batches of a loader as Lua tables.
local function collect(loader)
  local out = {}
  for x, y in loader:iter() do out[#out + 1] = { x:totable(), y:totable(), x.shape, y.dtype } end
  return out
end

local function dataset(n)
  -- x row i = {i, i + 0.5}, y = i * 10
  local xs, ys = {}, {}
  for i = 0, n - 1 do
    xs[#xs + 1] = { i, i + 0.5 }
    ys[#ys + 1] = i * 10
  end
  return data.TensorDataset(torch.tensor(xs), torch.tensor(ys))
end

local function first_col(batches)
  local seen = {}
  for _, b in ipairs(batches) do
    for _, row in ipairs(b[1]) do seen[#seen + 1] = row[1] end
  end
  return seen
end

describe("index_select", function()
  it("gathers rows along any dim and scatter-adds its gradient", function()
    local x = torch.arange(12):view(4, 3)
    assert.are.same({ { 9, 10, 11 }, { 0, 1, 2 }, { 9, 10, 11 } }, x:index_select(0, { 3, 0, 3 }):totable())
    assert.are.same({ { 2, 0 }, { 5, 3 }, { 8, 6 }, { 11, 9 } }, torch.index_select(x, 1, torch.tensor({ 2, 0 })):totable())
    assert.are.same({ { 1, 4 } }, x:t():index_select(0, torch.tensor({ 1 }, { dtype = torch.int32 })):narrow(1, 0, 2):totable())
    local w = torch.zeros(4, 2, { dtype = torch.float64, requires_grad = true })
    w:index_select(0, { 1, 1, 3 }):sum():backward()
    assert.are.same({ { 0, 0 }, { 2, 2 }, { 0, 0 }, { 1, 1 } }, w.grad:totable())
    assert.are.equal("IndexSelectBackward", w:index_select(0, { 0 }).grad_fn)
  end)

  it("passes finite-difference gradient checks in float64", function()
    local a = torch.randn(3, 4, 2, { dtype = torch.float64, requires_grad = true })
    assert.is_true(testing.gradcheck(function(t) return t:index_select(1, { 2, 0, 2, 3 }) end, { a }))
    assert.is_true(testing.gradcheck(function(t) return t:transpose(0, 2):index_select(2, { 1, 1 }) end, { a }))
  end)

  it("adds rows in place with index_add_", function()
    local t = torch.zeros(3, 2)
    t:index_add_(0, { 2, 0, 2 }, torch.tensor({ { 1, 2 }, { 3, 4 }, { 5, 6 } }, { dtype = torch.float32 }))
    assert.are.same({ { 3, 4 }, { 0, 0 }, { 6, 8 } }, t:totable())
  end)

  it("names the op, the index and the size in its errors", function()
    local x = torch.zeros(4, 3)
    assert.matches("index_select: index 4 %(at position 1%) is out of range for dimension 0 of size 4",
                   err_of(x.index_select, x, 0, { 0, 4 }))
    assert.matches("index_select: index %-1", err_of(x.index_select, x, 1, { -1 }))
    assert.matches("expected int64 or int32 indices, got float32", err_of(x.index_select, x, 0, torch.zeros(2)))
    assert.matches("expected 1%-d indices, got shape %[1, 2%]", err_of(x.index_select, x, 0, torch.zeros(1, 2, { dtype = torch.int64 })))
    assert.matches("dimension 2 out of range", err_of(x.index_select, x, 2, { 0 }))
    assert.matches("expected integer indices, got 0.5", err_of(x.index_select, x, 0, { 0.5 }))
  end)

  it("gathers rows for data loading in the background, converting in the same pass", function()
    local C, ffi, core = torch.C, torch.ffi, require("ramtorch.core")
    local x = torch.arange(20):view(10, 2)
    local idx = torch.tensor({ 9, 0, 5 })
    local job = ffi.new("rt_async*[1]")
    assert.are.equal(0, C.rt_gather_rows_async(x.p, idx.p, -1, 1, job))
    local j = ffi.gc(job[0], C.rt_async_free)
    assert.are.equal(0, C.rt_async_wait(j, core.box))
    assert.are.same({ { 18, 19 }, { 0, 1 }, { 10, 11 } }, core.own(core.box[0]):totable())
    assert.are.equal(-1, C.rt_async_wait(j, core.box)) -- the result is handed over once
    local img = torch.randint(0, 256, { 6, 3 }, { dtype = torch.uint8 })
    assert.are.equal(0, C.rt_gather_rows(img.p, torch.tensor({ 4, 1 }).p, 0, 255, core.box))
    local got = core.own(core.box[0])
    assert.are.same((img:index_select(0, { 4, 1 }):to(torch.float32) / 255):totable(), got:totable())
    local bad = torch.tensor({ 1, 99 })
    assert.are.equal(0, C.rt_gather_rows_async(x.p, bad.p, -1, 1, job))
    local j2 = ffi.gc(job[0], C.rt_async_free)
    assert.are.equal(-6, C.rt_async_wait(j2, core.box))
    assert.matches("index 99 %(at position 1%) is out of range for dimension 0 of size 10", ffi.string(C.rt_last_error()))
  end)
end)

describe("datasets and collate", function()
  it("TensorDataset gives rows, sizes and clear errors", function()
    local ds = dataset(5)
    assert.are.equal(5, ds:len())
    assert.are.equal(5, data.len(ds))
    local s = ds:get(3)
    assert.are.same({ 3, 3.5 }, s[1]:totable())
    assert.are.equal(30, s[2]:item())
    assert.matches("index 5 out of range for 5 samples %(indices are 0%-based%)", err_of(ds.get, ds, 5))
    assert.matches("size mismatch between tensors: argument 1 has 2 samples, argument 2 has 3",
                   err_of(data.TensorDataset, torch.zeros(2), torch.zeros(3)))
    assert.matches("argument 2 must be a Tensor, got number", err_of(data.TensorDataset, torch.zeros(2), 3))
  end)

  it("lets users subclass Dataset, batched through default_collate", function()
    local Squares = data.Dataset:extend("Squares")
    function Squares:__init(n) self.n = n end
    function Squares:__len() return self.n end
    function Squares:get(i) return { torch.tensor({ i, -i }), i * i, { name = "s" .. i, w = 0.5 } } end
    local ds = Squares(5)
    assert.are.equal("Squares(5 samples)", tostring(ds))
    local loader = data.DataLoader(ds, { batch_size = 2 })
    assert.are.equal(3, loader:len())
    local got = {}
    for x, sq, extra in loader:iter() do got[#got + 1] = { x, sq, extra } end
    assert.are.equal(3, #got)
    assert.are.same({ { 2, -2 }, { 3, -3 } }, got[2][1]:totable())
    assert.are.equal(torch.int64, got[2][2].dtype)
    assert.are.same({ 4, 9 }, got[2][2]:totable())
    assert.are.same({ "s2", "s3" }, got[2][3].name)
    assert.are.equal(torch.float64, got[2][3].w.dtype)
    assert.are.same({ 1, 2 }, got[3][1].shape)
    local NoGet = data.Dataset:extend("NoGet")
    function NoGet:__len() return 1 end
    assert.matches("NoGet: get is not implemented", err_of(function() for _ in data.DataLoader(NoGet()):iter() do end end))
  end)

  it("default_collate stacks tensors and converts numbers and booleans", function()
    local b = data.default_collate({ { torch.ones(2), 1, true }, { torch.zeros(2), 2, false } })
    assert.are.same({ { 1, 1 }, { 0, 0 } }, b[1]:totable())
    assert.are.same({ 1, 2 }, b[2]:totable())
    assert.are.equal(torch.bool, b[3].dtype)
    assert.matches("sample 2 is a number where sample 1 is a Tensor", err_of(data.default_collate, { torch.ones(1), 3 }))
  end)
end)

describe("DataLoader", function()
  it("makes batches of batch_size with a short last one, or drops it", function()
    local ds = dataset(10)
    local b = collect(data.DataLoader(ds, { batch_size = 4 }))
    assert.are.equal(3, #b)
    assert.are.same({ 4, 2 }, b[1][3])
    assert.are.same({ 2, 2 }, b[3][3])
    assert.are.equal(torch.int64, b[1][4])
    assert.are.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, first_col(b)) -- in order without shuffle
    assert.are.same({ 80, 90 }, b[3][2])
    local d = collect(data.DataLoader(ds, { batch_size = 4, drop_last = true }))
    assert.are.equal(2, #d)
    assert.are.equal(2, data.DataLoader(ds, { batch_size = 4, drop_last = true }):len())
    assert.are.equal(3, data.DataLoader(ds, { batch_size = 4 }):len())
    local n = 0
    for x, y in data.DataLoader(ds, { batch_size = 3 })() do n = n + x:size(0) end -- callable
    assert.are.equal(10, n)
  end)

  it("shuffles reproducibly with a seeded generator, a new order every epoch", function()
    local ds = dataset(50)
    local l1 = data.DataLoader(ds, { batch_size = 8, shuffle = true, generator = 123 })
    local l2 = data.DataLoader(ds, { batch_size = 8, shuffle = true, generator = data.Generator(123) })
    local e1, e2 = first_col(collect(l1)), first_col(collect(l2))
    assert.are.same(e1, e2)
    local sorted = { unpack(e1) }
    table.sort(sorted)
    for i = 1, 50 do assert.are.equal(i - 1, sorted[i]) end -- a permutation
    local ordered = true
    for i = 1, 50 do ordered = ordered and e1[i] == i - 1 end
    assert.is_false(ordered)
    local e1b = first_col(collect(l1)) -- second epoch of the same loader
    assert.are_not.same(e1, e1b)
    assert.are.same(e1b, first_col(collect(l2)))
    local l3 = data.DataLoader(ds, { batch_size = 8, shuffle = true, generator = 124 })
    assert.are_not.same(e1, first_col(collect(l3)))
  end)

  it("shuffles reproducibly under torch.manual_seed when no generator is given", function()
    local ds = dataset(30)
    torch.manual_seed(7)
    local a = first_col(collect(data.DataLoader(ds, { batch_size = 5, shuffle = true })))
    torch.manual_seed(7)
    local b = first_col(collect(data.DataLoader(ds, { batch_size = 5, shuffle = true })))
    assert.are.same(a, b)
  end)

  it("gives identical batches with and without prefetch and through per-sample collate", function()
    local ds = data.TensorDataset(torch.randn(37, 3, 2), torch.randint(0, 10, { 37 }), torch.rand(37) :gt(0.5))
    local function run(opts)
      opts.batch_size, opts.shuffle, opts.generator = 6, true, 99
      local out = {}
      for x, y, m in data.DataLoader(ds, opts):iter() do out[#out + 1] = { x:totable(), y:totable(), m:totable() } end
      return out
    end
    local pre = run({ prefetch = true })
    assert.are.equal(7, #pre)
    assert.are.same(pre, run({ prefetch = false }))
    assert.are.same(pre, run({ collate_fn = data.default_collate })) -- the sample-by-sample path
  end)

  it("num_workers picks the background prefetch (an explicit prefetch wins) and is checked", function()
    local ds = data.TensorDataset(torch.randn(10, 2))
    assert.is_false(data.DataLoader(ds, { num_workers = 0 }).prefetch)
    assert.is_true(data.DataLoader(ds, { num_workers = 2 }).prefetch)
    assert.is_true(data.DataLoader(ds, {}).prefetch)
    assert.is_true(data.DataLoader(ds, { num_workers = 0, prefetch = true }).prefetch)
    assert.is_false(data.DataLoader(ds, { num_workers = 4, prefetch = false }).prefetch)
    assert.matches("num_workers to be an integer >= 0", err_of(data.DataLoader, ds, { num_workers = -1 }))
    assert.matches("pin_memory must be a boolean", err_of(data.DataLoader, ds, { pin_memory = 1 }))
  end)

  it("pin_memory pins every tensor of a batch where CUDA is available, else loads as before", function()
    local ds = data.TensorDataset(torch.randn(9, 3), torch.randint(0, 5, { 9 }))
    local plain = {}
    for x, y in data.DataLoader(ds, { batch_size = 4 }):iter() do plain[#plain + 1] = { x:totable(), y:totable() } end
    local cuda = require("ramtorch.cuda")
    if not cuda.is_available() then
      local l = data.DataLoader(ds, { batch_size = 4, pin_memory = true }) -- warns on stderr
      assert.is_false(l.pin_memory)
      local got = {}
      for x, y in l:iter() do got[#got + 1] = { x:totable(), y:totable() } end
      assert.are.same(plain, got)
    end
    -- the pinning path itself, with pin_memory stood in for by a recording copy (as if on a GPU
    -- machine), for the gathering loader and for a per-sample collate returning a nested table
    local Tensor = require("ramtorch.tensor").Tensor
    local real_avail, real_pin = cuda.is_available, Tensor.pin_memory
    local pinned = 0
    cuda.is_available = function() return true end
    Tensor.pin_memory = function(t) pinned = pinned + 1; return t:clone() end
    local ok, err = pcall(function()
      local got = {}
      for x, y in data.DataLoader(ds, { batch_size = 4, pin_memory = true }):iter() do
        got[#got + 1] = { x:totable(), y:totable() }
      end
      assert.are.same(plain, got)
      assert.are.equal(6, pinned) -- 3 batches x 2 tensors
      pinned = 0
      local collate = function(samples) return { { data.default_collate(samples) } } end
      local n = 0
      for b in data.DataLoader(data.TensorDataset(torch.randn(5, 2)), { batch_size = 2, pin_memory = true,
                                                                       collate_fn = collate }):iter() do
        n = n + 1
        assert.is_true(torch.is_tensor(b[1][1]))
      end
      assert.are.equal(3, n)
      assert.are.equal(3, pinned)
    end)
    cuda.is_available, Tensor.pin_memory = real_avail, real_pin
    assert(ok, err)
  end)

  it("survives leaving a loop early with a batch in flight", function()
    local ds = dataset(100)
    for _ = 1, 3 do
      for x in data.DataLoader(ds, { batch_size = 10, shuffle = true, generator = 1 }):iter() do
        if x then break end
      end
    end
    collectgarbage()
    collectgarbage()
  end)

  it("takes a sampler, a list of indices, and rejects bad options", function()
    local ds = dataset(10)
    local b = collect(data.DataLoader(ds, { batch_size = 3, sampler = { 9, 1, 4, 4 } }))
    assert.are.same({ 9, 1, 4, 4 }, first_col(b))
    local s = data.DistributedSampler(ds, { num_replicas = 2, rank = 1, shuffle = false })
    assert.are.same({ 1, 3, 5, 7, 9 }, first_col(collect(data.DataLoader(ds, { batch_size = 2, sampler = s }))))
    assert.matches("sampler option is mutually exclusive with shuffle",
                   err_of(data.DataLoader, ds, { sampler = s, shuffle = true }))
    assert.matches("unknown option 'batchsize'", err_of(data.DataLoader, ds, { batchsize = 2 }))
    assert.matches("batch_size to be an integer >= 1", err_of(data.DataLoader, ds, { batch_size = 0 }))
    assert.matches("generator to be a data.Generator or an integer seed",
                   err_of(data.DataLoader, ds, { shuffle = true, generator = "x" }))
  end)
end)

describe("samplers", function()
  it("RandomSampler is seeded and supports replacement", function()
    local ds = dataset(20)
    local a = data.RandomSampler(ds, { generator = 5 }):indices()
    assert.are.same(a, data.RandomSampler(ds, { generator = 5 }):indices())
    assert.are.equal(20, #a)
    local r = data.RandomSampler(ds, { generator = 5, replacement = true, num_samples = 50 })
    assert.are.equal(50, r:len())
    for _, i in ipairs(r:indices()) do assert.is_true(i >= 0 and i < 20) end
    assert.are.equal(21, #data.RandomSampler(ds, { num_samples = 21 }):indices()) -- PyTorch: permutations concatenated
    assert.are.same({ 0, 1, 2 }, data.SequentialSampler(dataset(3)):indices())
  end)

  it("DistributedSampler pads like PyTorch without shuffle", function()
    local ds = dataset(10)
    local want = { { 0, 4, 8 }, { 1, 5, 9 }, { 2, 6, 0 }, { 3, 7, 1 } }
    for r = 0, 3 do
      local s = data.DistributedSampler(ds, { num_replicas = 4, rank = r, shuffle = false })
      assert.are.equal(3, s:len())
      assert.are.same(want[r + 1], s:indices())
    end
    -- padding longer than the dataset repeats it several times
    local s = data.DistributedSampler(dataset(2), { num_replicas = 5, rank = 4, shuffle = false })
    assert.are.same({ 0 }, s:indices())
  end)

  it("DistributedSampler shares are disjoint and cover the data; set_epoch reshuffles", function()
    for _, case in ipairs({ { 12, 3, false }, { 10, 3, false }, { 10, 3, true }, { 7, 4, true } }) do
      local n, nr, drop = case[1], case[2], case[3]
      local ds = dataset(n)
      local count, total = {}, 0
      for r = 0, nr - 1 do
        local s = data.DistributedSampler(ds, { num_replicas = nr, rank = r, seed = 3, drop_last = drop })
        s:set_epoch(2)
        local idx = s:indices()
        assert.are.equal(s:len(), #idx)
        for _, i in ipairs(idx) do
          count[i] = (count[i] or 0) + 1
          total = total + 1
        end
      end
      if drop then
        assert.are.equal(math.floor(n / nr) * nr, total)
        for i, c in pairs(count) do assert.are.equal(1, c, "index " .. i) end -- disjoint
      else
        assert.are.equal(math.ceil(n / nr) * nr, total)
        for i = 0, n - 1 do assert.is_true((count[i] or 0) >= 1, "index " .. i) end -- covering
        if n % nr == 0 then for _, c in pairs(count) do assert.are.equal(1, c) end end
      end
    end
    local ds = dataset(40)
    local s = data.DistributedSampler(ds, { num_replicas = 2, rank = 0, seed = 1 })
    local e0 = s:indices()
    assert.are.same(e0, s:indices()) -- same epoch, same order
    s:set_epoch(1)
    assert.are_not.same(e0, s:indices())
    local other = data.DistributedSampler(ds, { num_replicas = 2, rank = 0, seed = 1 })
    other:set_epoch(1)
    assert.are.same(s:indices(), other:indices()) -- every process computes the same split
  end)

  it("DistributedSampler checks its arguments", function()
    local ds = dataset(4)
    assert.matches("invalid rank 2, rank should be in the interval %[0, 1%]",
                   err_of(data.DistributedSampler, ds, { num_replicas = 2, rank = 2 }))
    assert.matches("process group is not initialized; pass {num_replicas = N, rank = r}",
                   err_of(data.DistributedSampler, ds))
    assert.matches("num_replicas to be an integer >= 1", err_of(data.DistributedSampler, ds, { num_replicas = 0, rank = 0 }))
  end)
end)

describe("FashionMNIST", function()
  local root = os.getenv("RAMTORCH_FASHION_MNIST") or "/usr/share/datasets/fashion-mnist"
  local have = io.open(root .. "/train-labels-idx1-ubyte.gz", "rb")
  if have then have:close() end

  it("reports a missing folder naming the file and the package", function()
    local err = err_of(data.datasets.FashionMNIST, "/nonexistent/fmnist")
    assert.matches("FashionMNIST: cannot read /nonexistent/fmnist/train%-images%-idx3%-ubyte%.gz", err)
    assert.matches("No such file or directory", err)
    assert.matches("apt%-get install dataset%-fashion%-mnist", err)
  end)

  it("reports a corrupt file naming it", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local f = io.open(dir .. "/t10k-images-idx3-ubyte.gz", "wb")
    f:write("\31\139\8\0\0\0\0\0\0\3garbage that is not deflate data")
    f:close()
    local err = err_of(data.datasets.FashionMNIST, dir, { train = false })
    assert.matches("t10k%-images%-idx3%-ubyte%.gz", err)
    assert.matches("apt%-get install dataset%-fashion%-mnist", err)
    -- a plain (uncompressed) idx file with a wrong magic
    f = io.open(dir .. "/t10k-images-idx3-ubyte.gz", "wb")
    f:write("\1\2\8\3")
    f:close()
    assert.matches("bad magic 0x01020803", err_of(data.datasets.FashionMNIST, dir, { train = false }))
    -- a truncated one
    f = io.open(dir .. "/t10k-images-idx3-ubyte.gz", "wb")
    f:write("\0\0\8\3\0\0\0\2\0\0\0\28\0\0\0\28" .. string.rep("\0", 100))
    f:close()
    assert.matches("truncated data: shape %[2, 28, 28%] needs 1568 bytes, the file holds 100",
                   err_of(data.datasets.FashionMNIST, dir, { train = false }))
    os.execute("rm -rf " .. dir)
  end)

  it("loads the train and test sets with the right sizes and first labels", function()
    if not have then
      pending("dataset-fashion-mnist is not installed")
      return
    end
    local train = data.datasets.FashionMNIST(nil, { train = true })
    assert.are.equal(60000, train:len())
    local x, y = unpack(train:get(0))
    assert.are.same({ 1, 28, 28 }, x.shape)
    assert.are.equal(torch.float32, x.dtype)
    assert.are.equal(9, y) -- Ankle boot
    assert.are.equal(1, x:max():item())
    assert.are.equal(0, x:min():item())
    assert.are.same((train.data[1]:to(torch.float32) / 255):view(1, 28, 28):totable(), x:totable())
    assert.are.equal(0, train:get(1)[2])
    assert.are.equal(0, train:get(2)[2])
    assert.are.equal(torch.uint8, train.data.dtype)
    assert.are.equal(torch.int64, train.targets.dtype)
    local test = data.datasets.FashionMNIST(root, { train = false, flatten = true })
    assert.are.equal(10000, test:len())
    assert.are.same({ 9, 2, 1, 1, 6 }, test.targets:narrow(0, 0, 5):totable())
    assert.are.same({ 784 }, test:get(0)[1].shape)
    -- batches through the gather path equal the samples
    local loader = data.DataLoader(test, { batch_size = 64, shuffle = true, generator = 0 })
    assert.are.equal(157, loader:len())
    local xb, yb = loader:iter()()
    assert.are.same({ 64, 784 }, xb.shape)
    assert.are.equal(torch.float32, xb.dtype)
    assert.are.equal(torch.int64, yb.dtype)
    local order = data.RandomSampler(test, { generator = 0 }):indices()
    assert.are.same(test:get(order[1])[1]:totable(), xb[1]:totable())
    assert.are.equal(test:get(order[2])[2], yb[2]:item())
    local n, last = 0, nil
    for xb2 in loader:iter() do n, last = n + xb2:size(0), xb2 end
    assert.are.equal(10000, n)
    assert.are.same({ 16, 784 }, last.shape)
    -- per-sample transforms take the sample path
    local tr = data.datasets.FashionMNIST(root, { train = false, transform = function(img) return img * 2 end })
    assert.is_false(tr:supports_gather())
    assert.are.equal(2, tr:get(0)[1]:max():item())
  end)
end)
