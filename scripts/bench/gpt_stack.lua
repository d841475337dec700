-- gpt_stack.lua: issue 7's block-stack benchmark: training tokens per second of a GPT (12 layers,
-- width 1024, 16 heads, sequence 1024, batch 16 by default) with every weight resident, or with every
-- Linear streamed from host RAM (--streamed, through helpers.replace_linear_with_ramtorch), plus peak
-- GPU memory. Weights are in --dtype (bf16 by default: ramtorch's autocast covers streamed ops only so
-- far, so the resident run uses bf16 weights; the PyTorch twin scripts/bench/gpt_stack.py reports both
-- its bf16-weight and its f32+autocast runs). Prints "RESULT gpt_stack_<mode> <tokens/s> tokens/s".
--
--   ramtorch-lua scripts/bench/gpt_stack.lua [--streamed] [--steps 5]
--   ramtorch-lua scripts/bench/gpt_stack.lua --device cpu --n-layer 2 --n-embd 64 --block-size 32 --batch 2
local torch = require("ramtorch")
local flags = require("ramtorch.flags")
local timer = require("ramtorch.timer")
local gpt = require("ramtorch.models.gpt")
local F = require("ramtorch.functional")

local opts = flags.parse(arg, {
  { "device", "cuda", "compute device" },
  { "n-layer", 12, "transformer blocks" },
  { "n-embd", 1024, "width" },
  { "n-head", 16, "attention heads" },
  { "block-size", 1024, "sequence length" },
  { "batch", 16, "sequences per step" },
  { "vocab", 50304, "vocabulary size" },
  { "dtype", "bf16", "weight dtype (bf16 or f32)" },
  { "streamed", false, "stream every Linear from host RAM (ramtorch.Linear)" },
  { "steps", 5, "timed training steps" },
  { "warmup", 2, "untimed steps first" },
}, "usage: ramtorch-lua scripts/bench/gpt_stack.lua [options]")

local dtype = (opts.dtype == "f32" or opts.dtype == "float32") and torch.float32 or torch.bfloat16
local dev = opts.device
if dev == "cpu" and opts.streamed then require("ramtorch.offload").enable_cpu_streams(true) end
torch.manual_seed(0)
local model = gpt.GPT({ vocab_size = opts.vocab, block_size = opts.block_size, n_layer = opts.n_layer,
                        n_head = opts.n_head, n_embd = opts.n_embd, dropout = 0 })
if opts.streamed then model = require("ramtorch.helpers").replace_linear_with_ramtorch(model, 0) end
model = model:to(dtype):to(dev)
local opt = torch.AdamW(model:parameters(), { lr = 1e-4 })
local B, T = opts.batch, opts.block_size
local idx = torch.randint(0, opts.vocab, { B, T }, { device = dev })
local tgt = torch.randint(0, opts.vocab, { B, T }, { device = dev })

local function step()
  local logits = model(idx)
  local loss = F.cross_entropy(logits:view(B * T, -1):float(), tgt:view(B * T))
  model:zero_grad()
  loss:backward()
  opt:step()
  return loss
end

local cuda = dev ~= "cpu" and torch.cuda or nil
for _ = 1, opts.warmup do step() end
if cuda then cuda.synchronize(); cuda.reset_peak_memory_stats() end
local t0 = timer.now()
local loss
for _ = 1, opts.steps do loss = step() end
local l = loss:item() -- waits for the last step
if cuda then cuda.synchronize() end
local dt = (timer.now() - t0) / opts.steps
local mode = (opts.streamed and "streamed_" or "resident_") .. (dtype == torch.bfloat16 and "bf16" or "f32")
local peak = cuda and cuda.max_memory_allocated() / 2 ^ 30 or 0
print(("gpt_stack: %d layers x %d, T=%d, batch %d, %s: %.1f ms/step, loss %.3f, peak GPU %.2f GiB")
  :format(opts.n_layer, opts.n_embd, T, B, mode, dt * 1e3, l, peak))
print(("RESULT gpt_stack_%s %.0f tokens/s"):format(mode, B * T / dt))
