-- ramtorch/nn/loss.lua: loss modules (CrossEntropyLoss, MSELoss) over ramtorch.functional, with
-- PyTorch's options: reduction "mean" | "sum" | "none", ignore_index, label_smoothing.
local mod = require("ramtorch.nn.module")

local Module, pyrepr = mod.Module, mod.pyrepr

local F_mod
local function F()
  F_mod = F_mod or require("ramtorch.functional")
  return F_mod
end

local M = {}

-- the options table of a loss constructor (nil for the defaults)
local function opts_of(name, opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s: expected an options table ({weight=, reduction=, ...}), got %s"):format(name, type(opts)), 4)
  end
  return opts
end

local function check_reduction(name, r)
  if r ~= "mean" and r ~= "sum" and r ~= "none" then
    error(("%s: reduction must be 'mean', 'sum' or 'none', got %s"):format(name, tostring(r)), 4)
  end
end

-- nn.CrossEntropyLoss({weight=, ignore_index=-100, reduction="mean", label_smoothing=0}); weight (C) is
-- kept as a buffer (state_dict key "weight"), as PyTorch's _WeightedLoss does.
local CrossEntropyLoss = Module:extend("CrossEntropyLoss")
M.CrossEntropyLoss = CrossEntropyLoss

function CrossEntropyLoss:__init(opts)
  opts = opts_of("CrossEntropyLoss", opts)
  if opts.weight ~= nil then
    if not require("ramtorch").is_tensor(opts.weight) then
      error(("CrossEntropyLoss: weight must be a Tensor, got %s"):format(type(opts.weight)), 3)
    end
    self:register_buffer("weight", opts.weight)
  end
  self.ignore_index = opts.ignore_index or -100
  self.reduction = opts.reduction or "mean"
  self.label_smoothing = opts.label_smoothing or 0
  check_reduction("CrossEntropyLoss", self.reduction)
  if type(self.label_smoothing) ~= "number" or self.label_smoothing < 0 or self.label_smoothing > 1 then
    error(("CrossEntropyLoss: label_smoothing must be between 0.0 and 1.0, got %s"):format(tostring(self.label_smoothing)), 3)
  end
end

function CrossEntropyLoss:forward(input, target)
  return F().cross_entropy(input, target, { weight = self.weight, ignore_index = self.ignore_index,
                                            reduction = self.reduction, label_smoothing = self.label_smoothing })
end

-- nn.NLLLoss({weight=, ignore_index=-100, reduction="mean"}) over log-probabilities.
local NLLLoss = Module:extend("NLLLoss")
M.NLLLoss = NLLLoss

function NLLLoss:__init(opts)
  opts = opts_of("NLLLoss", opts)
  if opts.weight ~= nil then
    if not require("ramtorch").is_tensor(opts.weight) then
      error(("NLLLoss: weight must be a Tensor, got %s"):format(type(opts.weight)), 3)
    end
    self:register_buffer("weight", opts.weight)
  end
  self.ignore_index = opts.ignore_index or -100
  self.reduction = opts.reduction or "mean"
  check_reduction("NLLLoss", self.reduction)
end

function NLLLoss:forward(input, target)
  return F().nll_loss(input, target, { weight = self.weight, ignore_index = self.ignore_index,
                                       reduction = self.reduction })
end

-- (PyTorch prints CrossEntropyLoss() whatever the options; so does this.)

-- nn.MSELoss({reduction="mean"})
local MSELoss = Module:extend("MSELoss")
M.MSELoss = MSELoss

function MSELoss:__init(opts)
  if type(opts) == "string" then opts = { reduction = opts } end
  opts = opts_of("MSELoss", opts)
  self.reduction = opts.reduction or "mean"
  check_reduction("MSELoss", self.reduction)
end

function MSELoss:forward(input, target) return F().mse_loss(input, target, { reduction = self.reduction }) end

return M
