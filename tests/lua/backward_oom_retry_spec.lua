-- backward_oom_retry_spec.lua: DESIGN section 2's out-of-memory rule inside the C backward engine
-- (runtime/autograd.c). When a node's backward runs out of memory, rt_autograd_run puts the node back as it
-- was and returns RT_AUTOGRAD_RETRY_OOM; the Lua loop (autograd.lua) runs the collection core.oom runs and
-- calls again, and the node is retried once. On the CPU the memory that runs out is the host arena: a
-- streamed Linear's backward (runtime/offload_linear.c) sends its parameter gradients to host gradients
-- sliced from the arena, whose growth is capped with RLIMIT_FSIZE (support/arena_limit.lua).
-- The pressure is set up so that the weight's gradient still fits (the arena may grow by exactly its
-- size) and the bias's does not until a dead arena tensor is collected: the retried backward must not
-- send the weight's gradient a second time.
local torch = require("ramtorch")
local offload = require("ramtorch.offload")
local autograd = require("ramtorch.autograd")
local rffi = require("ramtorch.ffi")
local ffi, C = rffi.ffi, rffi.C

local arena = dofile("tests/lua/support/arena_limit.lua")

local N = 256
local CHUNK = 64 * 1024 * 1024 -- the arena's default chunk size

-- A streamed Linear, an input that requires grad, and the gradients of one backward without pressure.
local function model()
  torch.manual_seed(11)
  local l = torch.Linear(N, N)
  local x = torch.randn({ 8, N }):requires_grad_(true)
  l(x):sum():backward()
  local ref = { w = l.weight.grad:clone(), b = l.bias.grad:clone(), x = x.grad:clone() }
  l.weight.grad, l.bias.grad, x.grad = nil, nil, nil
  return l, x, ref
end

local function same(a, b) return a ~= nil and (a - b):abs():max():item() == 0 end

-- Run backward(y) with the arena full: growth is allowed by exactly the weight gradient's size, and
-- the bias gradient needs the room of a dead arena tensor (`garbage` false: no such tensor, so nothing
-- is collectable). The garbage collector is stopped meanwhile, so that only a collection asked for by
-- the out-of-memory path frees it. Returns pcall's results.
local function under_pressure(y, backward, garbage)
  collectgarbage()
  collectgarbage()
  local dead = garbage ~= false and offload.arena_empty({ 16384 }, torch.float32) or nil
  local fillers = arena.fill_arena(64)
  assert(#fillers > 0)
  offload.set_arena_chunk_size(N * N * 4)
  arena.limit_file_size(offload.arena_stats().mapped + N * N * 4)
  dead = nil -- its handle is dead; the tensor lives until a collection
  collectgarbage("stop")
  local ok, err = pcall(backward, y)
  collectgarbage("restart")
  arena.limit_file_size(nil)
  offload.set_arena_chunk_size(CHUNK)
  fillers = nil
  collectgarbage()
  collectgarbage()
  return ok, err
end

local function backward(y) y:backward() end

describe("backward out of memory", function()
  setup(function()
    offload.enable_cpu_streams(true)
    arena.ignore_sigxfsz(true)
  end)
  teardown(function()
    arena.limit_file_size(nil)
    offload.set_arena_chunk_size(CHUNK)
    arena.ignore_sigxfsz(false)
    offload.enable_cpu_streams(false)
    autograd.set_oom_retry(true)
  end)

  it("collects garbage and retries the node, with the gradients of a run without pressure", function()
    local l, x, ref = model()
    local y = l(x):sum()
    local ok, err = under_pressure(y, backward)
    assert(ok, err)
    assert.is_true(same(l.weight.grad, ref.w)) -- sent once, not again by the retry (that would be 2x)
    assert.is_true(same(l.bias.grad, ref.b))
    assert.is_true(same(x.grad, ref.x))
  end)

  it("fails with the out-of-memory error when the retry is off", function()
    local l, x = model()
    local y = l(x):sum()
    local prev = autograd.set_oom_retry(false)
    local ok, err = under_pressure(y, backward)
    autograd.set_oom_retry(prev)
    assert.is_true(prev)
    assert.is_false(ok)
    assert.are.equal("string", type(err))
    assert.matches("arena: cannot grow the segment", err)
  end)

  it("hands the retry to the caller: rt_autograd_run returns 2, then resumes the node", function()
    local l, x, ref = model()
    local y = l(x):sum()
    local task_box = ffi.new("rt_autograd_task*[1]")
    local id_box, g_box = ffi.new("int64_t[1]"), ffi.new("rt_tensor*[1]")
    local rcs = {}
    local ok, err = under_pressure(y, function(t)
      assert.are.equal(0, C.rt_autograd_begin(t.p, nil, 0, task_box))
      rcs[1] = C.rt_autograd_run(task_box[0], id_box, g_box)
      require("ramtorch.core").collect_for_oom()
      rcs[2] = C.rt_autograd_run(task_box[0], id_box, g_box)
      C.rt_autograd_task_free(task_box[0])
      C.rt_offload_synchronize()
    end)
    assert(ok, err)
    assert.are.same({ C.RT_AUTOGRAD_RETRY_OOM, 0 }, rcs)
    assert.are.equal(2, C.RT_AUTOGRAD_RETRY_OOM)
    assert.is_true(same(l.weight.grad, ref.w))
    assert.is_true(same(l.bias.grad, ref.b))
    assert.is_true(same(x.grad, ref.x))
  end)

  it("raises a clear error when the collection frees nothing, and a later backward works", function()
    local l, x, ref = model()
    local y = l(x):sum()
    local ok, err = under_pressure(y, backward, false)
    assert.is_false(ok)
    assert.are.equal("string", type(err))
    assert.matches("backward: OffloadLinearBackward ran out of memory, again after a garbage collection: "
                   .. "arena: cannot grow the segment to %d+ bytes", err)
    -- the weight's gradient was sent on the first try; the bias's never was
    assert.is_true(same(l.weight.grad, ref.w))
    assert.is_nil(l.bias.grad)
    assert.is_nil(x.grad) -- computed by the failed backward, never routed
    l.weight.grad = nil
    l(x):sum():backward()
    assert.is_true(same(l.weight.grad, ref.w))
    assert.is_true(same(l.bias.grad, ref.b))
    assert.is_true(same(x.grad, ref.x))
  end)
end)
