-- ramtorch/inspect.lua: how the REPL shows a value. Tensors, dtypes and anything with __tostring use
-- it; plain tables are shown by content, so `x.shape` reads `{2, 3}` rather than `table: 0x...`:
-- sequences of scalars inline, other tables as `{key = value, ...}` up to a depth and a length.
-- A string on its own prints as itself (as in LuaJIT's REPL); inside a table it is quoted.
local M = { max_items = 32, max_depth = 2 }

local function is_identifier(k) return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil end

local function scalar(v)
  local t = type(v)
  if t == "string" then return ("%q"):format(v) end
  return tostring(v)
end

local function format(v, depth)
  if type(v) ~= "table" then return (type(v) == "string" and depth > 0) and scalar(v) or tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  if depth > M.max_depth then return "{...}" end
  local parts, n = {}, #v
  for i = 1, math.min(n, M.max_items) do parts[#parts + 1] = format(v[i], depth + 1) end
  if n > M.max_items then parts[#parts + 1] = ("... (%d items)"):format(n) end
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for i, k in ipairs(keys) do
    if #parts >= M.max_items + 1 then
      parts[#parts + 1] = ("... (%d more keys)"):format(#keys - i + 1)
      break
    end
    local key = is_identifier(k) and k or ("[" .. scalar(k) .. "]")
    parts[#parts + 1] = key .. " = " .. format(v[k], depth + 1)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

function M.format(v) return format(v, 0) end

return M
