-- ramtorch/optim/optimizer.lua: the Optimizer base class (torch.optim.Optimizer in Lua): parameter
-- groups with per-group options filled from the defaults, per-parameter state, zero_grad, and
-- state_dict / load_state_dict in PyTorch's layout (state keyed by 0-based parameter index in group
-- order, param_groups holding the options and the indices).
--
--   local Opt = Optimizer:extend("MyOpt")
--   function Opt:__init(params, opts) Optimizer.__init(self, params, {lr = opts.lr or 0.1}) end
--   function Opt:step(closure) ... end
local torch = require("ramtorch")

local is_tensor = torch.is_tensor

local M = {}

local Optimizer = { __name = "Optimizer" }
Optimizer.__index = Optimizer
M.Optimizer = Optimizer

local class_mt = {
  __call = function(cls, ...)
    local self = setmetatable({}, cls)
    cls.__init(self, ...)
    return self
  end,
}
setmetatable(Optimizer, class_mt)

function Optimizer.extend(parent, name)
  local cls = { __name = name, super = parent }
  cls.__index = cls
  cls.__tostring = parent.__tostring
  return setmetatable(cls, { __index = parent, __call = class_mt.__call })
end

local function is_module(x)
  return type(x) == "table" and rawget(x, "_modules") ~= nil
end

local function copy_value(v)
  if type(v) == "table" and not is_tensor(v) then
    local c = {}
    for k, x in pairs(v) do c[k] = copy_value(x) end
    return c
  end
  return v
end

-- params: a Tensor, an array of Tensors, or an array of group tables {params = ..., lr = ..., ...}.
function Optimizer.__init(self, params, defaults)
  local name = getmetatable(self).__name
  self.defaults = defaults or {}
  self.state = {}          -- parameter handle -> table of state (tensors and numbers)
  self.param_groups = {}
  if is_module(params) then
    error(("%s: expected parameters, got a Module (pass model:parameters())"):format(name), 3)
  end
  if is_tensor(params) then params = { params } end
  if type(params) ~= "table" then
    error(("%s: params argument given to the optimizer should be an array of Tensors or of group tables, but got %s")
          :format(name, type(params)), 3)
  end
  if #params == 0 then error(("%s: optimizer got an empty parameter list"):format(name), 3) end
  if is_tensor(params[1]) then params = { { params = params } } end
  for _, g in ipairs(params) do self:add_param_group(g, 4) end
end

-- add_param_group({params = ..., opt = value, ...}): missing options come from the defaults. A
-- parameter may belong to one group only.
function Optimizer.add_param_group(self, group, level)
  level = level or 2
  local name = getmetatable(self).__name
  if type(group) ~= "table" or is_tensor(group) then
    error(("%s.add_param_group: expected a table {params = ...}, got %s"):format(name, type(group)), level)
  end
  local params = group.params
  if is_tensor(params) then params = { params } end
  if type(params) ~= "table" then
    error(("%s.add_param_group: the group's params must be a Tensor or an array of Tensors, got %s"):format(name, type(params)), level)
  end
  local g = {}
  for k, v in pairs(group) do if k ~= "params" then g[k] = copy_value(v) end end
  g.params = {}
  local seen = {}
  for i, p in ipairs(params) do
    if not is_tensor(p) then
      error(("%s: optimizer can only optimize Tensors, but element %d of a parameter group is a %s"):format(name, i, type(p)), level)
    end
    if not p.is_leaf then
      error(("%s: can't optimize a non-leaf Tensor (element %d of the group)"):format(name, i), level)
    end
    g.params[i] = p
    seen[tostring(p.p)] = true
  end
  for k, v in pairs(self.defaults) do
    if g[k] == nil then g[k] = copy_value(v) end
  end
  for _, other in ipairs(self.param_groups) do
    for _, p in ipairs(other.params) do
      if seen[tostring(p.p)] then
        error(("%s: some parameters appear in more than one parameter group"):format(name), level)
      end
    end
  end
  self:_check_group(g, level + 1)
  self.param_groups[#self.param_groups + 1] = g
end

-- Subclasses validate the options of a group here (raise with the option and value).
function Optimizer._check_group(self, g, level) end

function Optimizer.zero_grad(self, set_to_none)
  if set_to_none == nil then set_to_none = true end
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      if set_to_none then
        p.grad = nil
      else
        local gr = p.grad
        if gr ~= nil then gr:zero_() end
      end
    end
  end
end

function Optimizer.step(self)
  error(getmetatable(self).__name .. ": step is not implemented", 2)
end

-- Run the optional closure (which re-evaluates the model and returns the loss) with grad enabled.
function Optimizer._closure_loss(self, closure)
  if closure == nil then return nil end
  return torch.enable_grad(closure)
end

-- ---- state dicts ------------------------------------------------------------------------------------

-- {state = {[0] = {step = 3, exp_avg = T, ...}, ...}, param_groups = {{lr = ..., params = {0, 1}}, ...}}
-- Tensors in state are the live state tensors (as PyTorch returns references); load_state_dict
-- copies them.
function Optimizer.state_dict(self)
  local idx, next_idx = {}, 0
  local groups = {}
  for gi, g in ipairs(self.param_groups) do
    local pg = {}
    for k, v in pairs(g) do if k ~= "params" then pg[k] = copy_value(v) end end
    pg.params = {}
    for i, p in ipairs(g.params) do
      local key = tostring(p.p)
      if idx[key] == nil then
        idx[key] = next_idx
        next_idx = next_idx + 1
      end
      pg.params[i] = idx[key]
    end
    groups[gi] = pg
  end
  local state = {}
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      local st = self.state[p]
      if st ~= nil then
        local c = {}
        for k, v in pairs(st) do c[k] = copy_value(v) end
        state[idx[tostring(p.p)]] = c
      end
    end
  end
  return { state = state, param_groups = groups }
end

-- Restore options and state saved by state_dict(). Tensors are copied (cloned, moved to the
-- parameter's device, dtype kept), so a round trip restores exactly.
function Optimizer.load_state_dict(self, sd)
  local name = getmetatable(self).__name
  if type(sd) ~= "table" or type(sd.param_groups) ~= "table" or type(sd.state) ~= "table" then
    error(("%s.load_state_dict: expected a table with 'state' and 'param_groups'"):format(name), 2)
  end
  local saved = sd.param_groups
  if #saved ~= #self.param_groups then
    error(("%s.load_state_dict: loaded state dict has a different number of parameter groups (%d, expected %d)")
          :format(name, #saved, #self.param_groups), 2)
  end
  for gi, g in ipairs(self.param_groups) do
    if type(saved[gi].params) ~= "table" or #saved[gi].params ~= #g.params then
      error(("%s.load_state_dict: loaded state dict contains a parameter group that doesn't match the size of optimizer's group (group %d: %d parameters, expected %d)")
            :format(name, gi, type(saved[gi].params) == "table" and #saved[gi].params or 0, #g.params), 2)
    end
  end
  local new_state = {}
  for gi, g in ipairs(self.param_groups) do
    local sg = saved[gi]
    for i, p in ipairs(g.params) do
      local st = sd.state[sg.params[i]]
      if st ~= nil then
        local c = {}
        for k, v in pairs(st) do
          if is_tensor(v) then
            local t = v:detach():clone()
            if t.device ~= p.device then t = t:to(p.device) end
            c[k] = t
          else
            c[k] = copy_value(v)
          end
        end
        new_state[p] = c
      end
    end
    for k, v in pairs(sg) do
      if k ~= "params" then g[k] = copy_value(v) end
    end
  end
  self.state = new_state
end

function Optimizer.__tostring(self)
  local lines = { getmetatable(self).__name .. " (" }
  for gi, g in ipairs(self.param_groups) do
    lines[#lines + 1] = ("Parameter Group %d"):format(gi - 1)
    local keys = {}
    for k in pairs(g) do if k ~= "params" then keys[#keys + 1] = k end end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = g[k]
      if type(v) == "table" then
        local parts = {}
        for i, x in ipairs(v) do parts[i] = tostring(x) end
        v = "(" .. table.concat(parts, ", ") .. ")"
      end
      lines[#lines + 1] = ("    %s: %s"):format(k, tostring(v))
    end
  end
  lines[#lines + 1] = ")"
  return table.concat(lines, "\n")
end

return M
