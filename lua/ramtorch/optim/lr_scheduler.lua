-- ramtorch/optim/lr_scheduler.lua: learning-rate schedulers with PyTorch's semantics
-- (torch/optim/lr_scheduler.py): construction sets each group's initial_lr and takes the initial step
-- (last_epoch 0); step() advances last_epoch and writes the new lr into every param group using
-- PyTorch's recursive (chainable) formulas; step(epoch) uses the closed form where PyTorch has one.
-- StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR, ConstantLR, LambdaLR, SequentialLR;
-- PolynomialLR, CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR and ReduceLROnPlateau are in
-- ramtorch/optim/lr_scheduler_more.lua and exported from here as well.
-- PyTorch's keyword arguments may come as one options table after the optimizer:
--   StepLR(opt, {step_size = 10, gamma = 0.5}), MultiStepLR(opt, {milestones = {30, 80}}), ...
local M = {}

local LRScheduler = { __name = "LRScheduler" }
LRScheduler.__index = LRScheduler
M.LRScheduler = LRScheduler

local class_mt = {
  __call = function(cls, ...)
    local self = setmetatable({}, cls)
    cls.__init(self, ...)
    return self
  end,
}
setmetatable(LRScheduler, class_mt)

function LRScheduler.extend(parent, name)
  local cls = { __name = name, super = parent }
  cls.__index = cls
  return setmetatable(cls, { __index = parent, __call = class_mt.__call })
end

-- level: 4 from a subclass's __init (expect_optimizer, __init, the class's __call, the caller)
local function expect_optimizer(opt, name, level)
  if type(opt) ~= "table" or type(opt.param_groups) ~= "table" then
    error(("%s: expected an optimizer (a table with param_groups), got %s"):format(name, type(opt)), level or 4)
  end
end

-- Base construction: initial_lr per group (kept if already set, so schedulers can be chained),
-- base_lrs, and the initial step.
function LRScheduler.__init(self, optimizer, last_epoch)
  local name = getmetatable(self).__name
  -- reached from a subclass's __init: one frame deeper than a check made there
  expect_optimizer(optimizer, name, 5)
  self.optimizer = optimizer
  last_epoch = last_epoch or -1
  if last_epoch == -1 then
    for _, g in ipairs(optimizer.param_groups) do
      if g.initial_lr == nil then g.initial_lr = g.lr end
    end
  else
    for i, g in ipairs(optimizer.param_groups) do
      if g.initial_lr == nil then
        error(("%s: param 'initial_lr' is not specified in param_groups[%d] when resuming an optimizer"):format(name, i - 1), 4)
      end
    end
  end
  self.base_lrs = {}
  for i, g in ipairs(optimizer.param_groups) do self.base_lrs[i] = g.initial_lr end
  self.last_epoch = last_epoch
  self:_initial_step()
end

-- The initial step runs with _is_initial set: chainable formulas then keep the current lr (so a
-- scheduler built on a resumed optimizer does not step ahead of itself), as PyTorch 2.x.
function LRScheduler._initial_step(self)
  self._step_count = 0
  self._is_initial = true
  local ok, err = pcall(self.step, self)
  self._is_initial = false
  if not ok then error(err, 0) end
end

function LRScheduler.get_lr(self)
  error(getmetatable(self).__name .. ": get_lr is not implemented", 2)
end

function LRScheduler.get_last_lr(self)
  local out = {}
  for i, v in ipairs(self._last_lr) do out[i] = v end
  return out
end

-- step() or step(epoch) (the closed form at that epoch, as PyTorch's deprecated epoch argument).
function LRScheduler.step(self, epoch)
  self._step_count = self._step_count + 1
  self:_update_lr(epoch)
end

function LRScheduler._update_lr(self, epoch)
  local values
  if epoch == nil then
    self.last_epoch = self.last_epoch + 1
    values = self:get_lr()
  else
    self.last_epoch = epoch
    if self._get_closed_form_lr then values = self:_get_closed_form_lr() else values = self:get_lr() end
  end
  -- a group added after construction has no value from formulas over base_lrs: PyTorch's zip
  -- leaves its lr alone
  for i, g in ipairs(self.optimizer.param_groups) do
    if values[i] ~= nil then g.lr = values[i] end
  end
  self._last_lr = {}
  for i, g in ipairs(self.optimizer.param_groups) do self._last_lr[i] = g.lr end
end

-- An options table given in place of the first argument (StepLR(opt, {step_size = 2, gamma = 0.5})):
-- its keys must be the scheduler's (a misspelt gama would silently keep the default). nil when the
-- arguments are positional.
local function read_opts(name, first, allowed, level)
  if type(first) ~= "table" then return nil end
  for k in pairs(first) do
    if not allowed[k] then
      local names = {}
      for a in pairs(allowed) do names[#names + 1] = a end
      table.sort(names)
      error(("%s: unexpected option '%s' (expected %s)"):format(name, tostring(k), table.concat(names, ", ")), level + 1)
    end
  end
  return first
end

-- A numeric argument (after defaults): a table here is an options table in the wrong position.
local function expect_num(name, what, v, level)
  if type(v) == "number" then return end
  local hint = type(v) == "table" and (" (pass options as the only table: %s(optimizer, {...}))"):format(name) or ""
  error(("%s: expected a number %s, got %s%s"):format(name, what, type(v), hint), level + 1)
end

local function group_lrs(self)
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr end
  return out
end

-- Fields that are not state (the optimizer, functions).
local function is_state_value(k, v)
  return k ~= "optimizer" and type(v) ~= "function" and k ~= "lr_lambdas" and k ~= "_schedulers"
end

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = deep_copy(x) end
  return c
end

function LRScheduler.state_dict(self)
  local sd = {}
  for k, v in pairs(self) do
    if is_state_value(k, v) then sd[k] = deep_copy(v) end
  end
  return sd
end

function LRScheduler.load_state_dict(self, sd)
  for k, v in pairs(sd) do
    if is_state_value(k, v) then self[k] = deep_copy(v) end
  end
end

-- ---- StepLR ----------------------------------------------------------------------------------------

-- lr = base_lr * gamma ^ floor(epoch / step_size)
local StepLR = LRScheduler:extend("StepLR")
M.StepLR = StepLR

function StepLR:__init(optimizer, step_size, gamma, last_epoch)
  local o = read_opts("StepLR", step_size, { step_size = true, gamma = true, last_epoch = true }, 3)
  if o then step_size, gamma, last_epoch = o.step_size, o.gamma, o.last_epoch end
  if type(step_size) ~= "number" or step_size < 1 or step_size ~= math.floor(step_size) then
    error(("StepLR: step_size must be a positive integer, got %s"):format(tostring(step_size)), 3)
  end
  if gamma == nil then gamma = 0.1 end
  expect_num("StepLR", "gamma", gamma, 3)
  self.step_size, self.gamma = step_size, gamma
  LRScheduler.__init(self, optimizer, last_epoch)
end

function StepLR:get_lr()
  if self.last_epoch == 0 or self.last_epoch % self.step_size ~= 0 then return group_lrs(self) end
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr * self.gamma end
  return out
end

function StepLR:_get_closed_form_lr()
  local out = {}
  for i, b in ipairs(self.base_lrs) do out[i] = b * self.gamma ^ math.floor(self.last_epoch / self.step_size) end
  return out
end

-- ---- MultiStepLR ---------------------------------------------------------------------------------------

local MultiStepLR = LRScheduler:extend("MultiStepLR")
M.MultiStepLR = MultiStepLR

function MultiStepLR:__init(optimizer, milestones, gamma, last_epoch)
  if type(milestones) == "table" and milestones[1] == nil and next(milestones) ~= nil then
    local o = read_opts("MultiStepLR", milestones, { milestones = true, gamma = true, last_epoch = true }, 3)
    milestones, gamma, last_epoch = o.milestones, o.gamma, o.last_epoch
  end
  if type(milestones) ~= "table" then error("MultiStepLR: expected a table of milestones", 3) end
  self.milestones = {}
  for i, m in ipairs(milestones) do
    if type(m) ~= "number" then error(("MultiStepLR: milestones must be numbers, got %s"):format(type(m)), 3) end
    self.milestones[i] = m
  end
  table.sort(self.milestones)
  if gamma == nil then gamma = 0.1 end
  expect_num("MultiStepLR", "gamma", gamma, 3)
  self.gamma = gamma
  LRScheduler.__init(self, optimizer, last_epoch)
end

function MultiStepLR:get_lr()
  local count = 0
  for _, m in ipairs(self.milestones) do if m == self.last_epoch then count = count + 1 end end
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr * self.gamma ^ count end
  return out
end

function MultiStepLR:_get_closed_form_lr()
  local passed = 0
  for _, m in ipairs(self.milestones) do if m <= self.last_epoch then passed = passed + 1 end end
  local out = {}
  for i, b in ipairs(self.base_lrs) do out[i] = b * self.gamma ^ passed end
  return out
end

-- ---- ExponentialLR ---------------------------------------------------------------------------------------

local ExponentialLR = LRScheduler:extend("ExponentialLR")
M.ExponentialLR = ExponentialLR

function ExponentialLR:__init(optimizer, gamma, last_epoch)
  local o = read_opts("ExponentialLR", gamma, { gamma = true, last_epoch = true }, 3)
  if o then gamma, last_epoch = o.gamma, o.last_epoch end
  if type(gamma) ~= "number" then error(("ExponentialLR: expected a number gamma, got %s"):format(type(gamma)), 3) end
  self.gamma = gamma
  LRScheduler.__init(self, optimizer, last_epoch)
end

function ExponentialLR:get_lr()
  if self._is_initial then return group_lrs(self) end
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr * self.gamma end
  return out
end

function ExponentialLR:_get_closed_form_lr()
  local out = {}
  for i, b in ipairs(self.base_lrs) do out[i] = b * self.gamma ^ self.last_epoch end
  return out
end

-- ---- CosineAnnealingLR --------------------------------------------------------------------------------

-- lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2, computed by PyTorch's
-- recurrence (so it composes with other schedulers' changes).
local CosineAnnealingLR = LRScheduler:extend("CosineAnnealingLR")
M.CosineAnnealingLR = CosineAnnealingLR

function CosineAnnealingLR:__init(optimizer, T_max, eta_min, last_epoch)
  local o = read_opts("CosineAnnealingLR", T_max, { T_max = true, eta_min = true, last_epoch = true }, 3)
  if o then T_max, eta_min, last_epoch = o.T_max, o.eta_min, o.last_epoch end
  if type(T_max) ~= "number" or T_max <= 0 then
    error(("CosineAnnealingLR: T_max must be a positive number, got %s"):format(tostring(T_max)), 3)
  end
  if eta_min == nil then eta_min = 0 end
  expect_num("CosineAnnealingLR", "eta_min", eta_min, 3)
  self.T_max, self.eta_min = T_max, eta_min
  LRScheduler.__init(self, optimizer, last_epoch)
end

function CosineAnnealingLR:get_lr()
  local e, T, eta = self.last_epoch, self.T_max, self.eta_min
  local out = {}
  local groups = self.optimizer.param_groups
  if self._is_initial then return group_lrs(self) end
  if self._step_count == 1 and e > 0 then
    for i, b in ipairs(self.base_lrs) do out[i] = eta + (b - eta) * (1 + math.cos(e * math.pi / T)) / 2 end
    return out
  end
  if (e - 1 - T) % (2 * T) == 0 then
    for i, g in ipairs(groups) do
      out[i] = g.lr + (self.base_lrs[i] - eta) * (1 - math.cos(math.pi / T)) / 2
    end
    return out
  end
  for i, g in ipairs(groups) do
    out[i] = (1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (g.lr - eta) + eta
  end
  return out
end

function CosineAnnealingLR:_get_closed_form_lr()
  local out = {}
  for i, b in ipairs(self.base_lrs) do
    out[i] = self.eta_min + (b - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
  end
  return out
end

-- ---- LinearLR ------------------------------------------------------------------------------------------

-- factor goes linearly from start_factor to end_factor over total_iters steps, then stays.
local LinearLR = LRScheduler:extend("LinearLR")
M.LinearLR = LinearLR

function LinearLR:__init(optimizer, start_factor, end_factor, total_iters, last_epoch)
  local o = read_opts("LinearLR", start_factor,
                      { start_factor = true, end_factor = true, total_iters = true, last_epoch = true }, 3)
  if o then
    start_factor, end_factor, total_iters, last_epoch = o.start_factor, o.end_factor, o.total_iters, o.last_epoch
  end
  start_factor = start_factor == nil and 1 / 3 or start_factor
  end_factor = end_factor == nil and 1 or end_factor
  expect_num("LinearLR", "start_factor", start_factor, 3)
  expect_num("LinearLR", "end_factor", end_factor, 3)
  if total_iters ~= nil then expect_num("LinearLR", "total_iters", total_iters, 3) end
  if start_factor > 1 or start_factor <= 0 then
    error("LinearLR: Starting multiplicative factor expected to be greater than 0 and less or equal to 1.", 3)
  end
  if end_factor > 1 or end_factor < 0 then
    error("LinearLR: Ending multiplicative factor expected to be between 0 and 1.", 3)
  end
  self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters or 5
  LRScheduler.__init(self, optimizer, last_epoch)
end

function LinearLR:get_lr()
  local e, s, f, n = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
  local out = {}
  local groups = self.optimizer.param_groups
  if e == 0 then
    for i, g in ipairs(groups) do out[i] = g.lr * s end
    return out
  end
  if self._is_initial or e > n then return group_lrs(self) end
  for i, g in ipairs(groups) do
    out[i] = g.lr * (1 + (f - s) / (n * s + (e - 1) * (f - s)))
  end
  return out
end

function LinearLR:_get_closed_form_lr()
  local out = {}
  local s, f, n = self.start_factor, self.end_factor, self.total_iters
  for i, b in ipairs(self.base_lrs) do
    out[i] = b * (s + (f - s) * math.min(n, self.last_epoch) / n)
  end
  return out
end

-- ---- ConstantLR ------------------------------------------------------------------------------------------

local ConstantLR = LRScheduler:extend("ConstantLR")
M.ConstantLR = ConstantLR

function ConstantLR:__init(optimizer, factor, total_iters, last_epoch)
  local o = read_opts("ConstantLR", factor, { factor = true, total_iters = true, last_epoch = true }, 3)
  if o then factor, total_iters, last_epoch = o.factor, o.total_iters, o.last_epoch end
  if total_iters ~= nil then expect_num("ConstantLR", "total_iters", total_iters, 3) end
  self.factor, self.total_iters = factor == nil and 1 / 3 or factor, total_iters or 5
  if type(self.factor) ~= "number" or self.factor > 1 or self.factor < 0 then
    error("ConstantLR: Constant multiplicative factor expected to be between 0 and 1.", 3)
  end
  LRScheduler.__init(self, optimizer, last_epoch)
end

function ConstantLR:get_lr()
  local out = {}
  local groups = self.optimizer.param_groups
  for i, g in ipairs(groups) do
    if self.last_epoch == 0 then out[i] = g.lr * self.factor
    elseif self.last_epoch == self.total_iters then out[i] = g.lr * (1 / self.factor)
    else out[i] = g.lr end
  end
  return out
end

function ConstantLR:_get_closed_form_lr()
  local out = {}
  for i, b in ipairs(self.base_lrs) do
    out[i] = b * (self.factor + (self.last_epoch >= self.total_iters and 1 - self.factor or 0))
  end
  return out
end

-- ---- LambdaLR ----------------------------------------------------------------------------------------------

-- lr = base_lr * lr_lambda(epoch); lr_lambda is a function or an array of functions (one per group).
local LambdaLR = LRScheduler:extend("LambdaLR")
M.LambdaLR = LambdaLR

function LambdaLR:__init(optimizer, lr_lambda, last_epoch)
  expect_optimizer(optimizer, "LambdaLR")
  local n = #optimizer.param_groups
  if type(lr_lambda) == "table" and lr_lambda.lr_lambda ~= nil then
    lr_lambda, last_epoch = lr_lambda.lr_lambda, lr_lambda.last_epoch
  end
  if type(lr_lambda) == "function" then
    self.lr_lambdas = {}
    for i = 1, n do self.lr_lambdas[i] = lr_lambda end
  elseif type(lr_lambda) == "table" then
    if #lr_lambda ~= n then
      error(("LambdaLR: Expected %d lr_lambdas, but got %d"):format(n, #lr_lambda), 3)
    end
    self.lr_lambdas = lr_lambda
  else
    error(("LambdaLR: expected a function or an array of functions, got %s"):format(type(lr_lambda)), 3)
  end
  LRScheduler.__init(self, optimizer, last_epoch)
end

function LambdaLR:get_lr()
  local out = {}
  for i, b in ipairs(self.base_lrs) do out[i] = b * self.lr_lambdas[i](self.last_epoch) end
  return out
end

-- ---- SequentialLR ----------------------------------------------------------------------------------------

-- SequentialLR(optimizer, {warmup, main}, {milestone}): runs schedulers[1] until the first milestone,
-- then schedulers[2] (restarted at its epoch 0), and so on. The usual warmup:
--   SequentialLR(opt, {LinearLR(opt, 0.01, 1, 100), CosineAnnealingLR(opt, 900)}, {100})
local SequentialLR = LRScheduler:extend("SequentialLR")
M.SequentialLR = SequentialLR

function SequentialLR:__init(optimizer, schedulers, milestones, last_epoch)
  expect_optimizer(optimizer, "SequentialLR")
  if type(schedulers) ~= "table" or #schedulers < 1 then
    error("SequentialLR: expects at least one scheduler", 3)
  end
  for i, s in ipairs(schedulers) do
    if type(s) ~= "table" or s.optimizer == nil then
      error(("SequentialLR: schedulers[%d] is not a scheduler"):format(i - 1), 3)
    end
    if s.optimizer ~= optimizer then
      error(("SequentialLR: Sequential Schedulers expects all schedulers to belong to the same optimizer, but got scheduler at index %d to be different than the optimizer passed in."):format(i - 1), 3)
    end
  end
  if type(milestones) ~= "table" or #milestones ~= #schedulers - 1 then
    error(("SequentialLR: Sequential Schedulers expects number of schedulers provided to be one more than the number of milestone points, but got number of schedulers %d and the number of milestones to be equal to %d")
          :format(#schedulers, type(milestones) == "table" and #milestones or 0), 3)
  end
  self._schedulers = schedulers
  self._milestones = {}
  for i, m in ipairs(milestones) do self._milestones[i] = m end
  self.last_epoch = (last_epoch or -1) + 1
  self.optimizer = optimizer
  -- undo the initial steps the schedulers took when they were built, then start the first one
  for _, g in ipairs(optimizer.param_groups) do g.lr = g.initial_lr end
  local function undo(s)
    if s._schedulers then
      for _, c in ipairs(s._schedulers) do undo(c) end
    else
      s.last_epoch = s.last_epoch - 1
    end
  end
  for _, s in ipairs(schedulers) do undo(s) end
  schedulers[1]:_initial_step()
  self._last_lr = schedulers[1]:get_last_lr()
end

function SequentialLR:step()
  self.last_epoch = self.last_epoch + 1
  -- bisect_right: number of milestones <= last_epoch
  local idx = 0
  for _, m in ipairs(self._milestones) do if m <= self.last_epoch then idx = idx + 1 end end
  local s = self._schedulers[idx + 1]
  -- at a milestone the next scheduler restarts at its epoch 0 (closed form, no step count)
  if idx > 0 and self._milestones[idx] == self.last_epoch then s:_update_lr(0) else s:step() end
  self._last_lr = s:get_last_lr()
end

function SequentialLR:state_dict()
  local sd = LRScheduler.state_dict(self)
  sd._schedulers = {}
  for i, s in ipairs(self._schedulers) do sd._schedulers[i] = s:state_dict() end
  return sd
end

function SequentialLR:load_state_dict(sd)
  LRScheduler.load_state_dict(self, sd)
  if sd._schedulers then
    for i, s in ipairs(self._schedulers) do
      if sd._schedulers[i] then s:load_state_dict(sd._schedulers[i]) end
    end
  end
end

-- The schedulers of lr_scheduler_more.lua build on LRScheduler (and share group_lrs).
M._group_lrs = group_lrs
for k, v in pairs(require("ramtorch.optim.lr_scheduler_more")(M)) do M[k] = v end

return M
