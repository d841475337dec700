-- ramtorch: the top-level module. `local torch = require("ramtorch")` gives tensors, factories, math,
-- grad-mode scopes and the dtype values, mirroring PyTorch's torch namespace. Submodules (nn, optim,
-- data, ...) are required separately and also reachable as fields (torch.nn) on first use.
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local ops = require("ramtorch.ops")
local creation = require("ramtorch.creation")
local autograd = require("ramtorch.autograd")
local ffi, C = rffi.ffi, rffi.C

tensor.install()

local torch = {}

for _, name in ipairs({ "float32", "bfloat16", "float16", "float64", "int64", "int32", "uint8", "bool" }) do
  torch[name] = core[name]
end
torch.float, torch.double, torch.half, torch.long, torch.int = core.float32, core.float64, core.float16,
  core.int64, core.int32

for k, v in pairs(ops) do
  if type(v) == "function" then torch[k] = v end
end
for k, v in pairs(creation) do torch[k] = v end
for k, v in pairs(require("ramtorch.ops_nn")) do torch[k] = v end
-- var/std/var_mean/std_mean, logsumexp, norm (compositions; ramtorch/ops_reduce.lua)
for k, v in pairs(require("ramtorch.ops_reduce")) do
  if type(v) == "function" then torch[k] = v end
end
-- isnan/isinf/isfinite, nan_to_num, logical_*, isclose/allclose/equal (ramtorch/ops_logical.lua)
for k, v in pairs(require("ramtorch.ops_logical")) do torch[k] = v end
-- trunc/floor/ceil/round/frac, floor_divide/remainder/fmod, any/all (ramtorch/ops_round.lua)
for k, v in pairs(require("ramtorch.ops_round")) do
  if type(v) == "function" then torch[k] = v end
end

torch.Tensor = tensor.Tensor
torch.is_tensor = tensor.is_tensor
torch.no_grad = autograd.no_grad
torch.enable_grad = autograd.enable_grad
torch.is_grad_enabled = autograd.is_grad_enabled
torch.set_grad_enabled = autograd.set_grad_enabled
torch.autograd = autograd
torch.C = C
torch.ffi = ffi

function torch.version() return ffi.string(C.rt_version()) end
torch.__version__ = ffi.string(C.rt_version())

function torch.get_num_threads() return C.rt_get_num_threads() end
function torch.set_num_threads(n) core.check(C.rt_set_num_threads(n)) end

function torch.set_default_dtype(d)
  local ok, dt = pcall(core.dtype, d)
  if d == nil or not ok then
    error(("set_default_dtype: expected a dtype (torch.float32, \"bf16\", ...), got %s"):format(tensor.describe(d)), 2)
  end
  core.default_dtype = dt
end
function torch.get_default_dtype() return core.default_dtype end

function torch.numel(t) return tensor.expect_tensor(t, "numel", 2):numel() end
function torch.live_tensors() return tonumber(C.rt_live_tensors()) end

-- RamTorch's memory budget of the offload engine (bytes of device buffers; 0: none).
function torch.set_memory_budget(bytes, device) require("ramtorch.offload").set_memory_budget(bytes, device) end

-- torch.save(state_dict, path, metadata) / torch.load(path, opts) -> (state_dict, metadata): the
-- safetensors format (ramtorch/io.lua), so files move to and from PyTorch and Hugging Face.
function torch.save(obj, path, metadata) return require("ramtorch.io").save(obj, path, metadata) end
function torch.load(path, opts) return require("ramtorch.io").load(path, opts) end

-- Submodules on first use: torch.nn, torch.optim, ... (require("ramtorch.nn") works as well).
local lazy = { nn = true, optim = true, data = true, helpers = true, cuda = true, amp = true,
               distributed = true, utils = true, offload = true, models = true, io = true,
               linalg = true }
-- RamTorch's top-level names (`from ramtorch import Linear, AdamW`), also loaded on first use.
local lazy_fields = { Linear = { "ramtorch.linear", "Linear" }, AdamW = { "ramtorch.optim", "AdamW" },
                     Adam = { "ramtorch.optim", "Adam" },
                     autocast = { "ramtorch.amp", "autocast" }, -- torch.autocast("cuda", {dtype=...}, fn)
                     -- resumable training (ramtorch/train_state.lua)
                     save_checkpoint = { "ramtorch.train_state", "save_checkpoint" },
                     load_checkpoint = { "ramtorch.train_state", "load_checkpoint" } }
return setmetatable(torch, {
  __index = function(t, k)
    local f = lazy_fields[k]
    if f then
      local v = require(f[1])[f[2]]
      rawset(t, k, v)
      return v
    end
    if lazy[k] then
      local m = require("ramtorch." .. k)
      rawset(t, k, m)
      return m
    end
    return nil
  end,
})
