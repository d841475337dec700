-- offload_engine_regress_spec.lua: offload engine defects found in the second review (runtime/offload.c), each
-- shown by a spec that fails on the code before its fix, run on the CPU backend (copy streams are threads,
-- a copy delay makes a missing wait a wrong answer):
--  * a first gradient whose copy cannot be queued (the arena cannot grow for its staging slice) left an
--    unwritten host gradient as the parameter's .grad, so the next backward accumulated into garbage;
--  * a model whose forward calls its first streamed parameter again (a layer applied twice) never learned
--    its schedule: no prefetch and no residency whatever the budget;
--  * zero-sized parameters (Linear(0, n)) were refused as "not contiguous";
--  * a fetch whose prefetch failed (here: the arena cannot grow for a shadow) kept its buffer "in use" for
--    good when the backward gave up, so a budget that worked before refused every later step;
--  * (runtime/arena.c) freeing a slice that ended exactly where the newest chunk begins, while that chunk
--    was empty, "gave back the tail" of the newest chunk: its tail count wrapped below zero and later
--    slices straddled two chunks (two separate mappings);
--  * a post-accumulate hook that changed the device gradient in place raced with its copy to the host
--    (the copy waited only for the gradient to be computed): the hooks now run after the copy.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local optim = require("ramtorch.optim")
local offload = require("ramtorch.offload")
local amp = require("ramtorch.amp")

local arena = dofile("tests/lua/support/arena_limit.lua")
local limit_file_size = arena.limit_file_size
local fill_arena = arena.fill_arena

describe("offload engine review 2", function()
  setup(function()
    offload.enable_cpu_streams(true)
    arena.ignore_sigxfsz(true)
  end)
  teardown(function()
    limit_file_size(nil)
    arena.ignore_sigxfsz(false)
    offload.set_copy_delay_us(0)
    offload.set_memory_budget(0, "cpu")
    offload.enable_cpu_streams(false)
  end)
  before_each(function()
    offload.set_memory_budget(0, "cpu")
    offload.reset_schedule("cpu")
    offload.reset_stats("cpu")
  end)

  it("keeps arena slices inside one chunk after freeing a slice that ends where the newest chunk begins", function()
    collectgarbage()
    collectgarbage()
    local S = 64 * 1024 * 1024 + 4096 -- more than a default chunk: a chunk of its own, filled exactly
    local s = offload.arena_empty({ S / 4 }, torch.float32)
    local boundary = offload.arena_offset(s) + S -- where the next chunk begins
    local x = offload.arena_empty({ 16 }, torch.float32) -- the next chunk's first slice
    assert.are.equal(boundary, offload.arena_offset(x))
    x = nil
    collectgarbage() -- the next chunk is empty again
    s = nil
    collectgarbage()
    local b1 = offload.arena_empty({ (S - 4096) / 4 }, torch.float32)
    local b2 = offload.arena_empty({ S / 4 }, torch.float32)
    for _, b in ipairs({ { b1, S - 4096 }, { b2, S } }) do
      local off = offload.arena_offset(b[1])
      assert.is_false(off < boundary and off + b[2] > boundary, "a slice straddles two arena chunks")
    end
  end)

  it("leaves no unwritten .grad behind when a first gradient cannot be queued", function()
    local old_path = offload.set_grad_path("host") -- a bf16 first gradient goes through a staging slice
    torch.manual_seed(5)
    local n = 512
    local l = torch.Linear(n, n, { dtype = torch.bfloat16, bias = false })
    local pl = nn.Linear(n, n, { dtype = torch.bfloat16, bias = false })
    torch.no_grad(function() pl.weight:copy_(l.weight) end)
    local x = torch.randn({ 4, n }, { dtype = torch.bfloat16 })
    pl(x):sum():backward()
    local ref = pl.weight.grad:float()

    -- A reused arena slice of the f32 host gradient's size, full of non-zero bytes: the host gradient
    -- lands there, and the arena has no room left for the staging slice.
    local dirty = offload.arena_empty({ n * n }, torch.float32)
    dirty:fill_(7)
    local fillers = fill_arena()
    dirty = nil
    collectgarbage()
    collectgarbage()

    local ok, err = pcall(function() l(x):sum():backward() end)
    offload.synchronize()
    limit_file_size(nil)
    fillers = nil
    collectgarbage()
    assert.is_false(ok)
    assert.matches("cannot grow the segment", tostring(err))
    -- the failed gradient must not leave an unwritten host gradient as .grad
    assert.is_nil(l.weight.grad)
    -- so that the retry gives the gradient, not 7 + the gradient
    l(x):sum():backward()
    offload.synchronize()
    assert.are.same(ref:totable(), l.weight.grad:totable())
    offload.set_grad_path(old_path)
  end)

  it("learns the schedule of a model that applies its first layer twice (prefetch, residency)", function()
    local offload_stats = offload.stats
    torch.manual_seed(1)
    local l1, l2 = torch.Linear(32, 32), torch.Linear(32, 32)
    local p1, p2 = nn.Linear(32, 32), nn.Linear(32, 32)
    torch.no_grad(function()
      p1.weight:copy_(l1.weight)
      p1.bias:copy_(l1.bias)
      p2.weight:copy_(l2.weight)
      p2.bias:copy_(l2.bias)
    end)
    local ps, pp = { l1.weight, l1.bias, l2.weight, l2.bias }, { p1.weight, p1.bias, p2.weight, p2.bias }
    local total = 0
    for _, p in ipairs(ps) do total = total + p:numel() * 4 end
    offload.set_memory_budget(4 * total, "cpu") -- everything resident
    offload.set_copy_delay_us(100)
    local os, op = optim.AdamW(ps, { lr = 1e-2 }), optim.AdamW(pp, { lr = 1e-2 })
    torch.manual_seed(5)
    for _ = 1, 4 do
      local x = torch.randn({ 4, 32 })
      l1(l2(l1(x)):relu()):pow(2):mean():backward()
      p1(p2(p1(x)):relu()):pow(2):mean():backward()
      os:step()
      op:step()
      os:zero_grad()
      op:zero_grad()
    end
    offload.set_copy_delay_us(0)
    for i = 1, 4 do assert.are.same(pp[i]:totable(), ps[i]:totable()) end
    local st = offload_stats("cpu")
    -- forward: w1 b1 w2 b2 w1 b1; backward: w1 (second use), w2 (the first use needs no grad_x)
    assert.are.equal(8, st.schedule_length)
    assert.are.equal(total, st.resident_bytes)
    assert.is_true(st.prefetches > 0)
  end)

  it("streams and trains zero-sized parameters (Linear(0, n), Linear(n, 0))", function()
    for _, dims in ipairs({ { 0, 8 }, { 8, 0 }, { 0, 0 } }) do
      local din, dout = dims[1], dims[2]
      torch.manual_seed(3)
      local l = torch.Linear(din, dout)
      local pl = nn.Linear(din, dout)
      torch.no_grad(function() pl.bias:copy_(l.bias) end)
      local os, op = optim.AdamW(l:parameters(), { lr = 1e-2 }), optim.AdamW(pl:parameters(), { lr = 1e-2 })
      for _ = 1, 3 do
        local x = torch.randn({ 3, din })
        for _ = 1, 2 do -- two micro-batches: the second accumulates
          local t = torch.randn({ 3, dout })
          local ys, yp = l(x), pl(x)
          assert.are.same(yp:totable(), ys:totable())
          local ds, dp = ys - t, yp - t
          local ls, lp = (ds * ds):sum(), (dp * dp):sum()
          ls:backward()
          lp:backward()
        end
        assert.are.same({ dout, din }, { l.weight.grad.shape[1], l.weight.grad.shape[2] })
        assert.are.same(pl.bias.grad:totable(), l.bias.grad:totable())
        os:step()
        op:step()
        os:zero_grad()
        op:zero_grad()
      end
      assert.are.same(pl.bias:totable(), l.bias:totable())
    end
  end)

  it("gives a fetch's buffer back when its prefetch fails, so the engine stays usable", function()
    local old_path = offload.set_grad_path("host") -- f32 host gradients kept by zero_grad(false)
    local n = 256
    local wbytes = n * n * 2 -- bf16 shadows under autocast
    torch.manual_seed(1)
    local layers = {}
    for i = 1, 4 do layers[i] = torch.Linear(n, n, { bias = false }) end
    local m = nn.Sequential(layers)
    local opt = optim.SGD(m:parameters(), { lr = 1e-3 })
    local function step()
      local x = torch.randn({ 2, n })
      local y = amp.autocast("bf16", function() return m(x) end)
      y:float():sum():backward()
      opt:step()
      opt:zero_grad(false) -- host gradients (and staging slices) stay: the failing step allocates none
    end
    offload.set_memory_budget(wbytes + 100, "cpu") -- one weight at a time works
    step()
    offload.set_memory_budget(2 * wbytes + 100, "cpu") -- two: the backward prefetches
    for _ = 1, 3 do step() end

    -- the backward's prefetch needs bfloat16 shadows that are now float16 ones: making them fails
    local x = torch.randn({ 2, n }, { requires_grad = true })
    local y = amp.autocast("bf16", function() return m(x) end)
    offload.refresh_shadows(m, "float16")
    local fillers = fill_arena()
    local ok, err = pcall(function() y:float():sum():backward() end)
    limit_file_size(nil)
    fillers = nil
    collectgarbage()
    assert.is_false(ok)
    assert.matches("cannot grow the segment", tostring(err))
    opt:zero_grad(false)

    -- nothing is in use between steps: one weight at a time still works
    offload.set_memory_budget(wbytes + 100, "cpu")
    for _ = 1, 2 do step() end
    offload.set_grad_path(old_path)
  end)

  it("runs post-accumulate hooks after the gradient's copy: changes they make stay on the device", function()
    torch.manual_seed(21)
    local l = torch.Linear(64, 64)
    local pl = nn.Linear(64, 64)
    torch.no_grad(function() pl.weight:copy_(l.weight); pl.bias:copy_(l.bias) end)
    local seen = 0
    offload.register_ramtorch_post_accumulate_grad_hook(l.weight, function(_, g)
      seen = seen + 1
      g:mul_(0) -- would zero the host gradient if the copy were still reading it
    end)
    local x = torch.randn({ 5, 64 })
    offload.set_copy_delay_us(20000) -- slow copies: the hook runs long before an unordered copy ends
    local ok, err = pcall(function() l(x):sum():backward() end)
    offload.set_copy_delay_us(0)
    assert(ok, err)
    pl(x):sum():backward()
    assert.are.equal(1, seen)
    assert.are.same(pl.weight.grad:totable(), l.weight.grad:totable())
  end)
end)
