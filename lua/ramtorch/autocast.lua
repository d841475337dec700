-- ramtorch/autocast.lua: the dispatch side of mixed precision (ramtorch.amp.autocast is the user side).
-- It holds the autocast state (one dtype per device type, "cpu" and "cuda") and wraps the math functions
-- of ops.lua, ops_nn.lua and functional.lua with PyTorch's cast policies, so that inside an autocast
-- region each op casts its floating inputs on entry:
--
--   lower: to the autocast dtype (matmul, mm, bmm, linear, scaled_dot_product_attention, ...). A float32
--          leaf that requires grad (a parameter) is cast once per region: the cast is cached, as PyTorch
--          does, until the outermost region exits.
--   fp32:  bfloat16/float16 inputs to float32 (softmax, log_softmax, layer_norm, rms_norm, losses, sum,
--          exp, log, pow, rsqrt, reciprocal, ...).
--   promote: to the widest floating dtype among the inputs.
-- Ops on no list run in the dtype of their inputs; binary ops, cat and stack promote natively in C.
-- float64 inputs and non-floating inputs are never cast. The lists are PyTorch's CUDA lists
-- (aten/src/ATen/autocast_mode.cpp), applied to both device types (PyTorch's CPU lists keep softmax,
-- layer_norm, exp, ... in the low dtype; here they go to float32 on the CPU as well).
--
-- The casts are ordinary differentiable conversions (rt_to_dtype, ToCopyBackward), so gradients reach
-- float32 masters in float32. With no region active a wrapped function costs one upvalue test.
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local ffi, C = rffi.ffi, rffi.C

local is_tensor, meta = tensor.is_tensor, tensor.meta
local box, result = core.box, core.result
local oom = core.oom
local select, unpack, type, getmetatable = select, unpack, type, getmetatable

local F32, BF16, F16 = 0, 1, 2

local M = {}

-- ---- state ------------------------------------------------------------------------------------------

local active = false           -- some device type has autocast on (the one test a wrapper makes when off)
local cpu_code, cuda_code = -1, -1 -- autocast dtype code per device type, -1 when off
local depth = 0                -- nesting depth of regions (enabled or not); the cache empties at 0
local cache_enabled = true
local cache = { [BF16] = {}, [F16] = {} } -- [dtype code][address of the f32 leaf] = {src=, out=, grad=}
local hits = 0                 -- casts served from the cache (tests)

local function clear_cache()
  cache[BF16], cache[F16] = {}, {}
end
M.clear_cache = clear_cache

-- Called by autograd.run_backward after a backward that freed its graph (no retain_graph): a cached
-- cast made in grad mode is a node of that graph (ToCopyBackward), now released, and a later forward
-- in the same region (gradient accumulation, a training loop inside one region) that reused it would
-- fail in its backward ("backward through the graph a second time"; PyTorch's ToCopyBackward saves
-- nothing, so PyTorch allows it). Those entries are dropped and the next forward casts afresh, which
-- also picks up an optimizer step made since (PyTorch would serve the stale cast).
function M.on_graph_freed()
  for _, c in pairs(cache) do
    for k, e in pairs(c) do
      if e.grad ~= 0 then c[k] = nil end
    end
  end
end

-- Enter a region: cpu / cuda are the dtype codes for each device type (-1 off, nil: unchanged).
-- Returns the token exit() restores.
function M.enter(cpu, cuda, use_cache)
  local token = { cpu_code, cuda_code, cache_enabled }
  if cpu ~= nil then cpu_code = cpu end
  if cuda ~= nil then cuda_code = cuda end
  if use_cache ~= nil then cache_enabled = use_cache end
  active = cpu_code >= 0 or cuda_code >= 0
  depth = depth + 1
  return token
end

function M.exit(token)
  cpu_code, cuda_code, cache_enabled = token[1], token[2], token[3]
  active = cpu_code >= 0 or cuda_code >= 0
  depth = depth - 1
  if depth <= 0 then
    depth = 0
    clear_cache()
  end
end

-- The autocast dtype code for a device type ("cpu" / "cuda"), -1 when off.
function M.code_for(device_type)
  if device_type == "cpu" then return cpu_code end
  return cuda_code
end

-- The autocast dtype code that applies to tensor t (its device type), -1 when off or when t is not
-- float32/bfloat16/float16 (PyTorch never casts float64 or integer inputs: a float64 input of a
-- streamed linear must not be computed in the low dtype).
function M.code_for_tensor(t)
  if not active then return -1 end
  local m = meta(t)
  if m.dtype > F16 then return -1 end
  return m.device < 0 and cpu_code or cuda_code
end

function M.is_active() return active end

-- The current state, and fn(...) run under a saved one (activation checkpointing recomputes in the
-- backward, outside the forward's region, and must cast as the forward did).
function M.snapshot() return { cpu_code, cuda_code, cache_enabled } end
function M.run_with(snap, fn, ...)
  local token = M.enter(snap[1], snap[2], snap[3])
  local function finish(ok, ...)
    M.exit(token)
    if not ok then error((...), 0) end
    return ...
  end
  return finish(pcall(fn, ...))
end
function M.depth() return depth end
-- Casts served from the cache so far (tests).
function M.cache_hits() return hits end
-- Number of cached casts (tests).
function M.cache_size()
  local n = 0
  for _, c in pairs(cache) do for _ in pairs(c) do n = n + 1 end end
  return n
end

-- ---- casts ------------------------------------------------------------------------------------------

local function cast(t, code) return result(oom(C.rt_to_dtype(t.p, code, box)) or C.rt_to_dtype(t.p, code, box)) end

-- t to the low dtype code; parameters (f32 leaves that require grad) go through the cache.
local function lower_cast(t, code)
  local m = meta(t)
  local d = m.dtype
  if d == code or d > F16 then return t end -- already there, float64, or not floating
  if cache_enabled and d == F32 and m.is_leaf ~= 0 and m.requires_grad ~= 0 then
    local key = tonumber(ffi.cast("uintptr_t", t.p))
    local c = cache[code]
    local g = C.rt_grad_enabled()
    local v = C.rt_tensor_version(t.p)
    local e = c[key]
    -- the entry holds its source, so the address cannot be reused while the entry lives; a cast made
    -- without grad mode has no graph and does not serve a recording forward (nor the reverse); a
    -- parameter changed in place since (its version moved: an optimizer step, a manual update inside
    -- the region) is cast afresh rather than served stale (PyTorch's cache would serve the old values)
    if e ~= nil and e.grad == g and e.version == v then
      hits = hits + 1
      return e.out
    end
    local out = cast(t, code)
    c[key] = { src = t, out = out, grad = g, version = v }
    return out
  end
  return cast(t, code)
end

local function fp32_cast(t)
  local d = meta(t).dtype
  if d == BF16 or d == F16 then return cast(t, F32) end
  return t
end

-- The device type (as its autocast code) of the first tensor among the arguments; -1 when none or off.
local function region_code(n, args)
  for i = 1, n do
    local a = args[i]
    if is_tensor(a) then return meta(a).device < 0 and cpu_code or cuda_code, meta(a).device < 0 end
  end
  return -1, false
end

local function same_type(t, on_cpu) return (meta(t).device < 0) == on_cpu end

-- attn_mask given in an options table (scaled_dot_product_attention) is an input like the others.
local function cast_opts(a, fn_cast, on_cpu, code)
  local mask = a.attn_mask
  if not is_tensor(mask) or not same_type(mask, on_cpu) then return a end
  local c = {}
  for k, v in pairs(a) do c[k] = v end
  c.attn_mask = fn_cast(mask, code)
  return c
end

local function plain_table(a) return type(a) == "table" and getmetatable(a) == nil end

local function run_lower(fn, ...)
  local n = select("#", ...)
  local args = { ... }
  local code, on_cpu = region_code(n, args)
  if code < 0 then return fn(...) end
  for i = 1, n do
    local a = args[i]
    if is_tensor(a) then
      if same_type(a, on_cpu) then args[i] = lower_cast(a, code) end
    elseif plain_table(a) then
      args[i] = cast_opts(a, lower_cast, on_cpu, code)
    end
  end
  return fn(unpack(args, 1, n))
end

local function run_fp32(fn, ...)
  local n = select("#", ...)
  local args = { ... }
  local code, on_cpu = region_code(n, args)
  if code < 0 then return fn(...) end
  for i = 1, n do
    local a = args[i]
    if is_tensor(a) then
      if same_type(a, on_cpu) then args[i] = fp32_cast(a) end
    elseif plain_table(a) then
      args[i] = cast_opts(a, fp32_cast, on_cpu)
    end
  end
  return fn(unpack(args, 1, n))
end

-- The widest of two floating dtype codes (bf16 with f16 widens to f32, as torch.promote_types does).
local function wider(a, b)
  if a < 0 then return b end
  if a == b then return a end
  return F32
end

local function run_promote(fn, ...)
  local n = select("#", ...)
  local args = { ... }
  local code, on_cpu = region_code(n, args)
  if code < 0 then return fn(...) end
  local to = -1
  for i = 1, n do
    local a = args[i]
    if is_tensor(a) and same_type(a, on_cpu) then
      local d = meta(a).dtype
      if d <= F16 then to = wider(to, d) end
    end
  end
  if to < 0 then return fn(...) end
  for i = 1, n do
    local a = args[i]
    if is_tensor(a) and same_type(a, on_cpu) then
      local d = meta(a).dtype
      if d <= F16 and d ~= to then args[i] = cast(a, to) end
    end
  end
  return fn(unpack(args, 1, n))
end

-- ---- wrappers ---------------------------------------------------------------------------------------

local wrapped = setmetatable({}, { __mode = "k" }) -- wrapper -> policy name (never wrap twice)
local rdiv_wrapped = setmetatable({}, { __mode = "k" }) -- the __div wrappers (number / tensor)
local by_orig = setmetatable({}, { __mode = "k" }) -- original -> wrapper (aliases share one)

local RUN = { lower = run_lower, fp32 = run_fp32, promote = run_promote }

function M.wrap(policy, fn)
  if wrapped[fn] then return fn end
  local w = by_orig[fn]
  if w then return w end
  local run = RUN[policy]
  if run == nil then error(("autocast.wrap: unknown policy %s"):format(tostring(policy)), 2) end
  w = function(...)
    if active then return run(fn, ...) end
    return fn(...)
  end
  wrapped[w] = policy
  by_orig[fn] = w
  return w
end

-- The policy of a function ("lower", "fp32", "promote") or nil.
function M.policy_of(fn) return wrapped[fn] end

-- PyTorch's CUDA lists, in the names this library uses (names not defined yet are skipped, so a module
-- that gains one of these ops gets its policy by calling install again).
M.LISTS = {
  lower = { "matmul", "mm", "bmm", "mv", "addmm", "addmv", "addr", "baddbmm", "addbmm", "chain_matmul",
            "multi_dot", "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
            "conv_transpose2d", "conv_transpose3d", "prelu", "scaled_dot_product_attention" },
  fp32 = { "pow", "acos", "asin", "cosh", "sinh", "tan", "erfinv", "exp", "expm1", "log", "log10", "log2",
           "log1p", "reciprocal", "rsqrt", "softplus", "softmax", "softmin", "log_softmax", "layer_norm",
           "group_norm", "rms_norm", "norm", "normalize", "cosine_similarity", "poisson_nll_loss",
           "cosine_embedding_loss", "nll_loss", "hinge_embedding_loss", "kl_div", "l1_loss",
           "smooth_l1_loss", "huber_loss", "mse_loss", "margin_ranking_loss", "multilabel_margin_loss",
           "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits",
           "cross_entropy", "dist", "pdist", "cdist", "renorm", "logsumexp", "prod", "cumprod", "cumsum",
           "sum",
           -- not on PyTorch's lists but composed of a listed op there: square is pow(x, 2)
           "square" },
  promote = { "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "grid_sampler", "index_put",
              "tensordot", "scatter_add" },
}

-- Wrap the functions of module table mod named in the lists (and the Tensor methods that are the same
-- functions); mt: the Tensor metatable, whose __pow gets the fp32 policy.
function M.install(mod, Tensor, mt)
  for policy, names in pairs(M.LISTS) do
    for _, name in ipairs(names) do
      local f = rawget(mod, name)
      if type(f) == "function" then
        local w = M.wrap(policy, f)
        mod[name] = w
        if Tensor ~= nil and rawget(Tensor, name) == f then Tensor[name] = w end
      end
      if Tensor ~= nil then
        local tf = rawget(Tensor, name)
        if type(tf) == "function" then Tensor[name] = M.wrap(policy, tf) end
      end
    end
  end
  if mt ~= nil and type(mt.__pow) == "function" then mt.__pow = M.wrap("fp32", mt.__pow) end
  -- number / tensor: PyTorch's __rtruediv__ is x.reciprocal() * number, reciprocal on the float32 list
  -- (tensor / number and tensor / tensor are on no list)
  if mt ~= nil and type(mt.__div) == "function" and not rdiv_wrapped[mt.__div] then
    local div = mt.__div
    local w = function(a, b)
      if active and not is_tensor(a) and is_tensor(b) then return run_fp32(div, a, b) end
      return div(a, b)
    end
    rdiv_wrapped[w] = true
    mt.__div = w
  end
end

return M
