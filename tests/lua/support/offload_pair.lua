-- offload_pair.lua: what the offload specs that compare streamed with plain layers share (loaded with
-- dofile(<spec dir> .. "support/offload_pair.lua")): a model of ramtorch.Linear layers and the same
-- model of nn.Linear layers with equal initial weights, the parameter bytes of a model (a budget that
-- holds it all), and which of its parameters moved to the device (residency by migration).
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local offload = require("ramtorch.offload")

local M = {}

-- (streamed, plain) Sequentials of Linear(dims[i], dims[i + 1]) with ReLU between. opts: seed
-- (default 5), device (the compute device: the plain model moves there, the streamed one's
-- parameters stay in host memory).
function M.make_pair(dims, dtype, opts)
  opts = opts or {}
  torch.manual_seed(opts.seed or 5)
  local s, p = {}, {}
  for i = 1, #dims - 1 do
    local l = torch.Linear(dims[i], dims[i + 1], { dtype = dtype, device = opts.device })
    local pl = nn.Linear(dims[i], dims[i + 1], { dtype = dtype })
    torch.no_grad(function()
      pl.weight:copy_(l.weight)
      pl.bias:copy_(l.bias)
    end)
    s[#s + 1], p[#p + 1] = l, pl
    if i < #dims - 1 then s[#s + 1], p[#p + 1] = nn.ReLU(), nn.ReLU() end
  end
  local sm, pm = nn.Sequential(s), nn.Sequential(p)
  if opts.device ~= nil then
    sm:to(opts.device)
    pm:to(opts.device)
  end
  return sm, pm
end

function M.total_bytes(model)
  local n = 0
  for _, p in ipairs(model:parameters()) do n = n + p:numel() * p.dtype.itemsize end
  return n
end

-- "1" per parameter that moved to the device, "0" per one still on the host, in parameters() order
function M.migrated_flags(model)
  local f = {}
  for i, p in ipairs(model:parameters()) do f[i] = offload.is_migrated(p) and "1" or "0" end
  return table.concat(f)
end

-- busted hooks for specs on the CPU engine under budgets: streams on for the file, and before each
-- case no budget, no schedule, migration on, and the previous case's models collected (their moved
-- parameters count against the budget until then)
function M.cpu_engine_hooks(setup, teardown, before_each)
  setup(function() offload.enable_cpu_streams(true) end)
  teardown(function()
    offload.enable_cpu_streams(false)
    offload.set_memory_budget(0, "cpu")
    offload.set_migration(true)
  end)
  before_each(function()
    offload.set_memory_budget(0, "cpu")
    offload.reset_schedule("cpu")
    collectgarbage("collect")
    collectgarbage("collect")
    offload.set_migration(true)
  end)
end

return M
