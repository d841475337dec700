-- ramtorch/data/utils.lua: the rest of torch.utils.data's building blocks, installed into
-- ramtorch.data by its init.lua (this file never requires ramtorch.data itself, which is still
-- loading when this runs):
--
--   data.Subset(dataset, indices)           data.ConcatDataset({ds1, ds2, ...})
--   data.random_split(dataset, {0.8, 0.2}, seed_or_generator)   -> { Subset, Subset }
--   data.BatchSampler(sampler, batch_size, drop_last)
--   data.SubsetRandomSampler(indices, seed_or_generator)
--   data.WeightedRandomSampler(weights, num_samples, replacement = true, seed_or_generator)
--
-- Indices are 0-based as everywhere in ramtorch.data. Random draws come from data.Generator (the
-- runtime's counter-based generator at a private (seed, offset)); without a generator each pass
-- takes a fresh seed from the global stream, so torch.manual_seed makes it reproducible, as
-- RandomSampler does. The algorithms are PyTorch's, so that given the same uniform draws they pick
-- the same indices: SubsetRandomSampler and random_split permute with randperm; WeightedRandomSampler
-- inverts the cumulative weights with replacement, and without replacement takes the top
-- num_samples of w / Exp(1) (the Gumbel top-k trick of torch.multinomial).
local torch = require("ramtorch")

local is_tensor = torch.is_tensor
local floor, ceil, huge, log = math.floor, math.ceil, math.huge, math.log

-- install(M, h): add the classes to the ramtorch.data table M; h holds init.lua's private helpers
-- (new_class, expect_int, length, make_generator, index_tensor).
local function install(M, h)
  local new_class, length, make_generator, index_tensor = h.new_class, h.length, h.make_generator, h.index_tensor
  local Dataset = M.Dataset

  -- a Lua list of 0-based integer indices from a Lua list or a 1-d integer tensor; errors name `what`
  local function index_list(x, what, name, level)
    if is_tensor(x) then
      if x:dim() ~= 1 then
        error(("%s: expected %s to be a 1-d tensor or a list, got shape [%s]"):format(what, name,
              table.concat(x.shape, ", ")), level + 1)
      end
      if x.dtype.is_floating_point or x.dtype == torch.bool then
        error(("%s: expected %s to hold integers, got a %s tensor"):format(what, name, tostring(x.dtype)), level + 1)
      end
      x = x:totable()
    elseif type(x) ~= "table" then
      error(("%s: expected %s to be a list of indices or a 1-d tensor, got %s"):format(what, name, type(x)), level + 1)
    end
    local out = {}
    for k = 1, #x do
      local v = x[k]
      if type(v) ~= "number" or v ~= floor(v) or v < 0 then
        error(("%s: %s at position %d is %s; expected a 0-based integer index >= 0"):format(what, name, k, tostring(v)),
              level + 1)
      end
      out[k] = v
    end
    return out
  end

  local function check_dataset(ds, what, name, level)
    if type(ds) ~= "table" or type(ds.get) ~= "function" then
      error(("%s: expected %s to be a dataset (with get(i) and a length), got %s"):format(what, name, type(ds)),
            level + 1)
    end
  end

  -- the same message as TensorDataset's for an index outside 0 .. n-1
  local function check_index(self, i, n, level)
    if type(i) ~= "number" or i ~= floor(i) or i < 0 or i >= n then
      error(("%s: index %s out of range for %d samples (indices are 0-based)"):format(self.__name, tostring(i), n),
            level + 1)
    end
  end

  -- ---- Subset -----------------------------------------------------------------------------------------

  -- Subset(dataset, indices): sample i is dataset:get(indices[i + 1]). Over a dataset that gathers
  -- in C (TensorDataset, FashionMNIST) the subset gathers too: its batch indices are mapped through
  -- one index_select, so the DataLoader's background prefetch still applies.
  local Subset = Dataset:extend("Subset")
  M.Subset = Subset

  function Subset:__init(dataset, indices)
    check_dataset(dataset, "Subset", "dataset", 3)
    self.dataset = dataset
    self.indices = index_list(indices, "Subset", "indices", 3)
    -- PyTorch checks nothing here and fails at the first get; an index past the end is refused now
    local n = length(dataset)
    for k, v in ipairs(self.indices) do
      if v >= n then
        error(("Subset: index %d at position %d is out of range for a dataset of %d samples (indices are 0-based)")
              :format(v, k, n), 3)
      end
    end
  end

  Subset.__len = function(self) return #self.indices end

  function Subset:get(i)
    check_index(self, i, #self.indices, 2)
    return self.dataset:get(self.indices[i + 1])
  end

  function Subset:supports_gather()
    local d = self.dataset
    return type(d.supports_gather) == "function" and d:supports_gather() and type(d.gather) == "function"
      and type(d.gather_async) == "function"
  end

  -- subset positions (a 1-d int64 tensor) to indices of the underlying dataset
  function Subset:_map(idx)
    self._idx_t = self._idx_t or index_tensor(self.indices)
    return self._idx_t:index_select(0, idx)
  end

  function Subset:gather(idx) return self.dataset:gather(self:_map(idx)) end
  function Subset:gather_async(idx) return self.dataset:gather_async(self:_map(idx)) end

  -- ---- ConcatDataset ----------------------------------------------------------------------------------

  -- ConcatDataset({ds1, ds2, ...}): the samples of ds1, then those of ds2, ... Batches are built
  -- sample by sample (get + collate), never through a C gather, since one batch may span datasets.
  -- Unlike PyTorch, a negative index is refused like every other dataset here (0-based indices).
  local ConcatDataset = Dataset:extend("ConcatDataset")
  M.ConcatDataset = ConcatDataset

  function ConcatDataset:__init(datasets)
    if type(datasets) ~= "table" or is_tensor(datasets) or type(datasets.get) == "function" then
      error(("ConcatDataset: expected a list of datasets, got %s"):format(
            type(datasets) == "table" and "a single dataset" or type(datasets)), 3)
    end
    if #datasets == 0 then error("ConcatDataset: datasets should not be an empty iterable", 3) end
    self.datasets, self.cumulative_sizes = {}, {}
    local total = 0
    for k, ds in ipairs(datasets) do
      check_dataset(ds, "ConcatDataset", "datasets[" .. k .. "]", 3)
      total = total + length(ds)
      self.datasets[k], self.cumulative_sizes[k] = ds, total
    end
  end

  ConcatDataset.__len = function(self) return self.cumulative_sizes[#self.cumulative_sizes] end

  function ConcatDataset:get(i)
    local cum = self.cumulative_sizes
    check_index(self, i, cum[#cum], 2)
    -- bisect_right: the first dataset whose cumulative size exceeds i
    local lo, hi = 1, #cum
    while lo < hi do
      local mid = floor((lo + hi) / 2)
      if cum[mid] > i then hi = mid else lo = mid + 1 end
    end
    return self.datasets[lo]:get(lo == 1 and i or i - cum[lo - 1])
  end

  -- ---- random_split -----------------------------------------------------------------------------------

  -- random_split(dataset, lengths, generator): a random partition into Subsets of the given lengths
  -- (integers summing to #dataset, or fractions summing to 1: floor(n * f) each, then the remainder
  -- handed out one by one round-robin from the first split, as PyTorch). The order is one
  -- randperm(n) of the generator (a seed or a data.Generator; nil: a seed from the global stream).
  function M.random_split(dataset, lengths, generator)
    check_dataset(dataset, "random_split", "dataset", 2)
    if type(lengths) ~= "table" or is_tensor(lengths) or #lengths == 0 then
      error(("random_split: expected lengths to be a non-empty list of numbers, got %s"):format(
            type(lengths) == "table" and "an empty table" or type(lengths)), 2)
    end
    local n, sum = length(dataset), 0
    for k = 1, #lengths do
      local v = lengths[k]
      if type(v) ~= "number" or v ~= v then
        error(("random_split: length at position %d is %s; expected a number"):format(k, tostring(v)), 2)
      end
      sum = sum + v
    end
    local sizes = {}
    -- math.isclose(sum, 1) (rel_tol 1e-9) and sum <= 1: fractions
    if math.abs(sum - 1) <= 1e-9 * math.max(1, math.abs(sum)) and sum <= 1 then
      local given = 0
      for k = 1, #lengths do
        local f = lengths[k]
        if f < 0 or f > 1 then error(("random_split: Fraction at position %d is not between 0 and 1"):format(k), 2) end
        sizes[k] = floor(n * f)
        given = given + sizes[k]
      end
      for r = 0, n - given - 1 do
        local k = r % #sizes + 1
        sizes[k] = sizes[k] + 1
      end
    else
      for k = 1, #lengths do
        local v = lengths[k]
        if v ~= floor(v) or v < 0 then
          error(("random_split: length at position %d is %s; expected a non-negative integer (or fractions summing to 1)")
                :format(k, tostring(v)), 2)
        end
        sizes[k] = v
      end
    end
    local total = 0
    for k = 1, #sizes do total = total + sizes[k] end
    if total ~= n then
      error(("random_split: Sum of input lengths does not equal the length of the input dataset! (lengths sum to %s, "
             .. "the dataset has %d samples)"):format(tostring(total), n), 2)
    end
    local perm = make_generator(generator, "random_split", 2):randperm(n)
    local out, offset = {}, 0
    for k = 1, #sizes do
      local idx = {}
      for j = 1, sizes[k] do idx[j] = perm[offset + j] end
      offset = offset + sizes[k]
      out[k] = Subset(dataset, idx)
    end
    return out
  end

  -- ---- samplers ---------------------------------------------------------------------------------------

  -- the indices of one pass of a sampler (an object with indices()) or a plain list of indices
  local function pass_of(s)
    if type(s.indices) == "function" then return s:indices() end
    return s
  end

  -- a generator option: a seed, a data.Generator, or an options table { generator = ... }
  local function generator_arg(g, what, level)
    if type(g) == "table" and getmetatable(g) ~= M.Generator then
      for k in pairs(g) do
        if k ~= "generator" then error(("%s: unknown option '%s'"):format(what, tostring(k)), level + 1) end
      end
      g = g.generator
    end
    if g == nil then return nil end
    return make_generator(g, what, level + 1)
  end

  -- BatchSampler(sampler, batch_size, drop_last): groups the indices of one pass of `sampler` (a
  -- sampler or a list of indices) into lists of batch_size (the last one shorter unless drop_last).
  -- batches() gives them as a list of lists; iter() one by one. DataLoader takes it as batch_sampler.
  local BatchSampler = new_class("BatchSampler")
  M.BatchSampler = BatchSampler

  function BatchSampler:__init(sampler, batch_size, drop_last)
    if type(sampler) ~= "table" or (type(sampler.indices) ~= "function" and sampler[1] == nil and #sampler ~= 0) then
      error(("BatchSampler: expected sampler to be a sampler (with indices()) or a list of indices, got %s")
            :format(type(sampler)), 3)
    end
    if type(sampler.batches) == "function" then
      error("BatchSampler: sampler is already a BatchSampler (it yields lists of indices)", 3)
    end
    if type(batch_size) ~= "number" or batch_size ~= floor(batch_size) or batch_size <= 0 then
      error(("BatchSampler: batch_size should be a positive integer value, but got batch_size=%s")
            :format(tostring(batch_size)), 3)
    end
    if drop_last == nil then drop_last = false end
    if type(drop_last) ~= "boolean" then
      error(("BatchSampler: drop_last should be a boolean value, but got drop_last=%s"):format(tostring(drop_last)), 3)
    end
    self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
  end

  BatchSampler.__len = function(self)
    local n = length(self.sampler)
    if self.drop_last then return floor(n / self.batch_size) end
    return ceil(n / self.batch_size)
  end
  BatchSampler.len = BatchSampler.__len

  function BatchSampler:batches()
    local order, bs, out = pass_of(self.sampler), self.batch_size, {}
    local n = #order
    local nb = self.drop_last and floor(n / bs) or ceil(n / bs)
    for b = 0, nb - 1 do
      local batch = {}
      for k = 1, math.min(bs, n - b * bs) do batch[k] = order[b * bs + k] end
      out[b + 1] = batch
    end
    return out
  end

  function BatchSampler:iter()
    local all, b = self:batches(), 0
    return function()
      b = b + 1
      return all[b]
    end
  end
  BatchSampler.__call = BatchSampler.iter

  -- SubsetRandomSampler(indices, generator): the given indices in a new random order every pass
  -- (indices[randperm(#indices)], as PyTorch).
  local SubsetRandomSampler = new_class("SubsetRandomSampler")
  M.SubsetRandomSampler = SubsetRandomSampler

  function SubsetRandomSampler:__init(indices, generator)
    self.idx = index_list(indices, "SubsetRandomSampler", "indices", 3)
    self.generator = generator_arg(generator, "SubsetRandomSampler", 3)
  end
  SubsetRandomSampler.__len = function(self) return #self.idx end
  SubsetRandomSampler.len = SubsetRandomSampler.__len

  function SubsetRandomSampler:indices()
    local g = self.generator or make_generator(nil, "SubsetRandomSampler", 2)
    local perm, out = g:randperm(#self.idx), {}
    for k = 1, #perm do out[k] = self.idx[perm[k] + 1] end
    return out
  end

  -- WeightedRandomSampler(weights, num_samples, replacement = true, generator): num_samples indices
  -- into weights, index i drawn with probability weights[i + 1] / sum (torch.multinomial). Without
  -- replacement no index repeats; as PyTorch's documentation says (its code silently returns
  -- zero-weight indices there), that needs num_samples <= the number of nonzero weights.
  -- The third argument may also be an options table { replacement = ..., generator = ... }.
  local WeightedRandomSampler = new_class("WeightedRandomSampler")
  M.WeightedRandomSampler = WeightedRandomSampler

  local WHAT = "WeightedRandomSampler"

  function WeightedRandomSampler:__init(weights, num_samples, replacement, generator)
    if type(replacement) == "table" then
      local o = replacement
      for k in pairs(o) do
        if k ~= "replacement" and k ~= "generator" then
          error(("%s: unknown option '%s'"):format(WHAT, tostring(k)), 3)
        end
      end
      replacement, generator = o.replacement, o.generator
    end
    if type(num_samples) ~= "number" or num_samples ~= floor(num_samples) or num_samples <= 0 then
      error(("%s: num_samples should be a positive integer value, but got num_samples=%s")
            :format(WHAT, tostring(num_samples)), 3)
    end
    if replacement == nil then replacement = true end
    if type(replacement) ~= "boolean" then
      error(("%s: replacement should be a boolean value, but got replacement=%s"):format(WHAT, tostring(replacement)), 3)
    end
    local w
    if is_tensor(weights) then
      if weights:dim() ~= 1 then
        error(("%s: weights should be a 1d sequence but given weights have shape [%s]")
              :format(WHAT, table.concat(weights.shape, ", ")), 3)
      end
      w = weights:to(torch.float64):totable()
    elseif type(weights) == "table" then
      w = {}
      for k = 1, #weights do
        local v = weights[k]
        if type(v) ~= "number" then
          error(("%s: weights should be a 1d sequence of numbers but weight at position %d is a %s")
                :format(WHAT, k, type(v)), 3)
        end
        w[k] = v
      end
    else
      error(("%s: expected weights to be a list of numbers or a 1-d tensor, got %s"):format(WHAT, type(weights)), 3)
    end
    local total, nonzero = 0, 0
    for k = 1, #w do
      local v = w[k]
      if v ~= v or v == huge or v == -huge then
        error(("%s: invalid multinomial distribution (encountering probability entry = infinity or NaN) at position %d")
              :format(WHAT, k), 3)
      end
      if v < 0 then
        error(("%s: invalid multinomial distribution (encountering probability entry < 0) at position %d")
              :format(WHAT, k), 3)
      end
      total = total + v
      if v > 0 then nonzero = nonzero + 1 end
    end
    if not (total > 0) then error(WHAT .. ": invalid multinomial distribution (sum of probabilities <= 0)", 3) end
    if total == huge then error(WHAT .. ": invalid multinomial distribution (the weights sum to infinity)", 3) end
    if not replacement then
      if num_samples > #w then
        error(("%s: cannot sample n_sample > prob_dist.size(-1) samples without replacement (num_samples=%d, %d weights)")
              :format(WHAT, num_samples, #w), 3)
      end
      if num_samples > nonzero then
        error(("%s: cannot draw %d samples without replacement: only %d of the %d weights are nonzero")
              :format(WHAT, num_samples, nonzero, #w), 3)
      end
    end
    self.weights, self.num_samples, self.replacement = w, num_samples, replacement
    self.generator = generator ~= nil and make_generator(generator, WHAT, 3) or nil
    local cum, c = {}, 0
    for k = 1, #w do
      c = c + w[k]
      cum[k] = c
    end
    self._cum, self._total = cum, c
  end
  WeightedRandomSampler.__len = function(self) return self.num_samples end
  WeightedRandomSampler.len = WeightedRandomSampler.__len

  function WeightedRandomSampler:indices()
    local g = self.generator or make_generator(nil, WHAT, 2)
    local w, out = self.weights, {}
    local n = #w
    if self.replacement then
      -- inverse CDF: the first i with cum[i] > u * total (a zero weight is never picked)
      local cum, total = self._cum, self._total
      local last = n
      while w[last] == 0 do last = last - 1 end
      local u = g:uniform(self.num_samples)
      for s = 1, self.num_samples do
        local target = u[s - 1] * total
        local lo, hi = 1, n + 1
        while lo < hi do
          local mid = floor((lo + hi) / 2)
          if cum[mid] > target then hi = mid else lo = mid + 1 end
        end
        if lo > last then lo = last end -- rounding at u close to 1
        out[s] = lo - 1
      end
      return out
    end
    -- Gumbel top-k: keys w / q with q ~ Exp(1) = -log(1 - u); the num_samples largest keys
    local u = g:uniform(n)
    local keys, order = {}, {}
    for k = 1, n do
      local q = -log(1 - u[k - 1])
      keys[k] = w[k] > 0 and w[k] / q or -1 -- q = 0 gives inf: picked first
      order[k] = k
    end
    table.sort(order, function(a, b)
      if keys[a] ~= keys[b] then return keys[a] > keys[b] end
      return a < b
    end)
    for s = 1, self.num_samples do out[s] = order[s] - 1 end
    return out
  end
end

return { install = install }
