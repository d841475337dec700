-- offload_grad_errors_spec.lua: gradient landing corner cases found in review (runtime/offload.c, amp.lua).
-- A second micro-batch's gradient promotes a narrow (bf16) host gradient to float32: the promotion swaps
-- the parameter's .grad for a new, not yet written f32 tensor before the copy is queued. When queueing then
-- fails (here: the arena cannot grow for the staging slice), the first micro-batch's gradient must still be
-- the parameter's .grad, and a retry must work.
-- float16 (autocast) gradients of float32 masters must not be unscaled in float16 (small gradients flush to
-- zero; PyTorch refuses to unscale float16 gradients): the native path lands only bf16 gradients as they are,
-- and GradScaler.unscale_ turns a float16 gradient of a wider parameter into float32 first.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local amp = require("ramtorch.amp")
local optim = require("ramtorch.optim")
local offload = require("ramtorch.offload")

local arena = dofile("tests/lua/support/arena_limit.lua")
local limit_file_size = arena.limit_file_size

describe("offload promotion error path (review)", function()
  setup(function()
    offload.enable_cpu_streams(true)
    arena.ignore_sigxfsz(true)
  end)
  teardown(function()
    limit_file_size(nil)
    arena.ignore_sigxfsz(false)
    offload.enable_cpu_streams(false)
  end)

  it("leaves the first bf16 gradient in place when queueing the promoting gradient fails", function()
    local old_path = offload.set_grad_path("native")
    torch.manual_seed(5)
    local n = 512
    local l = torch.Linear(n, n, { dtype = torch.bfloat16, bias = false })
    local pl = nn.Linear(n, n, { dtype = torch.bfloat16, bias = false })
    torch.no_grad(function() pl.weight:copy_(l.weight) end)
    local xs = { torch.randn({ 4, n }, { dtype = torch.bfloat16 }), torch.randn({ 4, n }, { dtype = torch.bfloat16 }) }
    local dev = {}
    for k = 1, 2 do
      pl:zero_grad()
      pl(xs[k]):sum():backward()
      dev[k] = pl.weight.grad:float():clone()
    end

    l(xs[1]):sum():backward()
    offload.synchronize()
    assert.are.equal(torch.bfloat16, l.weight.grad.dtype)
    assert.are.same(dev[1]:totable(), l.weight.grad:float():totable())

    -- Fill every free byte of the arena while it may not grow, then let it grow by exactly one chunk of
    -- the f32 gradient's size: the promotion's f32 host gradient fits, its staging slice does not.
    local fillers = arena.fill_arena()
    local wide = n * n * 4 -- 1 MiB: a whole number of pages
    offload.set_arena_chunk_size(wide)
    limit_file_size(offload.arena_stats().mapped + wide)

    local ok, err = pcall(function() l(xs[2]):sum():backward() end)
    offload.synchronize()
    limit_file_size(nil)
    offload.set_arena_chunk_size(64 * 1024 * 1024)
    assert.is_false(ok)
    assert.matches("cannot grow the segment", tostring(err))
    -- the failed call must not have replaced the first gradient by an unwritten f32 tensor
    assert.are.equal(torch.bfloat16, l.weight.grad.dtype)
    assert.are.same(dev[1]:totable(), l.weight.grad:float():totable())

    -- and the engine still works: the retry promotes to the exact f32 sum
    fillers = nil
    collectgarbage()
    l(xs[2]):sum():backward()
    offload.synchronize()
    assert.are.equal(torch.float32, l.weight.grad.dtype)
    assert.are.same((dev[1] + dev[2]):totable(), l.weight.grad:totable())
    offload.set_grad_path(old_path)
  end)

  it("lands a float16 gradient as float32, so a GradScaler unscales it without flushing small values", function()
    local function run(path)
      local old = offload.set_grad_path(path)
      torch.manual_seed(3)
      local l = torch.Linear(64, 32)
      local x = torch.randn({ 8, 64 })
      local scaler = amp.GradScaler("cpu", { init_scale = 65536 })
      local opt = optim.SGD(l:parameters(), { lr = 0 })
      local y = amp.autocast("f16", function() return l(x) end)
      scaler:scale((y:float() * 1e-7):sum()):backward() -- true gradients ~1e-7: float16 subnormals
      offload.synchronize()
      local landed = l.weight.grad.dtype
      scaler:unscale_(opt)
      offload.set_grad_path(old)
      return l.weight.grad:float():clone(), landed
    end
    local native, landed = run("native")
    local host = run("host")
    assert.are.equal(torch.float32, landed) -- native lands only bf16 gradients as they are
    assert.are.equal(0, host:eq(0):sum():item())
    assert.are.same(host:totable(), native:totable())
  end)

  it("unscales a float16 gradient of a float32 parameter in float32", function()
    local p = torch.zeros({ 256 }):requires_grad_(true)
    local small = torch.full({ 256 }, 3e-8) * 65536 -- scaled: fits float16; unscaled: below its range
    p.grad = small:half()
    local scaler = amp.GradScaler("cpu", { init_scale = 65536 })
    scaler:scale(torch.ones({})) -- (unscale_ needs a scale in use)
    scaler:unscale_(optim.SGD({ p }, { lr = 0 }))
    assert.are.equal(torch.float32, p.grad.dtype)
    assert.are.equal(0, p.grad:eq(0):sum():item())
  end)
end)
