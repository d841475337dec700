-- ramtorch/train_state.lua: resumable training. torch.save_checkpoint(path, {model=, optimizer=,
-- scheduler=, scaler=, step=, data_position=, extra=}) writes one safetensors file (atomically,
-- through io.save): tensors under "model.<name>", "optimizer.<param index>.<key>" and "extra.<key>",
-- and everything else (optimizer param groups and scalar state, scheduler state, the GradScaler's
-- state and enabled flag, step, data position, the generator state as strings, JSON-able extra
-- values) as JSON in the metadata key "ramtorch.checkpoint". torch.load_checkpoint(path, {model=,
-- optimizer=, scheduler=, scaler=, restore_rng=true}) restores them in place and returns {step=,
-- data_position=, extra=}.
--
-- GradScaler mismatches are refused before anything is restored (see check_scaler_load): a resumed
-- float16 run that silently restarted from the initial scale would not continue the saved run.
--
-- A run stopped after a checkpoint and resumed from it (fresh objects, load_checkpoint) continues
-- bit for bit as if it had not stopped, provided the data order depends only on data_position and
-- the generator (tests/lua/train_state_spec.lua).
local torch = require("ramtorch")
local io_ = require("ramtorch.io")

local M = {}

local META_KEY = "ramtorch.checkpoint"
local FORMAT = 1

-- ---- a small JSON codec (numbers round-trip exactly with %.17g) ---------------------------------

local function is_array(t)
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k ~= math.floor(k) then return false end
    n = n + 1
  end
  for i = 1, n do if t[i] == nil then return false end end
  return true, n
end

local ESC = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

-- Table keys in the JSON (and extra tensor names): number keys are tagged "#<number>" so they come
-- back as numbers; a string key that starts with "#" gets one more "#" so it cannot pass for one.
local function key_encode(k)
  if type(k) == "number" then return "#" .. ("%.17g"):format(k) end
  if type(k) ~= "string" then
    error(("save_checkpoint: a %s key; only string and number keys can be saved"):format(type(k)), 0)
  end
  if k:sub(1, 1) == "#" then return "#" .. k end
  return k
end

local function key_decode(k)
  if k:sub(1, 2) == "##" then return k:sub(2) end
  if k:sub(1, 1) == "#" and tonumber(k:sub(2)) then return tonumber(k:sub(2)) end
  return k
end

local function encode(v, path, out)
  local tv = type(v)
  if tv == "nil" then out[#out + 1] = "null"
  elseif tv == "boolean" then out[#out + 1] = tostring(v)
  elseif tv == "number" then
    if v ~= v or v == math.huge or v == -math.huge then -- not JSON numbers: tagged strings
      out[#out + 1] = v ~= v and '{"$num":"nan"}' or (v > 0 and '{"$num":"inf"}' or '{"$num":"-inf"}')
    elseif v == math.floor(v) and math.abs(v) < 2 ^ 53 and not (v == 0 and 1 / v < 0) then -- "%d" drops -0's sign
      out[#out + 1] = ("%d"):format(v)
    else out[#out + 1] = ("%.17g"):format(v) end
  elseif tv == "string" then
    out[#out + 1] = '"' .. v:gsub('[%c"\\\128-\255]', function(c) return ESC[c] or ("\\u%04x"):format(c:byte()) end) .. '"'
  elseif tv == "table" then
    local arr, n = is_array(v)
    if arr and n > 0 then
      out[#out + 1] = "["
      for i = 1, n do
        if i > 1 then out[#out + 1] = "," end
        encode(v[i], path .. "[" .. i .. "]", out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" and type(k) ~= "number" then
          error(("save_checkpoint: %s has a %s key; only string and number keys can be saved"):format(path, type(k)), 0)
        end
        keys[#keys + 1] = k
      end
      table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        encode(key_encode(k), path, out)
        out[#out + 1] = ":"
        encode(v[k], path .. "." .. tostring(k), out)
      end
      out[#out + 1] = "}"
    end
  else
    error(("save_checkpoint: %s is a %s; only numbers, strings, booleans and tables can be saved in the metadata")
          :format(path, tv), 0)
  end
end

function M.json_encode(v)
  local out = {}
  encode(v, "checkpoint", out)
  return table.concat(out)
end

function M.json_decode(s)
  local pos = 1
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local function fail(what) error(("load_checkpoint: malformed metadata JSON at byte %d: %s"):format(pos, what), 0) end
  local value
  local function str()
    pos = pos + 1
    local parts = {}
    while true do
      local c = s:sub(pos, pos)
      if c == "" then fail("unterminated string") end
      if c == '"' then pos = pos + 1 break end
      if c == "\\" then
        local e = s:sub(pos + 1, pos + 1)
        local map = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }
        if e == "u" then
          parts[#parts + 1] = string.char(tonumber(s:sub(pos + 2, pos + 5), 16) % 256)
          pos = pos + 6
        elseif map[e] then parts[#parts + 1] = map[e]; pos = pos + 2
        else fail("bad escape") end
      else
        parts[#parts + 1] = c
        pos = pos + 1
      end
    end
    return table.concat(parts)
  end
  value = function()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      pos = pos + 1
      local t = {}
      ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1 return t end
      while true do
        ws()
        if s:sub(pos, pos) ~= '"' then fail("expected a key") end
        local k = str()
        ws()
        if s:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        local v = value()
        t[key_decode(k)] = v
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "}" then break end
        if d ~= "," then fail("expected ',' or '}'") end
      end
      if t["$num"] ~= nil and next(t, next(t)) == nil then
        return t["$num"] == "nan" and 0 / 0 or (t["$num"] == "inf" and math.huge or -math.huge)
      end
      return t
    elseif c == "[" then
      pos = pos + 1
      local t = {}
      ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1 return t end
      while true do
        t[#t + 1] = value()
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "]" then break end
        if d ~= "," then fail("expected ',' or ']'") end
      end
      return t
    elseif c == '"' then return str()
    elseif s:sub(pos, pos + 3) == "true" then pos = pos + 4 return true
    elseif s:sub(pos, pos + 4) == "false" then pos = pos + 5 return false
    elseif s:sub(pos, pos + 3) == "null" then pos = pos + 4 return nil
    else
      local num = s:match("^-?[%d.eE+-]+", pos)
      if not num or not tonumber(num) then fail("unexpected character") end
      pos = pos + #num
      return tonumber(num)
    end
  end
  local v = value()
  ws()
  if pos <= #s then fail("trailing characters") end
  return v
end

-- ---- save / load -----------------------------------------------------------------------------------

-- opts.scaler must be an amp.GradScaler (anything with is_enabled/state_dict/load_state_dict).
local function as_scaler(sc, fname, level)
  if type(sc) ~= "table" or type(sc.is_enabled) ~= "function" or type(sc.state_dict) ~= "function"
     or type(sc.load_state_dict) ~= "function" then
    error(("%s: scaler must be an amp.GradScaler (or false), got %s"):format(fname, tostring(sc)), level + 1)
  end
  return sc
end

-- What a PyTorch user would expect of scaler.load_state_dict(ckpt["scaler"]), made explicit:
--  * an enabled scaler and a checkpoint without scaler state: error (PyTorch: KeyError), as for an
--    optimizer; an enabled scaler and a checkpoint saved from a disabled one: error (PyTorch: "the
--    source state dict is empty").
--  * a disabled scaler: nothing to restore, whatever the checkpoint holds (PyTorch's load_state_dict
--    of a disabled scaler is a no-op; GradScaler({enabled = use_amp}) is the usual pattern).
--  * no scaler= while resuming training (optimizer= given) from a checkpoint of an enabled scaler:
--    error, since the run would silently restart from the initial scale; scaler=false drops the state
--    on purpose. Loading a model alone (no optimizer=) never needs the scaler.
local function check_scaler_load(path, opts, saved)
  local sc = opts.scaler
  if sc == false then return nil end
  if sc ~= nil then
    as_scaler(sc, "load_checkpoint", 3)
    if not sc:is_enabled() then return nil end
    if saved == nil then
      error(("load_checkpoint: %s holds no GradScaler state (saved without scaler=); leave scaler= out to "
             .. "start this scaler from its initial scale"):format(path), 3)
    end
    if saved.enabled == false then
      error(("load_checkpoint: %s holds the state of a disabled GradScaler (enabled=false) but the given "
             .. "scaler is enabled; the checkpoint has no scale to restore (leave scaler= out to start from the "
             .. "initial scale)"):format(path), 3)
    end
    return sc
  end
  if saved ~= nil and saved.enabled ~= false and opts.optimizer ~= nil then
    error(("load_checkpoint: %s holds GradScaler state (scale %s) but no scaler= was given; the resumed run "
           .. "would restart from the initial scale. Pass scaler= to restore it, or scaler=false to drop it")
          :format(path, tostring(saved.scale)), 3)
  end
  return nil
end

function M.save_checkpoint(path, opts)
  if type(path) ~= "string" or path == "" then
    error(("save_checkpoint: expected a file path string, got %s"):format(tostring(path)), 2)
  end
  if type(opts) ~= "table" then error("save_checkpoint: expected an options table {model=, optimizer=, ...}", 2) end
  local tensors, meta = {}, { format = FORMAT, rng = torch.get_rng_state(), step = opts.step,
                              data_position = opts.data_position }
  if opts.model ~= nil then
    for k, t in pairs(opts.model:state_dict()) do
      if type(k) == "string" and torch.is_tensor(t) then tensors["model." .. k] = t end
    end
  end
  if opts.optimizer ~= nil then
    local sd = opts.optimizer:state_dict()
    local scalars = {}
    for idx, st in pairs(sd.state) do
      local s = {}
      for k, v in pairs(st) do
        if torch.is_tensor(v) then tensors[("optimizer.%d.%s"):format(idx, k)] = v else s[k] = v end
      end
      scalars[idx] = s
    end
    local mt = getmetatable(opts.optimizer)
    meta.optimizer = { param_groups = sd.param_groups, state = scalars, class = mt and mt.__name or nil }
  end
  if opts.scheduler ~= nil then meta.scheduler = opts.scheduler:state_dict() end
  if opts.scaler ~= nil and opts.scaler ~= false then
    local sc = as_scaler(opts.scaler, "save_checkpoint", 2)
    -- PyTorch's keys (scale, growth_factor, backoff_factor, growth_interval, _growth_tracker; none when
    -- disabled) plus the flag, so that a load can tell "saved disabled" from "saved without a scaler"
    local m = { enabled = sc:is_enabled() }
    for k, v in pairs(sc:state_dict()) do m[k] = v end
    meta.scaler = m
  end
  if opts.extra ~= nil then
    local e = {}
    for k, v in pairs(opts.extra) do
      if torch.is_tensor(v) then tensors["extra." .. key_encode(k)] = v else e[k] = v end
    end
    meta.extra = e
  end
  local ok, json = pcall(M.json_encode, meta)
  if not ok then error(json, 2) end
  io_.save(tensors, path, { [META_KEY] = json })
end

-- The optimizer's class, groups and state shapes against the checkpoint's, before anything is
-- restored: Optimizer.load_state_dict raises on other groups only after the model was loaded, and
-- takes state of other shapes (the next step() failed) or of another optimizer's kind (its options
-- and state keys were adopted silently).
local function check_optimizer_load(path, opt, saved, tensors)
  local mt = getmetatable(opt)
  local name = mt and mt.__name or "optimizer"
  if saved.class ~= nil and saved.class ~= name then
    error(("load_checkpoint: %s holds the state of a %s optimizer, got a %s"):format(path, saved.class, name), 3)
  end
  local pg = saved.param_groups or {}
  if type(opt.param_groups) ~= "table" then return end
  local keys = {} -- sorted, so that the message names the same tensor every run
  for k in pairs(tensors) do keys[#keys + 1] = k end
  table.sort(keys)
  if #pg ~= #opt.param_groups then
    error(("load_checkpoint: %s: loaded state dict has a different number of parameter groups (%d, expected %d)")
          :format(path, #pg, #opt.param_groups), 3)
  end
  for gi, g in ipairs(opt.param_groups) do
    local sp = pg[gi].params
    if type(sp) ~= "table" or #sp ~= #g.params then
      error(("load_checkpoint: %s: parameter group %d has %d parameters in the checkpoint, the optimizer's has %d")
            :format(path, gi - 1, type(sp) == "table" and #sp or 0, #g.params), 3)
    end
    for i, p in ipairs(g.params) do
      local pre = ("%d."):format(sp[i])
      for _, k in ipairs(keys) do
        local t = tensors[k]
        if k:sub(1, #pre) == pre and t:dim() > 0 and table.concat(t.shape, ",") ~= table.concat(p.shape, ",") then
          error(("load_checkpoint: optimizer state %s of parameter %d has shape [%s], the parameter has shape [%s]")
                :format(k:sub(#pre + 1), sp[i], table.concat(t.shape, ", "), table.concat(p.shape, ", ")), 3)
        end
      end
    end
  end
end

-- Whether the checkpoint's model tensors have exactly the model's keys and shapes.
local function model_fits(model, tensors)
  local own = model:state_dict()
  for k, t in pairs(own) do
    if type(k) == "string" and torch.is_tensor(t) then
      local v = tensors[k]
      if v == nil or table.concat(v.shape, ",") ~= table.concat(t.shape, ",") then return false end
    end
  end
  for k in pairs(tensors) do if own[k] == nil then return false end end
  return true
end

function M.load_checkpoint(path, opts)
  opts = opts or {}
  local sd, md = io_.load(path)
  local json = md and md[META_KEY]
  if json == nil then
    error(("load_checkpoint: %s has no '%s' metadata (not written by save_checkpoint)"):format(path, META_KEY), 2)
  end
  local ok, meta = pcall(M.json_decode, json)
  if not ok then error(meta, 2) end
  if meta.format ~= FORMAT then
    error(("load_checkpoint: %s has checkpoint format %s, this version reads %d"):format(path, tostring(meta.format), FORMAT), 2)
  end
  -- every "this file lacks what you asked for" check runs before anything is restored
  local scaler = check_scaler_load(path, opts, meta.scaler)
  if opts.optimizer ~= nil and meta.optimizer == nil then
    error(("load_checkpoint: %s holds no optimizer state"):format(path), 2)
  end
  if opts.scheduler ~= nil and meta.scheduler == nil then
    error(("load_checkpoint: %s holds no scheduler state"):format(path), 2)
  end
  local groups = { model = {}, optimizer = {}, extra = {} }
  for k, t in pairs(sd) do
    local g, rest = k:match("^(%a+)%.(.*)$")
    if g and groups[g] then groups[g][rest] = t end
  end
  if opts.optimizer ~= nil then
    -- a model that does not fit raises Module.load_state_dict's message (naming every mismatch, and
    -- changing nothing) before the optimizer's state shapes are compared with its parameters
    if opts.model ~= nil and not model_fits(opts.model, groups.model) then opts.model:load_state_dict(groups.model) end
    check_optimizer_load(path, opts.optimizer, meta.optimizer, groups.optimizer)
  end
  if opts.model ~= nil then opts.model:load_state_dict(groups.model) end
  if opts.optimizer ~= nil then
    local state = {}
    for idx, s in pairs(meta.optimizer.state or {}) do
      local st = {}
      for k, v in pairs(s) do st[k] = v end
      state[tonumber(idx)] = st
    end
    for k, t in pairs(groups.optimizer) do
      local idx, key = k:match("^(%d+)%.(.+)$")
      idx = tonumber(idx)
      state[idx] = state[idx] or {}
      state[idx][key] = t
    end
    opts.optimizer:load_state_dict({ state = state, param_groups = meta.optimizer.param_groups })
  end
  if opts.scheduler ~= nil then
    opts.scheduler:load_state_dict(meta.scheduler)
  end
  if scaler ~= nil then
    local st = {}
    for k, v in pairs(meta.scaler) do if k ~= "enabled" then st[k] = v end end
    scaler:load_state_dict(st)
  end
  if opts.restore_rng ~= false and meta.rng then torch.set_rng_state(meta.rng) end
  local extra = meta.extra or {}
  for k, t in pairs(groups.extra) do extra[key_decode(k)] = t end
  return { step = meta.step, data_position = meta.data_position, extra = extra, rng = meta.rng }
end

return M
