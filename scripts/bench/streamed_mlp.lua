-- streamed_mlp.lua: issue 5's benchmark of the offload engine (DESIGN section 5): a model of
-- --layers x (ramtorch.Linear(dim, dim) + ReLU) whose weights live in host memory and stream to the
-- device, timed forward only and forward+backward at each token count, with the engine's statistics
-- and the floor of DESIGN section 5's cost model: max(F / compute rate, streamed bytes / H2D rate).
--
--   ramtorch-lua scripts/bench/streamed_mlp.lua                           -- H200: 16 x 8192, T=1024,4096,16384
--   ramtorch-lua scripts/bench/streamed_mlp.lua --autocast --dtype f32    -- f32 masters sent as bf16
--   ramtorch-lua scripts/bench/streamed_mlp.lua --budget-frac 0.5         -- half the weights resident
--   ramtorch-lua scripts/bench/streamed_mlp.lua --device cpu --layers 4 --dim 256 --tokens 64
--   ramtorch-lua scripts/bench/streamed_mlp.lua --optim adamw --state-dtype bf16 --overlap  -- issue 6: whole step
--   ramtorch-lua scripts/bench/streamed_mlp.lua --optim adamw --state-dtype bf16 --delay    -- one-step-delayed update
-- Prints one "RESULT" line per token count. With --optim, it also times the whole training step
-- (forward, backward, optimizer step on the host, zero_grad) and prints the optimizer's share.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local flags = require("ramtorch.flags")
local timer = require("ramtorch.timer")
local offload = require("ramtorch.offload")
local amp = require("ramtorch.amp")

local opts = flags.parse(arg, {
  { "device", "cuda", "compute device (cuda, cuda:N or cpu; cpu runs the engine's CPU mode)" },
  { "layers", 16, "number of Linear(dim, dim) + ReLU blocks" },
  { "dim", 8192, "features" },
  { "tokens", "1024,4096,16384", "comma-separated token counts (rows of the input)" },
  { "dtype", "bf16", "parameter dtype (bf16 or f32)" },
  { "autocast", false, "run under ramtorch.amp.autocast(\"bf16\") (f32 masters cross the bus as bf16)" },
  { "budget-frac", 0, "memory budget as a fraction of the streamed weight bytes (0: no budget; 1: all resident)" },
  { "resident-frac", 0, "memory budget that keeps this fraction of the weights resident beside the planner's streaming window (three of the largest layers)" },
  { "steps", 5, "timed iterations per measurement" },
  { "warmup", 2, "untimed iterations first (the first learns the schedule)" },
  { "backward", true, "also time forward+backward" },
  { "h2d-gbps", 55, "host-to-device bandwidth for the floor (GB/s; H200: 55)" },
  { "tflops", 800, "dense compute rate for the floor (TFLOP/s; H200 bf16: 800)" },
  { "profile", false, "print the engine's per-phase profile (stream busy times, host worker, syncs)" },
  { "optim", "none", "also time whole training steps with this optimizer (none or adamw)" },
  { "state-dtype", "f32", "AdamW state dtype with --optim adamw (f32 or bf16)" },
  { "overlap", false, "with --optim: run each parameter's update on the host worker during the backward" },
  { "delay", false, "with --optim: one-step-delayed update (step k's update runs during step k+1's forward and backward)" },
  { "lr", 1e-5, "learning rate with --optim" },
  { "save-on-cpu", false, "keep the activations autograd saves in pinned host memory (torch.autograd.graph.save_on_cpu)" },
}, "usage: ramtorch-lua scripts/bench/streamed_mlp.lua [options]")

local dev = opts.device
local on_cpu = dev == "cpu"
if on_cpu then offload.enable_cpu_streams(true) end
local dtype = torch.float32
if opts.dtype == "bf16" or opts.dtype == "bfloat16" then dtype = torch.bfloat16
elseif opts.dtype ~= "f32" and opts.dtype ~= "float32" then error("--dtype: expected bf16 or f32, got " .. opts.dtype, 0) end
local compute_dtype = opts.autocast and torch.bfloat16 or dtype
if opts.profile then offload.set_profiling(true) end

local function sync()
  if on_cpu then offload.synchronize() else torch.cuda.synchronize() end
end

-- ---- the model ---------------------------------------------------------------------------------------
local blocks = {}
for i = 1, opts.layers do
  blocks[#blocks + 1] = torch.Linear(opts.dim, opts.dim, { dtype = dtype, device = dev, skip_init = true })
  blocks[#blocks + 1] = nn.ReLU()
end
local model = nn.Sequential(blocks)
torch.no_grad(function()
  for _, p in ipairs(model:parameters()) do p:uniform_(-1 / math.sqrt(opts.dim), 1 / math.sqrt(opts.dim)) end
end)
model:to(dev) -- leaves the ramtorch parameters on the host

local streamed = 0 -- bytes of weights that cross the bus per pass (transfer dtype)
for _, p in ipairs(model:parameters()) do streamed = streamed + p:numel() * compute_dtype.itemsize end
local budget = math.floor(opts.budget_frac * streamed)
if opts.budget_frac >= 1 then budget = streamed + 2 ^ 20 end
if opts.resident_frac > 0 then
  if opts.budget_frac > 0 then error("--budget-frac and --resident-frac: choose one", 0) end
  local largest = opts.dim * opts.dim * compute_dtype.itemsize
  budget = opts.resident_frac >= 1 and streamed + 2 ^ 20 or math.floor(opts.resident_frac * streamed) + 3 * largest + 2 ^ 20
end
-- under a budget the second step plans residency and moves the planned layers to the device, the
-- third moves the first one (its request made the plan): time after that
if budget > 0 and opts.warmup < 3 then opts.warmup = 3 end
offload.set_memory_budget(budget, dev)

local function run_plain(fn)
  if opts.autocast then return amp.autocast("bf16", fn) end
  return fn()
end
-- --save-on-cpu: the forward runs with saved activations packed to pinned host memory
local graph = torch.autograd.graph
local function run(fn)
  if not opts.save_on_cpu then return run_plain(fn) end
  local prev = graph.set_save_on_cpu(true)
  local ok, r = pcall(run_plain, fn)
  graph.set_save_on_cpu(prev)
  if not ok then error(r, 0) end
  return r
end

local optimizer = nil
if opts.optim == "adamw" then
  local optim = require("ramtorch.optim")
  optimizer = optim.AdamW(model:parameters(), { lr = opts.lr, state_dtype = opts.state_dtype })
  if opts.overlap and opts.delay then error("--overlap and --delay: choose one", 0) end
  if opts.overlap then optimizer:overlap_with_backward(true) end
  if opts.delay then optimizer:delay_update(true) end
elseif opts.optim ~= "none" then
  error("--optim: expected none or adamw, got " .. tostring(opts.optim), 0)
end

local host_split = nil
local function time_it(T, backward)
  local x = torch.randn({ T, opts.dim }, { dtype = compute_dtype, device = dev })
  local function once()
    if backward == "step" then
      if opts.overlap then optimizer:last_backward() end
      local y = run(function() return model(x) end)
      y:sum():backward()
      optimizer:step()
      optimizer:zero_grad()
    elseif backward then
      local y = run(function() return model(x) end)
      y:sum():backward()
      model:zero_grad()
    else
      torch.no_grad(function() return run(function() return model(x) end) end)
    end
  end
  for _ = 1, opts.warmup do once() end
  sync()
  offload.reset_stats(dev)
  if not on_cpu then torch.cuda.reset_peak_memory_stats() end
  local t0 = timer.now()
  for _ = 1, opts.steps do once() end
  sync()
  local ms = (timer.now() - t0) / opts.steps * 1e3
  -- host-side split of one more step (run after the statistics are read): forward call, backward call
  return ms, function()
    local a = timer.now()
    local y = run(function() return model(x) end)
    local b = timer.now()
    y:sum():backward()
    local c = timer.now()
    model:zero_grad()
    sync()
    host_split = ("host calls (one extra step): forward returns after %.2f ms, backward (incl. its end sync) %.2f ms")
      :format((b - a) * 1e3, (c - b) * 1e3)
  end
end

-- The engine's per-phase profile of the timed steps (p: offload.profile(), per: steps).
local function print_profile(tag, p, st, per)
  local function gbps(bytes, ms) return ms > 0 and bytes / (ms * 1e-3) / 1e9 or 0 end
  print(("  %s profile per step: H2D busy %.2f ms (%.1f GB/s) | D2H busy %.2f ms (%.1f GB/s) | GEMM fwd %.2f ms, bwd %.2f ms | compute stream waited on H2D %.2f ms")
    :format(tag, p.h2d_ms / per, gbps(st.h2d_bytes, p.h2d_ms), p.d2h_ms / per, gbps(st.d2h_bytes, p.d2h_ms),
            p.gemm_fwd_ms / per, p.gemm_bwd_ms / per, st.wait_ms / per))
  print(("  %s host worker per step: waiting on D2H %.2f ms, host pass %.2f ms (%.1f GB/s written, %.1f MiB), callbacks %.2f ms, %d tasks, max queue %d")
    :format(tag, p.worker_wait_ms / per, p.worker_acc_ms / per, gbps(p.worker_bytes, p.worker_acc_ms),
            p.worker_bytes / per / 2 ^ 20, p.worker_cb_ms / per, p.worker_tasks / per, p.max_pending))
  print(("  %s compute thread per step: in fetch %.2f ms, in grad routing %.2f ms (backpressure waits %d, %.2f ms), mid-step syncs %d (%.2f ms), end-of-backward sync %.2f ms (%d), shadow refresh %.2f ms (%d)")
    :format(tag, p.fetch_host_ms / per, p.route_host_ms / per, p.grad_waits, p.grad_wait_ms / per, p.syncs, p.sync_ms / per, p.end_sync_ms / per,
            p.end_syncs, p.shadow_ms / per, st.shadow_refreshes))
  print(("  %s allocations in the timed steps: device slots %d, staging slices %d, direct grads %d, promotions %d, device casts %d | arena: %d chunks, %d registrations (%.1f ms since start)")
    :format(tag, p.slot_allocs, p.staging_allocs, p.direct_grads, p.promotions, p.device_casts, p.arena_chunks,
            p.arena_registers, p.arena_register_ms))
end

local function fmt_bytes(b)
  if b >= 2 ^ 30 then return ("%.2f GiB"):format(b / 2 ^ 30) end
  return ("%.1f MiB"):format(b / 2 ^ 20)
end

print(("streamed_mlp: %d x Linear(%d, %d) on %s, %s parameters%s, %s of weights per pass, budget %s"):format(
  opts.layers, opts.dim, opts.dim, dev, tostring(dtype), opts.autocast and " under bf16 autocast" or "",
  fmt_bytes(streamed), budget > 0 and fmt_bytes(budget) or "none"))
for tok in opts.tokens:gmatch("[^,]+") do
  local T = tonumber(tok)
  local fwd_ms = time_it(T, false)
  local fst = offload.stats(dev)
  local fprof = opts.profile and offload.profile(dev) or nil
  local bwd_ms, bst, bprof = nil, nil, nil
  if opts.backward then
    local extra
    bwd_ms, extra = time_it(T, true)
    bst = offload.stats(dev)
    bprof = opts.profile and offload.profile(dev) or nil
    if opts.profile then extra() end
  end
  local flops = 2 * T * opts.dim * opts.dim * opts.layers
  local h2d = opts.h2d_gbps * 1e9
  local function floor_ms(passes, bytes_per_step)
    return math.max(passes * flops / (opts.tflops * 1e12), bytes_per_step / h2d) * 1e3
  end
  local per = opts.steps
  local f_floor = floor_ms(1, fst.h2d_bytes / per)
  print(("T=%d forward: %.2f ms (floor %.2f ms) | H2D %.1f MiB/pass, waited %.2f ms/pass, stalls %d, hits %d/%d, resident %s, streamed %s, pool peak %s")
    :format(T, fwd_ms, f_floor, fst.h2d_bytes / per / 2 ^ 20, fst.wait_ms / per, fst.stalls, fst.hits, fst.fetches,
            fmt_bytes(fst.resident_bytes), fmt_bytes(fst.streamed_bytes), fmt_bytes(fst.pool_peak_bytes)))
  local line = ("RESULT T=%d fwd_ms=%.2f save_on_cpu=%d"):format(T, fwd_ms, opts.save_on_cpu and 1 or 0)
  if bst then
    -- DESIGN section 5's floor: max(F / rate, 2W / H2D) over the W streamed (not resident) weight
    -- bytes, gradients of the same size going down in parallel; and the bus time of the bytes this
    -- run actually moved (the larger direction; the forward-to-backward turnaround moves less than 2W)
    local b_floor = floor_ms(3, 2 * bst.streamed_bytes)
    local moved_floor = floor_ms(3, math.max(bst.h2d_bytes, bst.d2h_bytes) / per)
    print(("T=%d forward+backward: %.2f ms (floor %.2f ms: 2 x %s streamed; the bytes moved take %.2f ms) | H2D %.1f MiB/step, D2H %.1f MiB/step, waited %.2f ms/step, stalls %d, hits %d/%d, prefetches %d, on the device for good %s")
      :format(T, bwd_ms, b_floor, fmt_bytes(bst.streamed_bytes), moved_floor, bst.h2d_bytes / per / 2 ^ 20,
              bst.d2h_bytes / per / 2 ^ 20, bst.wait_ms / per, bst.stalls, bst.hits, bst.fetches, bst.prefetches,
              fmt_bytes(bst.migrated_bytes)))
    line = line .. (" fwd_bwd_ms=%.2f floor_fwd_bwd_ms=%.2f moved_floor_ms=%.2f"):format(bwd_ms, b_floor, moved_floor)
  end
  if fprof then print_profile("forward", fprof, fst, per) end
  if bprof then
    print_profile("fwd+bwd", bprof, bst, per)
    if host_split then print("  " .. host_split) end
  end
  if not on_cpu then
    line = line .. (" peak_gpu=%s"):format(fmt_bytes(torch.cuda.max_memory_allocated()))
  end
  if optimizer then
    local step_ms = time_it(T, "step")
    local n = 0
    for _, p in ipairs(model:parameters()) do n = n + p:numel() end
    print(("T=%d whole step (forward, backward, AdamW %s states%s, zero_grad): %.2f ms, %.2f ms beyond forward+backward (%.2f Gparam/s if all of it were the update)")
      :format(T, opts.state_dtype, opts.overlap and ", overlapped with the backward"
                or opts.delay and ", delayed one step" or "", step_ms,
              step_ms - (bwd_ms or 0), n / math.max(step_ms - (bwd_ms or 0), 1e-9) / 1e6))
    optimizer:flush() -- steady state timed above: each step waited for the previous one's update
    line = line .. (" step_ms=%.2f"):format(step_ms)
    if not on_cpu then line = line .. (" peak_gpu_step=%s"):format(fmt_bytes(torch.cuda.max_memory_allocated())) end
  end
  print(line)
  collectgarbage()
end
