-- tests/gpu/cuda_transformer_spec.lua: the CUDA kernels of the transformer ops (kernels/cuda/rms_norm.cu,
-- rope.cu, attention.cu) against the CPU backend on fresh random inputs, forward and backward through
-- autograd, per dtype with the tolerances of the other gpu specs (max |a - b| / max |a|: f32 1e-5, bf16
-- 1e-2, f16 2e-3, f64 1e-12; gradients 4x), and a few training steps of a tiny GPT on cuda whose losses
-- must match the CPU's. Attention runs both paths: the tensor-core kernels (bf16/f16, head dims 64 and
-- 128) and the generic one (f32/f64, other head dims, and bf16 with RAMTORCH_ATTN_GENERIC set), with
-- causal, padding (bool) and additive (float, with its gradient) masks, keys != queries, strided
-- (B, T, H, D)-transposed inputs, and dropout, whose mask must equal the CPU's (same counters).
-- Run with RAMTORCH_CUDA_POISON=1 (ctest sets it). Label gpu: FAILS without a CUDA device.
local torch = require("ramtorch")
local F = require("ramtorch.functional")
local ffi = require("ffi")

pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);")

local TOL = { float32 = 1e-5, bfloat16 = 1e-2, float16 = 2e-3, float64 = 1e-12 }
local unpack = unpack or table.unpack

-- max |a - b| / max(max |a|, 1e-6) in float64 on the CPU; NaN positions must agree
local function rel_err(ref, got)
  ref = ref:to("cpu"):to(torch.float64)
  got = got:to("cpu"):to(torch.float64)
  assert.are.same(ref.shape, got.shape)
  if ref:numel() == 0 then return 0, 0 end
  local nan_ref, nan_got = torch.ne(ref, ref), torch.ne(got, got)
  local mism = torch.ne(nan_ref, nan_got):sum():item()
  if mism > 0 then return math.huge, mism end
  local r = torch.where(nan_ref, torch.zeros_like(ref), ref)
  local g = torch.where(nan_got, torch.zeros_like(got), got)
  local scale = math.max(r:abs():max():item(), 1e-6)
  return (r - g):abs():max():item() / scale, 0
end

local function check_close(what, ref, got, tol)
  local e, nans = rel_err(ref, got)
  if not (e <= tol) then
    error(("%s: relative error %.3g > %.3g (%d NaN mismatches)"):format(what, e, tol, nans), 2)
  end
end

local function rnd(shape, dtype, lo, hi)
  return (torch.rand(shape) * ((hi or 1) - (lo or -1)) + (lo or -1)):to(dtype)
end

-- f on CPU and CUDA copies of inputs (requires_grad unless listed in no_grad), the same random upstream
-- gradient; outputs and input gradients compared. seed: reseed before each call (dropout counters).
local function check_fwd_bwd(what, f, inputs, tol, opts)
  opts = opts or {}
  local cpu, gpu = {}, {}
  for i, x in ipairs(inputs) do
    local grad = not (opts.no_grad and opts.no_grad[i])
    cpu[i] = x:detach():clone()
    gpu[i] = x:detach():to("cuda")
    if grad then cpu[i]:requires_grad_(true); gpu[i]:requires_grad_(true) end
  end
  if opts.seed then torch.manual_seed(opts.seed) end
  local yc = f(unpack(cpu))
  if opts.seed then torch.manual_seed(opts.seed) end
  local yg = f(unpack(gpu))
  check_close(what .. " forward", yc, yg, tol)
  local w = torch.rand(yc.shape):to(yc.dtype)
  ;(yc * w):sum():backward()
  ;(yg * w:to("cuda")):sum():backward()
  for i = 1, #inputs do
    if not (opts.no_grad and opts.no_grad[i]) then
      check_close(("%s grad %d"):format(what, i), cpu[i].grad, gpu[i].grad, opts.gtol or tol * 4)
    end
  end
end

local function set_generic(on)
  if on then ffi.C.setenv("RAMTORCH_ATTN_GENERIC", "1", 1) else ffi.C.unsetenv("RAMTORCH_ATTN_GENERIC") end
end

describe("cuda transformer kernels", function()
  it("has a device (this spec fails on machines without one)", function()
    assert.is_true(torch.cuda.is_available(), "no CUDA device: run the gpu label on the GPU machine")
  end)

  for _, dt in ipairs({ torch.float32, torch.bfloat16, torch.float16, torch.float64 }) do
    local tol = TOL[dt.name]
    describe(dt.name, function()
      it("rms_norm with and without weight, forward and backward", function()
        for _, shape in ipairs({ { 33, 256 }, { 17, 100 }, { 3, 3000 }, { 2, 5, 64 } }) do
          local N = shape[#shape]
          local x = rnd(shape, dt, -2, 3)
          local w = rnd({ N }, dt, 0.5, 1.5)
          local what = "rms_norm " .. table.concat(shape, "x")
          check_fwd_bwd(what, function(a, ww) return F.rms_norm(a, N, ww, 1e-6) end, { x, w }, tol)
          check_fwd_bwd(what .. " no weight", function(a) return F.rms_norm(a, N, nil, 1e-6) end, { x }, tol)
        end
        -- two normalized dims
        local x = rnd({ 4, 6, 8 }, dt)
        check_fwd_bwd("rms_norm 2 dims", function(a, ww) return F.rms_norm(a, { 6, 8 }, ww) end,
                      { x, rnd({ 6, 8 }, dt, 0.5, 1.5) }, tol)
      end)

      it("rope: rotate-half and interleaved, offsets, strided input, forward and backward", function()
        for _, case in ipairs({ { { 2, 37, 3, 64 }, { layout = "bthd" } },
                                { { 2, 3, 37, 128 }, { layout = "bhtd", offset = 5 } },
                                { { 2, 40, 4, 32 }, { layout = "bthd", interleaved = true, theta = 500 } },
                                { { 300, 16 }, { seq_dim = 0, offset = 1000 } } }) do
          local x = rnd(case[1], dt, -2, 2)
          check_fwd_bwd("rope " .. table.concat(case[1], "x"), function(a) return F.rope(a, case[2]) end, { x }, tol)
        end
        -- a strided view (a narrow of the last dim of a wider tensor, as q in a fused qkv)
        local big = rnd({ 2, 20, 3, 96 }, dt)
        check_fwd_bwd("rope strided", function(a) return F.rope(a:narrow(3, 32, 64), { layout = "bthd" }) end,
                      { big }, tol)
      end)

      local heads = dt == torch.float64 and { 16, 40 } or { 64, 128, 40 }
      for _, D in ipairs(heads) do
        it(("scaled_dot_product_attention head dim %d: causal, masks, shapes, forward and backward"):format(D), function()
          local function run(what, B, H, T, S, opts, extra, eopts)
            local q, k, v = rnd({ B, H, T, D }, dt, -2, 2), rnd({ B, H, S, D }, dt, -2, 2), rnd({ B, H, S, D }, dt)
            local inputs = { q, k, v }
            if extra then inputs[4] = extra end
            check_fwd_bwd(("sdpa D=%d %s"):format(D, what), function(a, b, c, m)
              local o = {}
              for kk, vv in pairs(opts) do o[kk] = vv end
              if m then o.attn_mask = m end
              return F.scaled_dot_product_attention(a, b, c, o)
            end, inputs, tol, eopts)
          end
          run("square", 2, 3, 64, 64, {})
          run("ragged", 2, 2, 70, 70, {})
          run("causal", 2, 3, 130, 130, { is_causal = true })
          run("causal T<S", 1, 2, 50, 130, { is_causal = true })
          run("T>S", 1, 2, 100, 33, {}, nil)
          run("causal T>S", 1, 2, 100, 33, { is_causal = true })
          run("scale", 1, 2, 65, 65, { scale = 0.3, is_causal = true })
          -- several query blocks and key tiles (128-query blocks, 64/128-key tiles on the H200's
          -- wgmma path), ragged ends on both sides
          run("long causal", 1, 2, 300, 300, { is_causal = true })
          run("long", 2, 1, 257, 200, {})
          run("long causal T<S", 1, 1, 140, 333, { is_causal = true })
          run("no keys", 1, 2, 5, 0, {}) -- output 0, dQ 0, empty dK/dV (no empty launch)
          -- views as models make them: (B, T, H, D) transposed to (B, H, T, D) (strides not in
          -- order), and K/V shared by every head (expanded: stride 0, which the Hopper path declines
          -- to describe to its copy engine, so the portable kernels run)
          do
            local B, H, T = 2, 3, 150
            check_fwd_bwd(("sdpa D=%d bthd views"):format(D), function(a, b, c)
              return F.scaled_dot_product_attention(a:transpose(1, 2), b:transpose(1, 2), c:transpose(1, 2),
                                                    { is_causal = true })
            end, { rnd({ B, T, H, D }, dt, -2, 2), rnd({ B, T, H, D }, dt, -2, 2), rnd({ B, T, H, D }, dt) }, tol)
            check_fwd_bwd(("sdpa D=%d K/V expanded over heads"):format(D), function(a, b, c)
              return F.scaled_dot_product_attention(a, b:expand(B, H, T, D), c:expand(B, H, T, D), {})
            end, { rnd({ B, H, T, D }, dt, -2, 2), rnd({ B, 1, T, D }, dt, -2, 2), rnd({ B, 1, T, D }, dt) }, tol)
          end
          -- padding mask (bool over keys, broadcast) with one batch entry fully masked in some rows
          local pad = torch.ones({ 2, 1, 1, 80 }, { dtype = torch.bool })
          pad:narrow(3, 60, 20):fill_(false)
          run("padding mask", 2, 2, 80, 80, {}, pad, { no_grad = { [4] = true } })
          local rowmask = torch.ones({ 1, 1, 80, 1 }, { dtype = torch.bool })
          rowmask:narrow(2, 10, 5):fill_(false) -- rows 10..14 attend to nothing: output 0, grads 0
          run("fully masked rows", 1, 2, 80, 80, { is_causal = true }, rowmask, { no_grad = { [4] = true } })
          -- additive float mask with its gradient
          local addm = rnd({ 70, 70 }, dt, -1, 1)
          run("additive mask", 1, 2, 70, 70, {}, addm)
          -- dropout: the same counters on both backends give the same mask
          run("dropout", 2, 2, 70, 90, { dropout_p = 0.3 }, nil, { seed = 1234 })
          run("dropout causal", 1, 2, 128, 128, { dropout_p = 0.2, is_causal = true }, nil, { seed = 99 })
        end)
      end

      if dt == torch.bfloat16 or dt == torch.float16 then
        it("scaled_dot_product_attention on strided (B, T, H, D) views and on the generic path", function()
          for _, D in ipairs({ 64, 128 }) do
            -- q, k, v as transposes of (B, T, H, D) slices of one fused tensor: the GPT layout
            local qkv = rnd({ 2, 96, 3 * 4 * D }, dt, -2, 2)
            check_fwd_bwd(("sdpa strided D=%d"):format(D), function(x)
              local q = x:narrow(2, 0, 4 * D):view(2, 96, 4, D):transpose(1, 2)
              local k = x:narrow(2, 4 * D, 4 * D):view(2, 96, 4, D):transpose(1, 2)
              local v = x:narrow(2, 8 * D, 4 * D):view(2, 96, 4, D):transpose(1, 2)
              return F.scaled_dot_product_attention(q, k, v, { is_causal = true })
            end, { qkv }, tol)
            set_generic(true)
            local ok, err = pcall(function()
              local q, k, v = rnd({ 1, 2, 70, D }, dt, -2, 2), rnd({ 1, 2, 70, D }, dt, -2, 2), rnd({ 1, 2, 70, D }, dt)
              check_fwd_bwd(("sdpa generic D=%d"):format(D), function(a, b, c)
                return F.scaled_dot_product_attention(a, b, c, { is_causal = true, dropout_p = 0.1 })
              end, { q, k, v }, tol, { seed = 7 })
            end)
            set_generic(false)
            assert(ok, err)
          end
        end)
      end
    end)
  end

  it("a tiny GPT trains on cuda with the CPU's losses (rotary, f32)", function()
    local gpt = require("ramtorch.models.gpt")
    local optim = require("ramtorch.optim")
    local cfg = { vocab_size = 37, block_size = 32, n_layer = 2, n_head = 2, n_embd = 64, dropout = 0, rotary = true }
    torch.manual_seed(5)
    local m_cpu = gpt.GPT(cfg)
    torch.manual_seed(5)
    local m_gpu = gpt.GPT(cfg)
    m_gpu:to("cuda")
    local o_cpu = optim.AdamW(m_cpu:parameters(), { lr = 3e-3 })
    local o_gpu = optim.AdamW(m_gpu:parameters(), { lr = 3e-3 })
    torch.manual_seed(11)
    local x = torch.randint(0, 37, { 4, 32 })
    local y = torch.randint(0, 37, { 4, 32 })
    local xg, yg = x:to("cuda"), y:to("cuda")
    for step = 1, 4 do
      local _, lc = m_cpu(x, y)
      local _, lg = m_gpu(xg, yg)
      local a, b = lc:item(), lg:item()
      assert(math.abs(a - b) <= 3e-4 * math.max(1, math.abs(a)),
             ("step %d: cpu loss %.6f, cuda loss %.6f"):format(step, a, b))
      o_cpu:zero_grad(); lc:backward(); o_cpu:step()
      o_gpu:zero_grad(); lg:backward(); o_gpu:step()
    end
  end)
end)
