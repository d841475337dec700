-- oom_retry_spec.lua: DESIGN section 2's out-of-memory rule, on the CPU: before an out-of-memory error
-- reaches Lua, one full garbage collection frees the tensors whose handles are already dead, and the
-- call is made again (core.oom at each allocating call site). Driven through the host arena, whose
-- growth is capped with RLIMIT_FSIZE so that memory runs out for certain.
local torch = require("ramtorch")
local offload = require("ramtorch.offload")
local ffi = require("ffi")

ffi.cdef([[
struct oomspec_rlimit { unsigned long cur, max; };
int getrlimit(int resource, struct oomspec_rlimit *r);
int setrlimit(int resource, const struct oomspec_rlimit *r);
typedef void (*oomspec_sighandler)(int);
oomspec_sighandler signal(int sig, oomspec_sighandler h);
]])
local RLIMIT_FSIZE, SIGXFSZ = 1, 25 -- Linux x86-64 / aarch64

local saved
local function limit_file_size(bytes)
  if not saved then
    saved = ffi.new("struct oomspec_rlimit")
    assert(ffi.C.getrlimit(RLIMIT_FSIZE, saved) == 0)
  end
  local r = ffi.new("struct oomspec_rlimit")
  r.max = saved.max
  r.cur = bytes or saved.cur
  assert(ffi.C.setrlimit(RLIMIT_FSIZE, r) == 0)
end

describe("out of memory", function()
  local warm
  setup(function()
    ffi.C.signal(SIGXFSZ, ffi.cast("oomspec_sighandler", 1)) -- SIG_IGN
    warm = offload.arena_empty({ 16 }, torch.float32) -- the arena maps its first chunk
  end)
  teardown(function()
    limit_file_size(nil)
    ffi.C.signal(SIGXFSZ, ffi.cast("oomspec_sighandler", 0))
  end)

  it("collects garbage once and retries before raising", function()
    collectgarbage()
    collectgarbage()
    local mapped = offload.arena_stats().mapped
    limit_file_size(mapped) -- the arena may not grow: only what it has mapped is left
    collectgarbage("stop")
    local ok, err = pcall(function()
      -- fill the arena with tensors, then drop every handle without collecting
      local fillers, size = {}, mapped
      while size >= 4096 do
        local got, t = pcall(offload.arena_empty, { size / 4 }, torch.float32)
        if got then fillers[#fillers + 1] = t else size = math.floor(size / 2 / 4096) * 4096 end
      end
      local n = #fillers
      fillers = nil
      assert(n > 0)
      -- nothing is free until the dead handles are collected: this request needs the retry
      local t = offload.arena_empty({ 1024 }, torch.float32)
      assert.are.equal(1024, t:numel())
    end)
    collectgarbage("restart")
    limit_file_size(nil)
    assert(ok, err)
  end)

  it("still raises the error, with its message, when the collection frees nothing", function()
    collectgarbage()
    collectgarbage()
    local mapped = offload.arena_stats().mapped
    local keep, size = {}, mapped
    limit_file_size(mapped)
    while size >= 4096 do
      local got, t = pcall(offload.arena_empty, { size / 4 }, torch.float32)
      if got then keep[#keep + 1] = t else size = math.floor(size / 2 / 4096) * 4096 end
    end
    local ok, err = pcall(offload.arena_empty, { 1024 * 1024 }, torch.float32)
    limit_file_size(nil)
    assert.is_false(ok)
    assert.matches("arena: cannot grow the segment", tostring(err))
    assert.is_true(#keep > 0)
  end)
end)
