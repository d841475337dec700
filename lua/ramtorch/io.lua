-- ramtorch/io.lua: saving and loading tensors in the safetensors format (huggingface/safetensors), so
-- weights move to and from PyTorch and the Hugging Face ecosystem. torch.save / torch.load call these.
--
--   io.save(state_dict, path, metadata)   state_dict: {name = Tensor}; metadata: {key = string}
--   local sd, meta = io.load(path, {device = "cuda"})
--   local f = io.safe_open(path)          lazy reading: f:keys(), f:get_tensor(name), f:metadata()
--
-- The C side validates every file completely and writes atomically (temporary file, fsync, rename).
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local ffi, C = rffi.ffi, rffi.C

local M = {}

local function cdata_desc(x)
  if type(x) == "cdata" then return tostring(ffi.typeof(x)) end
  return type(x)
end

-- ---- save ----------------------------------------------------------------------------------------

function M.save(state_dict, path, metadata)
  -- a pending delayed optimizer update (optim's delay_update) may still be writing the tensors
  local o = package.loaded["ramtorch.optim.optimizer"]
  if o ~= nil then o.flush_all() end
  if type(state_dict) ~= "table" then
    error(("save: expected a table of name -> Tensor (a state_dict), got %s"):format(cdata_desc(state_dict)), 2)
  end
  if type(path) ~= "string" or path == "" then
    error(("save: expected a file path string, got %s"):format(tostring(path)), 2)
  end
  local names = {}
  for k, v in pairs(state_dict) do
    if type(k) ~= "string" then
      error(("save: state_dict keys must be strings, got a %s key (%s)"):format(type(k), tostring(k)), 2)
    end
    if not tensor.is_tensor(v) then
      error(("save: state_dict[%q] must be a Tensor, got %s"):format(k, cdata_desc(v)), 2)
    end
    names[#names + 1] = k
  end
  table.sort(names)
  local n = #names
  local cnames = ffi.new("const char*[?]", n + 1)
  local ctensors = ffi.new("rt_tensor*[?]", n + 1)
  for i, k in ipairs(names) do
    cnames[i - 1] = k -- the Lua strings stay alive in `names` during the call
    ctensors[i - 1] = state_dict[k].p
  end
  local keys, values = {}, {}
  if metadata ~= nil then
    if type(metadata) ~= "table" then
      error(("save: metadata must be a table of string -> string, got %s"):format(type(metadata)), 2)
    end
    for k, v in pairs(metadata) do
      if type(k) ~= "string" then
        error(("save: metadata keys must be strings, got a %s key"):format(type(k)), 2)
      end
      local tv = type(v)
      if tv == "number" then
        -- tostring keeps 14 digits: 1/3 would not read back; %.17g round-trips every double
        local s = tostring(v)
        if v == v and tonumber(s) ~= v then s = ("%.17g"):format(v) end
        v = s
      elseif tv == "boolean" then
        v = tostring(v)
      elseif tv ~= "string" then
        error(("save: metadata[%q] must be a string (or a number or boolean), got a %s"):format(k, tv), 2)
      end
      keys[#keys + 1] = k
      values[k] = v
    end
    table.sort(keys)
  end
  local nm = #keys
  local ckeys = ffi.new("const char*[?]", nm + 1)
  local cvals = ffi.new("const char*[?]", nm + 1)
  local vals = {}
  for i, k in ipairs(keys) do
    vals[i] = values[k]
    ckeys[i - 1] = k
    cvals[i - 1] = vals[i]
  end
  -- The strings behind the pointers stay reachable (state_dict, metadata, vals) and nothing
  -- allocates between filling the arrays and the call, so the GC cannot move or free them.
  local rc = C.rt_safetensors_save(path, n, cnames, ctensors, nm, ckeys, cvals)
  if rc ~= 0 then core.raise(2) end
end

-- ---- load ----------------------------------------------------------------------------------------

local File = {}
File.__index = File

local function open_file(path, level)
  if type(path) ~= "string" then
    error(("load: expected a file path string, got %s"):format(tostring(path)), level + 1)
  end
  local box = ffi.new("rt_safetensors*[1]")
  if C.rt_safetensors_open(path, box) ~= 0 then core.raise(level + 1) end
  local h = ffi.gc(box[0], C.rt_safetensors_close)
  return setmetatable({ handle = h, path = path }, File)
end

-- A lazily read safetensors file (like safetensors.safe_open): keys(), get_tensor(name), metadata().
function M.safe_open(path) return open_file(path, 2) end

function File:_check()
  if self.handle == nil then error("safe_open: the file " .. self.path .. " is closed", 3) end
end

function File:keys()
  self:_check()
  local out = {}
  for i = 0, tonumber(C.rt_safetensors_count(self.handle)) - 1 do
    out[#out + 1] = ffi.string(C.rt_safetensors_name(self.handle, i))
  end
  return out
end

function File:metadata()
  self:_check()
  local out = {}
  for i = 0, tonumber(C.rt_safetensors_metadata_count(self.handle)) - 1 do
    out[ffi.string(C.rt_safetensors_metadata_key(self.handle, i))] =
      ffi.string(C.rt_safetensors_metadata_value(self.handle, i))
  end
  return out
end

local idx_box = ffi.new("int64_t[1]")
local function get_index(self, i, opts, level)
  if C.rt_safetensors_get(self.handle, i, core.box) ~= 0 then core.raise(level + 1) end
  local t = core.own(core.box[0])
  if opts and opts.device ~= nil then
    local dev = core.device_code(opts.device, level + 1)
    if dev ~= -1 then t = t:to(dev) end
  end
  return t
end

function File:get_tensor(name, opts)
  self:_check()
  if type(name) ~= "string" then error(("get_tensor: expected a tensor name, got %s"):format(type(name)), 2) end
  if C.rt_safetensors_find(self.handle, name, idx_box) ~= 0 then core.raise(2) end
  return get_index(self, idx_box[0], opts, 2)
end

function File:close()
  if self.handle ~= nil then
    C.rt_safetensors_close(ffi.gc(self.handle, nil))
    self.handle = nil
  end
end

-- load(path, opts) -> (table name -> Tensor, metadata table). opts.device moves the tensors there.
function M.load(path, opts)
  local f = open_file(path, 2)
  local out = {}
  for i = 0, tonumber(C.rt_safetensors_count(f.handle)) - 1 do
    out[ffi.string(C.rt_safetensors_name(f.handle, i))] = get_index(f, i, opts, 2)
  end
  local meta = f:metadata()
  f:close()
  return out, meta
end

return M
