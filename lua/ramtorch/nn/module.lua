-- ramtorch/nn/module.lua: the Module base class (torch.nn.Module in Lua) and nn.Parameter.
--
-- A module is a Lua table whose metatable is its class. Parameters, buffers and child modules are kept
-- in ordered registries (insertion order, as PyTorch's OrderedDicts) rather than as raw fields, so that
-- `self.weight = nn.Parameter(t)` and `self.fc = nn.Linear(...)` inside __init register them by name
-- (through __newindex) and `self.weight` reads them back (through __index). Names in state dicts and
-- named_parameters() are dotted paths like PyTorch's ("layers.0.weight").
--
--   local MyNet = nn.Module:extend("MyNet")
--   function MyNet:__init(n) self.fc = nn.Linear(n, 2) end
--   function MyNet:forward(x) return self.fc(x) end
--   local net = MyNet(4); local y = net(torch.randn(3, 4))
--
-- Limitation of plain Lua tables: __newindex only sees keys that are not raw fields, so a name first
-- assigned a plain value (self.x = 3) and later a module or parameter is not registered. Assign
-- modules and parameters to fresh names, or call register_module / register_parameter.
local torch = require("ramtorch")

local is_tensor = torch.is_tensor

local M = {}

-- ---- ordered registries ------------------------------------------------------------------------------

local function odict() return { keys = {}, map = {} } end

local function oset(d, k, v)
  if v == nil then
    if d.map[k] ~= nil then
      d.map[k] = nil
      for i, name in ipairs(d.keys) do
        if name == k then table.remove(d.keys, i) break end
      end
    end
    return
  end
  if d.map[k] == nil then d.keys[#d.keys + 1] = k end
  d.map[k] = v
end
M.odict, M.oset = odict, oset

-- ---- Parameter -----------------------------------------------------------------------------------------

-- Tensors marked as parameters (weak keys: identity of the Lua handle). Assigning a marked tensor,
-- or any leaf tensor that requires grad, to a module field registers it as a parameter.
local param_marks = setmetatable({}, { __mode = "k" })

-- nn.Parameter(t, requires_grad=true): t as a leaf that requires grad (detached first if it came out of
-- an op that recorded a graph), marked as a parameter.
function M.Parameter(t, requires_grad)
  if not is_tensor(t) then
    error(("nn.Parameter: expected a Tensor, got %s"):format(type(t)), 2)
  end
  if not t.is_leaf then t = t:detach() end
  if requires_grad == nil then requires_grad = true end
  if requires_grad and not t:is_floating_point() then
    error(("nn.Parameter: only floating-point tensors can require gradients, got %s (pass requires_grad=false)")
          :format(tostring(t.dtype)), 2)
  end
  t:requires_grad_(requires_grad)
  param_marks[t] = true
  return t
end

function M.is_parameter(t) return is_tensor(t) and param_marks[t] == true end

local function looks_like_parameter(v)
  return param_marks[v] == true or (v.requires_grad and v.is_leaf)
end

-- ---- the class system ------------------------------------------------------------------------------

local Module = { __name = "Module", __is_module_class = true }
M.Module = Module

local function is_module(x)
  if type(x) ~= "table" then return false end
  local mt = getmetatable(x)
  return type(mt) == "table" and mt.__is_module_class == true and rawget(x, "_modules") ~= nil
end
M.is_module = is_module

-- Instance field lookup: registered parameters, buffers and modules, then the class chain.
local function instance_index(self, k)
  local p = rawget(self, "_parameters").map[k]
  if p ~= nil then return p end
  local b = rawget(self, "_buffers").map[k]
  if b ~= nil then return b end
  local m = rawget(self, "_modules").map[k]
  if m ~= nil then return m end
  return getmetatable(self)[k]
end

local function instance_newindex(self, k, v)
  local params, buffers, modules = rawget(self, "_parameters"), rawget(self, "_buffers"), rawget(self, "_modules")
  if is_module(v) then
    oset(params, k, nil)
    oset(buffers, k, nil)
    self:register_module(k, v)
  elseif is_tensor(v) then
    -- PyTorch raises a TypeError here: replacing a parameter by a plain tensor would silently stop
    -- training it, and a child module name would stay registered behind a shadowing raw field
    if params.map[k] ~= nil and not looks_like_parameter(v) then
      error(("cannot assign a Tensor that is not a parameter as parameter '%s' of %s (use nn.Parameter(t), or assign nil first)")
            :format(tostring(k), self:_get_name()), 2)
    end
    if modules.map[k] ~= nil and not looks_like_parameter(v) then
      error(("cannot assign a Tensor as child module '%s' of %s (a Module or nil expected)")
            :format(tostring(k), self:_get_name()), 2)
    end
    if params.map[k] ~= nil or (buffers.map[k] == nil and looks_like_parameter(v)) then
      oset(modules, k, nil)
      self:register_parameter(k, v)
    elseif buffers.map[k] ~= nil then
      self:register_buffer(k, v, not self._non_persistent[k])
    else
      rawset(self, k, v)
    end
  elseif v == nil and (params.map[k] ~= nil or buffers.map[k] ~= nil or modules.map[k] ~= nil) then
    oset(params, k, nil)
    oset(buffers, k, nil)
    oset(modules, k, nil)
  else
    if params.map[k] ~= nil or buffers.map[k] ~= nil or modules.map[k] ~= nil then
      error(("cannot assign a %s to '%s' of %s: it is a registered %s (assign nil first to remove it)")
            :format(type(v), tostring(k), self:_get_name(),
                    params.map[k] ~= nil and "parameter" or buffers.map[k] ~= nil and "buffer" or "module"), 2)
    end
    rawset(self, k, v)
  end
end

local function instance_call(self, ...) return self:forward(...) end
local function instance_tostring(self) return self:_repr(0) end

Module.__index = instance_index
Module.__newindex = instance_newindex
Module.__call = instance_call
Module.__tostring = instance_tostring

-- Create an instance of class cls with empty registries, then run cls.__init.
local function construct(cls, ...)
  local self = {
    _parameters = odict(),
    _buffers = odict(),
    _modules = odict(),
    _non_persistent = {},
    training = true,
  }
  setmetatable(self, cls)
  local init = cls.__init
  if init then init(self, ...) end
  return self
end

local class_mt = {
  __call = function(cls, ...) return construct(cls, ...) end,
  __tostring = function(cls) return ("<class nn.%s>"):format(rawget(cls, "__name") or "?") end,
}

-- cls = Parent:extend("Name", methods?): a subclass. Its instances are called as cls(...) which runs
-- cls:__init(...); cls.super is the parent class (call cls.super.__init(self, ...) to chain).
function Module.extend(parent, name, methods)
  if type(parent) ~= "table" or not rawget(parent, "__is_module_class") then
    error("extend: call it on a Module class, as nn.Module:extend(\"Name\")", 2)
  end
  if type(name) ~= "string" then
    error(("extend: expected a class name string, got %s"):format(type(name)), 2)
  end
  local cls = {}
  -- metamethods are looked up raw in the metatable, so every class carries its own copies
  for _, mm in ipairs({ "__index", "__newindex", "__call", "__tostring", "__is_module_class", "__len" }) do
    cls[mm] = parent[mm]
  end
  cls.__name = name
  cls.super = parent
  if methods then
    for k, v in pairs(methods) do cls[k] = v end
  end
  local mt = { __index = parent, __call = class_mt.__call, __tostring = class_mt.__tostring }
  return setmetatable(cls, mt)
end

setmetatable(Module, class_mt)

function Module.__init(self) end

function Module.forward(self)
  error(("%s: forward is not implemented (define function %s:forward(...))"):format(self:_get_name(), self:_get_name()), 2)
end

function Module._get_name(self) return getmetatable(self).__name or "Module" end
function Module.is_a(self, cls)
  local c = getmetatable(self)
  while c do
    if c == cls then return true end
    c = rawget(c, "super")
  end
  return false
end

-- ---- registration -----------------------------------------------------------------------------------

local function check_name(self, what, name, level)
  if type(name) ~= "string" or name == "" or name:find(".", 1, true) then
    error(("%s: name must be a non-empty string without '.', got %s"):format(what, tostring(name)), level + 1)
  end
  if rawget(self, name) ~= nil then
    error(("%s: attribute '%s' already exists on %s"):format(what, name, self:_get_name()), level + 1)
  end
end

function Module.register_parameter(self, name, t)
  check_name(self, "register_parameter", name, 2)
  if t == nil then
    oset(self._parameters, name, nil)
    return
  end
  if not is_tensor(t) then
    error(("register_parameter: expected a Tensor or nil for '%s', got %s"):format(name, type(t)), 2)
  end
  if not t.is_leaf then
    error(("register_parameter: '%s' is not a leaf tensor (it came out of an op); use nn.Parameter(t:detach())")
          :format(name), 2)
  end
  param_marks[t] = true
  oset(self._buffers, name, nil)
  oset(self._modules, name, nil)
  oset(self._parameters, name, t)
end

function Module.register_buffer(self, name, t, persistent)
  check_name(self, "register_buffer", name, 2)
  if t ~= nil and not is_tensor(t) then
    error(("register_buffer: expected a Tensor or nil for '%s', got %s"):format(name, type(t)), 2)
  end
  if self._parameters.map[name] ~= nil then
    error(("register_buffer: '%s' is already a parameter of %s"):format(name, self:_get_name()), 2)
  end
  oset(self._modules, name, nil)
  oset(self._buffers, name, t)
  self._non_persistent[name] = (persistent == false) or nil
end

function Module.register_module(self, name, m)
  check_name(self, "register_module", name, 2)
  if m ~= nil and not is_module(m) then
    error(("register_module: expected a Module or nil for '%s', got %s"):format(name, type(m)), 2)
  end
  oset(self._parameters, name, nil)
  oset(self._buffers, name, nil)
  oset(self._modules, name, m)
end
Module.add_module = Module.register_module

function Module.get_submodule(self, target)
  if target == "" or target == nil then return self end
  local m = self
  for part in target:gmatch("[^.]+") do
    local c = m._modules.map[part]
    if c == nil then
      error(("get_submodule: %s has no submodule '%s' (looking for '%s')"):format(m:_get_name(), part, target), 2)
    end
    m = c
  end
  return m
end

function Module.get_parameter(self, target)
  local mod, name = target:match("^(.*)%.([^.]+)$")
  local m = mod and self:get_submodule(mod) or self
  local p = m._parameters.map[name or target]
  if p == nil then error(("get_parameter: no parameter '%s'"):format(target), 2) end
  return p
end

-- ---- traversal ----------------------------------------------------------------------------------------

-- Array of {name, module} for self and every descendant (pre-order), each module once.
local function collect_modules(self, prefix, out, seen)
  if seen[self] then return out end
  seen[self] = true
  out[#out + 1] = { prefix, self }
  local mods = self._modules
  for _, k in ipairs(mods.keys) do
    local child = mods.map[k]
    collect_modules(child, prefix == "" and k or (prefix .. "." .. k), out, seen)
  end
  return out
end

local function iter_pairs(list)
  local i = 0
  return function()
    i = i + 1
    local e = list[i]
    if e then return e[1], e[2] end
  end
end

-- Array of {name, tensor} from registry `field` (_parameters or _buffers) across modules.
local function collect_members(self, field, prefix, recurse, only_persistent)
  local out, seen = {}, {}
  local mods = recurse ~= false and collect_modules(self, prefix or "", {}, {}) or { { prefix or "", self } }
  for _, e in ipairs(mods) do
    local mprefix, m = e[1], e[2]
    local reg = m[field]
    for _, k in ipairs(reg.keys) do
      local t = reg.map[k]
      if not (only_persistent and m._non_persistent[k]) then
        -- shared tensors are listed once (PyTorch's remove_duplicate), by handle and by C tensor
        local key = tostring(t.p)
        if not seen[key] then
          seen[key] = true
          out[#out + 1] = { mprefix == "" and k or (mprefix .. "." .. k), t }
        end
      end
    end
  end
  return out
end

-- for name, p in m:named_parameters() do ... end
function Module.named_parameters(self, prefix, recurse)
  return iter_pairs(collect_members(self, "_parameters", prefix, recurse))
end
-- Array of parameter tensors (for optimizers: optim.AdamW(model:parameters(), ...)).
function Module.parameters(self, recurse)
  local out = {}
  for _, e in ipairs(collect_members(self, "_parameters", "", recurse)) do out[#out + 1] = e[2] end
  return out
end
function Module.named_buffers(self, prefix, recurse)
  return iter_pairs(collect_members(self, "_buffers", prefix, recurse))
end
function Module.buffers(self, recurse)
  local out = {}
  for _, e in ipairs(collect_members(self, "_buffers", "", recurse)) do out[#out + 1] = e[2] end
  return out
end
-- A child registered under several names is listed once, under its first (PyTorch's memo).
local function child_list(self)
  local list, seen = {}, {}
  for _, k in ipairs(self._modules.keys) do
    local m = self._modules.map[k]
    if not seen[m] then
      seen[m] = true
      list[#list + 1] = { k, m }
    end
  end
  return list
end
function Module.named_children(self) return iter_pairs(child_list(self)) end
function Module.children(self)
  local out = {}
  for _, e in ipairs(child_list(self)) do out[#out + 1] = e[2] end
  return out
end
function Module.named_modules(self, prefix)
  return iter_pairs(collect_modules(self, prefix or "", {}, {}))
end
function Module.modules(self)
  local out = {}
  for _, e in ipairs(collect_modules(self, "", {}, {})) do out[#out + 1] = e[2] end
  return out
end

-- fn(m) on every descendant (children first) and then self, as PyTorch; returns self.
function Module.apply(self, fn)
  for _, m in ipairs(self:children()) do m:apply(fn) end
  fn(self)
  return self
end

-- ---- device and dtype -------------------------------------------------------------------------------

-- Parse to()'s arguments: a device ("cuda", "cuda:1", 0, "cpu"), a dtype, both, a table {device=,
-- dtype=}, or a tensor (its device and dtype).
local function parse_to(a, b)
  local core = require("ramtorch.core")
  local dev, dt
  local function take(x)
    if x == nil then return end
    if is_tensor(x) then
      dev, dt = x.device, x.dtype
    elseif core.is_dtype(x) then
      dt = x
    elseif type(x) == "table" then
      if x.device ~= nil then dev = x.device end
      if x.dtype ~= nil then dt = core.dtype(x.dtype, 4) end
    elseif pcall(core.device_code, x) then
      dev = x
    elseif type(x) == "string" and pcall(core.dtype, x) then
      dt = core.dtype(x)
    else
      error(("to: expected a device (\"cpu\", \"cuda\", \"cuda:N\", N), a dtype or a table {device=, dtype=}, got %s")
            :format(tostring(x)), 4)
    end
  end
  take(a)
  take(b)
  if dev ~= nil then dev = core.device_name(core.device_code(dev, 4)) end
  if dt ~= nil and not dt.is_floating_point then
    error(("to: nn.Module.to only accepts floating point dtypes, got %s"):format(tostring(dt)), 4)
  end
  return dev, dt
end
M.parse_to = parse_to

-- Convert one tensor as Module.to does: dtype only for floating tensors; requires_grad, the parameter
-- mark and the gradient carried over. Returns the same handle when nothing changes. memo (optional)
-- maps a C tensor to its converted tensor so tied weights stay tied (it also keeps the old handles
-- alive, so a freed address cannot be reused for a false hit).
local function convert(t, dev, dt, memo)
  local key = memo and tostring(t.p)
  if memo and memo[key] then return memo[key].new end
  local want_dt = (dt ~= nil and t:is_floating_point() and t.dtype ~= dt) and dt or nil
  local want_dev = (dev ~= nil and t.device ~= dev) and dev or nil
  local r = t
  if want_dt ~= nil or want_dev ~= nil then
    local g = t.grad
    r = torch.no_grad(function() return t:detach():to({ device = want_dev, dtype = want_dt }) end)
    if t.requires_grad then r:requires_grad_(true) end
    if param_marks[t] then param_marks[r] = true end
    if g ~= nil then r.grad = convert(g, dev, dt) end
  end
  if memo then memo[key] = { old = t, new = r } end
  return r
end
M.convert_tensor = convert

-- Move/convert this module's own parameters and buffers (not the children). Modules that keep their
-- parameters elsewhere (ramtorch.Linear keeps them in host memory) override this.
function Module._to_own(self, dev, dt, memo)
  for _, field in ipairs({ "_parameters", "_buffers" }) do
    local reg = self[field]
    for _, k in ipairs(reg.keys) do reg.map[k] = convert(reg.map[k], dev, dt, memo) end
  end
end

-- A pending delayed optimizer update (optim's delay_update) writes the parameters: finish it before
-- reading them (state_dict, load_state_dict, to).
local function flush_optimizers()
  local o = package.loaded["ramtorch.optim.optimizer"]
  if o ~= nil then o.flush_all() end
end

-- m:to("cuda"), m:to(torch.bfloat16), m:to("cuda", torch.bfloat16), m:to({device=, dtype=}).
-- Tensors are replaced by converted ones (handles change): build optimizers after moving the model.
function Module.to(self, a, b)
  local dev, dt = parse_to(a, b)
  flush_optimizers() -- the converted copies are made from the masters
  local memo = {}
  for _, m in ipairs(self:modules()) do m:_to_own(dev, dt, memo) end
  return self
end
function Module.cpu(self) return self:to("cpu") end
function Module.cuda(self, i) return self:to(i and ("cuda:" .. i) or "cuda") end
function Module.float(self) return self:to(torch.float32) end
function Module.double(self) return self:to(torch.float64) end
function Module.half(self) return self:to(torch.float16) end
function Module.bfloat16(self) return self:to(torch.bfloat16) end

-- ---- modes and gradients ----------------------------------------------------------------------------

function Module.train(self, mode)
  if mode == nil then mode = true end
  if type(mode) ~= "boolean" then error(("train: expected a boolean mode, got %s"):format(type(mode)), 2) end
  -- through each child's train(), as PyTorch, so that a subclass overriding train() sees the call
  rawset(self, "training", mode)
  for _, m in ipairs(self:children()) do m:train(mode) end
  return self
end
function Module.eval(self) return self:train(false) end

function Module.requires_grad_(self, flag)
  if flag == nil then flag = true end
  for _, p in ipairs(self:parameters()) do p:requires_grad_(flag) end
  return self
end

-- set_to_none (default true, like PyTorch): drop the gradients; false: fill them with zeros.
function Module.zero_grad(self, set_to_none)
  if set_to_none == nil then set_to_none = true end
  for _, p in ipairs(self:parameters()) do
    if set_to_none then
      p.grad = nil
    else
      local g = p.grad
      if g ~= nil then g:zero_() end
    end
  end
end

-- ---- state dicts -------------------------------------------------------------------------------------

-- A state dict is a plain table name -> tensor whose metatable keeps the insertion order; iterate in
-- order with nn.utils.state_dict_keys(sd) (pairs() gives an arbitrary order).
local sd_mt_key = {}
local function new_state_dict()
  local keys = {}
  return setmetatable({}, { [sd_mt_key] = keys, __name = "state_dict" }), keys
end

function M.state_dict_keys(sd)
  local out, seen = {}, {}
  local mt = getmetatable(sd)
  if type(mt) == "table" and mt[sd_mt_key] then
    for _, k in ipairs(mt[sd_mt_key]) do
      if sd[k] ~= nil and not seen[k] then
        seen[k] = true
        out[#out + 1] = k
      end
    end
  end
  -- keys added by hand after state_dict() (or a plain table): sorted, after the ordered ones
  local extra = {}
  for k in pairs(sd) do
    if not seen[k] then extra[#extra + 1] = k end
  end
  table.sort(extra, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(extra) do out[#out + 1] = k end
  return out
end

-- state_dict({prefix=, keep_vars=}): parameters and persistent buffers, detached (sharing storage).
function Module.state_dict(self, opts)
  flush_optimizers()
  opts = opts or {}
  local prefix = opts.prefix or ""
  local sd, keys = new_state_dict()
  -- every path to a module, as PyTorch (a module used twice appears under both names)
  local mods = {}
  local function walk(m, p)
    mods[#mods + 1] = { p, m }
    for _, k in ipairs(m._modules.keys) do walk(m._modules.map[k], p == "" and k or (p .. "." .. k)) end
  end
  walk(self, "")
  for _, e in ipairs(mods) do
    local mprefix, m = e[1], e[2]
    local base = prefix .. (mprefix == "" and "" or (mprefix .. "."))
    for _, field in ipairs({ "_parameters", "_buffers" }) do
      local reg = m[field]
      for _, k in ipairs(reg.keys) do
        if not (field == "_buffers" and m._non_persistent[k]) then
          local t = reg.map[k]
          local name = base .. k
          if sd[name] == nil then keys[#keys + 1] = name end
          sd[name] = opts.keep_vars and t or t:detach()
        end
      end
    end
  end
  return sd
end

local function shape_str(s) return "[" .. table.concat(s, ", ") .. "]" end
local function quoted(list)
  local q = {}
  for i, k in ipairs(list) do q[i] = '"' .. k .. '"' end
  return table.concat(q, ", ")
end

-- load_state_dict(sd, {strict=true}): copy values (no autograd) into this module's parameters and
-- persistent buffers, converting dtype and device. Raises one error listing every missing key,
-- unexpected key and shape mismatch (shape mismatches raise even when strict is false). Returns
-- {missing_keys=, unexpected_keys=}.
function Module.load_state_dict(self, sd, opts)
  flush_optimizers()
  if type(sd) ~= "table" then error(("load_state_dict: expected a table name -> Tensor, got %s"):format(type(sd)), 2) end
  local strict = true
  if type(opts) == "boolean" then strict = opts
  elseif type(opts) == "table" and opts.strict ~= nil then strict = opts.strict end
  local own = self:state_dict({ keep_vars = true })
  local own_keys = M.state_dict_keys(own)
  local missing, unexpected, mismatch, bad_type = {}, {}, {}, {}
  for _, k in ipairs(own_keys) do
    local v = sd[k]
    if v == nil then
      missing[#missing + 1] = k
    elseif not is_tensor(v) then
      bad_type[#bad_type + 1] = ('value for "%s" is a %s, expected a Tensor'):format(k, type(v))
    else
      local a, b = v.shape, own[k].shape
      local same = #a == #b
      for i = 1, #a do if a[i] ~= b[i] then same = false end end
      if not same then
        mismatch[#mismatch + 1] = ("size mismatch for %s: copying a param with shape %s from checkpoint, the shape in current model is %s.")
          :format(k, shape_str(a), shape_str(b))
      end
    end
  end
  for _, k in ipairs(M.state_dict_keys(sd)) do
    if own[k] == nil then unexpected[#unexpected + 1] = k end
  end
  local errs = {}
  if strict then
    if #missing > 0 then errs[#errs + 1] = ("Missing key(s) in state_dict: %s."):format(quoted(missing)) end
    if #unexpected > 0 then errs[#errs + 1] = ("Unexpected key(s) in state_dict: %s."):format(quoted(unexpected)) end
  end
  for _, e in ipairs(mismatch) do errs[#errs + 1] = e end
  for _, e in ipairs(bad_type) do errs[#errs + 1] = e end
  if #errs > 0 then
    error(("Error(s) in loading state_dict for %s:\n\t%s"):format(self:_get_name(), table.concat(errs, "\n\t")), 2)
  end
  torch.no_grad(function()
    for _, k in ipairs(own_keys) do
      local v = sd[k]
      if v ~= nil then own[k]:copy_(v) end
    end
  end)
  return { missing_keys = missing, unexpected_keys = unexpected }
end

-- ---- printing ----------------------------------------------------------------------------------------------

-- One-line description inside the parentheses (Linear: "in_features=4, out_features=2, bias=True").
function Module.extra_repr(self) return "" end

function Module._repr(self, indent)
  local name = self:_get_name()
  local extra = self:extra_repr()
  local keys = self._modules.keys
  if #keys == 0 then return name .. "(" .. extra .. ")" end
  local pad = string.rep("  ", indent + 1)
  local lines = { name .. "(" }
  if extra ~= "" then lines[#lines + 1] = pad .. extra end
  for _, k in ipairs(keys) do
    lines[#lines + 1] = pad .. "(" .. k .. "): " .. self._modules.map[k]:_repr(indent + 1)
  end
  lines[#lines + 1] = string.rep("  ", indent) .. ")"
  return table.concat(lines, "\n")
end

-- Python's repr of booleans and numbers, for extra_repr strings.
function M.pyrepr(v)
  if v == true then return "True" end
  if v == false then return "False" end
  if v == nil then return "None" end
  if type(v) == "number" then
    if v == math.floor(v) and math.abs(v) < 1e15 then return ("%d"):format(v) end
    return ("%g"):format(v)
  end
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = M.pyrepr(x) end
    return "(" .. table.concat(parts, ", ") .. (#parts == 1 and ",)" or ")")
  end
  return tostring(v)
end

return M
