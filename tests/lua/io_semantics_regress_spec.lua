-- io_semantics_regress_spec.lua: silent wrong answers found by probing torch.save / torch.load and
-- save_checkpoint / load_checkpoint:
--  * a save that hits the file size limit (ulimit -f) killed ramtorch-lua with SIGXFSZ, leaving the
--    temporary file behind; it must fail as an error (EFBIG), keep the old file and clean up, as in
--    Python (which ignores SIGXFSZ at startup);
--  * checkpoint extra / JSON keys: a string key "#1" came back as the number 1, a tensor under a
--    number key came back under a string key, and -0.0 came back as +0.0;
--  * number metadata values were written with tostring (14 digits), so 1/3 did not come back.
local torch = require("ramtorch")

local util = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "support/spec_util.lua")
local interpreter = util.interpreter

local tmpdir = os.tmpname()
os.remove(tmpdir)
assert(os.execute("mkdir -p " .. tmpdir) == 0)
teardown(function() os.execute("rm -rf " .. tmpdir) end)

local ls = util.ls

describe("torch.save under a file size limit", function()
  it("fails with an error, keeps the previous file and leaves no temporary file", function()
    local dir = tmpdir .. "/fsz"
    os.execute("mkdir -p " .. dir)
    local path = dir .. "/f.safetensors"
    torch.save({ a = torch.arange(10):float() }, path)
    local script = dir .. "/big.lua"
    local f = assert(io.open(script, "w"))
    f:write(([[
local torch = require("ramtorch")
local ok, err = pcall(torch.save, { a = torch.ones(1000000) }, %q)
io.write(ok and "SAVED" or ("ERR " .. tostring(err)), "\n")
]]):format(path))
    f:close()
    local p = assert(io.popen("(ulimit -f 100; '" .. interpreter() .. "' " .. script .. ") 2>&1; echo rc=$?"))
    local out = p:read("*a")
    p:close()
    assert.matches("ERR [^\n]*writing [^\n]*f%.safetensors failed[^\n]*File too large", out)
    assert.matches("rc=0", out)
    os.remove(script)
    assert.same({ "f.safetensors" }, ls(dir))
    assert.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, torch.load(path).a:totable())
  end)
end)

describe("save_checkpoint / load_checkpoint keys and numbers", function()
  it("keeps string keys that start with '#' strings, and number keys of extra tensors numbers", function()
    local path = tmpdir .. "/ck.safetensors"
    torch.save_checkpoint(path, { extra = { ["#1"] = "hash", [2] = "two", ["##x"] = 1,
                                            [5] = torch.ones(2), ["#7"] = torch.zeros(1),
                                            nested = { ["#3"] = { [4] = "four" } } } })
    local e = torch.load_checkpoint(path).extra
    assert.equal("hash", e["#1"])
    assert.is_nil(e[1])
    assert.equal("two", e[2])
    assert.equal(1, e["##x"])
    assert.is_true(torch.is_tensor(e[5]))
    assert.is_nil(e["5"])
    assert.same({ 1, 1 }, e[5]:totable())
    assert.is_true(torch.is_tensor(e["#7"]))
    assert.equal("four", e.nested["#3"][4])
  end)

  it("keeps the sign of -0.0", function()
    local path = tmpdir .. "/ck0.safetensors"
    torch.save_checkpoint(path, { step = 1, extra = { z = -0.0, p = 0.0 } })
    local e = torch.load_checkpoint(path).extra
    assert.equal(-math.huge, 1 / e.z)
    assert.equal(math.huge, 1 / e.p)
  end)
end)

describe("torch.save metadata", function()
  it("writes number values so that they read back exactly", function()
    local path = tmpdir .. "/meta.safetensors"
    torch.save({ a = torch.ones(1) }, path, { lr = 1 / 3, n = 5, big = 2 ^ 60, flag = true })
    local _, m = torch.load(path)
    assert.equal(1 / 3, tonumber(m.lr))
    assert.equal("5", m.n)
    assert.equal(2 ^ 60, tonumber(m.big))
    assert.equal("true", m.flag)
  end)
end)
