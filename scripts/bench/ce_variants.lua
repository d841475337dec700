-- ce_variants.lua: the CUDA cross_entropy forward alone, GB/s counting the logits read once (the
-- method of gpu_memory.lua: CUDA events around 20 calls after 3 warm-ups; here the best and the
-- median of 5 such rounds). Cases: the issue's (65536, 1024) f32 mean, the same with reduction
-- none and in bf16, and 256 classes (2^18 rows); arg[1] labels the output (a kernel version, say).
-- Prints "RESULT ce <case> <label> <best GB/s> <median GB/s>" and the clone (copy) bandwidth.
-- Run by scripts/bench/ce_variants.sh on the GPU machine.
local torch = require("ramtorch")
local F = torch.nn.functional
local label = arg[1] or "current"
local e0, e1 = torch.cuda.Event({ enable_timing = true }), torch.cuda.Event({ enable_timing = true })

local function rate(bytes, fn)
  for _ = 1, 3 do fn() end
  torch.cuda.synchronize()
  local r = {}
  for k = 1, 5 do
    e0:record()
    for _ = 1, 20 do fn() end
    e1:record()
    e1:synchronize()
    r[k] = bytes / (e0:elapsed_time(e1) / 20 * 1e-3) / 1e9
  end
  table.sort(r)
  collectgarbage("collect")
  return r[5], r[3]
end

local function case(name, rows, cols, dtype, opts)
  local x = torch.randn({ rows, cols }, { device = "cuda" }):to(dtype)
  local t = torch.randint(0, cols, { rows }, { device = "cuda" })
  local esize = dtype == torch.float32 and 4 or 2
  local best, med = rate(rows * cols * esize, function() local _ = F.cross_entropy(x, t, opts) end)
  print(("RESULT ce %s %s %.0f %.0f"):format(name, label, best, med))
end

case("f32_mean_65536x1024", 65536, 1024, torch.float32, nil)
case("f32_none_65536x1024", 65536, 1024, torch.float32, { reduction = "none" })
case("bf16_mean_65536x1024", 65536, 1024, torch.bfloat16, nil)
case("f32_mean_262144x256", 262144, 256, torch.float32, nil)
local c = torch.randn({ 65536, 1024 }, { device = "cuda" })
local best, med = rate(2 * 65536 * 1024 * 4, function() local _ = c:clone() end)
print(("RESULT ce copy_d2d %s %.0f %.0f"):format(label, best, med))
