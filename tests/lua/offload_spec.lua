-- offload_spec.lua: the offload engine (DESIGN section 5; runtime/offload.c) run on the CPU backend, where
-- the copy streams are threads and the "device" buffers separate host allocations: streamed and plain
-- Linear models train identically (f32, bf16, autocast, budgets from none to everything resident), a
-- removed event wait gives a wrong answer, the statistics count the bytes expected, hooks see device
-- gradients, budget errors are clear; and the host arena of DESIGN section 3.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local optim = require("ramtorch.optim")
local helpers = require("ramtorch.helpers")
local testing = require("ramtorch.testing")
local offload = require("ramtorch.offload")
local amp = require("ramtorch.amp")

local Linear = torch.Linear

local function nbytes(t) return t:numel() * t.dtype.itemsize end

-- A streamed model (ramtorch.Linear) and a plain one (nn.Linear) with the same initial weights.
local pair = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "support/offload_pair.lua")
local function make_pair(dims, dtype) return pair.make_pair(dims, dtype, { seed = 7 }) end

local function make_data(n, din, dout, dtype)
  torch.manual_seed(11)
  local d = {}
  for i = 1, n do
    d[i] = { torch.randn({ 6, din }, { dtype = dtype }), torch.randn({ 6, dout }) }
  end
  return d
end

-- steps AdamW steps of accum micro-batches each; returns outputs, gradients (per step) and weights.
local function train(model, data, steps, accum, run)
  run = run or function(f) return f() end
  local opt = optim.AdamW(model:parameters(), { lr = 1e-2 })
  local outs, grads = {}, {}
  for s = 1, steps do
    for a = 1, accum do
      local x, t = data[(s - 1) * accum + a][1], data[(s - 1) * accum + a][2]
      local y = run(function() return model(x) end)
      outs[#outs + 1] = y:detach():float()
      local d = y:float() - t
      local loss = (d * d):mean()
      loss:backward()
    end
    local g = {}
    for i, p in ipairs(model:parameters()) do g[i] = p.grad:float():clone() end
    grads[s] = g
    opt:step()
    model:zero_grad()
  end
  local w = {}
  for i, p in ipairs(model:parameters()) do w[i] = p:detach():float():clone() end
  return outs, grads, w
end

local function compare(a, b, rtol, atol, what)
  assert.are.equal(#a, #b)
  for i = 1, #a do testing.assert_close(a[i], b[i], rtol, atol, what .. " " .. i) end
end

local DIMS = { 16, 32, 24, 8 }
local PARAM_BYTES_F32 = (16 * 32 + 32 + 32 * 24 + 24 + 24 * 8 + 8) * 4

describe("offload engine on the CPU backend", function()
  setup(function() offload.enable_cpu_streams(true) end)
  teardown(function()
    offload.enable_cpu_streams(false)
    offload.set_memory_budget(0, "cpu")
  end)
  before_each(function()
    offload.set_memory_budget(0, "cpu")
    offload.reset_schedule("cpu")
    -- earlier cases' layers that moved to the "device" (residency by migration) count as resident
    -- until their handles are collected
    collectgarbage("collect")
    collectgarbage("collect")
    offload.reset_stats("cpu")
  end)

  for _, dtype in ipairs({ torch.float32, torch.bfloat16 }) do
    local scale = dtype == torch.float32 and 1 or 0.5
    for _, budget in ipairs({ 0, 3300, 6000, 100000 }) do
      it(("trains like plain Linear layers (%s, budget %d)"):format(tostring(dtype), budget), function()
        local data = make_data(6, DIMS[1], DIMS[#DIMS], dtype)
        local sm, pm = make_pair(DIMS, dtype)
        local po, pg, pw = train(pm, data, 3, 2)
        offload.set_memory_budget(math.floor(budget * scale), "cpu")
        offload.reset_stats("cpu")
        local so, sg, sw = train(sm, data, 3, 2)
        local rtol, atol = 1e-5, 1e-6
        if dtype == torch.bfloat16 then rtol, atol = 2e-2, 2e-2 end -- plain bf16 grads round per micro-batch
        compare(so, po, rtol, atol, "output")
        for s = 1, #pg do compare(sg[s], pg[s], rtol, atol, "grad of step " .. s) end
        compare(sw, pw, rtol, atol, "weight")
        local st = offload.stats("cpu")
        assert.are.equal(8, st.schedule_length) -- forward W, b of 3 layers, backward W of 2 (no grad_x first)
        assert.is_true(st.pool_peak_bytes <= (budget > 0 and budget * scale or math.huge))
        if budget == 100000 then assert.are.equal(PARAM_BYTES_F32 * scale, st.resident_bytes) end
        if budget == 0 then assert.are.equal(0, st.resident_bytes) end
      end)
    end
  end

  for _, path in ipairs({ "native", "host" }) do
    it("gives the same gradients in one micro-batch as plain bf16 layers (exact; " .. path .. " path)", function()
      local old = offload.set_grad_path(path)
      local data = make_data(1, DIMS[1], DIMS[#DIMS], torch.bfloat16)
      local sm, pm = make_pair(DIMS, torch.bfloat16)
      local x, t = data[1][1], data[1][2]
      for _, m in ipairs({ sm, pm }) do
        local d = m(x):float() - t
        ; (d * d):mean():backward()
      end
      offload.set_grad_path(old)
      local sp, pp = sm:parameters(), pm:parameters()
      for i = 1, #sp do
        -- native: a first gradient lands in the dtype the device computed it in (no host pass);
        -- host: host gradients are always float32
        assert.are.equal(path == "native" and torch.bfloat16 or torch.float32, sp[i].grad.dtype)
        assert.are.same(pp[i].grad:float():totable(), sp[i].grad:float():totable())
      end
    end)
  end

  it("turns a bf16 first gradient into an f32 host gradient at the second micro-batch (exact sum)", function()
    local was = offload.set_profiling(true)
    torch.manual_seed(13)
    local l = Linear(48, 40, { dtype = torch.bfloat16 })
    local xs = { torch.randn({ 6, 48 }, { dtype = torch.bfloat16 }), torch.randn({ 6, 48 }, { dtype = torch.bfloat16 }),
                 torch.randn({ 6, 48 }, { dtype = torch.bfloat16 }) }
    -- the device gradients each micro-batch produces, from a plain bf16 layer with the same weights
    local pl = nn.Linear(48, 40, { dtype = torch.bfloat16 })
    torch.no_grad(function() pl.weight:copy_(l.weight); pl.bias:copy_(l.bias) end)
    local dev = {}
    for k = 1, 3 do
      pl:zero_grad()
      pl(xs[k]):sum():backward()
      dev[k] = pl.weight.grad:clone()
    end
    offload.synchronize()
    offload.reset_stats("cpu")
    l(xs[1]):sum():backward()
    assert.are.equal(torch.bfloat16, l.weight.grad.dtype)
    assert.are.same(dev[1]:totable(), l.weight.grad:totable())
    local first = l.weight.grad
    l(xs[2]):sum():backward()
    assert.are.equal(torch.float32, l.weight.grad.dtype) -- accumulation happens in f32
    -- every element is one f32 add of two exactly widened bf16 values
    assert.are.same((dev[1]:float() + dev[2]:float()):totable(), l.weight.grad:totable())
    assert.are.same(dev[1]:totable(), first:totable()) -- the old tensor is left as it was
    l(xs[3]):sum():backward()
    assert.are.same((dev[1]:float() + dev[2]:float() + dev[3]:float()):totable(), l.weight.grad:totable())
    local prof = offload.profile("cpu")
    if prof.device_casts == 0 and offload.grad_path() == "native" then
      assert.are.equal(2, prof.promotions) -- weight and bias, once each
      assert.are.equal(2, prof.direct_grads)
    end
    offload.set_profiling(was)
  end)

  it("keeps at most three of the largest device gradients waiting for their copy (backpressure)", function()
    local was = offload.set_profiling(true)
    torch.manual_seed(3)
    local n, d = 8, 64
    local layers, plain = {}, {}
    for i = 1, n do
      layers[i] = Linear(d, d, { bias = false })
      plain[i] = nn.Linear(d, d, { bias = false })
      torch.no_grad(function() plain[i].weight:copy_(layers[i].weight) end)
    end
    local x = torch.randn({ 4, d })
    local function run(ls)
      local h = x
      for i = 1, n do h = ls[i](h):relu() end
      h:sum():backward()
    end
    -- every weight resident as the engine's copies (not moved to the device: their gradients go down)
    local migrating = offload.set_migration(false)
    offload.set_memory_budget(10 * n * d * d * 4, "cpu") -- every weight resident: no copies gate the backward
    run(layers) -- learns the schedule and the plan
    for i = 1, n do layers[i].weight.grad = nil end
    offload.synchronize()
    offload.reset_stats("cpu")
    offload.set_copy_delay_us(2000) -- slow D2H copies: the backward outruns them
    local ok, err = pcall(run, layers)
    offload.set_copy_delay_us(0)
    offload.set_memory_budget(0, "cpu")
    offload.set_profiling(was)
    offload.set_migration(migrating)
    assert(ok, err)
    local prof, gbytes = offload.profile("cpu"), d * d * 4
    assert.is_true(prof.grad_dev_peak <= 3 * gbytes, "peak " .. prof.grad_dev_peak)
    assert.is_true(prof.grad_dev_peak >= 2 * gbytes, "copies overlapped")
    assert.is_true(prof.grad_waits > 0)
    run(plain)
    for i = 1, n do assert.are.same(plain[i].weight.grad:totable(), layers[i].weight.grad:totable()) end
  end)

  it("rejects an unknown gradient path by name", function()
    local ok, err = pcall(offload.set_grad_path, "sideways")
    assert.is_false(ok)
    assert.matches("unknown gradient path 'sideways' %(expected native, host, device, auto or skip%)", err)
    assert.are.equal("native", offload.grad_path())
  end)

  it("sends an f32 master as its bf16 shadow under autocast, computing in bf16", function()
    local data = make_data(4, DIMS[1], DIMS[#DIMS])
    local sm, pm = make_pair(DIMS, torch.float32)
    offload.set_memory_budget(100000, "cpu")
    -- resident as bf16 copies in the engine (moved to the device, the f32 masters would stay f32
    -- there: offload_migration_spec)
    local migrating = offload.set_migration(false)
    -- reference: the same casts done by hand on plain layers
    local ref_model = pm:parameters()
    local function ref_forward(x)
      local h = x
      for i = 1, #ref_model, 2 do
        local w, b = ref_model[i], ref_model[i + 1]
        h = nn.functional.linear(h:to(torch.bfloat16), w:to(torch.bfloat16), b:to(torch.bfloat16))
        if i + 1 < #ref_model then h = h:relu() end
      end
      return h
    end
    local so, sg, sw = train(sm, data, 2, 2, function(f) return amp.autocast("bf16", f) end)
    -- the reference trains through its own loop: autocast only changes streamed ops
    local opt = optim.AdamW(pm:parameters(), { lr = 1e-2 })
    local k = 0
    for s = 1, 2 do
      for _ = 1, 2 do
        k = k + 1
        local y = ref_forward(data[k][1])
        testing.assert_close(so[k], y:float(), 0, 0, "autocast output " .. k)
        local d = y:float() - data[k][2]
        ; (d * d):mean():backward()
      end
      for i, p in ipairs(pm:parameters()) do testing.assert_close(sg[s][i], p.grad, 1e-6, 1e-7, "grad " .. i) end
      opt:step()
      pm:zero_grad()
    end
    for i, p in ipairs(pm:parameters()) do testing.assert_close(sw[i], p, 1e-6, 1e-7, "weight " .. i) end
    local st = offload.stats("cpu")
    offload.set_migration(migrating)
    assert.is_true(st.shadow_refreshes >= 6)
    assert.are.equal(PARAM_BYTES_F32 / 2, st.resident_bytes) -- bf16 copies on the device
  end)

  it("counts the bytes it moves", function()
    local sm = make_pair(DIMS, torch.float32)
    local x = torch.randn({ 5, DIMS[1] })
    offload.set_memory_budget(100000, "cpu")
    local function step()
      local y = sm(x)
      y:sum():backward()
    end
    step() -- learning: every parameter goes up once, the backward reuses them (turnaround)
    local st = offload.stats("cpu")
    assert.are.equal(PARAM_BYTES_F32, st.h2d_bytes)
    assert.are.equal(6, st.h2d_copies)
    assert.are.equal(PARAM_BYTES_F32, st.d2h_bytes) -- every gradient comes down once
    assert.are.equal(6, st.d2h_copies)
    assert.are.equal(8, st.fetches)
    assert.are.equal(2, st.hits)
    offload.reset_stats("cpu")
    step() -- all resident and unchanged: nothing goes up, gradients still come down
    st = offload.stats("cpu")
    assert.are.equal(0, st.h2d_bytes)
    assert.are.equal(8, st.hits)
    assert.are.equal(PARAM_BYTES_F32, st.d2h_bytes)
    assert.are.equal(PARAM_BYTES_F32, st.resident_bytes)
    assert.are.equal(0, st.streamed_bytes)
    -- a changed master is sent again
    torch.no_grad(function() sm:parameters()[1]:add_(1) end)
    offload.reset_stats("cpu")
    step()
    st = offload.stats("cpu")
    assert.are.equal(16 * 32 * 4, st.h2d_bytes)
    -- no budget: a deeper model streams through a window of four of its largest transfers, and the
    -- backward fetches again what the forward evicted
    offload.set_memory_budget(0, "cpu")
    local deep = {}
    for i = 1, 8 do deep[i] = Linear(32, 32) end
    local dm = nn.Sequential(deep)
    local xd = torch.randn({ 5, 32 })
    local function dstep() dm(xd):sum():backward() end
    dstep()
    offload.reset_stats("cpu")
    dstep()
    st = offload.stats("cpu")
    local total = 8 * (32 * 32 + 32) * 4
    assert.are.equal(0, st.resident_bytes)
    assert.are.equal(total, st.streamed_bytes)
    assert.is_true(st.h2d_bytes > total and st.h2d_bytes < 2 * total, tostring(st.h2d_bytes))
    -- four weight buffers, plus half of one for the small (bias) transfers
    assert.is_true(st.pool_peak_bytes <= 4.5 * 32 * 32 * 4, tostring(st.pool_peak_bytes))
    assert.is_true(st.prefetches > 0)
    assert.is_true(st.hits > 0) -- the forward-to-backward turnaround
    assert.are.equal(total, st.d2h_bytes)
  end)

  it("gives a wrong answer when the compute stream skips the wait for a weight copy", function()
    local x = torch.randn({ 4, 64 })
    torch.manual_seed(3)
    local l = Linear(64, 64)
    testing.assert_close(l(x), nn.functional.linear(x, l.weight, l.bias), 1e-5, 1e-6, "with the wait")
    torch.no_grad(function() l.weight:add_(1) end) -- a new version: the copy must be redone
    local ref = nn.functional.linear(x, l.weight, l.bias)
    offload.set_copy_delay_us(20000)
    offload.set_debug_skip_wait("h2d")
    local ok, out = pcall(l, x)
    offload.set_debug_skip_wait(nil)
    offload.set_copy_delay_us(0)
    offload.synchronize()
    assert.is_true(ok, tostring(out))
    assert.is_false(testing.close(out, ref, 1e-3, 1e-3))
    testing.assert_close(l(x), ref, 1e-5, 1e-6, "with the wait again")
  end)

  it("gives a wrong gradient when the host accumulation skips the wait for a gradient copy", function()
    local x = torch.randn({ 4, 64 })
    torch.manual_seed(3)
    local l = Linear(64, 64)
    local pl = nn.Linear(64, 64)
    torch.no_grad(function()
      pl.weight:copy_(l.weight)
      pl.bias:copy_(l.bias)
    end)
    local function ref_grad(xin)
      pl:zero_grad()
      pl(xin):sum():backward()
      return pl.weight.grad * 2
    end
    local function grads_with(skip, xin)
      l:zero_grad()
      offload.set_copy_delay_us(skip and 20000 or 0)
      offload.set_debug_skip_wait(skip and "d2h" or nil)
      for _ = 1, 2 do l(xin):sum():backward() end -- the second micro-batch accumulates through staging
      offload.set_debug_skip_wait(nil)
      offload.set_copy_delay_us(0)
      return l.weight.grad:clone()
    end
    testing.assert_close(grads_with(false, x), ref_grad(x), 1e-5, 1e-5, "with the wait")
    -- new inputs, so that a staging buffer still holding the last gradient cannot pass for the new one
    local x2 = x * 3 + 1
    assert.is_false(testing.close(grads_with(true, x2), ref_grad(x2), 1e-3, 1e-3))
    testing.assert_close(grads_with(false, x2), ref_grad(x2), 1e-5, 1e-5, "with the wait again")
  end)

  for _, path in ipairs({ "native", "host" }) do
    it("sends gradients down in pieces that the host worker converts and accumulates one by one (" .. path .. ")", function()
      local old = offload.set_grad_chunk_bytes(1024) -- 512 bf16 or 256 f32 elements a piece
      local old_path = offload.set_grad_path(path)
      local was = offload.set_profiling(true)
      for _, dt in ipairs({ torch.float32, torch.bfloat16 }) do
        torch.manual_seed(9)
        local l = Linear(64, 64, { dtype = dt })
        local x1, x2 = torch.randn({ 5, 64 }, { dtype = dt }), torch.randn({ 5, 64 }, { dtype = dt })
        offload.synchronize()
        offload.reset_stats("cpu")
        l(x1):sum():backward()
        l(x2):sum():backward() -- accumulates (+=) piece by piece into the f32 host gradient
        local prof = offload.profile("cpu")
        -- first gradients that land in their own dtype go straight into the host gradient (1 task
        -- each: f32 always, bf16 on the native path); a second gradient goes in pieces (16 of f32,
        -- 8 of bf16) + 1 for the bias; on the host path a first bf16 gradient is 8 pieces + 1 too
        if prof.device_casts == 0 then
          local bf = dt == torch.bfloat16
          local expect_tasks = not bf and 19 or path == "native" and 11 or 18
          assert.are.equal(expect_tasks, prof.worker_tasks)
          assert.are.equal((not bf or path == "native") and 2 or 0, prof.direct_grads)
          assert.are.equal((bf and path == "native") and 2 or 0, prof.promotions)
        end
        local g = torch.ones({ 64, 5 }):matmul(x1:float()) + torch.ones({ 64, 5 }):matmul(x2:float())
        assert.are.equal(torch.float32, l.weight.grad.dtype)
        local tol = dt == torch.bfloat16 and 2e-2 or 1e-5
        testing.assert_close(l.weight.grad, g, tol, tol, tostring(dt))
        testing.assert_close(l.bias.grad, torch.full({ 64 }, 10.0), tol, tol, tostring(dt) .. " bias")
      end
      offload.set_profiling(was)
      offload.set_grad_path(old_path)
      offload.set_grad_chunk_bytes(old)
    end)
  end

  it("runs gradient hooks on the device gradient before it goes to the host", function()
    local x = torch.randn({ 3, 8 })
    torch.manual_seed(5)
    local l = Linear(8, 4)
    local pl = nn.Linear(8, 4)
    torch.no_grad(function()
      pl.weight:copy_(l.weight)
      pl.bias:copy_(l.bias)
    end)
    pl(x):sum():backward()
    local seen = {}
    local h1 = offload.register_ramtorch_grad_hook(l.weight, function(g)
      seen.grad = g:clone()
      return g * 2
    end)
    local h2 = offload.register_ramtorch_grad_hook(l.bias, function() return false end)
    local h3 = offload.register_ramtorch_post_accumulate_grad_hook(l.weight, function(p, g)
      seen.post_param, seen.post_grad, seen.ramtorch_grad = p, g, offload.ramtorch_grad(p)
    end)
    l(x):sum():backward()
    testing.assert_close(seen.grad, pl.weight.grad, 1e-6, 1e-6, "hook input")
    testing.assert_close(l.weight.grad, pl.weight.grad * 2, 1e-6, 1e-6, "hooked gradient")
    assert.is_nil(l.bias.grad) -- dropped by the hook: nothing went to the host
    assert.are.equal(l.weight, seen.post_param)
    testing.assert_close(seen.post_grad, pl.weight.grad * 2, 1e-6, 1e-6, "post-accumulate hook")
    assert.are.equal(seen.post_grad, seen.ramtorch_grad)
    h1.remove()
    h2.remove()
    h3.remove()
    l:zero_grad()
    l(x):sum():backward()
    testing.assert_close(l.weight.grad, pl.weight.grad, 1e-6, 1e-6, "hooks removed")
    testing.assert_close(l.bias.grad, pl.bias.grad, 1e-6, 1e-6, "hooks removed (bias)")
  end)

  it("passes a float64 finite-difference gradient check", function()
    torch.manual_seed(2)
    local x = torch.randn({ 3, 5 }, { dtype = torch.float64 }):requires_grad_(true)
    local w = torch.randn({ 4, 5 }, { dtype = torch.float64 }):requires_grad_(true)
    local b = torch.randn({ 4 }, { dtype = torch.float64 }):requires_grad_(true)
    testing.gradcheck(function(a, ww, bb) return offload.linear(a, ww, bb) end, { x, w, b })
    local x3 = torch.randn({ 2, 3, 5 }, { dtype = torch.float64 }):requires_grad_(true)
    testing.gradcheck(function(a, ww) return offload.linear(a, ww) end, { x3, w })
  end)

  it("reports budgets that cannot hold a parameter", function()
    torch.manual_seed(1)
    local l = Linear(64, 64) -- weight 16384 bytes, bias 256
    local x = torch.randn({ 2, 64 })
    l(x)
    local ok, err = pcall(offload.set_memory_budget, 1000, "cpu")
    assert.is_false(ok)
    assert.matches("cannot hold the largest offloaded parameter", err)
    ok, err = pcall(offload.set_memory_budget, -1, "cpu")
    assert.is_false(ok)
    assert.matches("non%-negative", err)
    offload.set_memory_budget(16384 + 64, "cpu") -- the weight fits, not the weight and the bias at once
    offload.reset_schedule("cpu")
    ok, err = pcall(l, x)
    assert.is_false(ok)
    assert.matches("budget of 16448 bytes on cpu cannot hold a parameter of 256 bytes while 16384 bytes are in use", err)
    offload.set_memory_budget(0, "cpu")
    testing.assert_close(l(x), nn.functional.linear(x, l.weight, l.bias), 1e-5, 1e-6)
  end)

  it("rejects mismatched dtypes and CPU inputs while the CPU engine is off", function()
    local l = Linear(4, 3)
    local ok, err = pcall(offload.linear, torch.randn({ 2, 4 }, { dtype = torch.float64 }), l.weight, l.bias)
    assert.is_false(ok)
    assert.matches("expected the input and the weight of one dtype, got float64 and float32", err)
    offload.enable_cpu_streams(false)
    ok, err = pcall(offload.linear, torch.randn({ 2, 4 }), l.weight, l.bias)
    offload.enable_cpu_streams(true)
    assert.is_false(ok)
    assert.matches("CPU offload engine is off", err)
  end)

  it("streams the layers that replace_linear_with_ramtorch makes", function()
    torch.manual_seed(4)
    local m = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    local x = torch.randn({ 5, 6 })
    offload.enable_cpu_streams(false)
    local ref = m(x)
    offload.enable_cpu_streams(true)
    helpers.replace_linear_with_ramtorch(m, 0)
    offload.reset_stats("cpu")
    testing.assert_close(m(x), ref, 1e-6, 1e-7)
    assert.is_true(offload.stats("cpu").fetches == 4)
  end)
end)

describe("host arena", function()
  it("hands out 64-byte aligned slices in program order and reuses freed ones", function()
    collectgarbage()
    collectgarbage()
    local a = offload.arena_empty({ 10 }, torch.float32)
    local b = offload.arena_empty({ 3, 3 }, torch.float64)
    local oa, ob = offload.arena_offset(a), offload.arena_offset(b)
    assert.are.equal(0, oa % 64)
    assert.are.equal(0, ob % 64)
    assert.are.equal(2, torch.ffi.cast("const rt_tensor_meta *", a.p).memkind) -- RT_MEM_SHARED
    a:fill_(3)
    assert.are.same({ 3, 3, 3 }, a:narrow(0, 0, 3):totable())
    local used = offload.arena_stats().used
    a = nil
    collectgarbage()
    collectgarbage()
    assert.are.equal(used - 64, offload.arena_stats().used)
    local c = offload.arena_empty({ 16 }, torch.float32) -- 64 bytes: the freed slice again
    assert.are.equal(oa, offload.arena_offset(c))
    assert.is_nil(offload.arena_offset(torch.zeros({ 4 })))
    local _ = b
  end)

  it("grows by chunks; a large request gets a chunk of its own", function()
    local before = offload.arena_stats()
    local big = offload.arena_empty({ 20 * 1024 * 1024 }, torch.float32) -- 80 MiB > a 64 MiB chunk
    local after = offload.arena_stats()
    assert.is_true(after.chunks > before.chunks)
    assert.is_true(after.mapped >= before.mapped + 80 * 1024 * 1024)
    big:narrow(0, 20 * 1024 * 1024 - 4, 4):fill_(1)
    assert.are.same({ 1, 1, 1, 1 }, big:narrow(0, 20 * 1024 * 1024 - 4, 4):totable())
  end)

  it("gives ramtorch.Linear its parameters", function()
    local l = Linear(8, 4)
    assert.is_true(offload.is_arena_tensor(l.weight))
    assert.is_true(offload.is_arena_tensor(l.bias))
    l:to(torch.bfloat16)
    assert.are.equal(torch.bfloat16, l.weight.dtype)
    assert.is_true(offload.is_arena_tensor(l.weight))
    assert.is_true(l.weight.requires_grad)
    local _ = nbytes
  end)
end)
