-- api_fuzz_driver.lua: the child process of api_fuzz_spec.lua. It calls one batch of the public Lua API
-- (torch.*, Tensor methods and metamethods, nn module constructors and forwards, optim constructors,
-- torch.load) with argument lists drawn, by a seeded generator, from a pool of bad and edge-case values,
-- and checks that each call either returns or raises a string error naming the function.
--
--   ramtorch-lua api_fuzz_driver.lua SECTION FIRST LAST SEED     (runs cases FIRST..LAST of SECTION)
--
-- Before each call it prints "CASE <id> <call>" (flushed), so when the process dies of a signal or is
-- killed by a timeout the parent names the call that did it. A bad error prints "BAD <id> <call>: why".
-- The driver exits 0 after its batch; any other exit status is a crash.
local ffi = require("ffi")
local torch = require("ramtorch")
local tensor_mod = require("ramtorch.tensor")

local section, first, last, seed = arg[1], tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4])
assert(section and first and last and seed, "usage: api_fuzz_driver.lua SECTION FIRST LAST SEED")

-- ---- deterministic generator (LCG; math.random's sequence differs between builds) ------------------
local state = seed
local function rand(n) -- 1..n
  state = (state * 1103515245 + 12345) % 2147483648
  return math.floor(state / 65536) % n + 1
end

-- ---- the pool of argument values -----------------------------------------------------------------
-- Each entry: { label, make } where make() builds a fresh value (a call may mutate its arguments).
local pool = {}
local function add(label, make) pool[#pool + 1] = { label, make } end

add("nil", function() return nil end)
add("true", function() return true end)
add("false", function() return false end)
for _, v in ipairs({ 0, -1, 1, 2, 1.5, 2 ^ 31, 2 ^ 63, -2 ^ 63 }) do
  add(string.format("%.17g", v), function() return v end)
end
add("nan", function() return 0 / 0 end)
add("inf", function() return math.huge end)
add("-inf", function() return -math.huge end)
for _, s in ipairs({ "", "abc", "float32", "cpu", "cuda", "mean", "-1" }) do
  add(string.format("%q", s), function() return s end)
end
add("{}", function() return {} end)
add("{{}}", function() return { {} } end)
add("{1,2}", function() return { 1, 2 } end)
add("{{1,2},{3}}", function() return { { 1, 2 }, { 3 } } end)
add("{-1}", function() return { -1 } end)
add("{dtype=float64}", function() return { dtype = torch.float64 } end)
add("{dim=1}", function() return { dim = 1 } end)
add("{a={b={}}}", function() return { a = { b = {} } } end)
add("function", function() return function() end end)
add("NULL", function() return ffi.cast("void*", 0) end)
add("torch.int64", function() return torch.int64 end)

local DTYPES = { "float32", "float64", "bfloat16", "float16", "int64", "int32", "uint8", "bool" }
local SHAPES = { {}, { 0 }, { 1 }, { 3 }, { 2, 3 }, { 2, 0, 3 } }
local function shape_str(s) return "{" .. table.concat(s, ",") .. "}" end
local function make_tensor(dt, shape)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  local t = torch.arange(n, { dtype = torch.float64 }):sub(1):reshape(shape)
  return t:to(torch[dt])
end
local tensor_entries = {}
for _, dt in ipairs(DTYPES) do
  for _, s in ipairs(SHAPES) do
    add(dt .. shape_str(s), function() return make_tensor(dt, s) end)
    tensor_entries[#tensor_entries + 1] = #pool
  end
end
local function view_entry(label, make)
  add(label, make)
  tensor_entries[#tensor_entries + 1] = #pool
end
view_entry("f32{2,3}:t()", function() return make_tensor("float32", { 2, 3 }):t() end)
view_entry("f32{3}:expand(2,3)", function() return make_tensor("float32", { 1, 3 }):expand(2, 3) end)
view_entry("f64{4,3}:narrow(0,1,2)", function() return make_tensor("float64", { 4, 3 }):narrow(0, 1, 2) end)
view_entry("i64{2,3}:t()", function() return make_tensor("int64", { 2, 3 }):t() end)
view_entry("f32{2,3} requires_grad", function() return make_tensor("float32", { 2, 3 }):requires_grad_(true) end)
view_entry("freed f32{3}", function()
  local t = make_tensor("float32", { 3 })
  t:free()
  return t
end)

-- ---- running one call ----------------------------------------------------------------------------
local nbad = 0
local function bad(id, desc, why)
  nbad = nbad + 1
  io.stdout:write(("BAD %d %s: %s\n"):format(id, desc, why:gsub("\n", "\\n")))
  io.stdout:flush()
end

-- Does the message name the function? Accept the name itself or it without a trailing "_" (the C
-- op of an in-place method), case-insensitively, or any of the extra names given for it.
local function names(msg, fname, extra)
  local m = msg:lower()
  local f = fname:lower()
  if m:find(f, 1, true) or m:find((f:gsub("_$", "")), 1, true) then return true end
  -- "op: ..." (after any "file:line: " prefix) where op is part of the name: amax -> "max:",
  -- rand_like -> "rand:"
  local op = m:gsub("^[^:]*%.lua:%d+: ", ""):match("^([%w_%.]+):")
  if op and #op >= 3 and f:find(op, 1, true) then return true end
  for _, e in ipairs(extra or {}) do
    if op and #op >= 3 and e:lower():find(op, 1, true) then return true end
  end
  -- an allocation that fails (the pool's 2^31 sizes) is reported by the allocator, which is clear
  if m:find("out of host memory", 1, true) then return true end
  for _, e in ipairs(extra or {}) do
    if m:find(e:lower(), 1, true) then return true end
  end
  return false
end

-- The things a call can change globally, put back after each call.
local function restore()
  torch.set_default_dtype(torch.float32)
  torch.set_grad_enabled(true)
  torch.set_num_threads(1)
end

local function run_case(id, desc, fname, extra, fn, ...)
  io.stdout:write("CASE ", id, " ", desc, "\n")
  io.stdout:flush()
  local ok, err = pcall(fn, ...)
  restore()
  if ok then return end
  if type(err) ~= "string" then
    bad(id, desc, "non-string error (" .. type(err) .. "): " .. tostring(err))
  elseif err == "" then
    bad(id, desc, "empty error message")
  elseif not names(err, fname, extra) then
    bad(id, desc, "message does not name " .. fname .. ": " .. err)
  end
end

-- ---- the cases -----------------------------------------------------------------------------------
-- A case is { desc, fname, extra, fn, argspec } built lazily: argspec is a list of pool indices.
local cases = {}
local function case(desc, fname, extra, fn, argspec)
  cases[#cases + 1] = { desc, fname, extra, fn, argspec }
end

local function argdesc(argspec)
  local parts = {}
  for i, k in ipairs(argspec) do parts[i] = pool[k][1] end
  return table.concat(parts, ", ")
end

-- Per function: each pool value alone, then random lists of 1..4 values where tensors are likelier.
local function arglists(nrandom)
  local lists = {}
  for k = 1, #pool do lists[#lists + 1] = { k } end
  lists[#lists + 1] = {}
  for _ = 1, nrandom do
    local n = rand(4)
    local l = {}
    for i = 1, n do
      if rand(2) == 1 then l[i] = tensor_entries[rand(#tensor_entries)] else l[i] = rand(#pool) end
    end
    lists[#lists + 1] = l
  end
  return lists
end

local function sorted_keys(t)
  local ks = {}
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" then ks[#ks + 1] = k end
  end
  table.sort(ks)
  return ks
end

-- Calls that act outside the process or can legitimately run long: never fuzzed.
local SKIP_TORCH = {
  set_memory_budget = true, -- process-wide engine setting, tested in offload_spec
}
local SKIP_METHOD = {}

if section == "torch" then
  -- load the lazy top-level fields so that pairs() sees them
  for _, k in ipairs({ "Linear", "AdamW", "autocast", "save_checkpoint", "load_checkpoint" }) do local _ = torch[k] end
  local aliases = {} -- every name a function is bound to: torch.multiply's message may say "mul"
  for _, name in ipairs(sorted_keys(torch)) do
    local f = torch[name]
    aliases[f] = aliases[f] or {}
    table.insert(aliases[f], name)
  end
  for _, name in ipairs(sorted_keys(torch)) do
    if not SKIP_TORCH[name] then
      for _, l in ipairs(arglists(40)) do
        local fn, extra = torch[name], aliases[torch[name]]
        -- index_tensor(t, idx, what, level) is also an internal helper: its last two arguments are the
        -- caller's name and error level, so only the public two are fuzzed
        if name == "index_tensor" then fn = function(t, idx) return torch.index_tensor(t, idx) end end
        -- checkpoints are safetensors files: "load_safetensors: cannot open ..." names the reader
        if name == "load_checkpoint" then extra = { "load_safetensors", "checkpoint" } end
        case("torch." .. name .. "(" .. argdesc(l) .. ")", name, extra, fn, l)
      end
    end
  end
elseif section == "tensor" then
  local Tensor = tensor_mod.Tensor
  local aliases = {}
  for _, name in ipairs(sorted_keys(Tensor)) do
    local f = Tensor[name]
    aliases[f] = aliases[f] or {}
    table.insert(aliases[f], name)
  end
  for _, name in ipairs(sorted_keys(Tensor)) do
    if not SKIP_METHOD[name] then
      for _, l in ipairs(arglists(40)) do
        local self_k = tensor_entries[rand(#tensor_entries)]
        local spec = { self_k }
        for i, k in ipairs(l) do spec[i + 1] = k end
        -- called as t:name(...), the public form (through the metatable, as a user would)
        case(pool[self_k][1] .. ":" .. name .. "(" .. argdesc(l) .. ")", name, aliases[Tensor[name]],
             function(t, ...) return t[name](t, ...) end, spec)
      end
    end
  end
  -- the operators, written as a user writes them (Lua calls the metamethods with a tensor operand)
  local OPS = {
    { "add", function(a, b) return a + b end, true }, { "sub", function(a, b) return a - b end, true },
    { "mul", function(a, b) return a * b end, true }, { "div", function(a, b) return a / b end, true },
    { "pow", function(a, b) return a ^ b end, true }, { "mod", function(a, b) return a % b end, true },
    { "lt", function(a, b) return a < b end, true }, { "le", function(a, b) return a <= b end, true },
    { "eq", function(a, b) return a == b end, true }, { "concat", function(a, b) return a .. b end, true },
    { "neg", function(a) return -a end, false }, { "len", function(a) return #a end, false },
    { "tostring", function(a) return tostring(a) end, false },
    { "index", function(a, k) return a[k] end, false },
    { "newindex", function(a, k) a[k] = 1 end, false },
    { "setgrad", function(a, v) a.grad = v end, false },
    { "set_requires_grad", function(a, v) a.requires_grad = v end, false },
    { "call", function(a, v) return a(v) end, false },
  }
  for _, op in ipairs(OPS) do
    local fname, fn, both = op[1], op[2], op[3]
    -- the error names the operator's op ("add: ...") or the Lua operation on a tensor
    local extra = { "tensor", "attempt to" }
    for _, te in ipairs(tensor_entries) do
      for k = 1, #pool do
        if rand(3) == 1 then
          case(fname .. "(" .. pool[te][1] .. ", " .. pool[k][1] .. ")", fname, extra, fn, { te, k })
          if both then
            case(fname .. "(" .. pool[k][1] .. ", " .. pool[te][1] .. ")", fname, extra, fn, { k, te })
          end
        end
      end
    end
  end
elseif section == "nn" then
  local nn = torch.nn
  local classes = {}
  for k, v in pairs(nn) do
    if type(v) == "table" and getmetatable(v) and getmetatable(v).__call and k ~= "Module" then classes[#classes + 1] = k end
  end
  table.sort(classes)
  -- valid constructions, to call with wrong inputs
  local good = {
    Linear = { 4, 3 }, Embedding = { 5, 4 }, LayerNorm = { 4 }, RMSNorm = { 4 }, Dropout = { 0.5 },
    MultiheadAttention = { 4, 2 }, TransformerEncoderLayer = { 4, 2, 8 }, TransformerDecoderLayer = { 4, 2, 8 },
  }
  for _, name in ipairs(classes) do
    local cls = nn[name]
    -- CrossEntropyLoss's forward reports as its functional, cross_entropy (F.cross_entropy)
    local snake = name:gsub("(%l)(%u)", "%1_%2"):lower()
    local acronym = { NLLLoss = "nll_loss", MSELoss = "mse_loss", RMSNorm = "rms_norm" }
    local extra = { snake, (snake:gsub("_loss$", "")), "forward", acronym[name] }
    -- constructors: each pool value, then lists with negative, zero and wrong-typed sizes
    for _, l in ipairs(arglists(20)) do
      case("nn." .. name .. "(" .. argdesc(l) .. ")", name, extra, function(...) return cls(...) end, l)
    end
    -- forward of a valid module with wrong-shape/dtype/type inputs
    local ok, m = pcall(cls, unpack(good[name] or {}))
    if ok then
      for _, l in ipairs(arglists(10)) do
        case("nn." .. name .. "(ok)(" .. argdesc(l) .. ")", name, extra, function(...) return m(...) end, l)
      end
    end
  end
elseif section == "optim" then
  local optim = torch.optim
  local function params() return { torch.nn.Parameter(torch.zeros(3)) } end
  local hyper = {
    { "lr", { -1, -1e-3, 0 / 0, "abc", true } }, -- not inf: PyTorch accepts lr = inf,
    { "eps", { -1, -1e-8, 0 / 0, "abc" } },
    { "weight_decay", { -1, 0 / 0, "abc" } },
    { "betas", { { -0.1, 0.9 }, { 1, 0.999 }, { 0.9, 1.5 }, { 0.9 }, "abc", 3, { 0 / 0, 0.9 } } },
    { "momentum", { -1, 0 / 0, "abc" } },
  }
  for _, name in ipairs({ "AdamW", "SGD" }) do
    local cls = optim[name]
    for _, h in ipairs(hyper) do
      for _, v in ipairs(h[2]) do
        local label = type(v) == "table" and ("{" .. table.concat(v, ",") .. "}") or tostring(v)
        -- PyTorch raises for these ("Invalid learning rate: -1"); a constructor that accepts one is a
        -- silent wrong answer, so success is a failure here
        local f = function()
          local o = cls(params(), { lr = h[1] == "lr" and v or 1e-3, [h[1] ~= "lr" and h[1] or "_"] = v })
          if h[1] == "momentum" and name == "AdamW" then return end -- AdamW has no momentum
          if (h[1] == "betas" or h[1] == "eps") and name == "SGD" then return end -- SGD has neither
          error(("%s: accepted %s = %s"):format(name, h[1], label), 0)
        end
        case(("optim.%s(params, {%s=%s})"):format(name, h[1], label), name, { h[1], "invalid" },
             function()
               local ok, err = pcall(f)
               if ok then return end
               if type(err) == "string" and err:find("accepted", 1, true) then
                 io.stdout:write(("BAD %s: %s\n"):format("optim", err))
               end
               error(err, 0)
             end, {})
      end
    end
    for _, l in ipairs(arglists(10)) do
      case("optim." .. name .. "(" .. argdesc(l) .. ")", name, nil, function(...) return cls(...) end, l)
    end
  end
elseif section == "io" then
  -- files that are not safetensors: empty, truncated, random bytes, a huge header length
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local good = dir .. "/good.safetensors"
  torch.save({ w = torch.arange(6, { dtype = torch.float32 }):reshape(2, 3), b = torch.ones(2) }, good)
  local f = assert(io.open(good, "rb"))
  local bytes = f:read("*a")
  f:close()
  local function write(name, data)
    local path = dir .. "/" .. name
    local h = assert(io.open(path, "wb"))
    h:write(data)
    h:close()
    return path
  end
  local files = { write("empty", "") }
  for _, n in ipairs({ 1, 7, 8, 9, 20, #bytes - 1, #bytes - 4 }) do
    files[#files + 1] = write("trunc" .. n, bytes:sub(1, n))
  end
  for i = 1, 12 do
    local b = {}
    for j = 1, rand(200) do b[j] = string.char(rand(256) - 1) end
    files[#files + 1] = write("random" .. i, table.concat(b))
    -- a valid file with bytes flipped in its header
    local c = { bytes:byte(1, -1) }
    for _ = 1, 3 do
      local k = rand(math.min(#c, 120))
      c[k] = (c[k] + rand(255)) % 256
    end
    files[#files + 1] = write("flipped" .. i, string.char(unpack(c)))
  end
  files[#files + 1] = write("hugelen", "\255\255\255\255\255\255\255\127{}")
  files[#files + 1] = write("header_only", "\2\0\0\0\0\0\0\0{}")
  files[#files + 1] = write("bad_offsets",
    '\80\0\0\0\0\0\0\0{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,1000000]}}          ')
  files[#files + 1] = dir -- a directory
  files[#files + 1] = dir .. "/missing"
  for _, path in ipairs(files) do
    local label = path:sub(#dir + 2)
    case("torch.load(" .. label .. ")", "load", { "safetensors", label }, function() return torch.load(path) end, {})
    case("io.safe_open(" .. label .. ")", "safe_open", { "safetensors", label }, function()
      local h = torch.io.safe_open(path)
      for _, k in ipairs(h:keys()) do h:get_tensor(k) end
    end, {})
    case("torch.load_checkpoint(" .. label .. ")", "load_checkpoint", { "safetensors", label, "checkpoint" },
         function() return torch.load_checkpoint(path) end, {})
  end
  for _, l in ipairs(arglists(10)) do
    case("torch.save(" .. argdesc(l) .. ")", "save", nil, torch.save, l)
  end
end

-- ---- run this batch ------------------------------------------------------------------------------
last = math.min(last, #cases)
io.stdout:write(("TOTAL %d\n"):format(#cases))
for id = first, last do
  local c = cases[id]
  local args, argn = {}, #c[5]
  for i, k in ipairs(c[5]) do args[i] = pool[k][2]() end
  run_case(id, c[1], c[2], c[3], c[4], unpack(args, 1, argn))
  if id % 200 == 0 then collectgarbage() end
end
io.stdout:write(("DONE %d bad\n"):format(nbad))
os.exit(0)
