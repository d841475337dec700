-- ramtorch/data: datasets, samplers and the DataLoader (torch.utils.data in Lua).
--
--   local data = require("ramtorch.data")
--   local ds = data.TensorDataset(x, y)                       -- or data.datasets.FashionMNIST()
--   local loader = data.DataLoader(ds, {batch_size = 64, shuffle = true, generator = 42})
--   for xb, yb in loader:iter() do ... end                     -- also: for xb, yb in loader() do
--
-- Indices are 0-based, as in PyTorch: a dataset's get(i) takes i in 0 .. #ds - 1 and samplers yield
-- such indices. A dataset that can gather many rows at once (TensorDataset and FashionMNIST do,
-- through one C gather per tensor) is batched without a Lua loop over samples, and with
-- `prefetch` (on by default) the gather of batch i+1 runs on a background thread (C, pthread)
-- while the caller works on batch i; the batches are the same either way.
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local torch = require("ramtorch")
local ffi, C = rffi.ffi, rffi.C

local is_tensor = torch.is_tensor
local floor, ceil = math.floor, math.ceil

local M = {}

-- ---- a small class system (as nn.Module:extend) -------------------------------------------------------

local class_mt = {}
class_mt.__call = function(cls, ...)
  local obj = setmetatable({}, cls)
  obj:__init(...)
  return obj
end
class_mt.__tostring = function(cls) return "class " .. cls.__name end

local function new_class(name, parent)
  local cls = { __name = name, super = parent }
  cls.__index = cls
  if parent then
    -- metamethods are looked up raw in the metatable, so every class carries its own copies
    for _, mm in ipairs({ "__len", "__tostring", "__call" }) do cls[mm] = parent[mm] end
  end
  return setmetatable(cls, { __index = parent, __call = class_mt.__call, __tostring = class_mt.__tostring })
end

local function extend(parent, name, methods)
  if type(name) ~= "string" then
    error(("extend: expected a class name string, got %s"):format(type(name)), 2)
  end
  local cls = new_class(name, parent)
  cls.extend = parent.extend
  for k, v in pairs(methods or {}) do cls[k] = v end
  return cls
end

local function expect_int(x, what, name, level, min)
  if type(x) ~= "number" or x ~= floor(x) or (min and x < min) then
    error(("%s: expected %s to be an integer%s, got %s"):format(what, name, min and (" >= " .. min) or "",
          tostring(x)), level + 1)
  end
  return x
end

-- The size of a dataset or sampler. LuaJIT ignores __len on tables (Lua 5.1 semantics), so `#ds`
-- only works on builds with 5.2 compatibility; objects here define __len and we call it directly.
local function length(x)
  if type(x) == "table" and type(x.__len) == "function" then return x:__len() end
  return #x
end
M.len = length

-- Indices (Lua array of 0-based integers) into a 1-d int64 CPU tensor, without a tensor per element.
local function index_tensor(list, n)
  n = n or #list
  local buf = ffi.new("int64_t[?]", n > 0 and n or 1)
  for i = 1, n do buf[i - 1] = list[i] end
  core.shape_buf[0] = n
  return core.result(core.oom(C.rt_from_host(1, core.shape_buf, 4, -1, buf, 4, core.box)) or C.rt_from_host(1, core.shape_buf, 4, -1, buf, 4, core.box))
end
M._index_tensor = index_tensor

-- ---- Generator: a seeded stream of random numbers private to a sampler --------------------------------

-- Draws come from the runtime's counter-based generator at this generator's own (seed, offset), so
-- they do not disturb (or depend on) the global stream that torch.manual_seed sets.
local Generator = new_class("Generator")
M.Generator = Generator

function Generator:__init(seed)
  self:manual_seed(seed or 0)
end

function Generator:manual_seed(seed)
  expect_int(seed, "Generator:manual_seed", "seed", 2, 0)
  self.seed, self.offset = seed, 0
  return self
end

function Generator:initial_seed() return self.seed end

local state_a, state_b = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")

-- n uniform doubles in [0, 1) as a cdata array (0-based).
function Generator:uniform(n)
  C.rt_rng_get_state(state_a, state_b)
  local gseed, goff = state_a[0], state_b[0]
  C.rt_rng_set_state(self.seed, self.offset)
  core.shape_buf[0] = n
  local rc = C.rt_rand(1, core.shape_buf, 3, -1, core.box)
  C.rt_rng_get_state(state_a, state_b)
  self.offset = state_b[0]
  C.rt_rng_set_state(gseed, goff)
  local t = core.result(rc)
  local out = ffi.new("double[?]", n > 0 and n or 1)
  core.check(C.rt_to_host(t.p, out, 3))
  return out
end

-- A random permutation of 0 .. n-1 (Fisher-Yates) as a Lua array.
function Generator:randperm(n)
  local p = {}
  for i = 1, n do p[i] = i - 1 end
  if n < 2 then return p end
  local u = self:uniform(n)
  for i = n, 2, -1 do
    local j = floor(u[i - 1] * i) + 1
    if j > i then j = i end
    p[i], p[j] = p[j], p[i]
  end
  return p
end

-- A generator from an option value: a Generator, a seed, or nil (a fresh seed from the global
-- stream, so torch.manual_seed makes it reproducible).
local function make_generator(g, what, level)
  if g == nil then
    core.shape_buf[0] = 1
    local t = core.result(core.oom(C.rt_randint(0, 2147483647, 1, core.shape_buf, 4, -1, core.box)) or C.rt_randint(0, 2147483647, 1, core.shape_buf, 4, -1, core.box))
    return Generator(t[1]:item())
  end
  if type(g) == "number" then return Generator(expect_int(g, what, "generator seed", level + 1, 0)) end
  if getmetatable(g) == Generator then return g end
  error(("%s: expected generator to be a data.Generator or an integer seed, got %s"):format(what, type(g)), level + 1)
end
M._make_generator = make_generator

-- ---- Dataset --------------------------------------------------------------------------------------------

-- Base class: subclasses define __len (the number of samples) and get(i), 0-based.
--   local Squares = data.Dataset:extend("Squares")
--   function Squares:__init(n) self.n = n end
--   function Squares:__len() return self.n end
--   function Squares:get(i) return { torch.tensor({ i }), i * i } end
local Dataset = new_class("Dataset")
Dataset.extend = extend
M.Dataset = Dataset

function Dataset:__init() end
function Dataset.__len(self)
  error(("%s: __len is not implemented (define function %s:__len())"):format(self.__name, self.__name), 2)
end
function Dataset:get(i)
  error(("%s: get is not implemented (define function %s:get(i), i 0-based)"):format(self.__name, self.__name), 2)
end
Dataset.__tostring = function(self) return ("%s(%d samples)"):format(self.__name, length(self)) end
function Dataset:len() return length(self) end
-- Datasets that can gather a batch of rows at once in C return true (see TensorDataset).
function Dataset:supports_gather() return false end

-- ---- TensorDataset ------------------------------------------------------------------------------------------

-- TensorDataset(t1, t2, ...): sample i is { t1[i], t2[i], ... } (dim 0 indexed); batches are
-- gathered with one C call per tensor (rt_gather_rows), never a Lua loop over samples.
-- Subclasses may set self.convert[k] = { dtype, divisor } to have tensor k converted (and divided)
-- inside that same gather, e.g. uint8 images to float32 / 255 (FashionMNIST does); samples go
-- through the same C path, so a batch equals the stack of its samples bit for bit.
local TensorDataset = Dataset:extend("TensorDataset")
M.TensorDataset = TensorDataset

function TensorDataset:__init(...)
  local n = select("#", ...)
  if n == 0 then error("TensorDataset: expected at least one tensor", 3) end
  self.tensors = {}
  for i = 1, n do
    local t = select(i, ...)
    if not is_tensor(t) then
      error(("TensorDataset: argument %d must be a Tensor, got %s"):format(i, type(t)), 3)
    end
    if t:dim() < 1 then error(("TensorDataset: argument %d is a scalar; expected a leading sample dim"):format(i), 3) end
    if i > 1 and t:size(0) ~= self.tensors[1]:size(0) then
      error(("TensorDataset: size mismatch between tensors: argument 1 has %d samples, argument %d has %d")
            :format(self.tensors[1]:size(0), i, t:size(0)), 3)
    end
    self.tensors[i] = t
  end
  self.n = self.tensors[1]:size(0)
  self.convert = self.convert or {}
end

function TensorDataset.__len(self) return self.n end

function TensorDataset:_check_index(i, level)
  if type(i) ~= "number" or i ~= floor(i) or i < 0 or i >= self.n then
    error(("%s: index %s out of range for %d samples (indices are 0-based)"):format(self.__name, tostring(i), self.n),
          level + 1)
  end
end

-- Hooks for subclasses: turn a raw sample / a raw gathered batch into what users get.
function TensorDataset:_finish_sample(s) return s end
function TensorDataset:_finish_batch(b) return b end

local function conv_of(self, k)
  local c = self.convert[k]
  if c then return c[1].code, c[2] or 1 end
  return -1, 1
end

local one_index = nil
function TensorDataset:get(i)
  self:_check_index(i, 2)
  local s = {}
  for k, t in ipairs(self.tensors) do
    local dt, div = conv_of(self, k)
    if dt == -1 and div == 1 then
      s[k] = t:select(0, i) -- a view, no copy
    else
      one_index = one_index or index_tensor({ 0 })
      one_index:fill_(i)
      local r = core.result(core.oom(C.rt_gather_rows(t.p, one_index.p, dt, div, core.box)) or C.rt_gather_rows(t.p, one_index.p, dt, div, core.box))
      s[k] = r:select(0, 0)
    end
  end
  return self:_finish_sample(s)
end

function TensorDataset:supports_gather() return true end

-- The batch of rows `idx` (a 1-d int64 tensor of 0-based indices): { t1[idx], t2[idx], ... }.
function TensorDataset:gather(idx)
  local b = {}
  for k, t in ipairs(self.tensors) do
    local dt, div = conv_of(self, k)
    b[k] = core.result(core.oom(C.rt_gather_rows(t.p, idx.p, dt, div, core.box)) or C.rt_gather_rows(t.p, idx.p, dt, div, core.box))
  end
  return self:_finish_batch(b)
end

-- The same, started on background threads; :wait() returns the batch.
local Pending = {}
Pending.__index = Pending

function TensorDataset:gather_async(idx)
  local jobs = {}
  local jbox = ffi.new("rt_async*[1]")
  for k, t in ipairs(self.tensors) do
    local dt, div = conv_of(self, k)
    if C.rt_gather_rows_async(t.p, idx.p, dt, div, jbox) ~= 0 then core.raise(2) end
    jobs[k] = ffi.gc(jbox[0], C.rt_async_free)
  end
  return setmetatable({ jobs = jobs, ds = self }, Pending)
end

function Pending:wait()
  local b = {}
  for k, job in ipairs(self.jobs) do
    if C.rt_async_wait(job, core.box) ~= 0 then core.raise(2) end
    b[k] = core.own(core.box[0])
    C.rt_async_free(ffi.gc(job, nil))
  end
  self.jobs = {}
  return self.ds:_finish_batch(b)
end

-- ---- Samplers --------------------------------------------------------------------------------------------------
-- A sampler has __len and indices() (a Lua array of 0-based indices for one pass over the data).

local SequentialSampler = new_class("SequentialSampler")
M.SequentialSampler = SequentialSampler

function SequentialSampler:__init(data_source)
  self.n = length(data_source)
end
SequentialSampler.__len = function(self) return self.n end
SequentialSampler.len = SequentialSampler.__len
function SequentialSampler:indices()
  local p = {}
  for i = 1, self.n do p[i] = i - 1 end
  return p
end

-- RandomSampler(data_source, {replacement=false, num_samples=#data, generator=seed|Generator}); without
-- replacement, num_samples > #data gives whole permutations one after another, as PyTorch.
-- Each pass draws a new order from the generator: two samplers with the same seed give the same
-- sequence of orders.
local RandomSampler = new_class("RandomSampler")
M.RandomSampler = RandomSampler

function RandomSampler:__init(data_source, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error(("RandomSampler: expected an options table, got %s"):format(type(opts)), 3) end
  for k in pairs(opts) do
    if k ~= "replacement" and k ~= "num_samples" and k ~= "generator" then
      error(("RandomSampler: unknown option '%s' (expected replacement, num_samples, generator)"):format(tostring(k)), 3)
    end
  end
  if opts.replacement ~= nil and type(opts.replacement) ~= "boolean" then
    error(("RandomSampler: replacement should be a boolean value, but got replacement=%s"):format(tostring(opts.replacement)), 3)
  end
  self.n = length(data_source)
  self.replacement = opts.replacement or false
  self.num_samples = opts.num_samples or self.n
  -- PyTorch: a positive integer; more than #data without replacement concatenates permutations
  if opts.num_samples ~= nil and (type(self.num_samples) ~= "number" or self.num_samples ~= floor(self.num_samples)
                                  or self.num_samples <= 0) then
    error(("RandomSampler: num_samples should be a positive integer value, but got num_samples=%s")
          :format(tostring(self.num_samples)), 3)
  end
  -- PyTorch raises here too: an empty source has no default num_samples, and nothing to draw from
  if self.n == 0 then
    if opts.num_samples == nil then
      error("RandomSampler: num_samples should be a positive integer value, but got num_samples=0", 3)
    end
    error(("RandomSampler: cannot draw %d samples from an empty data source"):format(self.num_samples), 3)
  end
  self.generator = opts.generator ~= nil and make_generator(opts.generator, "RandomSampler", 3) or nil
end
RandomSampler.__len = function(self) return self.num_samples end
RandomSampler.len = RandomSampler.__len

function RandomSampler:indices()
  local g = self.generator or make_generator(nil, "RandomSampler", 2)
  if self.replacement then
    local u, p = g:uniform(self.num_samples), {}
    for i = 1, self.num_samples do p[i] = math.min(floor(u[i - 1] * self.n), self.n - 1) end
    return p
  end
  -- num_samples // n whole permutations, then the head of one more (PyTorch's order of draws)
  local p, n, want = {}, self.n, self.num_samples
  if n == 0 then return p end
  while #p < want do
    local perm = g:randperm(n)
    for i = 1, math.min(n, want - #p) do p[#p + 1] = perm[i] end
  end
  return p
end

-- DistributedSampler(dataset, {num_replicas, rank, shuffle=true, seed=0, drop_last=false}): the
-- share of one rank, PyTorch's semantics: the (shuffled with seed + epoch) index list is padded by
-- repeating its head to a multiple of num_replicas (or cut to one when drop_last), and rank r takes
-- positions r, r + num_replicas, ... Call set_epoch(e) before each epoch to reshuffle.
local DistributedSampler = new_class("DistributedSampler")
M.DistributedSampler = DistributedSampler

local function default_world(what)
  local ok, dist = pcall(require, "ramtorch.distributed")
  if ok and type(dist) == "table" and dist.is_initialized and dist.is_initialized() then
    return dist.get_world_size(), dist.get_rank()
  end
  error(what .. ": the process group is not initialized; pass {num_replicas = N, rank = r}", 4)
end

function DistributedSampler:__init(dataset, opts)
  opts = opts or {}
  local nr, rank = opts.num_replicas, opts.rank
  if nr == nil or rank == nil then
    local w, r = default_world("DistributedSampler")
    nr, rank = nr or w, rank or r
  end
  expect_int(nr, "DistributedSampler", "num_replicas", 3, 1)
  expect_int(rank, "DistributedSampler", "rank", 3, 0)
  if rank >= nr then
    error(("DistributedSampler: invalid rank %d, rank should be in the interval [0, %d]"):format(rank, nr - 1), 3)
  end
  self.dataset_len = length(dataset)
  self.num_replicas, self.rank = nr, rank
  self.shuffle = opts.shuffle == nil and true or opts.shuffle
  self.seed = opts.seed or 0
  expect_int(self.seed, "DistributedSampler", "seed", 3, 0)
  self.drop_last = opts.drop_last or false
  self.epoch = 0
  local n = self.dataset_len
  if self.drop_last and n % nr ~= 0 then
    self.num_samples = ceil((n - nr) / nr)
  else
    self.num_samples = ceil(n / nr)
  end
  self.total_size = self.num_samples * nr
end
DistributedSampler.__len = function(self) return self.num_samples end
DistributedSampler.len = DistributedSampler.__len

function DistributedSampler:set_epoch(epoch)
  expect_int(epoch, "DistributedSampler:set_epoch", "epoch", 2, 0)
  self.epoch = epoch
end

function DistributedSampler:indices()
  local n = self.dataset_len
  local idx
  if self.shuffle then
    idx = Generator(self.seed + self.epoch):randperm(n)
  else
    idx = {}
    for i = 1, n do idx[i] = i - 1 end
  end
  local total = self.total_size
  if not self.drop_last then
    local pad = total - n
    for k = 1, pad do idx[n + k] = idx[((k - 1) % n) + 1] end -- repeats the head (several times if needed)
  end
  local out = {}
  for pos = self.rank + 1, total, self.num_replicas do out[#out + 1] = idx[pos] end
  return out
end

-- ---- collate ---------------------------------------------------------------------------------------------------

local stack_arr = ffi.typeof("rt_tensor*[?]")

-- default_collate(samples): a list of samples into a batch, as PyTorch's default_collate: tensors
-- are stacked along a new dim 0, numbers become a tensor (int64 when all are integers, else
-- float64), booleans a bool tensor, tables are collated per key (sequences per position), strings
-- stay a list.
local function default_collate(samples)
  local first = samples[1]
  local n = #samples
  if first == nil then error("default_collate: empty batch", 2) end
  if is_tensor(first) then
    local arr = stack_arr(n)
    for i = 1, n do
      if not is_tensor(samples[i]) then
        error(("default_collate: sample %d is a %s where sample 1 is a Tensor"):format(i, type(samples[i])), 2)
      end
      arr[i - 1] = samples[i].p
    end
    return core.result(core.oom(C.rt_stack(n, arr, 0, core.box)) or C.rt_stack(n, arr, 0, core.box))
  end
  local tf = type(first)
  if tf == "number" then
    local ints = true
    for i = 1, n do
      local v = samples[i]
      if type(v) ~= "number" then error(("default_collate: sample %d is a %s where sample 1 is a number"):format(i, type(v)), 2) end
      if v ~= floor(v) or v == math.huge or v == -math.huge then ints = false end -- inf has no int64
    end
    return torch.tensor(samples, { dtype = ints and torch.int64 or torch.float64 })
  elseif tf == "boolean" then
    for i = 1, n do
      local v = samples[i]
      if type(v) ~= "boolean" then error(("default_collate: sample %d is a %s where sample 1 is a boolean"):format(i, type(v)), 2) end
    end
    return torch.tensor(samples, { dtype = torch.bool })
  elseif tf == "string" then
    return samples
  elseif tf == "table" then
    local out = {}
    if #first > 0 then
      -- PyTorch: "each element in list of batch should be of equal size"; a short column would
      -- silently give a batch with fewer rows than samples
      for i = 2, n do
        if type(samples[i]) ~= "table" then
          error(("default_collate: sample %d is a %s where sample 1 is a table"):format(i, type(samples[i])), 2)
        end
        if #samples[i] ~= #first then
          error(("default_collate: each element in list of batch should be of equal size (sample 1 has %d, "
                 .. "sample %d has %d)"):format(#first, i, #samples[i]), 2)
        end
      end
      for k = 1, #first do
        local col = {}
        for i = 1, n do col[i] = samples[i][k] end
        out[k] = default_collate(col)
      end
    else
      for k in pairs(first) do
        local col = {}
        for i = 1, n do
          local v
          if type(samples[i]) == "table" then v = samples[i][k] end
          if v == nil then -- PyTorch: KeyError
            error(("default_collate: sample %d has no key '%s' (sample 1 has it)"):format(i, tostring(k)), 2)
          end
          col[i] = v
        end
        out[k] = default_collate(col)
      end
    end
    return out
  end
  error(("default_collate: cannot batch samples of type %s"):format(tf), 2)
end
M.default_collate = default_collate

-- ---- DataLoader ------------------------------------------------------------------------------------------------

-- DataLoader(dataset, {batch_size=1 (false: no batching, PyTorch's None), shuffle=false, sampler=nil, generator=nil (seed or Generator),
-- drop_last=false, collate_fn=nil, prefetch=true, num_workers=nil, pin_memory=false, batch_sampler=nil}).
-- batch_sampler (a data.BatchSampler or anything with batches(), or a list of lists of indices) gives
-- whole batches and excludes batch_size, shuffle, sampler and drop_last, as PyTorch; its batches go
-- through the same C gather and prefetch as batch_size's.
-- num_workers is PyTorch's name for loading beside the training loop: 0 loads each batch when it is
-- asked for, a positive number turns on the background prefetch (one C thread gathering the next
-- batch, for datasets that gather in C; a Lua dataset's get() always runs in the calling thread, as
-- a Lua state has one thread). An explicit `prefetch` wins. pin_memory=true copies each batch's
-- tensors into page-locked memory (fast, asynchronous copies to a GPU); without CUDA it says so once
-- on stderr and loads unpinned batches, as PyTorch does.
local DataLoader = new_class("DataLoader")
M.DataLoader = DataLoader

function DataLoader:__init(dataset, opts)
  opts = opts or {}
  if type(dataset) ~= "table" and type(dataset) ~= "userdata" then
    error(("DataLoader: expected a dataset, got %s"):format(type(dataset)), 3)
  end
  if type(opts) ~= "table" then error(("DataLoader: expected an options table, got %s"):format(type(opts)), 3) end
  local known = { batch_size = true, shuffle = true, sampler = true, generator = true, seed = true,
                  drop_last = true, collate_fn = true, prefetch = true, num_workers = true, pin_memory = true,
                  batch_sampler = true }
  for k in pairs(opts) do
    if not known[k] then error(("DataLoader: unknown option '%s'"):format(tostring(k)), 3) end
  end
  self.dataset = dataset
  self.drop_last = opts.drop_last or false
  if opts.batch_sampler ~= nil then
    -- PyTorch: batch_size may only be left at its default (1); the batches come from batch_sampler
    if (opts.batch_size ~= nil and opts.batch_size ~= 1) or opts.shuffle or opts.sampler ~= nil or opts.drop_last then
      error("DataLoader: batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last", 3)
    end
    local bs = opts.batch_sampler
    if type(bs) ~= "table" or (type(bs.batches) ~= "function" and #bs ~= 0 and type(bs[1]) ~= "table") then
      error("DataLoader: batch_sampler must have batches() (a data.BatchSampler) or be a list of lists of indices", 3)
    end
    self.batch_sampler = bs
    self.batch_size = nil -- PyTorch's None
  elseif opts.batch_size == false then
    -- PyTorch's batch_size=None (a nil here is indistinguishable from leaving it out): one sample
    -- per step, not collated (a collate_fn applies to each sample)
    if self.drop_last then
      error("DataLoader: batch_size=false option disables auto-batching and is mutually exclusive with drop_last", 3)
    end
    self.batch_size = false
  else
    self.batch_size = expect_int(opts.batch_size == nil and 1 or opts.batch_size, "DataLoader", "batch_size", 3, 1)
  end
  self.collate_fn = opts.collate_fn
  if self.collate_fn ~= nil and type(self.collate_fn) ~= "function" then
    error("DataLoader: collate_fn must be a function", 3)
  end
  local workers = opts.num_workers
  if workers ~= nil then workers = expect_int(workers, "DataLoader", "num_workers", 3, 0) end
  if opts.prefetch ~= nil then
    self.prefetch = opts.prefetch and true or false
  else
    self.prefetch = workers == nil or workers > 0
  end
  self.num_workers = workers or 0
  if opts.pin_memory ~= nil and type(opts.pin_memory) ~= "boolean" then
    error(("DataLoader: pin_memory must be a boolean, got %s"):format(type(opts.pin_memory)), 3)
  end
  self.pin_memory = false
  if opts.pin_memory then
    if require("ramtorch.cuda").is_available() then
      self.pin_memory = true
    else
      io.stderr:write("DataLoader: pin_memory is set but no CUDA device is available; batches stay in "
                      .. "pageable memory\n")
    end
  end
  if opts.sampler ~= nil then
    if opts.shuffle then error("DataLoader: sampler option is mutually exclusive with shuffle", 3) end
    local s = opts.sampler
    local is_list = type(s) == "table" and type(s.indices) ~= "function"
    if is_list then -- a list: integer keys 1 .. #s only (a table like {foo = 1} is not an empty list)
      local n = #s
      for k in pairs(s) do
        if type(k) ~= "number" or k < 1 or k > n or k ~= math.floor(k) then is_list = false end
      end
    end
    if type(s) == "table" and type(s.batches) == "function" then
      error("DataLoader: sampler is a BatchSampler (it yields lists of indices); pass it as batch_sampler", 3)
    end
    if type(s) ~= "table" or (type(s.indices) ~= "function" and not is_list) then
      error("DataLoader: sampler must have indices() (a data sampler) or be a list of indices", 3)
    end
    self.sampler = s
  elseif opts.shuffle then
    self.sampler = RandomSampler(dataset, { generator = opts.generator or opts.seed })
  else
    self.sampler = SequentialSampler(dataset)
  end
end


function DataLoader.__len(self)
  if self.batch_sampler then return length(self.batch_sampler) end
  local n = length(self.sampler)
  if self.batch_size == false then return n end
  if self.drop_last then return floor(n / self.batch_size) end
  return ceil(n / self.batch_size)
end

local function unpack_batch(b)
  if type(b) == "table" and getmetatable(b) == nil and b[1] ~= nil then return unpack(b) end
  return b
end

-- the batch with every tensor (in nested plain tables too) copied to page-locked memory
local function pin_batch(b)
  if is_tensor(b) then return b:pin_memory() end
  if type(b) == "table" and getmetatable(b) == nil then
    local out = {}
    for k, v in pairs(b) do out[k] = pin_batch(v) end
    return out
  end
  return b
end

-- ds:get(i), an error in it re-raised naming the dataset and the index (a non-string error object
-- passes through as it is)
local function get_sample(ds, i)
  local ok, s = pcall(ds.get, ds, i)
  if ok then return s end
  if type(s) == "string" then
    error(("DataLoader: %s:get(%s) failed: %s"):format(tostring(ds.__name or "dataset"), tostring(i), s), 0)
  end
  error(s, 0)
end

-- Iterate over batches: `for x, y in loader:iter() do`. Each call starts a new pass (a new order
-- when shuffling).
function DataLoader:iter()
  local s = self.sampler
  local order, n, bs, nb, bstart, bcount
  local ds = self.dataset
  if self.batch_sampler then
    -- the batches of one pass, flattened: batch k (0-based) is order[starts[k+1] + 1 ..]
    local bsam = self.batch_sampler
    local batches = type(bsam.batches) == "function" and bsam:batches() or bsam
    local starts, counts = {}, {}
    order, n, nb = {}, 0, #batches
    for k = 1, nb do
      local batch = batches[k]
      if type(batch) ~= "table" or #batch == 0 then
        error(("DataLoader: batch_sampler gave %s as batch %d; expected a non-empty list of indices")
              :format(type(batch) == "table" and "an empty list" or type(batch), k), 2)
      end
      starts[k], counts[k] = n, #batch
      for j = 1, #batch do order[n + j] = batch[j] end
      n = n + #batch
    end
    bstart = function(k) return starts[k + 1] end
    bcount = function(k) return counts[k + 1] end
  else
    order = type(s.indices) == "function" and s:indices() or s
    n, bs = #order, self.batch_size
    if bs ~= false then
      nb = self.drop_last and floor(n / bs) or ceil(n / bs)
      bstart = function(k) return k * bs end
      bcount = function(k) return math.min(bs, n - k * bs) end
    end
  end
  if bs == false then -- no batching: one sample per step
    local i, collate = 0, self.collate_fn
    return function()
      if i >= n then return nil end
      i = i + 1
      local sample = get_sample(ds, order[i])
      if collate then sample = collate(sample) end
      if self.pin_memory then sample = pin_batch(sample) end
      return unpack_batch(sample)
    end
  end
  local fast = self.collate_fn == nil and type(ds.supports_gather) == "function" and ds:supports_gather()
  local b = 0
  if fast then
    -- the C gather would truncate 1.5 to 1 (get() refuses it on the per-sample path)
    for k = 1, n do
      local v = order[k]
      if type(v) ~= "number" or v ~= floor(v) then
        error(("DataLoader: sampler index %s at position %d is not an integer"):format(tostring(v), k), 2)
      end
    end
    local all = index_tensor(order, n)
    local function batch_idx(k) return all:narrow(0, bstart(k), bcount(k)) end
    local prefetch = self.prefetch
    local pending = (prefetch and nb > 0) and ds:gather_async(batch_idx(0)) or nil
    return function()
      if b >= nb then return nil end
      local batch
      if prefetch then
        batch = pending:wait()
        pending = b + 1 < nb and ds:gather_async(batch_idx(b + 1)) or nil
      else
        batch = ds:gather(batch_idx(b))
      end
      b = b + 1
      if self.pin_memory then batch = pin_batch(batch) end
      return unpack_batch(batch)
    end
  end
  local collate = self.collate_fn or default_collate
  return function()
    if b >= nb then return nil end
    local samples = {}
    local start = bstart(b)
    for k = 1, bcount(b) do samples[k] = get_sample(ds, order[start + k]) end
    b = b + 1
    local batch = collate(samples)
    if self.pin_memory then batch = pin_batch(batch) end
    -- default_collate gives a list for table samples (unpacked: for x, y in ...) and for string
    -- samples (one batch of strings: not unpacked)
    if self.collate_fn == nil and type(samples[1]) ~= "table" then return batch end
    return unpack_batch(batch)
  end
end
DataLoader.__call = DataLoader.iter
DataLoader.len = DataLoader.__len

-- Subset, ConcatDataset, random_split, BatchSampler, SubsetRandomSampler, WeightedRandomSampler
require("ramtorch.data.utils").install(M, { new_class = new_class, length = length, make_generator = make_generator,
                                            index_tensor = index_tensor })

-- ---- datasets (lazy: reading files only when asked) -----------------------------------------------------

M.datasets = setmetatable({}, {
  __index = function(t, k)
    local mod = require("ramtorch.data.datasets")
    for name, v in pairs(mod) do rawset(t, name, v) end
    return rawget(t, k)
  end,
})

return M
