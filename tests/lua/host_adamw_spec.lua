-- host_adamw_spec.lua: the fused host optimizer (runtime/host_optim.c, kernels/cpu/host_optim.c) from Lua:
-- scalar / AVX2 / AVX-512 paths and thread counts agree bit for bit; f32-state AdamW follows the float64
-- reference over 10 steps; bf16 state with stochastic rounding tracks the f32 run over 1000 steps where
-- round-to-nearest stagnates; the transfer shadow is written in the optimizer's pass (no lazy refresh);
-- updates overlapped with the backward on the CPU offload engine give exactly the non-overlapped
-- results, with gradient accumulation, and clip_grad_norm_ either stays exact (step not announced) or
-- is refused (announced).
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local optim = require("ramtorch.optim")
local testing = require("ramtorch.testing")
local offload = require("ramtorch.offload")
local amp = require("ramtorch.amp")
local rffi = require("ramtorch.ffi")
local ref = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "optim_reference.lua")

local C = rffi.C

local function with_simd(level, threads, f)
  assert(C.rt_host_optim_set_simd(level) == 0)
  C.rt_host_optim_set_threads(threads or 0)
  local ok, r = pcall(f)
  C.rt_host_optim_set_simd(0)
  C.rt_host_optim_set_threads(0)
  if not ok then error(r, 0) end
  return r
end

local function simd_ok(level)
  local ok = C.rt_host_optim_set_simd(level) == 0
  C.rt_host_optim_set_simd(0)
  return ok
end

describe("host AdamW", function()
  it("gives identical bits on every code path and thread count (bf16 state)", function()
    local function run()
      torch.manual_seed(3)
      local p = torch.randn({ 5000 }):requires_grad_(true)
      local opt = optim.AdamW({ p }, { lr = 1e-2, state_dtype = "bf16", seed = 5 })
      for _ = 1, 4 do
        p.grad = torch.randn({ 5000 })
        opt:step()
      end
      local st = opt.state[p]
      return { p:detach():clone(), st.exp_avg:float(), st.exp_avg_sq:float() }
    end
    local r0 = with_simd(1, 1, run)
    assert.are.equal(torch.bfloat16, optim.AdamW({ torch.zeros({ 1 }) }, { state_dtype = "bf16" }).state_dtype == "bf16"
      and torch.bfloat16 or nil)
    local tried = 0
    for _, level in ipairs({ 1, 2, 3 }) do
      if simd_ok(level) then
        for _, th in ipairs({ 1, 2, 3 }) do
          local r = with_simd(level, th, run)
          for i = 1, 3 do testing.assert_close(r[i], r0[i], 0, 0, ("simd %d threads %d out %d"):format(level, th, i)) end
          tried = tried + 1
        end
      end
    end
    assert.is_true(tried >= 3)
  end)

  it("matches the float64 reference over 10 steps with f32 state (rel < 1e-6)", function()
    torch.manual_seed(4)
    local n = 300
    local p = torch.randn({ n }):requires_grad_(true)
    local o = { lr = 1e-2, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2 }
    local opt = optim.AdamW({ p }, { lr = o.lr, betas = { o.beta1, o.beta2 }, eps = o.eps, weight_decay = o.weight_decay })
    local rp, rm, rv = p:detach():to("float64"):totable(), ref.zeros(n), ref.zeros(n)
    for t = 1, 10 do
      local g = torch.randn({ n })
      p.grad = g
      opt:step()
      ref.adamw_step(rp, g:to("float64"):totable(), rm, rv, t, o)
    end
    assert.is_true(ref.rel_err(p:detach(), rp) < 1e-6)
    assert.is_true(ref.rel_err(opt.state[p].exp_avg, rm) < 1e-6)
  end)

  it("keeps bf16 state within what stochastic rounding predicts over 1000 steps", function()
    -- quadratic 0.5 |x - c|^2 with noisy gradients; exp_avg_sq grows by (1 - beta2) = 1e-3 of itself
    -- per step, below half a bf16 ulp (2^-9): round to nearest stagnates, stochastic rounding does not.
    local n, steps = 4096, 1000
    local function run(mode)
      torch.manual_seed(9)
      local c = torch.randn({ n })
      local x = torch.zeros({ n }):requires_grad_(true)
      local opt = optim.AdamW({ x }, { lr = 1e-3, weight_decay = 0, state_dtype = mode == "sr" and "bf16" or "f32", seed = 1 })
      for _ = 1, steps do
        local g = torch.no_grad(function() return (x - c) + torch.randn({ n }) * 0.1 end)
        x.grad = g
        opt:step()
        if mode == "rne" then -- the same run with state rounded to nearest bf16 after every step
          local st = opt.state[x]
          st.exp_avg:copy_(st.exp_avg:bfloat16():float())
          st.exp_avg_sq:copy_(st.exp_avg_sq:bfloat16():float())
        end
      end
      local st = opt.state[x]
      return x:detach():clone(), st.exp_avg_sq:float():mean():item()
    end
    local x32, v32 = run("f32")
    local xsr, vsr = run("sr")
    local xrn, vrn = run("rne")
    local vsr_err, vrn_err = math.abs(vsr - v32) / v32, math.abs(vrn - v32) / v32
    local xsr_err = (xsr - x32):abs():mean():item()
    local xrn_err = (xrn - x32):abs():mean():item()
    -- unbiased: the mean of 4096 states drifts by far less than one bf16 ulp (2^-8 relative)
    if os.getenv("RT_VERBOSE") then print(vsr_err, vrn_err, xsr_err, xrn_err) end
    assert.is_true(vsr_err < 2 ^ -8, ("sr exp_avg_sq mean rel err %g"):format(vsr_err))
    assert.is_true(vrn_err > 0.05, ("rne exp_avg_sq mean rel err %g"):format(vrn_err))
    assert.is_true(xsr_err < xrn_err / 2, ("param err sr %g vs rne %g"):format(xsr_err, xrn_err))
  end)

  it("rejects bad state dtypes", function()
    assert.has_error(function() optim.AdamW({ torch.zeros({ 2 }) }, { state_dtype = "f16" }) end,
      'AdamW: state_dtype must be "f32" or "bf16", got f16')
    local p = torch.zeros({ 2 }, { dtype = torch.float64 }):requires_grad_(true)
    local opt = optim.AdamW({ p }, { state_dtype = "bf16" })
    p.grad = torch.zeros({ 2 }, { dtype = torch.float64 })
    assert.has_error(function() opt:step() end)
  end)
end)

-- ---- the CPU offload engine: shadows and overlap ---------------------------------------------------

local DIMS = { 16, 32, 24, 8 }

local function make_model()
  torch.manual_seed(7)
  local s = {}
  for i = 1, #DIMS - 1 do
    s[#s + 1] = torch.Linear(DIMS[i], DIMS[i + 1])
    if i < #DIMS - 1 then s[#s + 1] = nn.ReLU() end
  end
  return nn.Sequential(s)
end

local function make_data(n)
  torch.manual_seed(11)
  local d = {}
  for i = 1, n do d[i] = { torch.randn({ 6, DIMS[1] }), torch.randn({ 6, DIMS[#DIMS] }) } end
  return d
end

-- steps of accum micro-batches; o.overlap: announce the last backward; o.clip: clip_grad_norm_;
-- o.opt: "adamw" | "sgd"; o.run: wraps the forward (autocast). Returns the weights and how many
-- parameters had already changed when the last backward returned (per step).
local function train(o)
  local model, data = make_model(), make_data(o.steps * o.accum)
  local params = model:parameters()
  local opt = o.opt == "sgd" and optim.SGD(params, { lr = 1e-2, momentum = 0.9 })
    or optim.AdamW(params, { lr = 1e-2, state_dtype = o.state_dtype })
  if o.overlap ~= nil then opt:overlap_with_backward(true) end
  local early = {}
  for s = 1, o.steps do
    local before
    for a = 1, o.accum do
      local x, t = data[(s - 1) * o.accum + a][1], data[(s - 1) * o.accum + a][2]
      if a == o.accum and o.overlap then
        opt:last_backward()
        before = {}
        for i, p in ipairs(params) do before[i] = p:detach():clone() end
      end
      local y = (o.run or function(f) return f() end)(function() return model(x) end)
      local d = y:float() - t
      ; (d * d):mean():backward()
    end
    if before then
      local n = 0
      for i, p in ipairs(params) do
        if not testing.close(p:detach(), before[i], 0, 0) then n = n + 1 end
      end
      early[s] = n
    end
    if o.clip then nn.utils.clip_grad_norm_(params, 0.05) end
    opt:step()
    opt:zero_grad()
  end
  local w = {}
  for i, p in ipairs(params) do w[i] = p:detach():clone() end
  return w, early
end

local function same(a, b, what)
  assert.are.equal(#a, #b)
  for i = 1, #a do testing.assert_close(a[i], b[i], 0, 0, what .. " " .. i) end
end

describe("host optimizer with the CPU offload engine", function()
  setup(function() offload.enable_cpu_streams(true) end)
  teardown(function() offload.enable_cpu_streams(false) end)
  before_each(function()
    offload.reset_schedule("cpu")
    offload.reset_stats("cpu")
  end)

  for _, opt in ipairs({ "adamw", "sgd" }) do
    for _, accum in ipairs({ 1, 3 }) do
      it(("overlapped %s updates equal the plain step (accumulation over %d)"):format(opt, accum), function()
        local w0 = train({ steps = 4, accum = accum, opt = opt })
        local w1, early = train({ steps = 4, accum = accum, opt = opt, overlap = true })
        same(w1, w0, "weight")
        -- the first announced step after the streamed ops made their handles learns the gradient counts
        -- (without accumulation the first forward makes the handles, so that is step 2)
        assert.are.equal(0, early[1])
        for s = accum == 1 and 3 or 2, 4 do assert.are.equal(6, early[s], "parameters updated during the backward of step " .. s) end
      end)
    end
  end

  it("overlaps with bf16 state too", function()
    local w0 = train({ steps = 3, accum = 2, state_dtype = "bf16" })
    local w1, early = train({ steps = 3, accum = 2, state_dtype = "bf16", overlap = true })
    same(w1, w0, "weight")
    assert.are.equal(6, early[3])
  end)

  it("stays exact with clip_grad_norm_ when the step is not announced, and refuses it when it is", function()
    local w0 = train({ steps = 3, accum = 2, clip = true })
    local w1 = train({ steps = 3, accum = 2, clip = true, overlap = false }) -- overlap on, never announced
    same(w1, w0, "weight")
    assert.has_error(function() train({ steps = 3, accum = 2, clip = true, overlap = true }) end)
    local ok, err = pcall(train, { steps = 3, accum = 2, clip = true, overlap = true })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("changed after its overlapped update", 1, true))
  end)

  it("writes the bf16 transfer shadow in the optimizer pass (no lazy refresh)", function()
    local run = function(f) return amp.autocast("bf16", f) end
    local w0 = train({ steps = 3, accum = 1, run = run })
    local st = offload.stats("cpu")
    -- each of the 6 masters gets its shadow made once (first forward); later steps find it fresh
    assert.are.equal(6, st.shadow_refreshes)
    offload.reset_schedule("cpu")
    local w1 = train({ steps = 3, accum = 1, run = run, overlap = true })
    same(w1, w0, "weight")
  end)
end)
