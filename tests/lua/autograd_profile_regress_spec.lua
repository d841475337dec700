-- autograd_profile_regress_spec.lua: RAMTORCH_AUTOGRAD_PROFILE=1 (runtime/autograd_profile.c) prints
-- the node times of every backward, one that fails included, and a report never carries rows of an
-- earlier backward (a failed backward's rows used to stay in the table and show up in the next
-- backward's report). The setting is read once per process, so the script runs in a child process.

local util = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "support/spec_util.lua")
local interpreter = util.interpreter

local SCRIPT = [[
local torch = require("ramtorch")
local Boom = torch.autograd.Function({
  forward = function(ctx, a) return a * 1 end,
  backward = function(ctx, g) error("boom in backward") end,
})
local x = torch.randn({ 4 }):requires_grad_(true)
io.stderr:write("<first>\n")
assert(not pcall(function() (Boom(x) * 3):sum():backward() end))
io.stderr:write("<second>\n")
local y = (x + 1):sum()
y:backward()
io.stderr:write("<end>\n")
]]

describe("RAMTORCH_AUTOGRAD_PROFILE", function()
  it("reports a failed backward's nodes with it, not with the next backward", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(SCRIPT)
    f:close()
    local p = assert(io.popen("RAMTORCH_AUTOGRAD_PROFILE=1 '" .. interpreter() .. "' " .. path .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    os.remove(path)
    local first, second = out:match("<first>\n(.*)<second>\n(.*)<end>")
    assert(first, out)
    assert.truthy(first:find("autograd profile:", 1, true), out)
    assert.truthy(first:find("MulBackward", 1, true), out)
    assert.truthy(second:find("autograd profile:", 1, true), out)
    assert.truthy(second:find("SumBackward", 1, true), out)
    assert.is_nil(second:find("MulBackward", 1, true), out)
  end)
end)
