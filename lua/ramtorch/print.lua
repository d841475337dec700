-- ramtorch/print.lua: tostring of tensors in PyTorch's format (torch/_tensor_str.py, PyTorch 2.x):
-- "tensor([[1.0000, 2.5000], ...])". One formatter per tensor (_Formatter): integer-valued floats as
-- "1.", 4 decimals, scientific notation when max/min > 1000, max > 1e8 or min < 1e-4 (over the non-zero
-- finite values), a shared width computed from those values only (so nan/inf/0 do not widen columns);
-- summarised with "..." above 1000 elements (3 edge items); rows wrapped at 80 columns; the suffixes
-- (device=, size=, dtype=, grad_fn=/requires_grad=) appended and wrapped as _add_suffixes does.
local core = require("ramtorch.core")

local M = { threshold = 1000, edgeitems = 3, linewidth = 80, precision = 4 }
local HOLE = setmetatable({}, { __tostring = function() return "..." end }) -- stands for "..." when summarised

local huge = math.huge
local function finite(v) return v == v and v ~= huge and v ~= -huge end

-- Values to print, nested, with HOLE standing for "..." where summarised (get_summarized_data).
local function gather(t, summarize)
  local shape = t.shape
  if #shape == 0 then return t:totable() end
  if not summarize then return t:totable() end
  local n = shape[1]
  local e = M.edgeitems
  local out = {}
  local function take(i) -- element/slice i (0-based) of dim 0
    local s = t:select(0, i)
    if #shape == 1 then return s:item() end
    return gather(s, summarize)
  end
  if n > 2 * e then
    if #shape == 1 then
      local h, tl = t:narrow(0, 0, e):totable(), t:narrow(0, n - e, e):totable()
      for i = 1, e do out[#out + 1] = h[i] end
      out[#out + 1] = HOLE
      for i = 1, e do out[#out + 1] = tl[i] end
      return out
    end
    for i = 0, e - 1 do out[#out + 1] = take(i) end
    out[#out + 1] = HOLE
    for i = n - e, n - 1 do out[#out + 1] = take(i) end
    return out
  end
  if #shape == 1 then return t:totable() end
  for i = 0, n - 1 do out[#out + 1] = take(i) end
  return out
end

local function flatten(v, acc)
  if v == HOLE then return acc end
  if type(v) == "table" then
    for i = 1, #v do flatten(v[i], acc) end
  else
    acc[#acc + 1] = v
  end
  return acc
end

-- Python's "{:.0f}" / "{:.4f}" / "{:.4e}" of a float, including nan and inf.
local function pyfmt(spec, v)
  if v ~= v then return "nan" end
  if v == huge then return "inf" end
  if v == -huge then return "-inf" end
  return string.format(spec, v)
end

-- The integer digits of an integer element: a Lua number, or int64_t cdata for int64 values beyond
-- +-2^53 (Tensor.totable keeps those exact; tostring gives "123LL").
local function intstr(v)
  if type(v) == "cdata" then return (tostring(v):gsub("LL$", "")) end
  return string.format("%d", v)
end

-- torch/_tensor_str.py's _Formatter: returns format(v) (padded to the shared width) and the width.
local function make_formatter(values, is_float, is_bool)
  local max_width = 1
  if not is_float then
    local f = is_bool and function(v) return v and "True" or "False" end or intstr
    for _, v in ipairs(values) do max_width = math.max(max_width, #f(v)) end
    return function(v)
      local s = f(v)
      return string.rep(" ", max_width - #s) .. s
    end, max_width
  end
  local int_mode, sci_mode = true, false
  local nz = {}
  for _, v in ipairs(values) do
    if finite(v) and v ~= 0 then nz[#nz + 1] = v end
  end
  local p = M.precision
  local efmt, ffmt = "%." .. p .. "e", "%." .. p .. "f"
  if #nz > 0 then
    local mn, mx = huge, 0
    for _, v in ipairs(nz) do
      local a = math.abs(v)
      if a < mn then mn = a end
      if a > mx then mx = a end
      if v ~= math.ceil(v) then int_mode = false end
    end
    if int_mode then
      if mx / mn > 1000 or mx > 1e8 then
        sci_mode = true
        for _, v in ipairs(nz) do max_width = math.max(max_width, #string.format(efmt, v)) end
      else
        for _, v in ipairs(nz) do max_width = math.max(max_width, #string.format("%.0f", v) + 1) end
      end
    else
      if mx / mn > 1000 or mx > 1e8 or mn < 1e-4 then
        sci_mode = true
        for _, v in ipairs(nz) do max_width = math.max(max_width, #string.format(efmt, v)) end
      else
        for _, v in ipairs(nz) do max_width = math.max(max_width, #string.format(ffmt, v)) end
      end
    end
  end
  if M.sci_mode ~= nil then sci_mode = M.sci_mode end
  local function fmt(v)
    local s
    if sci_mode then
      s = pyfmt(efmt, v)
    elseif int_mode then
      s = pyfmt("%.0f", v)
      if finite(v) then s = s .. "." end
    else
      s = pyfmt(ffmt, v)
    end
    return string.rep(" ", max_width - #s) .. s
  end
  return fmt, max_width
end

-- _tensor_str_with_formatter / _vector_str
local function render(v, depth, ndim, indent, f, w)
  if depth == ndim then return f(v) end
  if depth == ndim - 1 then
    local per_line = math.max(1, math.floor((M.linewidth - indent) / (w + 2)))
    local data = {}
    for i = 1, #v do data[i] = v[i] == HOLE and " ..." or f(v[i]) end
    local lines = {}
    for i = 1, #data, per_line do
      lines[#lines + 1] = table.concat(data, ", ", i, math.min(i + per_line - 1, #data))
    end
    return "[" .. table.concat(lines, ",\n" .. string.rep(" ", indent + 1)) .. "]"
  end
  local parts = {}
  for i = 1, #v do
    parts[i] = v[i] == HOLE and "..." or render(v[i], depth + 1, ndim, indent + 1, f, w)
  end
  local sep = "," .. string.rep("\n", ndim - depth - 1) .. string.rep(" ", indent + 1)
  return "[" .. table.concat(parts, sep) .. "]"
end

-- _add_suffixes: append ", suffix" items, moving one to a new line when the line would pass 80 columns.
local function add_suffixes(s, suffixes, indent)
  local parts = { s }
  local nl = s:match(".*()\n")
  local last_line_len = nl and (#s - (nl - 1) + 1) or (#s + 2) -- Python: len(s) - s.rfind("\n") + 1
  for _, suffix in ipairs(suffixes) do
    if last_line_len + #suffix + 2 > M.linewidth then
      parts[#parts + 1] = ",\n" .. string.rep(" ", indent) .. suffix
      last_line_len = indent + #suffix
    else
      parts[#parts + 1] = ", " .. suffix
      last_line_len = last_line_len + #suffix + 2
    end
  end
  parts[#parts + 1] = ")"
  return table.concat(parts)
end

function M.format(t)
  local dt = t.dtype
  local numel = t:numel()
  local prefix = "tensor("
  local indent = #prefix
  local ndim = t:dim()
  local suffixes = {}
  if t.device ~= "cpu" then suffixes[#suffixes + 1] = "device='" .. t.device .. "'" end
  local body
  local default = core.default_dtype
  if numel == 0 then
    if ndim ~= 1 then suffixes[#suffixes + 1] = "size=(" .. table.concat(t.shape, ", ") .. ")" end
    if dt ~= default then suffixes[#suffixes + 1] = "dtype=" .. tostring(dt) end
    body = "[]"
  else
    if not (dt == default or dt == core.int64 or dt == core.bool) then
      suffixes[#suffixes + 1] = "dtype=" .. tostring(dt)
    end
    local vals = gather(t, numel > M.threshold)
    local flat = ndim == 0 and { vals } or flatten(vals, {})
    local f, w = make_formatter(flat, dt.is_floating_point, dt == core.bool)
    body = ndim == 0 and f(vals) or render(vals, 0, ndim, indent, f, w)
  end
  local gf = t.grad_fn
  if gf then
    -- PyTorch's node classes carry an overload number (AddBackward0); names that already end in a
    -- digit (PowBackward1) or are custom functions keep theirs.
    if not gf:match("%d$") and gf ~= "CustomFunctionBackward" then gf = gf .. "0" end
    suffixes[#suffixes + 1] = "grad_fn=<" .. gf .. ">"
  elseif t.requires_grad then
    suffixes[#suffixes + 1] = "requires_grad=True"
  end
  return add_suffixes(prefix .. body, suffixes, indent)
end

return M
