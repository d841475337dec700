-- ramtorch/ffi.lua: the ONLY place that loads libramtorch and declares its C functions. The cdef is
-- generated from runtime/include/ramtorch.h by the build (ramtorch/cdef.lua); nothing is declared by
-- hand. Other modules call C.rt_x through the table this returns, and raise errors through check().
local ffi = require("ffi")

local function library_path()
  local env = os.getenv("RAMTORCH_LIB")
  if env and env ~= "" then return env end
  local ok, paths = pcall(require, "ramtorch.paths")
  if ok and type(paths) == "table" and paths.lib then return paths.lib end
  return "ramtorch" -- the system search path (after cmake --install to a standard prefix)
end

ffi.cdef(require("ramtorch.cdef"))

local path = library_path()
local ok, C = pcall(ffi.load, path)
if not ok then
  error("ramtorch: cannot load the runtime library '" .. path .. "': " .. tostring(C) ..
        " (build it with cmake, run scripts through ramtorch-lua, or set RAMTORCH_LIB)", 0)
end

local M = { C = C, ffi = ffi }

-- Raise the C library's last error as a Lua error at the caller's caller (level 3: the user's line).
function M.check(rc)
  if rc < 0 then error(ffi.string(C.rt_last_error()), 3) end
  return rc
end

-- Same with an explicit level, for helpers that wrap further.
function M.raise(level)
  error(ffi.string(C.rt_last_error()), level + 1)
end

M.RT_ERR_OOM = -5

return M
