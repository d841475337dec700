-- arena_limit.lua: shared by the specs that make the host arena run out of room on purpose (out-of-
-- memory retry, failed gradient copies, failed prefetches). The arena is a memfd segment grown with
-- ftruncate, so RLIMIT_FSIZE caps how far it may grow; SIGXFSZ is ignored meanwhile, so a refused
-- ftruncate is an EFBIG error (RT_ERR_OOM "arena: cannot grow the segment") instead of a kill.
-- Loaded with dofile("tests/lua/support/arena_limit.lua") (ctest runs specs from the repo root).
local torch = require("ramtorch")
local offload = require("ramtorch.offload")
local ffi = require("ffi")

pcall(ffi.cdef, [[
struct rt_spec_rlimit { unsigned long cur, max; };
int getrlimit(int resource, struct rt_spec_rlimit *r);
int setrlimit(int resource, const struct rt_spec_rlimit *r);
typedef void (*rt_spec_sighandler)(int);
rt_spec_sighandler signal(int sig, rt_spec_sighandler h);
]])
local RLIMIT_FSIZE, SIGXFSZ = 1, 25 -- Linux x86-64 / aarch64

local M = {}
local saved

-- Cap the size this process may grow files to (the arena's segment) at `bytes`; nil lifts the cap.
function M.limit_file_size(bytes)
  if not saved then
    saved = ffi.new("struct rt_spec_rlimit")
    assert(ffi.C.getrlimit(RLIMIT_FSIZE, saved) == 0)
  end
  local r = ffi.new("struct rt_spec_rlimit")
  r.max = saved.max
  r.cur = bytes or saved.cur
  assert(ffi.C.setrlimit(RLIMIT_FSIZE, r) == 0)
end

function M.ignore_sigxfsz(on)
  ffi.C.signal(SIGXFSZ, ffi.cast("rt_spec_sighandler", on and 1 or 0)) -- SIG_IGN / SIG_DFL
end

-- Forbid growth and fill every free byte of the arena down to `grain` bytes; returns the fillers.
function M.fill_arena(grain)
  grain = grain or 64
  collectgarbage()
  collectgarbage()
  local size = offload.arena_stats().mapped
  M.limit_file_size(size)
  local fillers = {}
  while size >= grain do
    local ok, t = pcall(offload.arena_empty, { size / 4 }, torch.float32)
    if ok then fillers[#fillers + 1] = t else size = math.floor(size / 2 / grain) * grain end
  end
  return fillers
end

return M
