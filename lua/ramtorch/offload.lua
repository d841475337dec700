-- ramtorch/offload.lua: the offload engine from Lua (DESIGN section 5; runtime/offload.c): the streamed
-- linear op, RamTorch's gradient hooks on offloaded parameters, the memory budget, statistics, the host
-- arena (DESIGN section 3), and the CPU mode that runs the whole engine on the CPU backend (copy streams
-- as threads) so CI exercises it.
--
--   local offload = require("ramtorch.offload")     -- also torch.offload
--   offload.enable_cpu_streams(true)                -- ramtorch.Linear streams CPU inputs too
--   torch.set_memory_budget(2^30)                   -- bytes of device buffers (0: none)
--   y = offload.linear(x, w, b)                     -- w, b: host (CPU) tensors
--   print(offload.stats())                          -- bytes each way, wait time, residency
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local torch = require("ramtorch")
local autograd = require("ramtorch.autograd")
local ffi, C = rffi.ffi, rffi.C

local check = core.check

local M = {}

-- ---- devices --------------------------------------------------------------------------------------

local function cuda_available()
  local ok, r = pcall(function() return C.rt_cuda_is_available() ~= 0 end)
  return ok and r
end

-- The device an engine call is about: given, else CUDA when present, else the CPU.
local function engine_device(dev, level)
  if dev == nil then return cuda_available() and core.device_code("cuda") or -1 end
  return core.device_code(dev, (level or 1) + 1)
end

-- ---- switches -------------------------------------------------------------------------------------

-- Run the engine on the CPU backend: streamed ops accept CPU inputs, copy streams are threads.
function M.enable_cpu_streams(flag)
  if flag ~= nil and type(flag) ~= "boolean" then
    error(("enable_cpu_streams: expected true or false, got %s"):format(type(flag)), 2)
  end
  check(C.rt_offload_set_cpu_streams(flag == false and 0 or 1))
end
function M.cpu_streams_enabled() return C.rt_offload_cpu_streams_enabled() ~= 0 end

-- A byte count C takes as int64_t: an integer in [0, 2^63) (inf or 2^70 would wrap to INT64_MIN).
local function is_byte_count(n) return type(n) == "number" and n >= 0 and n < 2 ^ 63 and n == math.floor(n) end

-- Byte budget of the device buffer pool (0 or nil: none, stream through a small window). Under a
-- budget larger than the streaming window the engine keeps some parameters resident.
function M.set_memory_budget(bytes, device)
  bytes = bytes or 0
  if not is_byte_count(bytes) then
    error(("set_memory_budget: expected a non-negative integer number of bytes below 2^63, got %s"):format(tostring(bytes)), 2)
  end
  check(C.rt_offload_set_memory_budget(engine_device(device, 2), bytes))
end
function M.get_memory_budget(device)
  local out = ffi.new("int64_t[1]")
  check(C.rt_offload_get_memory_budget(engine_device(device, 2), out))
  return tonumber(out[0])
end

-- Wait for every pending gradient copy and host accumulation (the end of each backward does this).
function M.synchronize() check(C.rt_offload_synchronize()) end
function M.reset_schedule(device) check(C.rt_offload_reset_schedule(engine_device(device, 2))) end

local stat_fields = { "h2d_bytes", "h2d_copies", "d2h_bytes", "d2h_copies", "fetches", "hits", "prefetches",
                      "stalls", "wait_ms", "evictions", "resident_bytes", "streamed_bytes", "pool_bytes",
                      "pool_peak_bytes", "budget", "schedule_length", "shadow_refreshes", "migrated_bytes" }
M.stat_fields = stat_fields

-- ramtorch.offload.stats(device) -> table of the counters above (numbers).
function M.stats(device)
  local s = ffi.new("rt_offload_stats")
  check(C.rt_offload_get_stats(engine_device(device, 2), s))
  local r = {}
  for _, k in ipairs(stat_fields) do r[k] = tonumber(s[k]) end
  return r
end
function M.reset_stats(device) check(C.rt_offload_reset_stats(engine_device(device, 2))) end

-- Per-phase profile (where a step's time goes): off by default; set_profiling(true) or
-- RAMTORCH_OFFLOAD_PROFILE=1 turns it on. Cleared by reset_stats. Times in milliseconds.
local profile_fields = { "h2d_ms", "d2h_ms", "gemm_fwd_ms", "gemm_bwd_ms", "worker_wait_ms", "worker_acc_ms",
                         "worker_cb_ms", "worker_tasks", "worker_bytes", "max_pending", "fetch_host_ms",
                         "route_host_ms", "sync_ms", "syncs", "end_sync_ms", "end_syncs", "shadow_ms",
                         "slot_allocs", "staging_allocs", "direct_grads", "promotions", "grad_waits", "grad_wait_ms", "grad_dev_peak",
                         "device_casts", "arena_chunks",
                         "arena_registers", "arena_register_ms" }
M.profile_fields = profile_fields
function M.set_profiling(flag) return C.rt_offload_set_profiling(flag == false and 0 or 1) ~= 0 end
-- How gradients reach the host (rt_offload_set_grad_path): "native" (the default: a first bf16 gradient
-- lands as bf16, a second turns the host gradient into float32), "host" (always float32),
-- "device", "auto", "skip" (timing experiments). Returns the previous path.
function M.set_grad_path(name)
  if type(name) ~= "string" then
    error(("set_grad_path: expected a path name (native, host, device, auto, skip), got %s"):format(type(name)), 2)
  end
  local old = ffi.string(C.rt_offload_grad_path())
  if C.rt_offload_set_grad_path(name) ~= 0 then error(ffi.string(C.rt_last_error()), 2) end
  return old
end
function M.grad_path() return ffi.string(C.rt_offload_grad_path()) end
-- Piece size (bytes) of gradient copies that need a host pass (0: whole gradients); returns the old one.
function M.set_grad_chunk_bytes(n)
  if not is_byte_count(n) then
    error(("set_grad_chunk_bytes: expected a non-negative integer number of bytes below 2^63, got %s"):format(tostring(n)), 2)
  end
  return tonumber(C.rt_offload_set_grad_chunk_bytes(n))
end
function M.profile(device)
  local s = ffi.new("rt_offload_profile")
  check(C.rt_offload_get_profile(engine_device(device, 2), s))
  local r = {}
  for _, k in ipairs(profile_fields) do r[k] = tonumber(s[k]) end
  return r
end

-- Testing the engine's ordering: drop one event wait ("h2d", "d2h", "h2d,d2h" or nil for none), and
-- slow the CPU copy streams (microseconds before each 256 KiB chunk) so that the race is certain.
function M.set_debug_skip_wait(which)
  local f = 0
  if which ~= nil then
    if type(which) ~= "string" or not (which:find("h2d") or which:find("d2h")) then
      error(("set_debug_skip_wait: expected \"h2d\", \"d2h\", \"h2d,d2h\" or nil, got %s"):format(tostring(which)), 2)
    end
    if which:find("h2d") then f = f + 1 end
    if which:find("d2h") then f = f + 2 end
  end
  C.rt_offload_set_debug_flags(f)
end
function M.set_copy_delay_us(us)
  us = us or 0
  if type(us) ~= "number" or us < 0 or us >= 2 ^ 31 or us ~= math.floor(us) then
    error(("set_copy_delay_us: expected a non-negative integer number of microseconds, got %s"):format(tostring(us)), 2)
  end
  check(C.rt_offload_set_copy_delay_us(us))
end

-- ---- the host arena -------------------------------------------------------------------------------

function M.arena_empty(shape, dtype)
  local n = core.shape_into(core.shape_buf, shape, 2)
  return core.result(core.oom(C.rt_arena_empty(n, core.shape_buf, core.dtype(dtype, 2).code, core.box)) or C.rt_arena_empty(n, core.shape_buf, core.dtype(dtype, 2).code, core.box))
end
function M.arena_zeros(shape, dtype)
  local t = M.arena_empty(shape, dtype)
  t:fill_(0)
  return t
end
-- Byte offset of an arena tensor's slice in the segment (nil for other tensors).
function M.arena_offset(t)
  local out = ffi.new("int64_t[1]")
  if C.rt_arena_offset(t.p, out) ~= 0 then return nil end
  return tonumber(out[0])
end
function M.is_arena_tensor(t) return M.arena_offset(t) ~= nil end
function M.arena_stats()
  local v = ffi.new("int64_t[4]")
  check(C.rt_arena_stats(v, v + 1, v + 2, v + 3))
  return { mapped = tonumber(v[0]), used = tonumber(v[1]), peak_used = tonumber(v[2]), chunks = tonumber(v[3]) }
end
function M.set_arena_chunk_size(bytes) check(C.rt_arena_set_chunk_size(bytes)) end

-- ---- parameter handles ----------------------------------------------------------------------------

local handles = setmetatable({}, { __mode = "k" }) -- host tensor handle -> rt_offload_param*
local param_box = ffi.new("rt_offload_param*[1]")

local function handle_of(t)
  local h = handles[t]
  if h == nil then
    check(C.rt_offload_param_new(t.p, param_box))
    h = ffi.gc(param_box[0], C.rt_offload_param_release)
    handles[t] = h
  end
  return h
end
M.handle_of = handle_of
-- The handle of t if a streamed op has made one (nil otherwise); the optimizer writes its shadow.
function M.existing_handle(t) return handles[t] end

-- Rewrite the bf16 (or f16) transfer shadows of f32 masters after an optimizer step (a stale shadow is
-- also refreshed when fetched, on the compute thread). params: an array of tensors or a Module.
function M.refresh_shadows(params, dtype)
  if type(params) == "table" and params.parameters then params = params:parameters() end
  if type(params) ~= "table" then
    error(("refresh_shadows: expected an array of tensors or a Module, got %s"):format(type(params)), 2)
  end
  local code = core.dtype(dtype or "bfloat16", 2).code
  for _, t in ipairs(params) do
    local h = handles[t]
    if h ~= nil and t.dtype == torch.float32 then check(C.rt_offload_refresh_shadow(h, code)) end
  end
end

-- ---- gradient hooks (RamTorch's register_ramtorch_grad_hook / _post_accumulate_grad_hook) ----------
-- A grad hook gets the device gradient before it leaves the device and may return a replacement, or
-- false to send nothing to the host (a ZeRO-2 rank that does not own the parameter). A post-accumulate
-- hook gets (param, device_gradient) once the gradient has been copied to the host (the hooks run
-- after that copy, so changes they make to the device gradient do not reach the host); the host
-- gradient itself is never brought back to the device, so it sees this backward's gradient.

local grad_hooks = setmetatable({}, { __mode = "k" })
local post_hooks = setmetatable({}, { __mode = "k" })
local anchors = setmetatable({}, { __mode = "k" })
local current_grad = setmetatable({}, { __mode = "k" })

local function add_hook(reg, t, fn, what)
  if not torch.is_tensor(t) then error(("%s: expected a Tensor, got %s"):format(what, type(t)), 3) end
  if type(fn) ~= "function" then error(("%s: expected a function, got %s"):format(what, type(fn)), 3) end
  -- a parameter a memory budget moved to the device computes with nn.functional.linear, where no
  -- hook would run: it comes back to the host and streams again (hooked layers do not move)
  M.unmigrate(t)
  local list = reg[t]
  if list == nil then
    list = {}
    reg[t] = list
  end
  local entry = { fn = fn }
  list[#list + 1] = entry
  return {
    remove = function()
      for i, e in ipairs(list) do
        if e == entry then
          table.remove(list, i)
          break
        end
      end
    end,
  }
end

function M.register_ramtorch_grad_hook(t, fn)
  return add_hook(grad_hooks, t, fn, "register_ramtorch_grad_hook")
end
function M.register_ramtorch_post_accumulate_grad_hook(t, fn)
  return add_hook(post_hooks, t, fn, "register_ramtorch_post_accumulate_grad_hook")
end
-- The device gradient of t while its post-accumulate hooks run (RamTorch's param.ramtorch_grad).
function M.ramtorch_grad(t) return current_grad[t] end

local function has_hooks(t)
  local a, b = grad_hooks[t], post_hooks[t]
  return (a ~= nil and #a > 0) or (b ~= nil and #b > 0)
end

-- The hook carrier: a custom function whose output is an input of the streamed op's node, so the
-- autograd engine hands the parameter gradient back to Lua here (C never calls Lua).
local Carrier = autograd.Function({
  forward = function(ctx, anchor, info)
    ctx.info = info
    return anchor
  end,
  backward = function(ctx, g)
    local t, h = ctx.info.param, ctx.info.handle
    if g:numel() == 0 then return nil end -- no gradient reached the parameter
    local grad = g
    for _, e in ipairs(grad_hooks[t] or {}) do
      local r = e.fn(grad)
      if r == false then return nil end
      if r ~= nil then
        if not torch.is_tensor(r) then
          error(("register_ramtorch_grad_hook: a hook must return a Tensor, false or nil, got %s"):format(type(r)), 0)
        end
        grad = r
      end
    end
    -- checked here so that the message names the hook rather than the engine's copy
    if not grad.dtype.is_floating_point then
      error(("register_ramtorch_grad_hook: a hook returned a gradient of dtype %s (expected a floating-point one)")
        :format(tostring(grad.dtype)), 0)
    end
    local gs, ps = grad.shape, t.shape
    local same = #gs == #ps
    for i = 1, #ps do same = same and gs[i] == ps[i] end
    if not same then
      error(("register_ramtorch_grad_hook: a hook returned a gradient of shape [%s] for a parameter of shape [%s]")
        :format(table.concat(gs, ", "), table.concat(ps, ", ")), 0)
    end
    check(C.rt_offload_grad_to_host(h, grad.p))
    local ph = post_hooks[t]
    if ph ~= nil and #ph > 0 then
      -- the hooks run after the copy has read the gradient: what they do to it stays on the device
      check(C.rt_offload_after_grad_copies(C.rt_tensor_meta_of(grad.p).device))
      current_grad[t] = grad
      local ok, err = pcall(function()
        for _, e in ipairs(ph) do e.fn(t, grad) end
      end)
      current_grad[t] = nil
      if not ok then error(err, 0) end
    end
    return nil
  end,
})

local function carrier_for(t, h)
  if t == nil or not t.requires_grad or not has_hooks(t) or not torch.is_grad_enabled() then return nil end
  local a = anchors[t]
  if a == nil then
    a = torch.zeros({ 0 }):requires_grad_(true)
    anchors[t] = a
  end
  return Carrier(a, { param = t, handle = h })
end

-- ---- residency by migration (runtime/offload_migrate.c) --------------------------------------------
-- Under a memory budget, a parameter the residency plan keeps on the device moves there for good (the
-- same tensor: its .device becomes the compute device; its gradient and optimizer update stay there).
-- Layers with RamTorch gradient hooks, and parameters an optimizer keeps on the host (keep_on_host:
-- bf16 states, overlap_with_backward, delay_update) keep the engine's resident copy instead.

local moved_box = ffi.new("int[1]")

-- True when t (a streamed parameter) has moved to its compute device.
function M.is_migrated(t)
  local h = handles[t]
  return h ~= nil and C.rt_offload_param_migrated(h) ~= 0
end

-- Move w and b (or nil) to x's device when the plan keeps w resident and nothing holds them on the
-- host; true when they live there (now or already).
local function migrate(w, b, x)
  if has_hooks(w) or (b ~= nil and has_hooks(b)) then return false end
  check(C.rt_offload_migrate(handle_of(w), b ~= nil and handle_of(b) or nil, C.rt_tensor_meta_of(x.p).device, moved_box))
  return moved_box[0] ~= 0
end

function M.keep_on_host(t, flag)
  if not torch.is_tensor(t) then error(("keep_on_host: expected a Tensor, got %s"):format(type(t)), 2) end
  if M.is_migrated(t) then return end -- already on the device: the optimizer updates it there
  if t.device ~= "cpu" then return end
  check(C.rt_offload_param_set_keep_host(handle_of(t), flag == false and 0 or 1))
end

-- Bring a moved parameter back to host memory (an arena slice, so it streams fast again), with its
-- gradient; model:to("cpu") does this for ramtorch.Linear layers. No-op for a host parameter.
function M.unmigrate(t)
  if not M.is_migrated(t) then return end
  local a = M.arena_empty(t.shape, t.dtype)
  torch.no_grad(function() a:copy_(t) end)
  check(C.rt_offload_unmigrate(handles[t], a.p))
end

-- Migration on (default) or off for every engine; returns the previous setting.
function M.set_migration(flag)
  if type(flag) ~= "boolean" then error(("set_migration: expected true or false, got %s"):format(type(flag)), 2) end
  return C.rt_offload_set_migration(flag and 1 or 0) ~= 0
end

-- ---- the streamed linear --------------------------------------------------------------------------

-- y = x @ w^T + b on x's device with w (out, in) and b (out, or nil) host tensors streamed through the
-- engine. On the CPU it needs enable_cpu_streams(true).
local autocast = require("ramtorch.autocast")

function M.linear(x, w, b)
  if not torch.is_tensor(x) then error(("offload.linear: expected a Tensor input, got %s"):format(type(x)), 2) end
  if not torch.is_tensor(w) or (b ~= nil and not torch.is_tensor(b)) then
    error("offload.linear: expected Tensor weight and bias (or nil bias)", 2)
  end
  if w.device ~= "cpu" or M.is_migrated(w) then
    -- on the device already: moved there for good (its bias follows it now if it did not then), or
    -- a device tensor a dtype conversion made of a moved one
    if b ~= nil and b.device == "cpu" and not M.is_migrated(b) then
      if not M.is_migrated(w) then
        error(("offload.linear: the weight is on %s but the bias on the host"):format(tostring(w.device)), 2)
      end
      migrate(w, b, x)
    end
    return require("ramtorch.nn").functional.linear(x, w, b)
  end
  if migrate(w, b, x) then
    -- resident for good from now on: a plain device linear (autocast applies as to nn.Linear)
    return require("ramtorch.nn").functional.linear(x, w, b)
  end
  -- w streams: a bias left on the device (w came back for a hook registered since, or the bias is
  -- shared with a layer whose weight moved) comes back too, since the engine cannot fetch it
  if b ~= nil and M.is_migrated(b) then M.unmigrate(b) end
  local wh = handle_of(w)
  local bh = b ~= nil and handle_of(b) or nil
  local wt, bt = carrier_for(w, wh), b ~= nil and carrier_for(b, bh) or nil
  local function call()
    -- inside ramtorch.amp.autocast regions the compute dtype is the region's for x's device type
    if autocast.depth() == 0 then
      return C.rt_offload_linear(x.p, wh, bh, wt and wt.p or nil, bt and bt.p or nil, core.box)
    end
    local prev = C.rt_autocast_set_dtype(autocast.code_for_tensor(x))
    local r = C.rt_offload_linear(x.p, wh, bh, wt and wt.p or nil, bt and bt.p or nil, core.box)
    C.rt_autocast_set_dtype(prev)
    return r
  end
  -- out of budget or memory: one collection (dead layers' parameters moved to the device count
  -- against the budget until their handles are collected) and one retry
  return core.result(core.oom(call()) or call())
end

return M
