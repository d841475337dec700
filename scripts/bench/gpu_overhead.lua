-- gpu_overhead.lua: per-op host overhead of a tiny add on the GPU (a 1-element f32 tensor + itself,
-- 10^5 calls, wall clock including the final synchronize). Twin: gpu_overhead.py (PyTorch eager).
-- Prints "RESULT add_overhead <us> us/op".
local torch = require("ramtorch")
local timer = require("ramtorch.timer")
local x = torch.ones({ 1 }, { device = "cuda" })
local n = 100000
for _ = 1, 1000 do local _ = x + x end
torch.cuda.synchronize()
local t0 = timer.now()
for _ = 1, n do local _ = x + x end
torch.cuda.synchronize()
local us = (timer.now() - t0) / n * 1e6
print(("RESULT add_overhead %.2f us/op"):format(us))
