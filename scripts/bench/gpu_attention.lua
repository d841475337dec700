-- gpu_attention.lua: scaled_dot_product_attention on the GPU through ramtorch (kernels/cuda/attention.cu),
-- bf16, batch 8, 16 heads of 128, sequence 2048, causal (issue 7's case): forward alone and forward +
-- backward (autograd, upstream gradient given), TFLOP/s from CUDA events (mean of 10 after 3 warm-ups).
-- FLOPs as flash attention counts them: forward 4 B H T S D / 2 (causal), backward 2.5x the forward.
-- Twin: gpu_attention.py (PyTorch's F.scaled_dot_product_attention, same method).
-- Prints "RESULT attention_fwd <tflops> TFLOP/s" and "RESULT attention_fwd_bwd <tflops> TFLOP/s".
local torch = require("ramtorch")
local F = require("ramtorch.functional")
local B, H, T, D = 8, 16, tonumber(arg and arg[1]) or 2048, 128
local opts = { dtype = torch.bfloat16, device = "cuda" }
local q = torch.randn({ B, H, T, D }, opts):requires_grad_(true)
local k = torch.randn({ B, H, T, D }, opts):requires_grad_(true)
local v = torch.randn({ B, H, T, D }, opts):requires_grad_(true)
local dout = torch.randn({ B, H, T, D }, opts)
local fwd_flops = 4 * B * H * T * T * D / 2

local function time(fn, iters)
  for _ = 1, 3 do fn() end
  torch.cuda.synchronize()
  local e0, e1 = torch.cuda.Event({ enable_timing = true }), torch.cuda.Event({ enable_timing = true })
  e0:record()
  for _ = 1, iters do fn() end
  e1:record()
  e1:synchronize()
  return e0:elapsed_time(e1) / iters
end

local ms_f = time(function()
  torch.no_grad(function() local _ = F.scaled_dot_product_attention(q, k, v, { is_causal = true }) end)
end, 10)
local ms_fb = time(function()
  local o = F.scaled_dot_product_attention(q, k, v, { is_causal = true })
  o:backward(dout)
end, 10)
print(("RESULT attention_fwd %.1f TFLOP/s"):format(fwd_flops / (ms_f * 1e-3) / 1e12))
print(("RESULT attention_fwd_bwd %.1f TFLOP/s"):format(3.5 * fwd_flops / (ms_fb * 1e-3) / 1e12))
