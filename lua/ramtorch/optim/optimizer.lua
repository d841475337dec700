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
local rffi = require("ramtorch.ffi")
local ffi, C, check = rffi.ffi, rffi.C, rffi.check

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

-- Constructors check their options table against the names they know (allowed: set of names), as
-- PyTorch raises on an unexpected keyword argument: a misspelt option would otherwise be ignored
-- silently. Param groups may carry extra keys (PyTorch keeps them).
function M.check_options(name, opts, allowed, level)
  if type(opts) ~= "table" then -- a Tensor is cdata
    local what = is_tensor(opts) and "a Tensor" or type(opts)
    error(("%s: expected an options table (or a number, the lr), got %s"):format(name, what), level + 1)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      error(("%s: unexpected option '%s'"):format(name, tostring(k)), level + 1)
    end
  end
end

-- params: a Tensor, an array of Tensors, or an array of group tables {params = ..., lr = ..., ...}.
-- Called as Class(...) -> __call -> Subclass.__init -> here: errors are raised at level 4, the caller.
function Optimizer.__init(self, params, defaults)
  local name = getmetatable(self).__name
  self.defaults = defaults or {}
  self.state = {}          -- parameter handle -> table of state (tensors and numbers)
  self.param_groups = {}
  if is_module(params) then
    error(("%s: expected parameters, got a Module (pass model:parameters())"):format(name), 4)
  end
  if is_tensor(params) then params = { params } end
  if type(params) ~= "table" then
    error(("%s: params argument given to the optimizer should be an array of Tensors or of group tables, but got %s")
          :format(name, type(params)), 4)
  end
  if #params == 0 then error(("%s: optimizer got an empty parameter list"):format(name), 4) end
  if is_tensor(params[1]) then params = { { params = params } } end
  for _, g in ipairs(params) do self:add_param_group(g, 5) end
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
  if self:_needs_host_masters() then self:_keep_on_host() end
end

-- ---- where the parameters live ------------------------------------------------------------------
-- Under a memory budget the offload engine moves the streamed parameters its plan keeps resident to
-- the device for good (ramtorch.offload, runtime/offload_migrate.c). An optimizer whose update needs
-- the host master (host-only bf16 states, overlap with the backward, delayed updates) keeps its
-- streamed parameters on the host; state made on the host before a move follows its parameter.

function Optimizer._needs_host_masters(self)
  return self._overlap == true or self._delay == true or self.state_dtype == "bf16"
end

function Optimizer._keep_on_host(self)
  local lin = require("ramtorch.linear")
  local offload = require("ramtorch.offload")
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      if lin.is_ramtorch_param(p) then offload.keep_on_host(p) end
    end
  end
end

-- Move st's tensors to p's device when p has moved (migration after the state was made).
function Optimizer._state_follows(self, st, p)
  local dev = p.device
  for k, v in pairs(st) do
    if is_tensor(v) and v.device ~= dev then st[k] = v:to(dev) end
  end
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

-- ---- overlap with the backward (host parameters streamed by the offload engine) --------------------
-- optimizer:overlap_with_backward(true) lets the update of each streamed host parameter run on the
-- engine's host worker as soon as its last gradient of the step has landed, while the backward goes on
-- with earlier layers. The user announces the backward that completes the step's gradients with
-- optimizer:last_backward() (call it before that backward: with accumulation over micro-batches, before
-- the last one only); step() stays the synchronisation point and updates whatever was not updated
-- early. A step whose gradients are changed between backward and step (clip_grad_norm_, unscaling)
-- must not be announced: step() then raises an error. The number of gradients a parameter gets per
-- backward is learned on the first announced step, so the first one updates nothing early.
-- Subclasses implement _arm(handle, p, group, state) -> true when armed.

function Optimizer.overlap_with_backward(self, flag)
  if flag ~= false and self._delay then
    error(("%s.overlap_with_backward: cannot be combined with delay_update (turn delay_update off first)")
          :format(getmetatable(self).__name), 2)
  end
  self._overlap = flag ~= false
  if self._overlap then self:_keep_on_host() end
  return self
end

function Optimizer.last_backward(self)
  if not self._overlap then return end
  local offload = require("ramtorch.offload")
  if self._announced then self:_finish_overlap() end
  offload.synchronize()
  local announced = {}
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      local h = offload.existing_handle(p)
      if h ~= nil then
        check(C.rt_host_optim_begin(h))
        local st = self.state[p]
        announced[#announced + 1] = { p = p, h = h, armed = st ~= nil and st.expected_grads ~= nil
                                      and self:_arm(h, p, g, st) or false }
      end
    end
  end
  self._announced = announced
end

-- Called by step(): wait for the engine, collect which parameters were updated early (and learn how
-- many gradients each gets per backward). Returns a set of updated parameters.
function Optimizer._finish_overlap(self)
  local list = self._announced
  self._announced = nil
  local done = {}
  if list == nil then return done end
  local offload = require("ramtorch.offload")
  offload.synchronize()
  local upd, routed = ffi.new("int[1]"), ffi.new("int[1]")
  local first_err
  for _, a in ipairs(list) do
    local rc = C.rt_host_optim_finish(a.h, upd, routed)
    if rc ~= 0 and first_err == nil then first_err = ffi.string(C.rt_last_error()) end
    local st = self.state[a.p]
    if routed[0] > 0 then a.routed = routed[0] end
    if upd[0] ~= 0 and a.armed then
      done[a.p] = true
      self:_armed_done(a.p, st)
    end
  end
  self._routed_counts = list
  if first_err ~= nil then error(getmetatable(self).__name .. ".step: " .. first_err, 3) end
  return done
end

-- After step() has created state for parameters that had none, remember their gradient counts.
function Optimizer._learn_counts(self)
  local list = self._routed_counts
  self._routed_counts = nil
  if list == nil then return end
  for _, a in ipairs(list) do
    local st = self.state[a.p]
    if st ~= nil and a.routed ~= nil then st.expected_grads = a.routed end
  end
end

function Optimizer._arm(self) return false end
function Optimizer._armed_done(self) end

-- Run the optional closure (which re-evaluates the model and returns the loss) with grad enabled.
function Optimizer._closure_loss(self, closure)
  if closure == nil then return nil end
  return torch.enable_grad(closure)
end

-- ---- the one-step-delayed update (issue 6; runtime/host_optim_delay.c) -----------------------------
-- optimizer:delay_update(true) (or the constructor option delayed_update = true): step() of
-- iteration k hands the update of the streamed host parameters (those with an offload handle that
-- take the fused host kernel) to a thread and returns; the next forward and backward read the
-- weights before that update (front copies the engine keeps), and the next step() waits for it
-- first. So iteration k's gradients are taken at the weights after update k-2 and applied to the
-- master after update k-1 (DeepSpeed ZeRO-Offload's delayed parameter update). The gradient
-- tensors go with the update: after step() those parameters' .grad is nil, and the next backward
-- lands in fresh ones. Other parameters (on the device, not streamed) are updated in step() as
-- before. optimizer:flush() waits for the pending update and makes the engine read the masters
-- again; state_dict, load_state_dict, Module state_dict/load_state_dict, io.save and the
-- checkpoint functions flush first. Read or write streamed parameters yourself only after flush().

local live = setmetatable({}, { __mode = "k" }) -- optimizers with a delayed-update object

function Optimizer.delay_update(self, flag)
  local name = getmetatable(self).__name
  if flag ~= nil and type(flag) ~= "boolean" then
    error(("%s.delay_update: expected a boolean, got %s"):format(name, type(flag)), 2)
  end
  flag = flag ~= false
  if flag and self._overlap then
    error(("%s.delay_update: cannot be combined with overlap_with_backward (turn it off first)"):format(name), 2)
  end
  if flag and self._announced then -- a delayed step() would not collect the early updates
    error(("%s.delay_update: a backward announced with last_backward() has not been stepped yet; call "
           .. "step() first"):format(name), 2)
  end
  self:flush(3) -- switching on or off mid-flight finishes the pending update first
  self._delay = flag
  if flag then self:_keep_on_host() end
  return self
end

function Optimizer.delay_update_enabled(self) return self._delay == true end

-- True between a delayed step() and the wait for its update (the next step() or flush()).
function Optimizer.update_pending(self)
  local d = self._delayed_obj
  return d ~= nil and C.rt_delayed_update_pending(d) ~= 0
end

-- Finish the pending delayed update (if any) and take the parameters out of delayed mode: the
-- engine reads the masters again, which now hold every update. A no-op without delayed updates.
function Optimizer.flush(self, level)
  local d = self._delayed_obj
  if d == nil then return self end
  if C.rt_delayed_update_flush(d) ~= 0 then
    error(getmetatable(self).__name .. ".flush: " .. ffi.string(C.rt_last_error()), level or 2)
  end
  return self
end

-- Every optimizer's pending update (Module state_dict / load_state_dict, io.save call it).
function M.flush_all()
  for opt in pairs(live) do opt:flush(3) end
end

-- Only optimizers with an update in flight: for readers that would otherwise race with it (a
-- ramtorch.Linear computing on the CPU straight from its master weights).
function M.flush_pending()
  for opt in pairs(live) do
    if opt:update_pending() then opt:flush(3) end
  end
end

function Optimizer._delay_object(self)
  local d = self._delayed_obj
  if d == nil then
    local box = ffi.new("rt_delayed_update *[1]")
    check(C.rt_delayed_update_new(box))
    -- collected with an update pending: finish it, and say so on stderr if it failed (an error
    -- cannot be raised from a finalizer, and freeing must not lose it silently)
    d = ffi.gc(box[0], function(obj)
      if C.rt_delayed_update_flush(obj) ~= 0 then
        io.stderr:write("ramtorch: a delayed optimizer update collected with the optimizer failed: "
                        .. ffi.string(C.rt_last_error()) .. "\n")
      end
      C.rt_delayed_update_free(obj)
    end)
    self._delayed_obj = d
    live[self] = true
  end
  return d
end

-- step() in delay mode, first: wait for the previous step's update.
function Optimizer._delay_wait(self, level)
  local d = self._delayed_obj
  if d ~= nil and C.rt_delayed_update_wait(d) ~= 0 then
    error(getmetatable(self).__name .. ".step: " .. ffi.string(C.rt_last_error()), level + 1)
  end
end

-- step() in delay mode, last: entries {p = param, add = function(d) -> rc, commit = function()}.
-- Every add is checked before anything is launched; on success the states commit and the
-- parameters hand their gradients over (.grad = nil).
function Optimizer._delay_launch(self, entries, level)
  if #entries == 0 then return end
  local d = self:_delay_object()
  for _, e in ipairs(entries) do
    if e.add(d) ~= 0 then
      local msg = ffi.string(C.rt_last_error())
      C.rt_delayed_update_cancel(d)
      error(getmetatable(self).__name .. ".step: " .. msg, level + 1)
    end
  end
  if C.rt_delayed_update_launch(d) ~= 0 then
    local msg = ffi.string(C.rt_last_error())
    C.rt_delayed_update_cancel(d)
    error(getmetatable(self).__name .. ".step: " .. msg, level + 1)
  end
  for _, e in ipairs(entries) do
    e.commit()
    e.p.grad = nil
  end
end

-- ---- state dicts ------------------------------------------------------------------------------------

-- {state = {[0] = {step = 3, exp_avg = T, ...}, ...}, param_groups = {{lr = ..., params = {0, 1}}, ...}}
-- Tensors in state are the live state tensors (as PyTorch returns references); load_state_dict
-- copies them.
function Optimizer.state_dict(self)
  self:flush(3)
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
  self:flush(3)
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
