-- ramtorch/amp.lua: mixed precision, minimal for now: autocast is a scope flag (per thread, in C) that
-- the streamed ops read (runtime/offload_linear.c): inside it ramtorch.Linear computes in the autocast
-- dtype and an f32 master weight crosses the bus as its bf16 (or f16) shadow. Plain ops are unchanged.
--
--   local y = ramtorch.amp.autocast("bf16", function() return model(x) end)
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local C = rffi.C

local M = {}

local function autocast_code(dtype, level)
  local d = core.dtype(dtype or "bfloat16", level + 1)
  if d.name ~= "bfloat16" and d.name ~= "float16" then
    error(("amp.autocast: expected bfloat16 or float16, got %s"):format(tostring(d)), level + 1)
  end
  return d.code
end

-- autocast(dtype, fn, ...) runs fn(...) with autocast on and returns its results. dtype may also be an
-- options table {dtype = ..., enabled = ...} (PyTorch's torch.autocast arguments).
function M.autocast(dtype, fn, ...)
  local enabled = true
  if type(dtype) == "table" and not core.is_dtype(dtype) then
    enabled = dtype.enabled ~= false
    dtype = dtype.dtype
  end
  if type(fn) ~= "function" then
    error(("amp.autocast: expected a function to run, got %s"):format(type(fn)), 2)
  end
  local code = enabled and autocast_code(dtype, 2) or -1
  local prev = C.rt_autocast_set_dtype(code)
  local r = { pcall(fn, ...) }
  C.rt_autocast_set_dtype(prev)
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, table.maxn(r))
end

function M.is_autocast_enabled() return C.rt_autocast_get_dtype() >= 0 end

-- The autocast dtype (a dtype value) or nil outside autocast.
function M.get_autocast_dtype()
  local c = C.rt_autocast_get_dtype()
  if c < 0 then return nil end
  return core.dtypes_by_code[c]
end

return M
