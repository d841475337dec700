-- delayed_update_review_spec.lua: places that read or rebuild streamed parameters while a delayed
-- optimizer update (optim's delay_update, runtime/host_optim_delay.c) may still be writing them must
-- finish it first, as state_dict does (delayed_update_spec.lua covers the update rule itself). The
-- update is slowed by the test hook, so a read that does not wait sees the weights before it.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local optim = require("ramtorch.optim")
local testing = require("ramtorch.testing")
local offload = require("ramtorch.offload")
local C = require("ramtorch.ffi").C

local function make_model()
  torch.manual_seed(7)
  return nn.Sequential({ torch.Linear(16, 32), nn.ReLU(), torch.Linear(32, 8) })
end

-- A model and a delayed AdamW after one delayed step whose update is pending (and slow).
local function pending_step()
  local model = make_model()
  local opt = optim.AdamW(model:parameters(), { lr = 1e-2, delayed_update = true })
  torch.manual_seed(11)
  model(torch.randn({ 6, 16 })):sum():backward()
  C.rt_delayed_update_set_test_delay_us(20000) -- each parameter's update starts 20 ms late
  opt:step()
  assert.is_true(opt:update_pending())
  return model, opt
end

describe("a pending delayed update", function()
  setup(function() offload.enable_cpu_streams(true) end)
  teardown(function()
    C.rt_delayed_update_set_test_delay_us(0)
    offload.enable_cpu_streams(false)
  end)
  before_each(function()
    offload.reset_schedule("cpu")
    collectgarbage()
  end)
  after_each(function() C.rt_delayed_update_set_test_delay_us(0) end)

  it("is finished by model:to(dtype) before the parameters are converted", function()
    local model, opt = pending_step()
    model:to(torch.float64)
    local got = {}
    for i, p in ipairs(model:parameters()) do got[i] = p:detach():clone() end
    opt:flush()
    for i, p in ipairs(opt.param_groups[1].params) do
      testing.assert_close(got[i], p:detach():double(), 0, 0, "parameter " .. i)
    end
  end)

  -- the update of each parameter bumps its storage's version once; parameters that are views of
  -- one storage (adopted weights of a flat buffer) bump it once each, which is not a foreign write
  it("steps parameters that share one storage without reporting a write", function()
    local function run(shared)
      torch.manual_seed(5)
      local flat = torch.randn({ 32 * 16 + 32 }) * 0.1
      local w, b = flat:narrow(0, 0, 512):view({ 32, 16 }), flat:narrow(0, 512, 32)
      if not shared then w, b = w:clone(), b:clone() end
      local lin = torch.Linear(16, 32, { weight = nn.Parameter(w), bias_tensor = nn.Parameter(b) })
      local opt = optim.AdamW(lin:parameters(), { lr = 1e-2, delayed_update = true })
      for _ = 1, 4 do
        lin(torch.randn({ 4, 16 })):sum():backward()
        opt:step()
        opt:zero_grad()
      end
      opt:flush()
      return { lin.weight:detach():clone(), lin.bias:detach():clone() }
    end
    local got, want = run(true), run(false)
    testing.assert_close(got[1], want[1], 0, 0, "weight")
    testing.assert_close(got[2], want[2], 0, 0, "bias")
  end)

  -- with CPU streams off a ramtorch.Linear computes from its master weights: a pending update (of
  -- parameters the engine knows from an earlier streamed step) is finished first, so training goes
  -- on exactly as with synchronous updates instead of reading half-written weights
  it("is finished before a ramtorch.Linear computes on the CPU from its masters", function()
    local function run(delayed)
      local model = make_model()
      local opt = optim.AdamW(model:parameters(), { lr = 1e-2, delayed_update = delayed })
      torch.manual_seed(3)
      local xs = {}
      for k = 1, 4 do xs[k] = torch.randn({ 6, 16 }) end
      model(xs[1]):sum():backward() -- streamed: the engine takes the parameters
      opt:step()
      opt:zero_grad()
      offload.enable_cpu_streams(false)
      C.rt_delayed_update_set_test_delay_us(delayed and 20000 or 0)
      local ok, err = pcall(function()
        for k = 2, 4 do
          model(xs[k]):sum():backward()
          opt:step()
          opt:zero_grad()
        end
        opt:flush()
      end)
      C.rt_delayed_update_set_test_delay_us(0)
      offload.enable_cpu_streams(true)
      assert(ok, err)
      local out = {}
      for i, p in ipairs(model:parameters()) do out[i] = p:detach():clone() end
      return out
    end
    local got, want = run(true), run(false)
    for i = 1, #want do testing.assert_close(got[i], want[i], 0, 0, "parameter " .. i) end
  end)
end)
