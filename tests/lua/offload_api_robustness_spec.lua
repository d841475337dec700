-- offload_api_robustness_spec.lua: bad and edge inputs to the offload engine's user-facing API on the
-- CPU backend (ramtorch.offload with enable_cpu_streams(true), ramtorch.Linear, the helpers, the
-- gradient hooks): each gives a clear error that names the call (never a crash, a hang, a non-string
-- error or a silently wrong result), and the engine stays usable after a hook raises mid-backward.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local offload = require("ramtorch.offload")
local helpers = require("ramtorch.helpers")

local Linear = torch.Linear

-- The error message of f (a string), failing the test if f does not raise one.
local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  assert.are.equal("string", type(e))
  return e
end

local function assert_err(pattern, f, ...)
  local e = err_of(f, ...)
  assert.is_truthy(e:find(pattern, 1, true), ("expected %q in the error, got: %s"):format(pattern, e))
  return e
end

-- One forward and backward of l; the weight gradient must be the analytic one (engine healthy).
local function assert_healthy(l)
  l:zero_grad()
  local x = torch.randn({ 2, l.in_features })
  l(x):sum():backward()
  local want = torch.ones({ l.out_features, 2 }):matmul(x)
  assert.is_true((l.weight.grad - want):abs():max():item() < 1e-5)
end

describe("offload API robustness (CPU streams)", function()
  local prev
  setup(function()
    prev = offload.cpu_streams_enabled()
    offload.enable_cpu_streams(true)
  end)
  teardown(function()
    offload.set_memory_budget(0)
    offload.enable_cpu_streams(prev)
  end)

  describe("engine switches", function()
    it("reports zero statistics before any use of a fresh device", function()
      local s = offload.stats()
      for _, k in ipairs(offload.stat_fields) do assert.are.equal("number", type(s[k])) end
    end)

    it("rejects budgets that are not representable byte counts, naming the value", function()
      assert_err("set_memory_budget: expected a non-negative integer number of bytes below 2^63, got -1",
                 offload.set_memory_budget, -1)
      assert_err("got nan", offload.set_memory_budget, 0 / 0)
      assert_err("set_memory_budget: expected a non-negative integer number of bytes", offload.set_memory_budget, "100")
      assert_err("got 1.5", offload.set_memory_budget, 1.5)
      -- inf and 2^70 used to wrap to INT64_MIN and be reported as "got -9223372036854775808"
      assert_err("set_memory_budget: expected a non-negative integer number of bytes below 2^63, got inf",
                 offload.set_memory_budget, math.huge)
      local e = assert_err("set_memory_budget: expected", offload.set_memory_budget, 2 ^ 70)
      assert.is_falsy(e:find("-9223372036854775808", 1, true))
      assert.are.equal(0, offload.get_memory_budget())
    end)

    it("rejects a gradient chunk size of inf instead of silently using whole gradients", function()
      assert_err("set_grad_chunk_bytes: expected a non-negative integer number of bytes below 2^63, got inf",
                 offload.set_grad_chunk_bytes, math.huge)
      assert_err("set_grad_chunk_bytes", offload.set_grad_chunk_bytes, -1)
    end)

    it("names set_copy_delay_us and enable_cpu_streams when given the wrong type", function()
      assert_err("set_copy_delay_us: expected a non-negative integer number of microseconds, got x",
                 offload.set_copy_delay_us, "x")
      assert_err("enable_cpu_streams: expected true or false, got string", offload.enable_cpu_streams, "no")
      assert.is_true(offload.cpu_streams_enabled())
    end)

    it("names the call for bad devices and grad paths", function()
      assert_err("expected a device", offload.set_memory_budget, 10, "tpu")
      assert_err("offload.reset_schedule: invalid device code 42", offload.reset_schedule, 42)
      assert_err("offload.set_grad_path: unknown gradient path 'bogus'", offload.set_grad_path, "bogus")
      assert_err("set_grad_path: expected a path name", offload.set_grad_path, nil)
      assert_err("refresh_shadows: expected an array of tensors or a Module, got number", offload.refresh_shadows, 5)
      local l = Linear(3, 4)
      l(torch.randn({ 2, 3 }))
      assert_err("cannot send a float32 parameter as int64", offload.refresh_shadows, l, "int64")
    end)
  end)

  describe("ramtorch.Linear construction", function()
    it("rejects bad sizes with messages naming ramtorch.Linear", function()
      assert_err("ramtorch.Linear: expected a non-negative integer in_features, got -1", Linear, -1, 3)
      assert_err("got 2.5", Linear, 2.5, 3)
      assert_err("got nan", Linear, 0 / 0, 3)
      assert_err("ramtorch.Linear: expected a non-negative integer out_features, got inf", Linear, 3, math.huge)
    end)

    it("rejects shapes whose byte size overflows instead of crashing (arena)", function()
      -- 2^31 x 2^31 float32 is 2^64 bytes: the arena's size wrapped to 0 and fill_ wrote past it
      assert_err("arena.empty: shape [2147483648, 2147483648] of float32 is too large", Linear, 2 ^ 31, 2 ^ 31,
                 { skip_init = true })
      assert_err("arena.empty: shape [1099511627776, 1099511627776] of float32 is too large", Linear, 2 ^ 40, 2 ^ 40)
      assert_err("arena.empty: shape [4611686018427387904, 2] of float32 is too large", offload.arena_empty,
                 { 2 ^ 62, 2 }, torch.float32)
    end)

    it("rejects non-floating dtypes and non-table options, naming ramtorch.Linear", function()
      assert_err("ramtorch.Linear: expected a floating-point dtype, got torch.int64", Linear, 3, 4, { dtype = "int64" })
      assert_err("ramtorch.Linear: expected a floating-point dtype, got torch.bool", Linear, 3, 4, { dtype = "bool" })
      assert_err("ramtorch.Linear: expected an options table (or a boolean bias), got string", Linear, 3, 4, "x")
    end)

    it("validates an adopted weight / bias_tensor when the layer is built, not at its first forward", function()
      assert_err("ramtorch.Linear: opts.weight must have shape [4, 3] (out_features, in_features), got [5, 5]",
                 Linear, 3, 4, { weight = torch.randn({ 5, 5 }) })
      assert_err("got [3, 4]", Linear, 3, 4, { weight = torch.randn({ 3, 4 }) })
      assert_err("got [12]", Linear, 3, 4, { weight = torch.randn({ 12 }) })
      assert_err("ramtorch.Linear: opts.weight must be a floating-point tensor, got torch.int64", Linear, 3, 4,
                 { weight = torch.zeros({ 4, 3 }, { dtype = torch.int64 }) })
      assert_err("ramtorch.Linear: opts.weight must be contiguous", Linear, 3, 4, { weight = torch.randn({ 3, 4 }):t() })
      assert_err("ramtorch.Linear: opts.dtype torch.bfloat16 does not match opts.weight's torch.float32", Linear, 3,
                 4, { dtype = "bfloat16", weight = torch.randn({ 4, 3 }) })
      assert_err("ramtorch.Linear: opts.bias_tensor must have shape [4] (out_features), got [3]", Linear, 3, 4,
                 { weight = torch.randn({ 4, 3 }), bias_tensor = torch.randn({ 3 }) })
      assert_err("ramtorch.Linear: opts.weight must be a CPU tensor", Linear, 3, 4, { weight = { 1, 2 } })
      -- without dtype, the adopted weight's dtype is the layer's
      local l = Linear(3, 4, { weight = torch.randn({ 4, 3 }, { dtype = torch.float64 }) })
      assert.are.equal(torch.float64, l(torch.randn({ 2, 3 }, { dtype = torch.float64 })).dtype)
    end)

    it("streams zero-size batches and names the layer's shapes for inputs of the wrong dtype or last dim", function()
      local l = Linear(3, 4)
      local x = torch.zeros({ 0, 3 }):requires_grad_(true)
      local y = l(x)
      assert.are.same({ 0, 4 }, { y.shape[1], y.shape[2] })
      y:sum():backward()
      assert.are.equal(0, l.weight.grad:abs():sum():item())
      local y3 = l(torch.zeros({ 2, 0, 3 }))
      assert.are.same({ 2, 0, 4 }, { y3.shape[1], y3.shape[2], y3.shape[3] })
      assert_err("offload_linear: expected a floating-point input, got int64", l,
                 torch.zeros({ 2, 3 }, { dtype = torch.int64 }))
      assert_err("expected last input dim 3", l, torch.zeros({ 2, 5 }))
      assert_err("expected last input dim 3", l, torch.tensor(1.0))
      assert_err("ramtorch.Linear: expected a Tensor input, got table", l, { 1, 2, 3 })
      l:to(torch.float64)
      assert_err("expected the input and the weight of one dtype, got float32 and float64", l, torch.randn({ 2, 3 }))
      assert.are.equal(torch.float64, l(torch.randn({ 2, 3 }, { dtype = torch.float64 })).dtype)
    end)
  end)

  describe("replace_linear_with_ramtorch", function()
    it("rejects bad ranks, including inf, naming the helper", function()
      assert_err("replace_linear_with_ramtorch: rank must be a non-negative integer, got -1",
                 helpers.replace_linear_with_ramtorch, nn.Linear(3, 4), -1)
      assert_err("replace_linear_with_ramtorch: rank must be a non-negative integer, got inf",
                 helpers.replace_linear_with_ramtorch, nn.Linear(3, 4), math.huge)
      assert_err("got 0", helpers.replace_linear_with_ramtorch, nn.Linear(3, 4), "0")
      assert_err("replace_linear_with_ramtorch: expected a Module, got table", helpers.replace_linear_with_ramtorch, {})
    end)

    it("leaves models without Linear layers alone and is idempotent", function()
      local m = nn.Sequential({ nn.ReLU(), nn.Tanh() })
      assert.are.equal(m, helpers.replace_linear_with_ramtorch(m))
      local s = nn.Sequential({ nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2) })
      helpers.replace_linear_with_ramtorch(s, 0)
      local first = s[1]
      helpers.replace_linear_with_ramtorch(s, 0)
      assert.are.equal(first, s[1])
      assert.are.equal(4, #s:parameters())
    end)

    it("converts a Linear whose host weight is not contiguous (it used to fail at the first forward)", function()
      local m = nn.Sequential({ nn.Linear(3, 4) })
      m[1].weight = nn.Parameter(torch.randn({ 3, 4 }):t())
      local x = torch.randn({ 2, 3 })
      local want = m(x)
      helpers.replace_linear_with_ramtorch(m)
      assert.is_true(m[1].is_ramtorch)
      assert.is_true((m(x) - want):abs():max():item() < 1e-6)
    end)
  end)

  describe("gradient hooks", function()
    local reg = offload.register_ramtorch_grad_hook
    local post = offload.register_ramtorch_post_accumulate_grad_hook

    it("rejects non-tensors and non-functions at registration", function()
      assert_err("register_ramtorch_grad_hook: expected a Tensor, got table", reg, {}, function() end)
      assert_err("register_ramtorch_post_accumulate_grad_hook: expected a function, got number", post,
                 Linear(3, 4).weight, 5)
    end)

    it("names the hook when it returns something that is not a Tensor, false or nil", function()
      for _, bad in ipairs({ 3, true, {}, "g" }) do
        local l = Linear(3, 4)
        local h = reg(l.weight, function() return bad end)
        assert_err("register_ramtorch_grad_hook: a hook must return a Tensor, false or nil, got " .. type(bad),
                   function() l(torch.randn({ 2, 3 })):sum():backward() end)
        h.remove()
        assert_healthy(l)
      end
    end)

    it("names the hook when it returns a gradient of the wrong shape or an integer dtype", function()
      local l = Linear(3, 4)
      local h = reg(l.weight, function() return torch.zeros({ 5 }) end)
      assert_err("register_ramtorch_grad_hook: a hook returned a gradient of shape [5] for a parameter of shape [4, 3]",
                 function() l(torch.randn({ 2, 3 })):sum():backward() end)
      h.remove()
      assert_healthy(l)
      h = reg(l.weight, function(g) return g:long() end)
      assert_err("register_ramtorch_grad_hook: a hook returned a gradient of dtype torch.int64",
                 function() l(torch.randn({ 2, 3 })):sum():backward() end)
      h.remove()
      assert_healthy(l)
    end)

    it("leaves the engine usable after a hook raises in the middle of a backward", function()
      local m = nn.Sequential({ Linear(3, 5), nn.ReLU(), Linear(5, 4), nn.ReLU(), Linear(4, 4) })
      local h = reg(m[3].weight, function() error("mid-backward") end)
      local e = err_of(function() m(torch.randn({ 2, 3 })):sum():backward() end)
      assert.is_truthy(e:find("mid-backward", 1, true))
      h.remove()
      h = post(m[5].bias, function() error({ code = 1 }) end)
      local ok = pcall(function() m(torch.randn({ 2, 3 })):sum():backward() end)
      assert.is_false(ok)
      h.remove()
      for _, i in ipairs({ 1, 3, 5 }) do assert_healthy(m[i]) end
    end)

    it("runs a hook registered twice twice, and a second remove is a no-op", function()
      local l = Linear(3, 4)
      local f = function(g) return g * 2 end
      local h1, h2 = reg(l.weight, f), reg(l.weight, f)
      local x = torch.randn({ 2, 3 })
      l(x):sum():backward()
      assert.is_true((l.weight.grad - torch.ones({ 4, 2 }):matmul(x) * 4):abs():max():item() < 1e-5)
      h1.remove()
      h1.remove()
      h2:remove()
      assert_healthy(l)
    end)
  end)
end)
