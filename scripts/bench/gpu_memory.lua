-- gpu_memory.lua: memory-bound ops on 256 MiB f32 tensors, GB/s counting bytes read + written
-- (CUDA events, mean of 20 after 3 warm-ups): add, mul by a scalar, relu, copy/cast to bf16, sum,
-- and softmax / layer_norm / cross_entropy when the CUDA backend has them (else "unsupported").
-- Twin: gpu_memory.py. Prints "RESULT <op> <GB/s> GB/s".
local torch = require("ramtorch")
local nf = 64 * 1024 * 1024 -- 256 MiB of f32
local rows, cols = 65536, 1024
local x = torch.randn({ rows, cols }, { device = "cuda" })
local y = torch.randn({ rows, cols }, { device = "cuda" })
local e0, e1 = torch.cuda.Event({ enable_timing = true }), torch.cuda.Event({ enable_timing = true })

local function bench(name, bytes, fn)
  local ok, err = pcall(function()
    for _ = 1, 3 do fn() end
    torch.cuda.synchronize()
    local iters = 20
    e0:record()
    for _ = 1, iters do fn() end
    e1:record()
    e1:synchronize()
    local ms = e0:elapsed_time(e1) / iters
    print(("RESULT %s %.0f GB/s"):format(name, bytes / (ms * 1e-3) / 1e9))
  end)
  if not ok then print(("RESULT %s unsupported (%s)"):format(name, tostring(err):sub(1, 120))) end
  collectgarbage("collect")
end

local B = nf * 4
bench("copy_d2d", 2 * B, function() local _ = x:clone() end)
bench("add", 3 * B, function() local _ = x + y end)
bench("mul_scalar", 2 * B, function() local _ = x * 2 end)
bench("relu", 2 * B, function() local _ = x:relu() end)
bench("cast_bf16", B + B / 2, function() local _ = x:to(torch.bfloat16) end)
bench("sum_rows", B, function() local _ = x:sum(1) end)
local okF, F = pcall(function() return torch.nn.functional end)
if not okF or not F then F = torch end
bench("softmax", 2 * B, function() local _ = F.softmax(x, -1) end)
bench("layer_norm", 2 * B, function() local _ = F.layer_norm(x, { cols }) end)
local target = torch.randint(0, cols, { rows }, { device = "cuda" })
bench("cross_entropy", B, function() local _ = F.cross_entropy(x, target) end)
