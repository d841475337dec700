-- plain_vs_resident_mlp.lua: 16 x (Linear(8192, 8192) + ReLU) in bf16 on the GPU, fwd+bwd timed for a
-- plain nn.Linear stack and for ramtorch.Linear layers under a budget that holds every weight (so the
-- offload engine moves them all to the device: runtime/offload_migrate.c). The two should match; the
-- BENCHMARKS.md figures for nn.Linear's backward (18.2 -> 9.9 ms at T=1024) come from this script
-- (5 timed steps after 4 warm-ups).
--   ramtorch-lua scripts/bench/plain_vs_resident_mlp.lua [T] [plain|streamed|both]
--   RAMTORCH_AUTOGRAD_PROFILE=1 ramtorch-lua scripts/bench/plain_vs_resident_mlp.lua 1024 plain
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local offload = require("ramtorch.offload")
local timer = require("ramtorch.timer")
local L, D, T = 16, 8192, tonumber(arg[1] or 1024)
local function build(streamed)
  local b = {}
  for i = 1, L do
    if streamed then b[#b + 1] = torch.Linear(D, D, { dtype = torch.bfloat16, device = "cuda", skip_init = true })
    else b[#b + 1] = nn.Linear(D, D, { dtype = torch.bfloat16, device = "cuda" }) end
    b[#b + 1] = nn.ReLU()
  end
  local m = nn.Sequential(b)
  m:to("cuda")
  torch.no_grad(function() for _, p in ipairs(m:parameters()) do p:uniform_(-0.01, 0.01) end end)
  return m
end
local function bench(name, m)
  local x = torch.randn({ T, D }, { dtype = torch.bfloat16, device = "cuda" })
  local function once()
    local y = m(x)
    y:sum():backward()
    m:zero_grad()
  end
  for _ = 1, 4 do once() end
  torch.cuda.synchronize()
  local t0 = timer.now()
  for _ = 1, 5 do once() end
  torch.cuda.synchronize()
  local ms = (timer.now() - t0) / 5 * 1e3
  local t1 = timer.now()
  for _ = 1, 5 do torch.no_grad(function() return m(x) end) end
  torch.cuda.synchronize()
  print(("%s T=%d fwd+bwd %.2f ms, fwd %.2f ms"):format(name, T, ms, (timer.now() - t1) / 5 * 1e3))
end
local mode = arg[2] or "both"
if mode ~= "streamed" then bench("plain", build(false)) end
collectgarbage()
collectgarbage()
if mode ~= "plain" then
  local m = build(true)
  offload.set_memory_budget(L * (D * D + D) * 2 + 2 ^ 20, "cuda")
  bench("migrated", m)
  print("migrated bytes", offload.stats("cuda").migrated_bytes)
end
