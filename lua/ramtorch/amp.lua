-- ramtorch/amp.lua: automatic mixed precision (torch.amp): autocast regions and the GradScaler.
--
--   local amp = require("ramtorch.amp")                       -- also torch.amp
--   local loss = amp.autocast("bf16", function() return F.cross_entropy(model(x), y) end)
--   amp.autocast("cuda", {dtype = "f16"}, fn, ...)             -- PyTorch's torch.autocast("cuda", ...)
--   amp.autocast("bf16", {enabled = false}, fn, ...)           -- a region with autocast off
--
--   local scaler = amp.GradScaler()                            -- float16: scale the loss, skip bad steps
--   scaler:scale(loss):backward(); scaler:step(opt); scaler:update()
--
-- Inside a region each op casts its floating inputs as PyTorch's autocast lists say (ramtorch/autocast.lua
-- has the lists and the casts): matmul, linear and attention in the autocast dtype, softmax, norms,
-- losses, sum, exp, log, pow in float32, the rest in the dtype of its inputs. Regions nest (the inner
-- one wins for the device types it names and the outer state comes back on exit) and apply to the
-- device types "cpu" and "cuda" (both unless device_type names one). The streamed ramtorch.Linear
-- (offload.linear) computes in the region's dtype and sends an f32 master across the bus as its bf16
-- (or f16) shadow (runtime/offload_linear.c).
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local ac = require("ramtorch.autocast")
local ffi = require("ramtorch.ffi").ffi

local is_tensor = tensor.is_tensor

local M = {}

-- ---- autocast ------------------------------------------------------------------------------------------

local DEFAULT_DTYPE = { cpu = "bfloat16", cuda = "float16" } -- PyTorch's defaults per device type

local function device_type_of(s)
  if s == "cpu" then return "cpu" end
  if s == "cuda" or (type(s) == "string" and s:match("^cuda:%d+$")) then return "cuda" end
  return nil
end

local function low_code(dtype, level)
  if not core.is_dtype(dtype) and type(dtype) ~= "string" then -- named here, not by core.dtype's message
    error(("amp.autocast: expected a dtype (bfloat16 or float16), got %s"):format(tensor.describe(dtype)), level + 1)
  end
  local d = core.dtype(dtype, level + 1)
  if d.name ~= "bfloat16" and d.name ~= "float16" then
    error(("amp.autocast: expected bfloat16 or float16, got %s"):format(tostring(d)), level + 1)
  end
  return d.code
end

-- Parses (what, [opts], fn, ...): what is a dtype ("bf16", torch.float16, ...), a device type ("cpu",
-- "cuda") or an options table {dtype=, device_type=, enabled=, cache_enabled=}.
local function parse(what, second, ...)
  local opts, fn, nargs = {}, nil, 0
  local function merge(t)
    for k, v in pairs(t) do opts[k] = v end
  end
  if type(what) == "table" and not core.is_dtype(what) then
    merge(what)
  elseif device_type_of(what) then
    opts.device_type = device_type_of(what)
  elseif what ~= nil then
    opts.dtype = what
  end
  if type(second) == "table" and not core.is_dtype(second) then
    merge(second)
    fn = ...
    nargs = 1
  else
    fn = second
  end
  if opts.device_type ~= nil and device_type_of(opts.device_type) == nil then
    error(("amp.autocast: device_type must be \"cpu\" or \"cuda\", got %s"):format(tostring(opts.device_type)), 3)
  end
  if type(fn) ~= "function" then
    error(("amp.autocast: expected a function to run, got %s"):format(type(fn)), 3)
  end
  return opts, fn, nargs
end

local function run(token, ok, ...)
  ac.exit(token)
  if not ok then error((...), 0) end
  return ...
end

-- autocast(dtype | device_type | opts, [opts], fn, ...) runs fn(...) in an autocast region and returns
-- its results. opts: dtype (default bfloat16; float16 for device_type "cuda" as in PyTorch), device_type
-- ("cpu" or "cuda"; both when absent), enabled (false: autocast off for those device types inside),
-- cache_enabled (default true: a parameter is cast once per outermost region).
function M.autocast(what, second, ...)
  local opts, fn, skip = parse(what, second, ...)
  local dt = opts.device_type and device_type_of(opts.device_type)
  local code = -1
  if opts.enabled ~= false then code = low_code(opts.dtype or DEFAULT_DTYPE[dt or "cpu"], 2) end
  local cpu, cuda
  if dt == nil or dt == "cpu" then cpu = code end
  if dt == nil or dt == "cuda" then cuda = code end
  local use_cache = nil
  if opts.cache_enabled ~= nil then use_cache = opts.cache_enabled and true or false end
  local token = ac.enter(cpu, cuda, use_cache)
  if skip == 1 then return run(token, pcall(fn, select(2, ...))) end
  return run(token, pcall(fn, ...))
end

-- autocast_fn(what, [opts], fn) -> a function that runs fn in that region (PyTorch's @autocast()).
function M.autocast_fn(what, second, third)
  local _, fn = parse(what, second, third)
  if type(second) == "table" and not core.is_dtype(second) then
    return function(...) return M.autocast(what, second, fn, ...) end
  end
  return function(...) return M.autocast(what, fn, ...) end
end

-- is_autocast_enabled([device_type]): any device type when none is given.
function M.is_autocast_enabled(device_type)
  if device_type == nil then return ac.code_for("cpu") >= 0 or ac.code_for("cuda") >= 0 end
  return ac.code_for(device_type_of(device_type) or "cuda") >= 0
end

-- get_autocast_dtype([device_type]) -> the dtype of the region, or nil outside autocast. Without a device
-- type: CUDA's when on, else the CPU's.
function M.get_autocast_dtype(device_type)
  local c
  if device_type == nil then
    c = ac.code_for("cuda")
    if c < 0 then c = ac.code_for("cpu") end
  else
    c = ac.code_for(device_type_of(device_type) or "cuda")
  end
  if c < 0 then return nil end
  return core.dtypes_by_code[c]
end

M.clear_autocast_cache = ac.clear_cache

-- ---- GradScaler ---------------------------------------------------------------------------------------------
-- PyTorch's torch.amp.GradScaler: the loss is multiplied by a scale before backward so that small float16
-- gradients do not flush to zero; step() unscales the gradients (unless unscale_ was called), skips the
-- optimizer step when one of them is inf or NaN, and update() halves the scale after such a step or
-- doubles it after growth_interval clean steps. The scale is a host number (float32 arithmetic as in
-- PyTorch); the inf check reduces each gradient where it lives (max and min propagate NaN) and reads one
-- value per device. Gradients of streamed parameters live on the host and are unscaled there.

local READY, UNSCALED, STEPPED = 0, 1, 2

local GradScaler = {}
GradScaler.__index = GradScaler
M.GradScaler_class = GradScaler

local function f32(x) return tonumber(ffi.new("float", x)) end

-- GradScaler([device], {init_scale=2^16, growth_factor=2, backoff_factor=0.5, growth_interval=2000,
--                       enabled=true})
function M.GradScaler(device, opts)
  if type(device) == "table" then device, opts = nil, device end
  opts = opts or {}
  if device ~= nil and device_type_of(device) == nil then
    error(("amp.GradScaler: expected a device (\"cuda\" or \"cpu\"), got %s"):format(tostring(device)), 2)
  end
  local self = setmetatable({}, GradScaler)
  self.device = device or "cuda"
  self._enabled = opts.enabled ~= false
  self._init_scale = opts.init_scale or 65536.0
  self._growth_factor = opts.growth_factor or 2.0
  self._backoff_factor = opts.backoff_factor or 0.5
  self._growth_interval = opts.growth_interval or 2000
  if type(self._init_scale) ~= "number" or not (self._init_scale > 0) then
    error(("amp.GradScaler: init_scale must be a positive number, got %s"):format(tostring(opts.init_scale)), 2)
  end
  if type(self._growth_factor) ~= "number" or not (self._growth_factor > 1) then
    error(("amp.GradScaler: growth_factor should be > 1, got %s"):format(tostring(opts.growth_factor)), 2)
  end
  local b = self._backoff_factor
  if type(b) ~= "number" or not (b > 0 and b < 1) then
    error(("amp.GradScaler: backoff_factor should be < 1 and > 0, got %s"):format(tostring(opts.backoff_factor)), 2)
  end
  local gi = self._growth_interval
  if type(gi) ~= "number" or gi ~= math.floor(gi) or gi <= 0 then
    error(("amp.GradScaler: growth_interval should be a positive integer, got %s"):format(tostring(opts.growth_interval)), 2)
  end
  self._scale = nil          -- set by the first scale() (PyTorch's lazy init)
  self._growth_tracker = 0
  self._states = setmetatable({}, { __mode = "k" }) -- optimizer -> {stage=, found_inf=}
  return self
end

function GradScaler:is_enabled() return self._enabled end

function GradScaler:_state(opt)
  local st = self._states[opt]
  if st == nil then
    st = { stage = READY, found_inf = false }
    self._states[opt] = st
  end
  return st
end

-- PyTorch multiplies by a float32 scale tensor: integer and bool outputs come out float32 (an
-- integer product would wrap around); float16/bfloat16 ones are scaled in float32 here.
local function scale_one(t, s)
  local d = t.dtype
  if d == core.bfloat16 or d == core.float16 or not d.is_floating_point then t = t:float() end
  return t * s
end

local function scale_all(x, s)
  if is_tensor(x) then return scale_one(x, s) end
  if type(x) == "table" then
    local r = {}
    for k, v in pairs(x) do r[k] = scale_all(v, s) end
    return r
  end
  error(("GradScaler.scale: outputs must be a Tensor or a table of Tensors, got %s"):format(type(x)), 3)
end

-- scale(outputs): outputs (a Tensor or a table of them) times the scale; as given when disabled.
function GradScaler:scale(outputs)
  if not self._enabled then return outputs end
  if self._scale == nil then self._scale = f32(self._init_scale) end
  return scale_all(outputs, self._scale)
end

local function each_grad(opt, fn)
  for _, g in ipairs(opt.param_groups) do
    for _, p in ipairs(g.params) do
      local gr = p.grad
      if gr ~= nil then fn(p, gr) end
    end
  end
end

-- unscale_(optimizer): divide the optimizer's gradients by the scale in place and record whether any is
-- inf or NaN (step() then skips the update).
function GradScaler:unscale_(opt)
  if not self._enabled then return end
  local st = self:_state(opt)
  if st.stage == UNSCALED then
    error("GradScaler.unscale_: unscale_() has already been called on this optimizer since the last update().", 2)
  elseif st.stage == STEPPED then
    error("GradScaler.unscale_: unscale_() is being called after step().", 2)
  end
  if opt._announced ~= nil then
    error("GradScaler.unscale_: the optimizer announced an overlapped step (last_backward): its updates ran during "
          .. "the backward on scaled gradients; do not combine overlap_with_backward with a GradScaler", 2)
  end
  if self._scale == nil then
    error("GradScaler.unscale_: attempted to unscale before scale() was called (no scale yet)", 2)
  end
  local inv = f32(1 / self._scale)
  local flags = {}   -- device -> scalar tensor: 0 when all finite, NaN otherwise
  local ndev, seen = {}, 0
  require("ramtorch.autograd").no_grad(function()
    each_grad(opt, function(p, g)
      seen = seen + 1
      if g:numel() == 0 then return end
      if g.dtype == core.float16 then
        -- divided by the scale in float16, small gradients would flush to zero: PyTorch refuses float16
        -- gradients here; a float16 gradient of a wider parameter becomes the float32 one it stands for
        if p.dtype == core.float16 then
          error("GradScaler.unscale_: attempting to unscale float16 gradients (a float16 parameter): keep float32 "
                .. "master parameters and let autocast(\"f16\") cast them, as in PyTorch", 0)
        end
        g = g:float()
        p.grad = g
      end
      g:mul_(inv)
      -- max and min propagate NaN and reach +-inf: x * 0 is 0 exactly when both are finite
      local f = g:max() * 0 + g:min() * 0
      local dev = g.device
      if flags[dev] == nil then
        flags[dev] = f:float()
        ndev[#ndev + 1] = dev
      else
        flags[dev] = flags[dev] + f
      end
    end)
  end)
  local found = false
  for _, dev in ipairs(ndev) do
    local v = flags[dev]:item()
    if v ~= v or v ~= 0 then found = true end
  end
  st.found_inf = found
  st.checked = seen > 0
  st.stage = UNSCALED
end

-- step(optimizer, ...): unscale_ if not done, then optimizer:step(...) unless a gradient was inf/NaN.
-- Returns what optimizer:step returned (nil when skipped).
function GradScaler:step(opt, ...)
  if not self._enabled then return opt:step(...) end
  if select("#", ...) > 0 and type((...)) == "function" then
    error("GradScaler.step: closure use is not currently supported if GradScaler is enabled.", 2)
  end
  if self._scale == nil then
    error("GradScaler.step: attempted step but the scale is not set: call scaler:scale(loss) earlier in the "
          .. "iteration", 2)
  end
  local st = self:_state(opt)
  if st.stage == STEPPED then
    error("GradScaler.step: step() has already been called since the last update().", 2)
  end
  if st.stage == READY then self:unscale_(opt) end
  if not st.checked then error("GradScaler.step: no inf checks were recorded for this optimizer (no gradients).", 2) end
  local ret
  if not st.found_inf then ret = opt:step(...) end
  st.stage = STEPPED
  return ret
end

-- update([new_scale]): set the scale to new_scale (a number or a one-element Tensor), or back it off
-- after a skipped step / grow it after growth_interval clean steps. Ends the iteration.
function GradScaler:update(new_scale)
  if not self._enabled then return end
  if self._scale == nil then self._scale = f32(self._init_scale) end
  if new_scale ~= nil then
    if is_tensor(new_scale) then new_scale = new_scale:item() end
    if type(new_scale) ~= "number" or not (new_scale > 0) then
      error(("GradScaler.update: new_scale should be a positive number or a one-element Tensor, got %s")
            :format(tostring(new_scale)), 2)
    end
    self._scale = f32(new_scale)
  else
    local any, found = false, false
    for _, st in pairs(self._states) do
      if st.stage ~= READY then
        any = true
        if st.found_inf then found = true end
      end
    end
    if not any then error("GradScaler.update: no inf checks were recorded prior to update.", 2) end
    if found then
      self._scale = f32(self._scale * self._backoff_factor)
      self._growth_tracker = 0
    else
      local t = self._growth_tracker + 1
      if t == self._growth_interval then
        local s = f32(self._scale * self._growth_factor)
        if s < math.huge then self._scale = s end -- PyTorch keeps the scale when growing overflows
        t = 0
      end
      self._growth_tracker = t
    end
  end
  self._states = setmetatable({}, { __mode = "k" })
end

-- The scale (a number): init_scale before the first scale(), 1.0 when disabled.
function GradScaler:get_scale()
  if not self._enabled then return 1.0 end
  return self._scale or f32(self._init_scale)
end
function GradScaler:get_growth_factor() return self._growth_factor end
function GradScaler:set_growth_factor(v) self._growth_factor = v end
function GradScaler:get_backoff_factor() return self._backoff_factor end
function GradScaler:set_backoff_factor(v) self._backoff_factor = v end
function GradScaler:get_growth_interval() return self._growth_interval end
function GradScaler:set_growth_interval(v) self._growth_interval = v end
function GradScaler:_get_growth_tracker() return self._enabled and self._growth_tracker or 0 end

-- state_dict(): PyTorch's keys (empty when disabled).
function GradScaler:state_dict()
  if not self._enabled then return {} end
  return { scale = self:get_scale(), growth_factor = self._growth_factor, backoff_factor = self._backoff_factor,
           growth_interval = self._growth_interval, _growth_tracker = self._growth_tracker }
end

function GradScaler:load_state_dict(sd)
  if not self._enabled then return end
  if type(sd) ~= "table" or next(sd) == nil then
    error("GradScaler.load_state_dict: the source state dict is empty, possibly because it was saved from a "
          .. "disabled instance of GradScaler.", 2)
  end
  local function num(k)
    local v = sd[k]
    if is_tensor(v) then v = v:item() end
    if type(v) ~= "number" then
      error(("GradScaler.load_state_dict: expected a number for %s, got %s"):format(k, tostring(v)), 3)
    end
    return v
  end
  self._init_scale = num("scale")
  self._scale = f32(self._init_scale)
  self._growth_factor = num("growth_factor")
  self._backoff_factor = num("backoff_factor")
  self._growth_interval = num("growth_interval")
  self._growth_tracker = num("_growth_tracker")
end

function GradScaler:__tostring()
  return ("GradScaler(scale=%s, growth_factor=%s, backoff_factor=%s, growth_interval=%d, enabled=%s)")
    :format(tostring(self:get_scale()), tostring(self._growth_factor), tostring(self._backoff_factor),
            self._growth_interval, tostring(self._enabled))
end

return M
