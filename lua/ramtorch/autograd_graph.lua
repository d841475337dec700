-- ramtorch/autograd_graph.lua: torch.autograd.graph: save_on_cpu, PyTorch's
-- torch.autograd.graph.save_on_cpu, which keeps the tensors autograd saves for backward in host memory
-- (runtime/autograd_saved_offload.c) so that device memory does not grow with a model's depth.
--
--   local loss = torch.autograd.graph.save_on_cpu(function() return F.cross_entropy(model(x), y) end,
--                                                 { pin_memory = true })
--   loss:backward()
--
-- PyTorch's `with save_on_cpu(pin_memory=True):` is a function-scoped region here, like amp.autocast.
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local ffi, C = rffi.ffi, rffi.C

local check = core.check

local M = {}

local MODE_PINNED, MODE_PAGEABLE = C.RT_SAVE_ON_CPU_PINNED, C.RT_SAVE_ON_CPU_PAGEABLE

local function set_mode(mode)
  local prev = C.rt_autograd_set_save_on_cpu(mode)
  if prev < 0 then check(prev) end
  return prev
end

local function restore(prev, ok, ...)
  C.rt_autograd_set_save_on_cpu(prev)
  if not ok then error((...), 0) end -- re-raise unchanged (it already names its position)
  return ...
end

-- save_on_cpu(fn, [opts]) runs fn() with saved tensors packed to host memory and returns its results.
-- opts: pin_memory (default false, as in PyTorch: pinned host buffers make the copies asynchronous),
-- device_type (accepted for PyTorch's signature; every device's tensors are packed).
function M.save_on_cpu(fn, opts)
  if type(fn) == "table" and type(opts) == "function" then fn, opts = opts, fn end
  if type(fn) ~= "function" then
    error(("autograd.graph.save_on_cpu: expected a function to run, got %s"):format(type(fn)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("autograd.graph.save_on_cpu: expected an options table {pin_memory=}, got %s"):format(type(opts)), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "pin_memory" and k ~= "device_type" then
      error(("autograd.graph.save_on_cpu: unknown option '%s' (expected pin_memory, device_type)"):format(tostring(k)), 2)
    end
  end
  if opts.pin_memory ~= nil and type(opts.pin_memory) ~= "boolean" then
    error(("autograd.graph.save_on_cpu: pin_memory must be a boolean, got %s"):format(type(opts.pin_memory)), 2)
  end
  local prev = set_mode(opts.pin_memory and MODE_PINNED or MODE_PAGEABLE)
  return restore(prev, pcall(fn))
end

-- set_save_on_cpu(flag) turns the mode on (pinned host buffers) or off for what follows; returns the
-- previous state (true when it was on). For scripts that cannot wrap their forward in a function.
function M.set_save_on_cpu(flag)
  if type(flag) ~= "boolean" then
    error(("autograd.graph.set_save_on_cpu: expected a boolean, got %s"):format(type(flag)), 2)
  end
  return set_mode(flag and MODE_PINNED or 0) ~= 0
end

function M.is_save_on_cpu_enabled() return C.rt_autograd_get_save_on_cpu() ~= 0 end

local stat_fields = { "packed", "packed_bytes", "shared", "unpacked", "unpacked_direct", "pending", "live",
                      "host_bytes", "cached_bytes", "modified", "fallbacks" }

-- save_on_cpu_stats(): counters since start (packed, packed_bytes, shared, unpacked, unpacked_direct,
-- modified, fallbacks) and the present state (pending, live records, host_bytes, cached_bytes).
function M.save_on_cpu_stats()
  local s = ffi.new("rt_save_on_cpu_stats")
  check(C.rt_autograd_save_on_cpu_stats(s))
  local r = {}
  for _, k in ipairs(stat_fields) do r[k] = tonumber(s[k]) end
  return r
end

-- Wait for every copy to host still in flight (their device tensors are then released).
function M.save_on_cpu_synchronize() check(C.rt_autograd_save_on_cpu_synchronize()) end
-- Free the pinned host buffers kept for reuse.
function M.save_on_cpu_empty_cache() check(C.rt_autograd_save_on_cpu_empty_cache()) end

return M
