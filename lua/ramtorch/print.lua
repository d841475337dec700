-- ramtorch/print.lua: tostring of tensors in PyTorch's format: "tensor([[1.0000, 2.5000], ...])",
-- shared element width, fixed or scientific notation chosen from the value range, integers as "1.",
-- summarised with "..." above 1000 elements, and the dtype/device/grad suffixes PyTorch prints.
local tensor = require("ramtorch.tensor")

local M = { threshold = 1000, edgeitems = 3, linewidth = 80, precision = 4 }
local HOLE = setmetatable({}, { __tostring = function() return "..." end }) -- stands for "..." when summarised

-- Values to print, nested, with HOLE standing for "..." where summarised.
local function gather(t, summarize)
  local shape = t.shape
  if #shape == 0 then return t:totable() end
  local n = shape[1]
  local e = M.edgeitems
  if summarize and n > 2 * e then
    local out = {}
    local head, tail = t:narrow(0, 0, e), t:narrow(0, n - e, e)
    local h = #shape == 1 and head:totable() or nil
    local tl = #shape == 1 and tail:totable() or nil
    for i = 1, e do out[#out + 1] = h and h[i] or gather(head:select(0, i - 1), summarize) end
    out[#out + 1] = HOLE
    for i = 1, e do out[#out + 1] = tl and tl[i] or gather(tail:select(0, i - 1), summarize) end
    return out
  end
  if not summarize then return t:totable() end
  local out = {}
  for i = 1, n do out[i] = #shape == 1 and t:select(0, i - 1):item() or gather(t:select(0, i - 1), summarize) end
  return out
end

local function flatten(v, acc)
  if v == HOLE then return acc end
  if type(v) == "table" then
    for i = 1, #v do flatten(v[i], acc) end
  elseif type(v) == "number" or type(v) == "boolean" then
    acc[#acc + 1] = v
  end
  return acc
end

-- Pick a formatter for the elements like torch/_tensor_str.py's _Formatter.
local function make_formatter(values, is_float, is_bool)
  if is_bool then
    local f = function(v) return v and "True" or "False" end
    local w = 0
    for _, v in ipairs(values) do w = math.max(w, #f(v)) end
    return f, w
  end
  if not is_float then
    local w = 0
    for _, v in ipairs(values) do w = math.max(w, #string.format("%d", v)) end
    return function(v) return string.format("%d", v) end, w
  end
  local finite = {}
  for _, v in ipairs(values) do
    if v == v and v ~= math.huge and v ~= -math.huge and v ~= 0 then finite[#finite + 1] = math.abs(v) end
  end
  local p = M.precision
  local fmt
  local int_mode = true
  for _, v in ipairs(finite) do if v ~= math.floor(v) then int_mode = false break end end
  if #finite == 0 then
    fmt = function(v) return v ~= v and "nan" or (v == math.huge and "inf") or (v == -math.huge and "-inf") or "0." end
  else
    local mx, mn = math.max(unpack(finite)), math.min(unpack(finite))
    if int_mode then
      if mx > 1e8 then
        fmt = function(v) return string.format("%." .. p .. "e", v) end
      else
        fmt = function(v) return string.format("%.0f.", v) end
      end
    elseif mx / mn > 1000 or mx > 1e8 or mn < 1e-4 then
      fmt = function(v) return string.format("%." .. p .. "e", v) end
    else
      fmt = function(v) return string.format("%." .. p .. "f", v) end
    end
  end
  local f = function(v)
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" end
    if v == -math.huge then return "-inf" end
    local s = fmt(v)
    return s
  end
  local w = 0
  for _, v in ipairs(values) do w = math.max(w, #f(v)) end
  return f, w
end

local function pad(s, w) return string.rep(" ", w - #s) .. s end

local function render(v, depth, ndim, indent, f, w)
  if depth == ndim then return pad(f(v), w) end
  local parts = {}
  if depth == ndim - 1 then
    -- innermost row: wrap at the line width
    local per_line = math.max(1, math.floor((M.linewidth - indent) / (w + 2)))
    local line, lines = {}, {}
    for i = 1, #v do
      line[#line + 1] = v[i] == HOLE and pad("...", w) or pad(f(v[i]), w)
      if #line == per_line then
        lines[#lines + 1] = table.concat(line, ", ")
        line = {}
      end
    end
    if #line > 0 then lines[#lines + 1] = table.concat(line, ", ") end
    return "[" .. table.concat(lines, ",\n" .. string.rep(" ", indent + 1)) .. "]"
  end
  for i = 1, #v do
    parts[i] = v[i] == HOLE and "..." or render(v[i], depth + 1, ndim, indent + 1, f, w)
  end
  local sep = "," .. string.rep("\n", ndim - depth - 1) .. string.rep(" ", indent + 1)
  return "[" .. table.concat(parts, sep) .. "]"
end

function M.format(t)
  local dt = t.dtype
  local numel = t:numel()
  local prefix = "tensor("
  local body
  local ndim = t:dim()
  if numel == 0 then
    body = "[]"
  else
    local vals = gather(t, numel > M.threshold)
    local flat = ndim == 0 and { vals } or flatten(vals, {})
    local f, w = make_formatter(flat, dt.is_floating_point, dt.name == "bool")
    if ndim == 0 then body = f(vals) else body = render(vals, 0, ndim, #prefix, f, w) end
  end
  local suffix = {}
  if t.device ~= "cpu" then suffix[#suffix + 1] = "device='" .. t.device .. "'" end
  if numel == 0 and ndim > 1 then
    suffix[#suffix + 1] = "size=(" .. table.concat(t.shape, ", ") .. ")"
  end
  if not (dt.name == "float32" or dt.name == "int64" or dt.name == "bool") then
    suffix[#suffix + 1] = "dtype=" .. tostring(dt)
  end
  local gf = t.grad_fn
  if gf then
    suffix[#suffix + 1] = "grad_fn=<" .. gf .. "0>"
  elseif t.requires_grad then
    suffix[#suffix + 1] = "requires_grad=True"
  end
  local s = prefix .. body
  if #suffix > 0 then s = s .. ", " .. table.concat(suffix, ", ") end
  return s .. ")"
end

return M
