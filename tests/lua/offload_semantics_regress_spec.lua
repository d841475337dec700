-- offload_semantics_regress_spec.lua: ramtorch.Linear (streamed through the offload engine, DESIGN
-- section 5) must train exactly like nn.Linear in unusual but legal uses. Divergences found by an audit
-- on the CPU backend (copy streams are threads; a copy delay makes a race certain), each shown by a case
-- that failed before its fix:
--  * a streamed weight that a plain op also uses (x @ W^T by hand, tied with an embedding, a penalty
--    term): when autograd accumulated the plain op's gradient while the engine was still copying the
--    streamed op's gradient into the same host .grad, the copy overwrote (or raced with) the sum, so
--    the plain op's share was lost; autograd now waits for the engine's pending gradients of that leaf;
--  * a streamed weight modified in place between the forward and the backward (under no_grad): nn.Linear
--    raises (its saved weight changed), the streamed backward silently computed the input gradient
--    with the new weight; it now raises too, naming the weight.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local offload = require("ramtorch.offload")
local testing = require("ramtorch.testing")

-- a streamed layer and a plain twin with the same weights
local function twins(din, dout, opts)
  torch.manual_seed(21)
  local s = torch.Linear(din, dout, opts)
  local p = nn.Linear(din, dout, opts)
  torch.no_grad(function()
    p.weight:copy_(s.weight)
    if s.bias ~= nil then p.bias:copy_(s.bias) end
  end)
  return s, p
end

describe("streamed Linear semantics", function()
  setup(function() offload.enable_cpu_streams(true) end)
  teardown(function()
    offload.set_copy_delay_us(0)
    offload.set_memory_budget(0, "cpu")
    offload.enable_cpu_streams(false)
  end)
  before_each(function()
    offload.set_copy_delay_us(0)
    offload.set_memory_budget(0, "cpu")
    offload.reset_schedule("cpu")
  end)

  it("keeps a plain op's gradient of a streamed weight that lands while the engine copies its own", function()
    for _, dt in ipairs({ torch.float32, torch.bfloat16 }) do
      local s, p = twins(64, 64, { bias = false, dtype = dt })
      local xs = { torch.randn({ 8, 64 }, { dtype = dt }), torch.randn({ 8, 64 }, { dtype = dt }) }
      -- slow gradient copies: autograd reaches the weight's plain use before the streamed gradient is down
      offload.set_copy_delay_us(20000)
      for _, m in ipairs({ p, s }) do
        for k = 1, 2 do -- a first gradient (.grad made by the engine), then accumulation into it
          local h = xs[k]:matmul(m.weight:t()) -- used by a plain op first: its gradient arrives last
          m(h):float():sum():backward()
        end
      end
      offload.set_copy_delay_us(0)
      local tol = dt == torch.float32 and 1e-5 or 2e-2
      testing.assert_close(s.weight.grad:float(), p.weight.grad:float(), tol, tol, tostring(dt) .. " weight grad")
    end
  end)

  it("raises like nn.Linear when the weight changed in place between the forward and the backward", function()
    local s, p = twins(8, 4)
    local x = torch.randn({ 3, 8 })
    local errs = {}
    for i, m in ipairs({ p, s }) do
      local xi = x:clone():requires_grad_(true)
      local y = m(xi)
      torch.no_grad(function() m.weight:mul_(0.5) end)
      local ok, err = pcall(function() y:sum():backward() end)
      assert.is_false(ok, i == 1 and "plain" or "streamed")
      errs[i] = tostring(err)
    end
    assert.matches("modified in place", errs[1])
    assert.matches("OffloadLinearBackward", errs[2], 1, true)
    assert.matches("weight of shape [4, 8] was modified in place", errs[2], 1, true)
    -- without an input gradient to compute the weight is not needed: the backward runs (as nn.Linear's)
    local y = s(x)
    torch.no_grad(function() s.weight:mul_(2) end)
    s.weight.grad = nil
    y:sum():backward()
    offload.synchronize()
    testing.assert_close(s.weight.grad, torch.ones({ 3, 4 }):t():matmul(x), 1e-6, 1e-6, "weight grad")
  end)
end)
