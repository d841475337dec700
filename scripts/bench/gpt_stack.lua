-- gpt_stack.lua: issue 7's block-stack benchmark: training tokens per second of a GPT (12 layers,
-- width 1024, 16 heads, sequence 1024, batch 16 by default) with every weight resident, or with every
-- Linear streamed from host RAM (--streamed, through helpers.replace_linear_with_ramtorch), plus peak
-- GPU memory. Weights are in --dtype (bf16 by default), or f32 masters under ramtorch.amp.autocast("bf16")
-- with --autocast (the issue's setting); the PyTorch twin scripts/bench/gpt_stack.py reports both its
-- bf16-weight and its f32+autocast runs. Prints "RESULT gpt_stack_<mode> <tokens/s> tokens/s".
--
--   ramtorch-lua scripts/bench/gpt_stack.lua [--streamed] [--autocast] [--steps 5]
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
  { "autocast", false, "f32 weights, forward and loss under ramtorch.amp.autocast(\"bf16\")" },
  { "steps", 5, "timed training steps" },
  { "breakdown", false, "also time forward, loss, backward and optimizer step apart (synchronizing between)" },
  { "warmup", 2, "untimed steps first" },
}, "usage: ramtorch-lua scripts/bench/gpt_stack.lua [options]")

local dtype = (opts.dtype == "f32" or opts.dtype == "float32" or opts.autocast) and torch.float32 or torch.bfloat16
local amp = require("ramtorch.amp")
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

local function forward_loss()
  local logits = model(idx)
  return F.cross_entropy(logits:view(B * T, -1):float(), tgt:view(B * T))
end

local function step()
  local loss = opts.autocast and amp.autocast("bf16", forward_loss) or forward_loss()
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
if opts.breakdown then
  local acc = { 0, 0, 0, 0 }
  local function mark() if cuda then cuda.synchronize() end return timer.now() end
  for _ = 1, opts.steps do
    local a = mark()
    local logits
    local function fwd() logits = model(idx) end
    if opts.autocast then amp.autocast("bf16", fwd) else fwd() end
    local b = mark()
    local function lossf() return F.cross_entropy(logits:view(B * T, -1):float(), tgt:view(B * T)) end
    local loss_t = opts.autocast and amp.autocast("bf16", lossf) or lossf()
    local c = mark()
    model:zero_grad()
    loss_t:backward()
    local d = mark()
    opt:step()
    local e = mark()
    acc[1], acc[2], acc[3], acc[4] = acc[1] + b - a, acc[2] + c - b, acc[3] + d - c, acc[4] + e - d
  end
  print(("gpt_stack breakdown (ms, synchronized apart): forward %.1f, loss %.1f, backward %.1f, optimizer %.1f")
    :format(acc[1] / opts.steps * 1e3, acc[2] / opts.steps * 1e3, acc[3] / opts.steps * 1e3, acc[4] / opts.steps * 1e3))
  -- forward self time per module class (each module's forward synchronized apart; children subtracted)
  local self_ms, calls, stack = {}, {}, {}
  for _, m in ipairs(model:modules()) do
    local f, name = m.forward, m:_get_name()
    rawset(m, "forward", function(selfm, ...)
      local t0 = mark()
      stack[#stack + 1] = 0
      local r = f(selfm, ...)
      local incl = mark() - t0
      local child = table.remove(stack)
      if #stack > 0 then stack[#stack] = stack[#stack] + incl end
      self_ms[name] = (self_ms[name] or 0) + (incl - child) * 1e3
      calls[name] = (calls[name] or 0) + 1
      return r
    end)
  end
  local function fwd() return model(idx) end
  torch.no_grad(function() if opts.autocast then amp.autocast("bf16", fwd) else fwd() end end)
  local names = {}
  for k in pairs(self_ms) do names[#names + 1] = k end
  table.sort(names, function(a, b) return self_ms[a] > self_ms[b] end)
  local parts = {}
  for _, k in ipairs(names) do parts[#parts + 1] = ("%s %.2f (%d)"):format(k, self_ms[k], calls[k]) end
  print("gpt_stack forward self time by module, ms (calls), no_grad: " .. table.concat(parts, ", "))
end
local mode = (opts.streamed and "streamed_" or "resident_")
  .. (opts.autocast and "f32_autocast" or dtype == torch.bfloat16 and "bf16" or "f32")
local peak = cuda and cuda.max_memory_allocated() / 2 ^ 30 or 0
print(("gpt_stack: %d layers x %d, T=%d, batch %d, %s: %.1f ms/step, loss %.3f, peak GPU %.2f GiB")
  :format(opts.n_layer, opts.n_embd, T, B, mode, dt * 1e3, l, peak))
print(("RESULT gpt_stack_%s %.0f tokens/s"):format(mode, B * T / dt))
