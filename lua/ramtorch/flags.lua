-- ramtorch/flags.lua: command-line flags for scripts: `--name value`, `--name=value`, boolean
-- `--flag` / `--no-flag`, typed by their defaults, with --help generated from the descriptions.
-- Unknown flags and bad values are errors that name the flag and what was expected.
local M = {}

-- parse(arg, spec, usage) where spec = { {"epochs", 5, "number of epochs", int = true}, ... }
-- (int = true: the value must be an integer; numbers must be finite).
-- Returns a table name -> value (dashes in names become underscores) and the positional arguments.
function M.parse(argv, spec, usage)
  local opts, by_name, positional = {}, {}, {}
  for _, s in ipairs(spec) do
    local name, default = s[1], s[2]
    by_name[name] = s
    opts[(name:gsub("-", "_"))] = default
  end
  local function help()
    local lines = { usage or "usage: ramtorch-lua script.lua [options]", "", "options:" }
    for _, s in ipairs(spec) do
      local d = s[2]
      local shown = type(d) == "boolean" and (d and "on" or "off") or tostring(d)
      lines[#lines + 1] = ("  --%-16s %s (default: %s)"):format(s[1], s[3] or "", shown)
    end
    lines[#lines + 1] = "  --help             print this help and exit"
    return table.concat(lines, "\n")
  end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--help" or a == "-h" then
      print(help())
      os.exit(0)
    end
    local name, value = a:match("^%-%-([%w%-_]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w%-_]+)$") end
    if not name then
      positional[#positional + 1] = a
    else
      local negated = false
      local s = by_name[name]
      if not s and name:match("^no%-") and by_name[name:sub(4)] and type(by_name[name:sub(4)][2]) == "boolean" then
        s, negated = by_name[name:sub(4)], true
      end
      if not s then error(("unknown option --%s (see --help)"):format(name), 0) end
      if negated and value ~= nil then error(("option --%s takes no value"):format(name), 0) end
      local key = (s[1]:gsub("-", "_"))
      local kind = type(s[2])
      if kind == "boolean" then
        if value == nil then opts[key] = not negated
        elseif value == "true" or value == "1" then opts[key] = true
        elseif value == "false" or value == "0" then opts[key] = false
        else error(("option --%s expects true or false, got '%s'"):format(name, value), 0) end
      else
        if value == nil then
          i = i + 1
          value = argv[i]
          -- "--out --resume": the next option is not the value (use --out=--x for such a value)
          if value == nil or value:match("^%-%-") then error(("option --%s needs a value"):format(name), 0) end
        end
        if kind == "number" then
          local v = tonumber(value)
          if not v or v ~= v or v == math.huge or v == -math.huge then
            error(("option --%s expects a number, got '%s'"):format(name, value), 0)
          end
          if s.int and v ~= math.floor(v) then
            error(("option --%s expects an integer, got '%s'"):format(name, value), 0)
          end
          opts[key] = v
        else
          opts[key] = value
        end
      end
    end
    i = i + 1
  end
  return opts, positional
end

return M
