-- ramtorch_readme.lua: the examples of RamTorch's README, ported line by line to Lua and run as a test
-- (tests/lua/readme_examples_spec.lua runs this file). On a machine without a GPU the device is "cpu"
-- with the offload engine's CPU streams on, so the same code path (weights in host RAM, streamed into
-- separate "device" buffers by copy threads) runs everywhere.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local Linear = require("ramtorch").Linear
local helpers = require("ramtorch.helpers")

local device = torch.cuda.is_available() and "cuda" or "cpu"
if device == "cpu" then require("ramtorch.offload").enable_cpu_streams(true) end

-- Replace torch.nn.Linear with ramtorch.Linear for automatic memory optimization
local linear = Linear(1000, 1000, { device = device })
local x = torch.randn({ 32, 1000 }, { device = device })
local output = linear(x) -- parameters automatically transferred from CPU to GPU
assert(output.shape[1] == 32 and output.shape[2] == 1000)

-- A model built from ramtorch.Linear layers
local MemoryEfficientModel = nn.Module:extend("MemoryEfficientModel")
function MemoryEfficientModel:__init()
  nn.Module.__init(self)
  self.layers = nn.Sequential(
    Linear(1000, 2000),
    nn.ReLU(),
    Linear(2000, 2000),
    nn.ReLU(),
    Linear(2000, 100)
  )
end
function MemoryEfficientModel:forward(x) return self.layers(x) end
local model = MemoryEfficientModel()
model:to(device)
local y = model(torch.randn({ 8, 1000 }, { device = device }))
assert(y.shape[2] == 100)

-- Replace every nn.Linear of an existing model, in place, sharing the weights
local existing = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 10))
local before = existing(torch.ones({ 2, 64 })):totable()
existing = helpers.replace_linear_with_ramtorch(existing, 0)
existing = existing:to(device)
local after = existing(torch.ones({ 2, 64 }, { device = device })):to("cpu"):totable()
for i = 1, 2 do
  for j = 1, 10 do assert(math.abs(before[i][j] - after[i][j]) < 1e-5, "replaced model changed its output") end
end

-- Training with RamTorch's AdamW, a scheduler, and model-level zero_grad
local optimizer = torch.AdamW(model:parameters(), { lr = 1e-3, weight_decay = 0.01 })
local scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10, 0.1)
local F = require("ramtorch.functional")
for _ = 1, 3 do
  local inputs = torch.randn({ 16, 1000 }, { device = device })
  local targets = torch.randint(0, 100, { 16 }, { device = device })
  local loss = F.cross_entropy(model(inputs), targets)
  loss:backward()
  optimizer:step()
  scheduler:step()
  model:zero_grad()
end
print("ramtorch README examples: ok on " .. device)
