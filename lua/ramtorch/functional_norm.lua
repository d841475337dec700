-- ramtorch/functional_norm.lua: F.batch_norm and F.group_norm, composed of existing ops (mean, rsqrt,
-- broadcasting arithmetic) so they run on every device and autograd differentiates through the batch
-- statistics. float16 / bfloat16 inputs compute in float32 and return their own dtype (PyTorch
-- accumulates the statistics in float). functional.lua merges this table into F.
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local autograd = require("ramtorch.autograd")
require("ramtorch.ops") -- the Tensor methods used below

local is_tensor, expect_tensor, describe = tensor.is_tensor, tensor.expect_tensor, tensor.describe
local f16, bf16, f32 = core.float16, core.bfloat16, core.float32

local M = {}

local function widen(x)
  local dt = x.dtype
  if dt == f16 or dt == bf16 then return x:to(f32), dt end
  return x, dt
end

local function size_str(shape) return "[" .. table.concat(shape, ", ") .. "]" end

-- the shape (1, C, 1, ...) that broadcasts a per-channel (C) tensor over x (N, C, ...)
local function channel_shape(x, C)
  local s = {}
  for i = 1, x:dim() do s[i] = 1 end
  s[2] = C
  return s
end

local function expect_channels(t, what, C, name, level)
  if t == nil then return end
  expect_tensor(t, name, level + 1)
  if t:numel() ~= C then
    error(("%s: %s should contain %d elements not %d"):format(name, what, C, t:numel()), level + 1)
  end
end

local function expect_eps(eps, name, level)
  if type(eps) ~= "number" or not (eps >= 0) then
    error(("%s: expected eps to be a non-negative number, got %s"):format(name, describe(eps)), level + 1)
  end
end

-- PyTorch's _verify_batch_size: training statistics need more than one value per channel
function M._verify_batch_size(x, level)
  local s = x.shape
  local n = s[1]
  for i = 3, #s do n = n * s[i] end
  if n == 1 then
    error(("Expected more than 1 value per channel when training, got input size %s"):format(size_str(s)), level + 1)
  end
end

-- batch_norm(input (N, C, ...), running_mean, running_var, weight=nil, bias=nil, training=false,
-- momentum=0.1, eps=1e-5), or batch_norm(input, running_mean, running_var, {weight=, bias=, training=,
-- momentum=, eps=}). Training (or no running stats given): normalise with the batch's mean and biased
-- variance over every dim but 1, and, when running stats are given, update them in place (no autograd):
-- running = (1 - momentum) * running + momentum * batch, with the unbiased variance for running_var.
-- Evaluation: normalise with the running stats.
function M.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
  local name = "batch_norm"
  expect_tensor(x, name, 2)
  if type(weight) == "table" and not is_tensor(weight) then
    local o = weight
    for k in pairs(o) do
      if k ~= "weight" and k ~= "bias" and k ~= "training" and k ~= "momentum" and k ~= "eps" then
        error(("batch_norm: unknown option '%s' (expected weight, bias, training, momentum, eps)"):format(tostring(k)), 2)
      end
    end
    weight, bias, training, momentum, eps = o.weight, o.bias, o.training, o.momentum, o.eps
  end
  training = training == true
  if momentum == nil then momentum = 0.1 end
  if eps == nil then eps = 1e-5 end
  if not x.dtype.is_floating_point then
    error(("batch_norm: expected a floating point input, got %s"):format(x.dtype.name), 2)
  end
  if x:dim() < 2 then
    error(("batch_norm: expected an input of at least 2 dims (N, C, ...), got %d-d input of size %s")
          :format(x:dim(), size_str(x.shape)), 2)
  end
  if type(momentum) ~= "number" then
    error(("batch_norm: expected momentum to be a number, got %s"):format(describe(momentum)), 2)
  end
  expect_eps(eps, name, 2)
  local C = x:size(1)
  expect_channels(running_mean, "running_mean", C, name, 2)
  expect_channels(running_var, "running_var", C, name, 2)
  expect_channels(weight, "weight", C, name, 2)
  expect_channels(bias, "bias", C, name, 2)
  if (running_mean == nil) ~= (running_var == nil) then
    error("batch_norm: running_mean and running_var must both be given or both be nil", 2)
  end
  if not training and running_mean == nil then
    error("batch_norm: running_mean and running_var must be defined in evaluation mode (training=false)", 2)
  end
  if training then M._verify_batch_size(x, 2) end

  local bshape = channel_shape(x, C)
  local dims = { 0 }
  for d = 2, x:dim() - 1 do dims[#dims + 1] = d end
  local xc, dt = widen(x)
  local y
  if training then
    local m = xc:mean(dims, true)
    local d = xc - m
    local v = (d * d):mean(dims, true)
    y = d * (v + eps):rsqrt()
    if running_mean ~= nil then
      local n = x:numel() / C
      autograd.no_grad(function()
        local bm, bv = m:detach():reshape({ C }), v:detach():reshape({ C })
        -- the unbiased variance n / (n - 1) (n >= 2 here, checked above)
        bv = bv * (n / (n - 1))
        running_mean:copy_(running_mean * (1 - momentum) + bm * momentum)
        running_var:copy_(running_var * (1 - momentum) + bv * momentum)
      end)
    end
  else
    local rm, rv = running_mean:detach():view(bshape), running_var:detach():view(bshape)
    y = (xc - rm) * (rv + eps):rsqrt()
  end
  if weight ~= nil then y = y * weight:view(bshape) end
  if bias ~= nil then y = y + bias:view(bshape) end
  if y.dtype ~= dt then y = y:to(dt) end
  return y
end

-- group_norm(input (N, C, ...), num_groups, weight=nil, bias=nil, eps=1e-5), or group_norm(input,
-- num_groups, {weight=, bias=, eps=}): each sample's channels split into num_groups groups of C /
-- num_groups channels, each group normalised by its own mean and biased variance, then the per-channel
-- affine.
function M.group_norm(x, num_groups, weight, bias, eps)
  local name = "group_norm"
  expect_tensor(x, name, 2)
  if type(weight) == "table" and not is_tensor(weight) then
    local o = weight
    for k in pairs(o) do
      if k ~= "weight" and k ~= "bias" and k ~= "eps" then
        error(("group_norm: unknown option '%s' (expected weight, bias, eps)"):format(tostring(k)), 2)
      end
    end
    weight, bias, eps = o.weight, o.bias, o.eps
  end
  if eps == nil then eps = 1e-5 end
  if not x.dtype.is_floating_point then
    error(("group_norm: expected a floating point input, got %s"):format(x.dtype.name), 2)
  end
  if x:dim() < 2 then
    error(("group_norm: Expected at least 2 dimensions for input tensor but received %d"):format(x:dim()), 2)
  end
  if type(num_groups) ~= "number" or num_groups ~= math.floor(num_groups) or num_groups < 1 then
    error(("group_norm: expected num_groups to be a positive integer, got %s"):format(describe(num_groups)), 2)
  end
  expect_eps(eps, name, 2)
  local N, C = x:size(0), x:size(1)
  if C % num_groups ~= 0 then
    error(("group_norm: Expected number of channels in input to be divisible by num_groups, but got input of shape %s and num_groups=%d")
          :format(size_str(x.shape), num_groups), 2)
  end
  expect_channels(weight, "weight", C, name, 2)
  expect_channels(bias, "bias", C, name, 2)
  local inner = C / num_groups
  for d = 2, x:dim() - 1 do inner = inner * x:size(d) end
  local xc, dt = widen(x)
  local xg = xc:reshape({ N, num_groups, inner })
  local m = xg:mean(2, true)
  local d = xg - m
  local v = (d * d):mean(2, true)
  local y = (d * (v + eps):rsqrt()):reshape(x.shape)
  local bshape = channel_shape(x, C)
  if weight ~= nil then y = y * weight:view(bshape) end
  if bias ~= nil then y = y + bias:view(bshape) end
  if y.dtype ~= dt then y = y:to(dt) end
  return y
end

return M
