-- oom_retry_spec.lua: DESIGN section 2's out-of-memory rule, on the CPU: before an out-of-memory error
-- reaches Lua, one full garbage collection frees the tensors whose handles are already dead, and the
-- call is made again (core.oom at each allocating call site). Driven through the host arena, whose
-- growth is capped with RLIMIT_FSIZE so that memory runs out for certain.
local torch = require("ramtorch")
local offload = require("ramtorch.offload")

local arena = dofile("tests/lua/support/arena_limit.lua")
local limit_file_size = arena.limit_file_size

describe("out of memory", function()
  local warm
  setup(function()
    arena.ignore_sigxfsz(true)
    warm = offload.arena_empty({ 16 }, torch.float32) -- the arena maps its first chunk
  end)
  teardown(function()
    limit_file_size(nil)
    arena.ignore_sigxfsz(false)
  end)

  it("collects garbage once and retries before raising", function()
    collectgarbage("stop")
    local ok, err = pcall(function()
      -- fill the arena (growth forbidden) with tensors, then drop every handle without collecting
      local n = #arena.fill_arena(4096)
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
    local keep = arena.fill_arena(4096)
    local ok, err = pcall(offload.arena_empty, { 1024 * 1024 }, torch.float32)
    limit_file_size(nil)
    assert.is_false(ok)
    assert.matches("arena: cannot grow the segment", tostring(err))
    assert.is_true(#keep > 0)
  end)
end)
