-- api_fuzz_spec.lua: clear errors on bad input, never a crash, a hang or a silent wrong answer. A seeded
-- fuzzer (support/api_fuzz_driver.lua) calls every function of the torch namespace, every Tensor method
-- and operator, nn module constructors and forwards, optim constructors with bad hyperparameters and
-- torch.load / safe_open / load_checkpoint on empty, truncated and random-byte files, with arguments from
-- a pool of bad and edge-case values (nil, booleans, 0, -1, 1.5, 2^31, 2^63, -2^63, nan, +-inf, strings,
-- tables, a function, a NULL pointer, tensors of every dtype in shapes {}, {0}, {1}, {3}, {2,3}, {2,0,3},
-- non-contiguous views and a freed tensor). Each call must return or raise a string error naming the
-- function. The driver runs in child processes (under a memory limit and a timeout): a call that kills
-- the process is reported by name and the run resumes after it, so one crash fails this spec, not the
-- whole busted run.
local ffi = require("ffi")

local util = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "support/spec_util.lua")
local interpreter = util.interpreter

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
if here:sub(1, 1) ~= "/" then -- the child runs in a scratch directory: make the path absolute
  local p = assert(io.popen("pwd"))
  here = p:read("*l") .. "/" .. here
  p:close()
end
local DRIVER = here .. "support/api_fuzz_driver.lua"
local SEED = 20261129

-- nn classes allowed to raise errors that do not name them (none: every module checks its inputs and
-- options). A crash, a hang or a non-string error is never allowed.
local NN_UNNAMED_OK = {}

-- Runs every case of a section; returns the crashes/timeouts and the BAD lines.
local function run_section(section)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir) == 0)
  local out = dir .. "/out"
  local crashes, bads, total = {}, {}, nil
  local first = 1
  for _ = 1, 200 do
    -- cd: torch.save with a fuzzed path string writes into the scratch directory; ulimit -v: a 2^31
    -- size fails to allocate instead of swapping; timeout: a hang is a failure naming the call
    local cmd = ("cd %s && (ulimit -v 6000000; exec timeout 60 '%s' '%s' %s %d 1000000000 %d) > %s 2>%s.err; echo $? > %s.rc")
      :format(dir, interpreter(), DRIVER, section, first, SEED, out, out, out)
    os.execute(cmd)
    local f = assert(io.open(out .. ".rc"))
    local rc = tonumber(f:read("*l"))
    f:close()
    local last_case
    for line in io.lines(out) do
      if line:match("^CASE ") then last_case = line
      elseif line:match("^BAD ") then bads[#bads + 1] = line
      elseif line:match("^TOTAL ") then total = tonumber(line:match("%d+")) end
    end
    if rc == 0 then break end
    local ef = io.open(out .. ".err")
    local err = ef and ef:read("*a") or ""
    if ef then ef:close() end
    local why = rc == 124 and "hang (timeout)" or rc > 128 and ("signal " .. (rc - 128)) or ("exit " .. rc)
    crashes[#crashes + 1] = ("%s: %s %s"):format(why, last_case or "(before the first case)", err:sub(-300))
    local id = last_case and tonumber(last_case:match("^CASE (%d+)"))
    if not id then break end -- the driver itself failed
    first = id + 1
  end
  os.execute("rm -rf " .. dir)
  return crashes, bads, total
end

local function check(section, allow_bad)
  local t0 = os.time()
  local crashes, bads, total = run_section(section)
  assert.is_not_nil(total, section .. ": the driver did not start")
  local fails = {}
  for _, c in ipairs(crashes) do fails[#fails + 1] = "CRASH " .. c end
  for _, b in ipairs(bads) do
    if not (allow_bad and allow_bad(b)) then fails[#fails + 1] = b end
  end
  if #fails > 0 then
    local shown = {}
    for i = 1, math.min(#fails, 25) do shown[i] = fails[i] end
    error(("%s: %d of %d calls failed:\n%s"):format(section, #fails, total, table.concat(shown, "\n")), 0)
  end
  assert.is_true(total > 0)
  assert.is_true(os.time() - t0 < 120)
end

describe("API fuzzing (bad and edge-case arguments)", function()
  it("torch.* functions", function() check("torch") end)
  it("Tensor methods and operators", function() check("tensor") end)
  it("nn module constructors and forwards", function()
    check("nn", function(b)
      local cls = b:match("^BAD %d+ nn%.([%w_]+)%(")
      return cls ~= nil and NN_UNNAMED_OK[cls] and b:find("does not name", 1, true) ~= nil
    end)
  end)
  it("optim constructors reject bad hyperparameters as PyTorch does", function() check("optim") end)
  it("torch.load / safe_open / load_checkpoint on broken files", function() check("io") end)

  -- the defects the fuzzer found, pinned directly (each crashed the process or raised a Lua internal
  -- error before its fix)
  describe("regressions", function()
    local torch = require("ramtorch")
    local function err_of(f, ...)
      local ok, e = pcall(f, ...)
      assert.is_false(ok)
      return e
    end
    it("a freed tensor raises instead of reading through NULL", function()
      local t = torch.ones(3)
      t:free()
      t:free() -- safe twice
      assert.matches("numel: the Tensor was freed", err_of(function() return t:numel() end))
      assert.matches("len: the Tensor was freed", err_of(function() return #t end))
      assert.matches("requires_grad: the Tensor was freed", err_of(function() t.requires_grad = true end))
      assert.matches("add: expected a Tensor or a number", err_of(torch.add, torch.ones(3), t))
      assert.equal("Tensor(freed)", tostring(t))
      assert.is_false(torch.is_tensor(t))
    end)
    it("view_as / expand_as / reshape_as / type_as check their argument", function()
      local a = torch.ones(2, 3)
      assert.matches("expand_as: expected a Tensor, got string", err_of(function() return a:expand_as("abc") end))
      assert.matches("view_as: expected a Tensor", err_of(function() return a:view_as({}) end))
      assert.matches("type_as: expected a Tensor", err_of(function() return a:type_as(1) end))
    end)
    it("arange, linspace, *_like, no_grad, set_default_dtype name themselves", function()
      assert.matches("arange: expected a number for end", err_of(torch.arange, "abc"))
      assert.matches("arange: end must be finite", err_of(torch.arange, math.huge))
      assert.matches("arange: too many elements", err_of(torch.arange, 2 ^ 63))
      assert.matches("linspace: expected numbers", err_of(torch.linspace, torch.ones(1), 1, 3))
      assert.matches("zeros_like: expected a Tensor", err_of(torch.zeros_like, 3))
      assert.matches("no_grad: expected a function", err_of(torch.no_grad, torch.ones(1)))
      assert.matches("set_default_dtype: expected a dtype", err_of(torch.set_default_dtype, "abc"))
      assert.matches("index_tensor: expected indices", err_of(torch.index_tensor, torch.ones(2), 1))
      assert.matches("add: argument alpha must be a number", err_of(torch.add, torch.ones(2), torch.ones(2), torch.ones(2)))
      assert.matches("zeros: negative dimension", err_of(torch.zeros, -1))
      assert.matches("view: expected integer sizes", err_of(function() return torch.ones(1):view(math.huge) end))
      assert.matches("backward: expected a Tensor", err_of(function() torch.ones(1):backward(ffi.cast("void*", 0)) end))
      assert.matches("copy_: broadcast", err_of(function() return torch.ones(2, 3):copy_(torch.ones(4)) end))
    end)
    it("optimizers reject NaN hyperparameters (PyTorch: Invalid learning rate: nan)", function()
      local p = { torch.nn.Parameter(torch.zeros(2)) }
      assert.matches("Invalid learning rate: nan", err_of(torch.optim.AdamW, p, { lr = 0 / 0 }))
      assert.matches("Invalid epsilon value: nan", err_of(torch.optim.AdamW, p, { eps = 0 / 0 }))
      assert.matches("Invalid beta parameter at index 0", err_of(torch.optim.AdamW, p, { betas = { 0 / 0, 0.9 } }))
      assert.matches("Invalid momentum value: nan", err_of(torch.optim.SGD, p, { lr = 0.1, momentum = 0 / 0 }))
    end)
  end)
end)
