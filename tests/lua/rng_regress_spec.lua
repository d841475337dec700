-- rng_regress_spec.lua: review regressions for the generator's Lua surface: set_rng_state refused
-- malformed states silently (a missing field read as 0, 2^53 as a number read as the digits of
-- "9.007199254741e+15"), manual_seed took math.huge, and randint wrapped bounds outside the dtype.
local torch = require("ramtorch")

describe("rng regressions", function()
  it("set_rng_state round-trips get_rng_state and exact numbers", function()
    torch.manual_seed(7)
    torch.rand(10)
    local st = torch.get_rng_state()
    local a = torch.rand(5):tolist()
    torch.set_rng_state(st)
    assert.are.same(a, torch.rand(5):tolist())
    torch.set_rng_state({ seed = 5, offset = 2 ^ 53 - 1 })
    assert.are.equal("9007199254740991", torch.get_rng_state().offset)
    torch.set_rng_state({ seed = "18446744073709551615", offset = "0" })
    assert.are.equal("18446744073709551615", torch.get_rng_state().seed)
  end)

  it("set_rng_state refuses malformed states with a message", function()
    for _, st in ipairs({ {}, { seed = "5" }, { seed = "-5", offset = "0" }, { seed = "1e3", offset = "0" },
                          { seed = 5, offset = 2 ^ 53 }, { seed = 1.5, offset = 0 },
                          { seed = "18446744073709551616", offset = "0" } }) do
      local ok, err = pcall(torch.set_rng_state, st)
      assert.is_false(ok)
      assert.matches("set_rng_state: expected", err)
    end
    assert.has_error(function() torch.set_rng_state(nil) end,
                     "set_rng_state: expected a table {seed=, offset=} from get_rng_state, got nil")
  end)

  it("manual_seed refuses infinity", function()
    local ok, err = pcall(torch.manual_seed, math.huge)
    assert.is_false(ok)
    assert.matches("manual_seed: expected a non%-negative integer", err)
  end)

  it("randint refuses bounds outside the dtype", function()
    local ok, err = pcall(torch.randint, 0, 300, { 4 }, { dtype = "u8" })
    assert.is_false(ok)
    assert.matches("out of bounds for uint8", err)
    assert.is_false((pcall(torch.randint, -1, 2, { 4 }, { dtype = "u8" })))
    assert.is_false((pcall(torch.randint, 0, 3, { 4 }, { dtype = "bool" })))
    local t = torch.randint(0, 256, { 64 }, { dtype = "u8" })
    assert.is_true(t:max():item() <= 255)
  end)

  it("randint over negative ranges stays in [low, high)", function()
    torch.manual_seed(1)
    for _, v in ipairs(torch.randint(-5, -1, { 200 }):tolist()) do
      assert.is_true(v >= -5 and v < -1)
    end
  end)
end)
