-- ramtorch/nn/batchnorm.lua: nn.BatchNorm1d / nn.BatchNorm2d (running statistics as buffers, as
-- PyTorch's _BatchNorm) and nn.GroupNorm, over F.batch_norm / F.group_norm (functional_norm.lua).
local torch = require("ramtorch")
local mod = require("ramtorch.nn.module")

local Module, Parameter, pyrepr = mod.Module, mod.Parameter, mod.pyrepr

local F_mod
local function F()
  F_mod = F_mod or require("ramtorch.functional")
  return F_mod
end

local M = {}

local function positive_int(v, cls, what)
  if type(v) ~= "number" or v ~= math.floor(v) or v < 1 or v >= 2 ^ 62 then
    error(("%s: expected %s to be a positive integer, got %s"):format(cls, what, tostring(v)), 4)
  end
end

-- ---- BatchNorm ----------------------------------------------------------------------------------------

-- nn.BatchNorm1d(num_features, {eps=1e-5, momentum=0.1, affine=true, track_running_stats=true, device=,
-- dtype=}), or positionally (num_features, eps, momentum, affine, track_running_stats). momentum=false
-- stands for PyTorch's momentum=None (a cumulative moving average: factor 1 / num_batches_tracked).
local function batchnorm_class(name, check_dim)
  local cls = Module:extend(name)

  function cls:__init(num_features, eps, momentum, affine, track_running_stats)
    local opts = {}
    if type(eps) == "table" then
      opts = eps
      for k in pairs(opts) do
        if k ~= "eps" and k ~= "momentum" and k ~= "affine" and k ~= "track_running_stats" and k ~= "device"
            and k ~= "dtype" then
          error(("%s: unknown option '%s' (expected eps, momentum, affine, track_running_stats, device, dtype)")
                :format(name, tostring(k)), 3)
        end
      end
    else
      opts = { eps = eps, momentum = momentum, affine = affine, track_running_stats = track_running_stats }
    end
    positive_int(num_features, name, "num_features")
    self.num_features = num_features
    self.eps = opts.eps == nil and 1e-5 or opts.eps
    if type(self.eps) ~= "number" then error(("%s: expected eps to be a number, got %s"):format(name, type(self.eps)), 3) end
    local m = opts.momentum
    if m == nil then m = 0.1 end
    if m ~= false and type(m) ~= "number" then
      error(("%s: expected momentum to be a number or false (cumulative average), got %s"):format(name, type(m)), 3)
    end
    self.momentum = m -- false: PyTorch's None
    self.affine = opts.affine ~= false
    self.track_running_stats = opts.track_running_stats ~= false
    local topts = { dtype = opts.dtype, device = opts.device }
    if self.affine then
      self.weight = Parameter(torch.ones({ num_features }, topts))
      self.bias = Parameter(torch.zeros({ num_features }, topts))
    end
    if self.track_running_stats then
      self:register_buffer("running_mean", torch.zeros({ num_features }, topts))
      self:register_buffer("running_var", torch.ones({ num_features }, topts))
      self:register_buffer("num_batches_tracked", torch.tensor(0, { dtype = torch.int64, device = opts.device }))
    end
  end

  function cls:reset_running_stats()
    if self.track_running_stats then
      self.running_mean:zero_()
      self.running_var:fill_(1)
      self.num_batches_tracked:zero_()
    end
  end

  function cls:reset_parameters()
    self:reset_running_stats()
    if self.affine then
      self.weight:fill_(1)
      self.bias:zero_()
    end
  end

  function cls:forward(x)
    if not torch.is_tensor(x) then
      error(("%s: expected a Tensor input, got %s"):format(name, type(x)), 2)
    end
    check_dim(x)
    if x:size(1) ~= self.num_features then
      error(("%s: expected input with %d channels (dim 1), got input of size [%s]")
            :format(name, self.num_features, table.concat(x.shape, ", ")), 2)
    end
    -- PyTorch's _BatchNorm.forward
    local factor = self.momentum == false and 0.0 or self.momentum
    if self.training and self.track_running_stats then
      -- (checked here too so a refused batch does not count as tracked)
      F()._verify_batch_size(x, 2)
      torch.no_grad(function() self.num_batches_tracked:add_(1) end)
      if self.momentum == false then factor = 1.0 / self.num_batches_tracked:item() end
    end
    local bn_training = self.training or (self.running_mean == nil and self.running_var == nil)
    local use_stats = not self.training or self.track_running_stats
    return F().batch_norm(x, use_stats and self.running_mean or nil, use_stats and self.running_var or nil,
                          self.weight, self.bias, bn_training, factor, self.eps)
  end

  function cls:extra_repr()
    return ("%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s"):format(
      self.num_features, pyrepr(self.eps), self.momentum == false and "None" or pyrepr(self.momentum),
      pyrepr(self.affine), pyrepr(self.track_running_stats))
  end

  M[name] = cls
  return cls
end

batchnorm_class("BatchNorm1d", function(x)
  if x:dim() ~= 2 and x:dim() ~= 3 then
    error(("BatchNorm1d: expected 2D or 3D input (got %dD input)"):format(x:dim()), 3)
  end
end)
batchnorm_class("BatchNorm2d", function(x)
  if x:dim() ~= 4 then error(("BatchNorm2d: expected 4D input (got %dD input)"):format(x:dim()), 3) end
end)

-- ---- GroupNorm ----------------------------------------------------------------------------------------

-- nn.GroupNorm(num_groups, num_channels, {eps=1e-5, affine=true, device=, dtype=}), or positionally
-- (num_groups, num_channels, eps, affine)
local GroupNorm = Module:extend("GroupNorm")
M.GroupNorm = GroupNorm

function GroupNorm:__init(num_groups, num_channels, eps, affine)
  local opts
  if type(eps) == "table" then
    opts = eps
    for k in pairs(opts) do
      if k ~= "eps" and k ~= "affine" and k ~= "device" and k ~= "dtype" then
        error(("GroupNorm: unknown option '%s' (expected eps, affine, device, dtype)"):format(tostring(k)), 3)
      end
    end
  else
    opts = { eps = eps, affine = affine }
  end
  positive_int(num_groups, "GroupNorm", "num_groups")
  positive_int(num_channels, "GroupNorm", "num_channels")
  if num_channels % num_groups ~= 0 then
    error(("GroupNorm: num_channels must be divisible by num_groups (got num_channels=%d, num_groups=%d)")
          :format(num_channels, num_groups), 3)
  end
  self.num_groups, self.num_channels = num_groups, num_channels
  self.eps = opts.eps == nil and 1e-5 or opts.eps
  self.affine = opts.affine ~= false
  if self.affine then
    local topts = { dtype = opts.dtype, device = opts.device }
    self.weight = Parameter(torch.ones({ num_channels }, topts))
    self.bias = Parameter(torch.zeros({ num_channels }, topts))
  end
end

function GroupNorm:reset_parameters()
  if self.affine then
    self.weight:fill_(1)
    self.bias:zero_()
  end
end

function GroupNorm:forward(x)
  if not torch.is_tensor(x) then
    error(("GroupNorm: expected a Tensor input, got %s"):format(type(x)), 2)
  end
  return F().group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
end

function GroupNorm:extra_repr()
  return ("%d, %d, eps=%s, affine=%s"):format(self.num_groups, self.num_channels, pyrepr(self.eps), pyrepr(self.affine))
end

return M
