-- core_rng_spec.lua: the seeded counter-based generator: same seed gives the same numbers, results do not
-- depend on the thread count for tensors large enough to be split across threads, rand in [0, 1), randn
-- moments on 10^6 samples, randint bounds, and get_rng_state/set_rng_state round trips.
local torch = require("ramtorch")

local function same(a, b)
  return (a:eq(b)):to(torch.int64):sum():item() == a:numel()
end

describe("random numbers", function()
  local threads
  setup(function() threads = torch.get_num_threads() end)
  teardown(function() torch.set_num_threads(threads) end)

  it("repeat under the same seed and differ under another", function()
    torch.manual_seed(42)
    local a = torch.rand(1000)
    local b = torch.randn(3, 7)
    torch.manual_seed(42)
    assert.is_true(same(a, torch.rand(1000)))
    assert.is_true(same(b, torch.randn(3, 7)))
    torch.manual_seed(43)
    assert.is_false(same(a, torch.rand(1000)))
    -- consecutive draws differ
    torch.manual_seed(42)
    local c, d = torch.rand(100), torch.rand(100)
    assert.is_false(same(c, d))
  end)

  it("do not depend on the thread count (tensors above the parallel grain)", function()
    local n = 100003 -- > 32768 elements: the kernels split it across threads
    local outs = {}
    for _, nt in ipairs({ 1, 2 }) do
      torch.set_num_threads(nt)
      assert.are.equal(nt, torch.get_num_threads())
      torch.manual_seed(7)
      outs[nt] = {
        torch.rand(n), torch.randn(n), torch.randint(0, 1000, { n }),
        torch.rand(n, { dtype = torch.float64 }), torch.randn(n, { dtype = torch.bfloat16 }),
        torch.empty(n):uniform_(-2, 3), torch.empty(n):normal_(1, 2),
      }
    end
    for i = 1, #outs[1] do
      assert.is_true(same(outs[1][i], outs[2][i]), "draw " .. i .. " differs between 1 and 2 threads")
    end
  end)

  it("rand lies in [0, 1) and randn has mean 0, std 1 on 10^6 samples", function()
    torch.manual_seed(1)
    local r = torch.rand(1000000)
    assert.is_true(r:min():item() >= 0)
    assert.is_true(r:max():item() < 1)
    assert.is_true(math.abs(r:mean():item() - 0.5) < 0.002)
    local n = torch.randn(1000000, { dtype = torch.float64 })
    local mean = n:mean():item()
    local std = math.sqrt(((n - mean) ^ 2):mean():item())
    assert.is_true(math.abs(mean) < 0.005, "mean " .. mean)
    assert.is_true(math.abs(std - 1) < 0.005, "std " .. std)
    -- about 68.3% within one sigma
    local within = (n:abs():lt(1)):to(torch.float64):mean():item()
    assert.is_true(math.abs(within - 0.6827) < 0.003, "within 1 sigma " .. within)
  end)

  it("uniform_ and normal_ honour their parameters", function()
    torch.manual_seed(2)
    local u = torch.empty(100000, { dtype = torch.float64 }):uniform_(-3, 5)
    assert.is_true(u:min():item() >= -3 and u:max():item() < 5)
    assert.is_true(math.abs(u:mean():item() - 1) < 0.05)
    local g = torch.empty(100000, { dtype = torch.float64 }):normal_(10, 0.5)
    assert.is_true(math.abs(g:mean():item() - 10) < 0.01)
  end)

  it("randint covers [low, high) and nothing else", function()
    torch.manual_seed(3)
    local r = torch.randint(-3, 4, { 20000 })
    assert.are.equal(torch.int64, r.dtype)
    assert.are.equal(-3, r:min():item())
    assert.are.equal(3, r:max():item())
    local r2 = torch.randint(5, { 3, 4 })
    assert.are.same({ 3, 4 }, r2.shape)
    assert.is_true(r2:min():item() >= 0 and r2:max():item() < 5)
    local ok, err = pcall(torch.randint, 5, 5, { 3 })
    assert.is_false(ok)
    assert.matches("randint: expected low < high, got low=5 high=5", err)
  end)

  it("get_rng_state/set_rng_state round trip", function()
    torch.manual_seed(99)
    torch.rand(10)
    local st = torch.get_rng_state()
    local a = torch.randn(50)
    local b = torch.rand(5)
    torch.manual_seed(0) -- disturb
    torch.rand(3)
    torch.set_rng_state(st)
    assert.is_true(same(a, torch.randn(50)))
    assert.is_true(same(b, torch.rand(5)))
    assert.are.same(st, (function() torch.set_rng_state(st); return torch.get_rng_state() end)())
    -- a seed above 2^32 survives the round trip exactly
    torch.manual_seed(2 ^ 40 + 3)
    assert.are.equal("1099511627779", torch.get_rng_state().seed)
  end)
end)
