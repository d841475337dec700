-- offload_migration_audit_spec.lua: residency by migration (runtime/offload_migrate.c) against plain
-- layers in the cases an audit found wrong: a parameter saved by a plain op's graph before the move
-- (a weight penalty computed before the forward), a moved model collected while nothing else streams
-- (its device bytes must be freed), and RamTorch gradient hooks registered on a moved parameter.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local optim = require("ramtorch.optim")
local testing = require("ramtorch.testing")
local offload = require("ramtorch.offload")

local DIMS = { 16, 32, 24, 8 }

local pair = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "support/offload_pair.lua")
local total_bytes, migrated_flags = pair.total_bytes, pair.migrated_flags
local function make_pair() return pair.make_pair(DIMS) end

describe("residency by migration: audit cases (CPU engine)", function()
  pair.cpu_engine_hooks(setup, teardown, before_each)

  it("trains like plain layers when a plain op's graph saved the weight before the forward moved it", function()
    local sm, pm = make_pair()
    offload.set_memory_budget(total_bytes(sm) + 1024, "cpu")
    local x = torch.randn({ 5, DIMS[1] })
    local so = optim.SGD(sm:parameters(), { lr = 0.1, momentum = 0.9 })
    local po = optim.SGD(pm:parameters(), { lr = 0.1, momentum = 0.9 })
    for _ = 1, 4 do
      for _, mo in ipairs({ { sm, so }, { pm, po } }) do
        local m, o = mo[1], mo[2]
        local penalty = m:parameters()[3]:pow(2):sum() -- PowBackward saves the weight itself
        local loss = m(x):pow(2):mean() + penalty * 0.01
        loss:backward()
        o:step()
        o:zero_grad()
      end
    end
    for i, p in ipairs(pm:parameters()) do testing.assert_close(sm:parameters()[i], p, 1e-5, 1e-6, "weight " .. i) end
    -- the penalised weight (and its bias, which moves with it) waits while each step's graph holds
    -- it; the others moved
    assert.are.equal("110011", migrated_flags(sm))
    -- once nothing saves it, it moves too
    sm(x):sum():backward()
    sm:zero_grad()
    sm(x):sum():backward()
    assert.are.equal("111111", migrated_flags(sm))
  end)

  it("frees a collected model's moved parameters even when nothing streams afterwards", function()
    do
      local sm = make_pair()
      offload.set_memory_budget(total_bytes(sm) + 1024, "cpu")
      local x = torch.randn({ 5, DIMS[1] })
      for _ = 1, 3 do
        sm:zero_grad()
        sm(x):sum():backward()
      end
      assert.are.equal("111111", migrated_flags(sm))
      assert.are.equal(total_bytes(sm), offload.stats("cpu").migrated_bytes)
    end
    collectgarbage("collect")
    collectgarbage("collect")
    assert.are.equal(0, offload.stats("cpu").migrated_bytes)
  end)

  for _, kind in ipairs({ "grad", "post_accumulate_grad" }) do
    it("runs a RamTorch " .. kind .. " hook registered after its parameter moved", function()
      local sm, pm = make_pair()
      offload.set_memory_budget(total_bytes(sm) + 1024, "cpu")
      local x = torch.randn({ 5, DIMS[1] })
      for _ = 1, 3 do
        sm:zero_grad()
        sm(x):sum():backward()
      end
      local w = sm:parameters()[1]
      assert.is_true(offload.is_migrated(w))
      local seen = 0
      offload["register_ramtorch_" .. kind .. "_hook"](w, function() seen = seen + 1 end)
      for _ = 1, 2 do
        sm:zero_grad()
        sm(x):sum():backward()
      end
      assert.are.equal(2, seen)
      assert.is_false(offload.is_migrated(w))
      pm(x):sum():backward()
      for i, p in ipairs(pm:parameters()) do testing.assert_close(sm:parameters()[i].grad, p.grad, 1e-5, 1e-6, "grad " .. i) end
    end)
  end
end)
