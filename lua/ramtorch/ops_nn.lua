-- ramtorch/ops_nn.lua: torch.cat / torch.stack and torch.softmax / torch.log_softmax with their Tensor
-- methods (x:softmax(dim)). init.lua merges this table into the torch namespace. Thin wrappers: the C
-- side (runtime/ops_join.c, ops_softmax.c) validates and records autograd.
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local ffi, C = rffi.ffi, rffi.C

local Tensor, is_tensor = tensor.Tensor, tensor.is_tensor
local box, result = core.box, core.result
local oom = core.oom

local M = {}

local function expect_dim(dim, name, level)
  if type(dim) ~= "number" or dim ~= math.floor(dim) then
    error(("%s: expected an integer dim, got %s"):format(name, tostring(dim)), level + 1)
  end
end

-- A C array of the handles in a Lua sequence of Tensors (the table keeps them alive for the call).
local function handles(tensors, name, level)
  if type(tensors) ~= "table" then
    error(("%s: expected a table of Tensors, got %s"):format(name, type(tensors)), level + 1)
  end
  local n = #tensors
  if n == 0 then error(("%s: expected a non-empty table of Tensors"):format(name), level + 1) end
  local arr = ffi.new("rt_tensor*[?]", n)
  for i = 1, n do
    local t = tensors[i]
    if not is_tensor(t) then
      error(("%s: expected a Tensor at position %d, got %s"):format(name, i, type(t)), level + 1)
    end
    arr[i - 1] = t.p
  end
  return arr, n
end

-- torch.cat(tensors, dim): dim defaults to 0 as in PyTorch.
function M.cat(tensors, dim)
  dim = dim or 0
  expect_dim(dim, "cat", 2)
  local arr, n = handles(tensors, "cat", 2)
  return result(oom(C.rt_cat(n, arr, dim, box)) or C.rt_cat(n, arr, dim, box))
end
M.concat, M.concatenate = M.cat, M.cat

function M.stack(tensors, dim)
  dim = dim or 0
  expect_dim(dim, "stack", 2)
  local arr, n = handles(tensors, "stack", 2)
  return result(oom(C.rt_stack(n, arr, dim, box)) or C.rt_stack(n, arr, dim, box))
end

-- softmax(x, dim, dtype=nil) / log_softmax(x, dim, dtype=nil); or (x, {dim=, dtype=}). dtype casts the
-- input first, as PyTorch (torch.softmax(x, dim, dtype)); an unknown option key is refused rather than
-- ignored (ignoring dtype gave a silently lower-precision result).
local function softmax_args(x, dim, dtype, name)
  tensor.expect_tensor(x, name, 3)
  if type(dim) == "table" then
    for k in pairs(dim) do
      if k ~= "dim" and k ~= "dtype" then
        error(("%s: unknown option '%s' (expected dim, dtype)"):format(name, tostring(k)), 3)
      end
    end
    dim, dtype = dim.dim, dim.dtype
  end
  expect_dim(dim, name, 3)
  if dtype ~= nil then
    local ok, dt = pcall(core.dtype, dtype)
    if not ok then
      error(("%s: expected a dtype (torch.float32, \"bf16\", ...), got %s"):format(name, tensor.describe(dtype)), 3)
    end
    dtype = dt
    if x.dtype ~= dtype then x = x:to(dtype) end
  end
  return x, dim
end

function M.softmax(x, dim, dtype)
  x, dim = softmax_args(x, dim, dtype, "softmax")
  return result(oom(C.rt_softmax(x.p, dim, box)) or C.rt_softmax(x.p, dim, box))
end

function M.log_softmax(x, dim, dtype)
  x, dim = softmax_args(x, dim, dtype, "log_softmax")
  return result(oom(C.rt_log_softmax(x.p, dim, box)) or C.rt_log_softmax(x.p, dim, box))
end

Tensor.softmax = M.softmax
Tensor.log_softmax = M.log_softmax

-- autocast: softmax and log_softmax run in float32 (ramtorch/autocast.lua)
require("ramtorch.autocast").install(M, Tensor)

return M
