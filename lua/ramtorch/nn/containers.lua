-- ramtorch/nn/containers.lua: Sequential, ModuleList and ModuleDict. Children are registered under the
-- names PyTorch uses ("0", "1", ... for Sequential and ModuleList), so state-dict keys match PyTorch's
-- ("layers.0.weight"). Sequential and ModuleList also keep their children as a Lua array, so seq[1] is
-- the first module and ipairs(seq) walks them; change children through register_module, append or
-- set(i, m) (not seq[i] = m) so the names and the array stay in step.
local mod = require("ramtorch.nn.module")

local Module, is_module = mod.Module, mod.is_module

local M = {}

-- Rebuild the array part from the registry order.
local function sync_array(self)
  local i = 1
  while rawget(self, i) ~= nil do
    rawset(self, i, nil)
    i = i + 1
  end
  for j, k in ipairs(self._modules.keys) do rawset(self, j, self._modules.map[k]) end
end

local function indexed_class(name)
  local cls = Module:extend(name)
  local base_index = cls.__index
  -- negative positions count from the end (seq[-1] is the last module)
  cls.__index = function(self, k)
    if type(k) == "number" and k < 0 then
      local n = #self._modules.keys
      return rawget(self, n + k + 1)
    end
    return base_index(self, k)
  end
  function cls:register_module(name_, m)
    Module.register_module(self, name_, m)
    sync_array(self)
  end
  cls.add_module = cls.register_module
  function cls:len() return #self._modules.keys end
  -- Replace the module at 1-based position i (keeping its name).
  function cls:set(i, m)
    local n = #self._modules.keys
    if type(i) ~= "number" or i < 1 or i > n then
      error(("%s.set: position %s out of range 1..%d"):format(name, tostring(i), n), 2)
    end
    if not is_module(m) then error(("%s.set: expected a Module, got %s"):format(name, type(m)), 2) end
    self._modules.map[self._modules.keys[i]] = m
    sync_array(self)
  end
  function cls:append(m)
    if not is_module(m) then error(("%s.append: expected a Module, got %s"):format(name, type(m)), 2) end
    Module.register_module(self, tostring(#self._modules.keys), m)
    sync_array(self)
    return self
  end
  function cls:extend_with(list)
    for _, m in ipairs(list) do self:append(m) end
    return self
  end
  return cls
end

-- ---- Sequential ---------------------------------------------------------------------------------------

-- nn.Sequential(m1, m2, ...), nn.Sequential({m1, m2}), or named: nn.Sequential({{"fc", m1}, {"act", m2}})
local Sequential = indexed_class("Sequential")
M.Sequential = Sequential

function Sequential:__init(...)
  local n = select("#", ...)
  local args = { ... }
  if n == 1 and type(args[1]) == "table" and not is_module(args[1]) then
    local list = args[1]
    if type(list[1]) == "table" and not is_module(list[1]) then
      for i, pair in ipairs(list) do
        if type(pair[1]) ~= "string" or not is_module(pair[2]) then
          error(("Sequential: entry %d: expected {name, Module}"):format(i), 3)
        end
        Module.register_module(self, pair[1], pair[2])
      end
      sync_array(self)
      return
    end
    args, n = list, #list
  end
  for i = 1, n do
    if not is_module(args[i]) then
      error(("Sequential: argument %d is a %s, expected a Module"):format(i, type(args[i])), 3)
    end
    Module.register_module(self, tostring(i - 1), args[i])
  end
  sync_array(self)
end

function Sequential:forward(...)
  local keys, map = self._modules.keys, self._modules.map
  if #keys == 0 then return ... end
  local x = map[keys[1]](...)
  for i = 2, #keys do x = map[keys[i]](x) end
  return x
end

-- ---- ModuleList -----------------------------------------------------------------------------------------

local ModuleList = indexed_class("ModuleList")
M.ModuleList = ModuleList

function ModuleList:__init(list)
  if list ~= nil then
    if type(list) ~= "table" or is_module(list) then
      error("ModuleList: expected a Lua array of modules", 3)
    end
    for i, m in ipairs(list) do
      if not is_module(m) then error(("ModuleList: entry %d is a %s, expected a Module"):format(i, type(m)), 3) end
      Module.register_module(self, tostring(i - 1), m)
    end
    sync_array(self)
  end
end

function ModuleList:forward()
  error("ModuleList has no forward: iterate over it (for i, m in ipairs(list)) in your module's forward", 2)
end

-- ---- ModuleDict -----------------------------------------------------------------------------------------

-- nn.ModuleDict({{"a", m1}, {"b", m2}}) keeps that order; nn.ModuleDict({a = m1, b = m2}) sorts the keys
-- (a Lua table has no order). md.a / md["a"] read a module back.
local ModuleDict = Module:extend("ModuleDict")
M.ModuleDict = ModuleDict

function ModuleDict:__init(entries)
  if entries ~= nil then self:update(entries) end
end

function ModuleDict:update(entries)
  if type(entries) ~= "table" or is_module(entries) then
    error("ModuleDict.update: expected a table of name = Module or an array of {name, Module}", 2)
  end
  if #entries > 0 then
    for i, pair in ipairs(entries) do
      if type(pair) ~= "table" or type(pair[1]) ~= "string" or not is_module(pair[2]) then
        error(("ModuleDict: entry %d: expected {name, Module}"):format(i), 2)
      end
      self:register_module(pair[1], pair[2])
    end
  else
    local keys = {}
    for k in pairs(entries) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      if not is_module(entries[k]) then error(("ModuleDict: '%s' is a %s, expected a Module"):format(k, type(entries[k])), 2) end
      self:register_module(k, entries[k])
    end
  end
  return self
end

function ModuleDict:keys()
  local out = {}
  for i, k in ipairs(self._modules.keys) do out[i] = k end
  return out
end
-- every entry, a module stored under two keys included (PyTorch's _modules.values(); children() lists
-- such a module once)
function ModuleDict:values()
  local out = {}
  for i, k in ipairs(self._modules.keys) do out[i] = self._modules.map[k] end
  return out
end
function ModuleDict:items()
  local i, keys, map = 0, self._modules.keys, self._modules.map
  return function()
    i = i + 1
    local k = keys[i]
    if k ~= nil then return k, map[k] end
  end
end
function ModuleDict:len() return #self._modules.keys end
function ModuleDict:contains(k) return self._modules.map[k] ~= nil end
function ModuleDict:pop(k)
  local m = self._modules.map[k]
  self:register_module(k, nil)
  return m
end
function ModuleDict:forward()
  error("ModuleDict has no forward: look modules up by name in your module's forward", 2)
end

return M
