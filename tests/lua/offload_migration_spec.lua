-- offload_migration_spec.lua: residency by migration (runtime/offload_migrate.c, DESIGN section 5) on
-- the CPU engine: under a budget, the parameters the plan keeps resident move to the "device" for good
-- (here a separate host allocation), after which nothing of them crosses the bus; training matches
-- plain layers; a parameter moves only when nothing holds it on the host (a live graph, a host
-- gradient, hooks, an optimizer that updates it there), and otherwise stays a resident copy.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local optim = require("ramtorch.optim")
local testing = require("ramtorch.testing")
local offload = require("ramtorch.offload")

local DIMS = { 16, 32, 24, 8 }

local pair = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "support/offload_pair.lua")
local total_bytes, migrated_flags = pair.total_bytes, pair.migrated_flags
local function make_pair(dtype, dims) return pair.make_pair(dims or DIMS, dtype) end

-- steps of AdamW with accum micro-batches; per step: the engine's statistics and migration flags.
local function train(model, steps, accum, opt_opts)
  torch.manual_seed(9)
  local dtype = model:parameters()[1].dtype
  local opt = optim.AdamW(model:parameters(), opt_opts or { lr = 1e-2 })
  local per_step = {}
  for s = 1, steps do
    offload.reset_stats("cpu")
    for _ = 1, accum do
      local x = torch.randn({ 5, DIMS[1] }, { dtype = dtype })
      local y = model(x)
      y:float():pow(2):mean():backward()
    end
    opt:step()
    opt:zero_grad()
    local st = offload.stats("cpu")
    per_step[s] = { h2d = st.h2d_bytes, d2h = st.d2h_bytes, migrated = st.migrated_bytes, flags = migrated_flags(model) }
  end
  local w = {}
  for i, p in ipairs(model:parameters()) do w[i] = p:detach():float():clone() end
  return w, per_step, opt
end

describe("residency by migration (CPU engine)", function()
  pair.cpu_engine_hooks(setup, teardown, before_each)

  it("moves every parameter when the budget holds them all, then moves nothing over the bus", function()
    local sm, pm = make_pair(torch.float32)
    offload.set_memory_budget(total_bytes(sm) + 1024, "cpu")
    local sw, st = train(sm, 4, 1)
    local pw = train(pm, 4, 1)
    for i = 1, #pw do testing.assert_close(sw[i], pw[i], 1e-5, 1e-6, "weight " .. i) end
    assert.are.equal("000000", st[1].flags) -- the first step learns the schedule
    assert.are.equal("111111", st[3].flags)
    for s = 3, 4 do
      assert.are.equal(0, st[s].h2d, "step " .. s .. " sent parameters")
      assert.are.equal(0, st[s].d2h, "step " .. s .. " sent gradients")
    end
    assert.are.equal(total_bytes(sm), st[4].migrated)
    local stats = offload.stats("cpu")
    assert.are.equal(total_bytes(sm), stats.resident_bytes)
    assert.are.equal(0, stats.streamed_bytes)
  end)

  it("moves only what the plan keeps under a partial budget, and trains like plain layers (bf16, 2 micro-batches)", function()
    local dims = { 16, 16, 16, 16, 16, 16, 16, 16 }
    local sm, pm = make_pair(torch.bfloat16, dims)
    local ps = sm:parameters()
    -- beyond the planner's window (three of the largest transfers), room for two layers
    local layer = (16 * 16 + 16) * 2
    offload.set_memory_budget(3 * 16 * 16 * 2 + 2 * layer + 16, "cpu")
    local sw, st = train(sm, 4, 2)
    local pw = train(pm, 4, 2)
    for i = 1, #pw do testing.assert_close(sw[i], pw[i], 2e-2, 2e-2, "weight " .. i) end
    assert.are.equal("11110000000000", st[4].flags)
    assert.is_true(st[4].h2d > 0 and st[4].d2h > 0) -- the rest still streams
    assert.are.equal("cpu", ps[#ps].device)
    assert.are.equal(nil, ps[1].grad)
  end)

  it("moves f32 masters under bf16 autocast as f32 and computes like nn.Linear under autocast", function()
    local amp = require("ramtorch.amp")
    local sm, pm = make_pair(torch.float32)
    offload.set_memory_budget(total_bytes(sm) + 1024, "cpu")
    local x = torch.randn({ 5, DIMS[1] })
    for _ = 1, 3 do
      local ys = amp.autocast("bf16", function() return sm(x) end)
      local yp = amp.autocast("bf16", function() return pm(x) end)
      assert.are.equal(torch.bfloat16, ys.dtype)
      testing.assert_close(ys:float(), yp:float(), 0, 0, "autocast output")
      ys:float():sum():backward()
      yp:float():sum():backward()
      for i, p in ipairs(pm:parameters()) do
        testing.assert_close(sm:parameters()[i].grad, p.grad, 0, 0, "grad " .. i)
      end
      sm:zero_grad()
      pm:zero_grad()
    end
    assert.are.equal("111111", migrated_flags(sm))
    assert.are.equal(torch.float32, sm:parameters()[1].dtype)
    assert.are.equal(total_bytes(sm), offload.stats("cpu").migrated_bytes)
  end)

  it("keeps parameters an optimizer updates on the host (bf16 states, overlap, delayed update)", function()
    for _, setup_opt in ipairs({
      function(m) return optim.AdamW(m:parameters(), { lr = 1e-2, state_dtype = "bf16" }) end,
      function(m) return optim.AdamW(m:parameters(), { lr = 1e-2 }):overlap_with_backward(true) end,
      function(m) return optim.AdamW(m:parameters(), { lr = 1e-2, delayed_update = true }) end,
    }) do
      offload.reset_schedule("cpu")
      local sm = make_pair(torch.float32)
      offload.set_memory_budget(total_bytes(sm) + 1024, "cpu")
      local opt = setup_opt(sm)
      for _ = 1, 3 do
        if opt._overlap then opt:last_backward() end
        sm(torch.randn({ 5, DIMS[1] })):sum():backward()
        opt:step()
        opt:zero_grad()
      end
      opt:flush()
      assert.are.equal("000000", migrated_flags(sm))
      assert.are.equal(total_bytes(sm), offload.stats("cpu").resident_bytes) -- resident copies instead
    end
  end)

  it("keeps a layer with RamTorch gradient hooks streamed", function()
    local sm = make_pair(torch.float32)
    local l1 = sm:parameters()[1]
    local seen = 0
    offload.register_ramtorch_grad_hook(l1, function() seen = seen + 1 end)
    offload.set_memory_budget(total_bytes(sm) + 1024, "cpu")
    train(sm, 3, 1)
    assert.are.equal(3, seen)
    assert.are.equal("001111", migrated_flags(sm))
  end)

  it("waits for a live graph: a forward recorded before the plan still runs its backward", function()
    local sm, pm = make_pair(torch.float32)
    offload.set_memory_budget(total_bytes(sm) + 1024, "cpu")
    local x = torch.randn({ 5, DIMS[1] })
    sm(x):sum():backward() -- learns
    sm:zero_grad()
    local y1 = sm(x) -- the first layer's request makes the plan: the next layers move before use
    assert.are.equal("001111", migrated_flags(sm))
    local y2 = sm(x) -- y1's node holds the first layer on the host
    assert.are.equal("001111", migrated_flags(sm))
    y1:sum():backward()
    y2:sum():backward()
    pm(x):sum():backward()
    for i, p in ipairs(pm:parameters()) do
      testing.assert_close(sm:parameters()[i].grad, p.grad * 2, 1e-5, 1e-6, "grad " .. i)
    end
    sm:zero_grad()
    sm(x):sum():backward() -- nothing holds them now
    assert.are.equal("111111", migrated_flags(sm))
  end)

  it("defers the move while a host gradient accumulates", function()
    local sm = make_pair(torch.float32)
    offload.set_memory_budget(total_bytes(sm) + 1024, "cpu")
    local x = torch.randn({ 5, DIMS[1] })
    sm(x):sum():backward()
    sm(x):sum():backward() -- plans, but every parameter has a host gradient
    assert.are.equal("000000", migrated_flags(sm))
    sm:zero_grad()
    sm(x):sum():backward()
    assert.are.equal("111111", migrated_flags(sm))
  end)

  it("comes back to the host arena with model:to(\"cpu\"), gradient included, and trains on", function()
    local sm, pm = make_pair(torch.float32)
    offload.set_memory_budget(total_bytes(sm) + 1024, "cpu")
    local x = torch.randn({ 5, DIMS[1] })
    for _ = 1, 3 do
      sm:zero_grad()
      sm(x):sum():backward()
    end
    assert.are.equal("111111", migrated_flags(sm))
    local before, grads = {}, {}
    for i, p in ipairs(sm:parameters()) do
      before[i], grads[i] = p:clone(), p.grad:clone()
      assert.is_false(offload.is_arena_tensor(p))
    end
    sm:to("cpu")
    for i, p in ipairs(sm:parameters()) do
      assert.is_false(offload.is_migrated(p))
      assert.is_true(offload.is_arena_tensor(p))
      testing.assert_close(p, before[i], 0, 0, "value " .. i)
      testing.assert_close(p.grad, grads[i], 0, 0, "grad " .. i)
    end
    assert.are.equal(0, offload.stats("cpu").migrated_bytes)
    -- streamed again, and moved again once nothing holds them
    sm(x):sum():backward() -- accumulates into the gradient that came back: 2 x one backward's
    pm(x):sum():backward()
    pm(x):sum():backward()
    for i, p in ipairs(pm:parameters()) do testing.assert_close(sm:parameters()[i].grad, p.grad, 1e-5, 1e-6, "grad " .. i) end
    sm:zero_grad()
    sm(x):sum():backward()
    sm:zero_grad()
    sm(x):sum():backward()
    assert.are.equal("111111", migrated_flags(sm))
  end)

  it("can be switched off (resident copies, gradients to the host)", function()
    assert.is_true(offload.set_migration(false))
    local sm = make_pair(torch.float32)
    offload.set_memory_budget(total_bytes(sm) + 1024, "cpu")
    local _, st = train(sm, 3, 1)
    assert.are.equal("000000", st[3].flags)
    -- each step sends every updated weight up again and every gradient down
    assert.are.equal(total_bytes(sm), st[3].h2d)
    assert.are.equal(total_bytes(sm), st[3].d2h)
    assert.is_false(offload.set_migration(true))
    testing.assert_error_has(function() offload.set_migration("yes") end, "set_migration: expected true or false")
    testing.assert_error_has(function() offload.keep_on_host(3) end, "keep_on_host: expected a Tensor")
  end)
end)
