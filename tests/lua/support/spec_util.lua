-- spec_util.lua: small helpers shared by specs that start child processes or look at files
-- (loaded with dofile(<spec dir> .. "support/spec_util.lua")).
local ffi = require("ffi")

pcall(ffi.cdef, "long readlink(const char *path, char *buf, unsigned long size);")

local M = {}

-- the path of the running interpreter (ramtorch-lua), for re-running it in a child process
function M.interpreter()
  local buf = ffi.new("char[4096]")
  local n = ffi.C.readlink("/proc/self/exe", buf, 4095)
  assert(n > 0, "readlink /proc/self/exe")
  return ffi.string(buf, n)
end

-- the names in dir (hidden ones too), sorted
function M.ls(dir)
  local p = io.popen("ls -A " .. dir)
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  table.sort(out)
  return out
end

return M
