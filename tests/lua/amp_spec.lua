-- amp_spec.lua: mixed precision (lua/ramtorch/amp.lua, autocast.lua) on the CPU: the dtype each op runs
-- in inside, outside, nested and disabled autocast regions (PyTorch's lists), the per-region cast cache,
-- gradients reaching float32 masters, the GradScaler (skip on inf, back off, grow, equal to an unscaled
-- run without overflow, streamed parameters with host gradients), and a small model trained under
-- bf16 autocast tracking its float32 loss.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local F = require("ramtorch.functional")
local optim = require("ramtorch.optim")
local testing = require("ramtorch.testing")
local amp = require("ramtorch.amp")
local ac = require("ramtorch.autocast")
local offload = require("ramtorch.offload")

local f32, bf16, f16, f64 = torch.float32, torch.bfloat16, torch.float16, torch.float64

local function rnd(shape, dtype) return torch.randn(shape, { dtype = dtype or f32 }) end

describe("amp.autocast op lists", function()
  before_each(function() torch.manual_seed(3) end)

  it("runs matmul, linear and attention in the autocast dtype", function()
    local a, b = rnd({ 4, 5 }), rnd({ 5, 3 })
    local w, bias = rnd({ 3, 5 }), rnd({ 3 })
    local q, k, v = rnd({ 1, 2, 4, 8 }), rnd({ 1, 2, 4, 8 }), rnd({ 1, 2, 4, 8 })
    local mask = torch.zeros({ 4, 4 }) -- a float mask (added): cast like the other inputs
    local lin = nn.Linear(5, 3)
    amp.autocast("bf16", function()
      assert.are.equal(bf16, torch.matmul(a, b).dtype)
      assert.are.equal(bf16, a:matmul(b).dtype)
      assert.are.equal(bf16, torch.mm(a, b).dtype)
      assert.are.equal(bf16, torch.bmm(a:unsqueeze(0), b:unsqueeze(0)).dtype)
      assert.are.equal(bf16, F.linear(a, w, bias).dtype)
      assert.are.equal(bf16, lin(a).dtype)
      assert.are.equal(bf16, F.scaled_dot_product_attention(q, k, v).dtype)
      assert.are.equal(bf16, F.scaled_dot_product_attention(q, k, v, { attn_mask = mask }).dtype)
      assert.are.equal(bf16, F.scaled_dot_product_attention(q, k, v, mask).dtype)
      -- bf16 in, f32 weight: the weight is cast, not the input widened
      assert.are.equal(bf16, F.linear(a:to(bf16), w).dtype)
      -- float64 is never cast
      assert.are.equal(f64, torch.matmul(a:double(), b:double()).dtype)
    end)
    -- the values are those of the casts done by hand
    local y = amp.autocast("bf16", function() return F.linear(a, w, bias) end)
    testing.assert_close(y, F.linear(a:to(bf16), w:to(bf16), bias:to(bf16)), 0, 0, "linear under autocast")
    local z = amp.autocast("f16", function() return a:matmul(b) end)
    assert.are.equal(f16, z.dtype)
    testing.assert_close(z, a:half():matmul(b:half()), 0, 0, "f16 matmul")
  end)

  it("runs softmax, norms, losses, sum, exp, log and pow in float32", function()
    local x = rnd({ 4, 6 }, bf16)
    local target = torch.tensor({ 0, 2, 5, 1 }, { dtype = torch.int64 })
    local ln = nn.LayerNorm(6)
    amp.autocast("bf16", function()
      assert.are.equal(f32, torch.softmax(x, -1).dtype)
      assert.are.equal(f32, x:softmax(-1).dtype)
      assert.are.equal(f32, F.softmax(x, 1).dtype)
      assert.are.equal(f32, F.log_softmax(x, 1).dtype)
      assert.are.equal(f32, F.layer_norm(x, 6).dtype)
      assert.are.equal(f32, ln(x).dtype)
      assert.are.equal(f32, F.rms_norm(x, 6).dtype)
      assert.are.equal(f32, nn.RMSNorm(6)(x).dtype)
      assert.are.equal(f32, F.cross_entropy(x, target).dtype)
      assert.are.equal(f32, nn.CrossEntropyLoss()(x, target).dtype)
      assert.are.equal(f32, F.nll_loss(F.log_softmax(x, 1), target).dtype)
      assert.are.equal(f32, F.mse_loss(x, rnd({ 4, 6 }, bf16)).dtype)
      assert.are.equal(f32, x:sum().dtype)
      assert.are.equal(f32, torch.sum(x, 1).dtype)
      assert.are.equal(f32, x:exp().dtype)
      assert.are.equal(f32, torch.log(x:abs()).dtype)
      assert.are.equal(f32, x:rsqrt().dtype)
      assert.are.equal(f32, x:reciprocal().dtype)
      assert.are.equal(f32, (x ^ 2).dtype)
      assert.are.equal(f32, torch.pow(x, 3).dtype)
      assert.are.equal(f32, x:pow(2).dtype)
    end)
    -- values: the op on the float32 input
    local s = amp.autocast("bf16", function() return x:softmax(-1) end)
    testing.assert_close(s, x:float():softmax(-1), 0, 0, "softmax under autocast")
    -- outside a region the op keeps the input dtype
    assert.are.equal(bf16, x:softmax(-1).dtype)
    assert.are.equal(bf16, x:sum().dtype)
    assert.are.equal(bf16, (x ^ 2).dtype)
  end)

  it("leaves other ops in their input dtype and promotes mixed inputs to the widest", function()
    local x, y = rnd({ 3, 4 }, bf16), rnd({ 3, 4 })
    amp.autocast("bf16", function()
      assert.are.equal(bf16, x:relu().dtype)
      assert.are.equal(bf16, F.gelu(x).dtype)
      assert.are.equal(bf16, x:mean().dtype) -- mean is on no list (PyTorch's CUDA lists)
      assert.are.equal(bf16, (x * 2).dtype)
      assert.are.equal(f32, (x + y).dtype)
      assert.are.equal(f32, torch.cat({ x, y }, 0).dtype)
      assert.are.equal(f32, torch.stack({ x, y }).dtype)
      assert.are.equal(f32, y:relu().dtype)
      assert.are.equal(f64, y:double():exp().dtype)
    end)
  end)

  it("nests, can be disabled inside, restores the outer state, and names device types", function()
    local a, b, x = rnd({ 2, 3 }), rnd({ 3, 2 }), rnd({ 2, 3 }, bf16)
    assert.is_false(amp.is_autocast_enabled())
    assert.is_nil(amp.get_autocast_dtype())
    amp.autocast("bf16", function()
      assert.are.equal(bf16, a:matmul(b).dtype)
      assert.is_true(amp.is_autocast_enabled("cpu"))
      assert.are.equal(bf16, amp.get_autocast_dtype("cpu"))
      amp.autocast("f16", function()
        assert.are.equal(f16, a:matmul(b).dtype)
        assert.are.equal(f16, amp.get_autocast_dtype("cuda"))
      end)
      assert.are.equal(bf16, a:matmul(b).dtype)
      amp.autocast("bf16", { enabled = false }, function()
        assert.is_false(amp.is_autocast_enabled())
        assert.are.equal(f32, a:matmul(b).dtype)
        assert.are.equal(bf16, x:softmax(-1).dtype)
        amp.autocast({ dtype = "bf16" }, function() assert.are.equal(bf16, a:matmul(b).dtype) end)
      end)
      assert.are.equal(bf16, a:matmul(b).dtype)
      -- a region for CUDA only leaves CPU tensors under the outer CPU region
      amp.autocast("cuda", { enabled = false }, function()
        assert.are.equal(bf16, a:matmul(b).dtype)
        assert.is_false(amp.is_autocast_enabled("cuda"))
      end)
      amp.autocast("cpu", { enabled = false }, function()
        assert.are.equal(f32, a:matmul(b).dtype)
        assert.is_true(amp.is_autocast_enabled("cuda"))
      end)
    end)
    amp.autocast("cuda", function() -- CPU tensors are not touched by a CUDA region
      assert.are.equal(f32, a:matmul(b).dtype)
      assert.are.equal(f16, amp.get_autocast_dtype("cuda")) -- PyTorch's CUDA default
    end)
    amp.autocast("cpu", function() assert.are.equal(bf16, a:matmul(b).dtype) end)
    torch.autocast("cpu", { dtype = "f16" }, function() assert.are.equal(f16, a:matmul(b).dtype) end)
    amp.autocast({ device_type = "cpu", dtype = torch.float16 }, function() assert.are.equal(f16, a:matmul(b).dtype) end)
    assert.are.equal(f32, a:matmul(b).dtype)
    assert.is_false(amp.is_autocast_enabled())
  end)

  it("passes arguments and results through and restores the state after an error", function()
    local r1, r2 = amp.autocast("bf16", function(p, q) return p + 1, q end, 1, "x")
    assert.are.equal(2, r1)
    assert.are.equal("x", r2)
    local s1 = amp.autocast("bf16", { cache_enabled = false }, function(p) return p * 2 end, 4)
    assert.are.equal(8, s1)
    local ok, err = pcall(amp.autocast, "bf16", function() error("boom") end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("boom", 1, true))
    assert.is_false(amp.is_autocast_enabled())
    assert.are.equal(0, ac.depth())
    assert.are.equal(f32, rnd({ 2, 2 }):matmul(rnd({ 2, 2 })).dtype)
    local wrapped = amp.autocast_fn("bf16", function(a, b) return a:matmul(b) end)
    assert.are.equal(bf16, wrapped(rnd({ 2, 2 }), rnd({ 2, 2 })).dtype)
  end)

  it("reports bad arguments", function()
    local ok, err = pcall(amp.autocast, "f32", function() end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("amp.autocast: expected bfloat16 or float16, got torch.float32", 1, true))
    ok, err = pcall(amp.autocast, "bf16", 42)
    assert.truthy(tostring(err):find("amp.autocast: expected a function to run, got number", 1, true))
    ok, err = pcall(amp.autocast, { device_type = "tpu" }, function() end)
    assert.truthy(tostring(err):find("device_type must be \"cpu\" or \"cuda\", got tpu", 1, true))
    -- errors of the ops themselves still name the caller's line (the wrappers are tail calls)
    ok, err = pcall(function()
      amp.autocast("bf16", function() return torch.matmul(rnd({ 2, 3 }), rnd({ 2, 3 })) end)
    end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("matmul", 1, true))
  end)
end)

describe("amp.autocast gradients and the cast cache", function()
  before_each(function() torch.manual_seed(5) end)

  it("sends float32 gradients to float32 masters, equal to the hand-cast graph", function()
    local lin = nn.Linear(6, 4)
    local x, t = rnd({ 5, 6 }), rnd({ 5, 4 })
    local loss = amp.autocast("bf16", function()
      local y = lin(x)
      assert.are.equal(bf16, y.dtype)
      return F.mse_loss(y, t)
    end)
    assert.are.equal(f32, loss.dtype)
    loss:backward()
    assert.are.equal(f32, lin.weight.grad.dtype)
    assert.are.equal(f32, lin.bias.grad.dtype)
    -- reference: the same casts by hand on copies of the parameters
    local w = lin.weight:detach():clone():requires_grad_(true)
    local b = lin.bias:detach():clone():requires_grad_(true)
    local y = F.linear(x:to(bf16), w:to(bf16), b:to(bf16))
    F.mse_loss(y:float(), t):backward()
    testing.assert_close(lin.weight.grad, w.grad, 0, 0, "weight grad")
    testing.assert_close(lin.bias.grad, b.grad, 0, 0, "bias grad")
    -- and a gradient to a float32 input that is not a leaf parameter
    local xi = rnd({ 5, 6 }):requires_grad_(true)
    amp.autocast("f16", function() return lin(xi * 1):sum() end):backward()
    assert.are.equal(f32, xi.grad.dtype)
  end)

  it("casts a parameter once per outermost region and forgets it on exit", function()
    local lin = nn.Linear(4, 4)
    local x = rnd({ 2, 4 })
    amp.autocast("bf16", function()
      local w1 = ac.cache_size()
      assert.are.equal(0, w1)
      local h0 = ac.cache_hits()
      local y1 = lin(x)
      assert.are.equal(2, ac.cache_size()) -- weight and bias
      assert.are.equal(h0, ac.cache_hits())
      local y2 = lin(y1:float())
      assert.are.equal(2, ac.cache_size())
      assert.are.equal(h0 + 2, ac.cache_hits()) -- the second use found both casts
      amp.autocast("bf16", function() lin(x) end) -- a nested region shares the cache
      assert.are.equal(2, ac.cache_size())
      amp.autocast("f16", function() lin(x) end) -- another dtype: its own casts
      assert.are.equal(4, ac.cache_size())
      -- both uses go back to the master through the one cast
      y2:sum():backward()
    end)
    assert.are.equal(0, ac.cache_size())
    assert.are.equal(f32, lin.weight.grad.dtype)
    amp.autocast("bf16", { cache_enabled = false }, function()
      lin(x)
      assert.are.equal(0, ac.cache_size())
    end)
    -- a non-leaf (or no-grad) tensor is never cached
    amp.autocast("bf16", function()
      local a = rnd({ 2, 2 })
      a:matmul(a)
      assert.are.equal(0, ac.cache_size())
    end)
    -- a cast made under no_grad does not serve a recording forward
    local y = amp.autocast("bf16", function()
      torch.no_grad(function() lin(x) end)
      return lin(x)
    end)
    assert.is_true(y.requires_grad)
    y:sum():backward()
  end)

  it("costs one test when off: the wrappers call straight through", function()
    assert.are.equal("lower", ac.policy_of(torch.matmul))
    assert.are.equal("fp32", ac.policy_of(F.cross_entropy))
    assert.are.equal("fp32", ac.policy_of(torch.Tensor.softmax))
    assert.is_nil(ac.policy_of(torch.relu))
    local a = rnd({ 2, 2 })
    assert.are.equal(f32, a:matmul(a).dtype)
  end)
end)

-- ---- GradScaler ---------------------------------------------------------------------------------------

local function tiny_model(seed)
  torch.manual_seed(seed or 1)
  return nn.Sequential({ nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4) })
end

local function clone_params(m)
  local r = {}
  for i, p in ipairs(m:parameters()) do r[i] = p:detach():clone() end
  return r
end

local function first_grad_elem_set(p, v)
  torch.no_grad(function() p.grad:view(-1):narrow(0, 0, 1):fill_(v) end)
end

describe("amp.GradScaler", function()
  it("skips a step with an inf gradient and backs off, grows after the interval", function()
    local model = tiny_model()
    local opt = optim.SGD(model:parameters(), { lr = 0.1 })
    local scaler = amp.GradScaler({ init_scale = 1024, growth_interval = 3 })
    assert.are.equal(1024, scaler:get_scale())
    local x, t = rnd({ 6, 8 }), rnd({ 6, 4 })
    local function iteration(poison)
      opt:zero_grad()
      local loss = amp.autocast("f16", function() return F.mse_loss(model(x), t) end)
      scaler:scale(loss):backward()
      if poison then first_grad_elem_set(model:parameters()[1], poison) end
      scaler:step(opt)
      scaler:update()
      return loss
    end
    local before = clone_params(model)
    iteration(math.huge)
    for i, p in ipairs(model:parameters()) do testing.assert_close(p, before[i], 0, 0, "skipped step, param " .. i) end
    assert.are.equal(512, scaler:get_scale())
    assert.are.equal(0, scaler:_get_growth_tracker())
    iteration(0 / 0) -- NaN too
    assert.are.equal(256, scaler:get_scale())
    -- three clean steps: the scale doubles once, on the third
    iteration()
    assert.are.equal(256, scaler:get_scale())
    assert.are.equal(1, scaler:_get_growth_tracker())
    iteration()
    assert.are.equal(256, scaler:get_scale())
    iteration()
    assert.are.equal(512, scaler:get_scale())
    assert.are.equal(0, scaler:_get_growth_tracker())
    local changed = false
    for i, p in ipairs(model:parameters()) do
      if not testing.close(p, before[i], 0, 0) then changed = true end
    end
    assert.is_true(changed)
  end)

  it("finds the overflow of a float16 backward by itself", function()
    local model = tiny_model(2)
    local opt = optim.SGD(model:parameters(), { lr = 0.1 })
    local scaler = amp.GradScaler({ init_scale = 2 ^ 40 }) -- f16 gradients of activations overflow
    local x, t = rnd({ 6, 8 }), rnd({ 6, 4 })
    local before = clone_params(model)
    local loss = amp.autocast("f16", function() return F.mse_loss(model(x), t) end)
    scaler:scale(loss):backward()
    scaler:step(opt)
    scaler:update()
    for i, p in ipairs(model:parameters()) do testing.assert_close(p, before[i], 0, 0, "param " .. i) end
    assert.are.equal(2 ^ 39, scaler:get_scale())
  end)

  for _, o in ipairs({ { "SGD", function(p) return optim.SGD(p, { lr = 0.05, momentum = 0.9 }) end },
                       { "AdamW", function(p) return optim.AdamW(p, { lr = 1e-2 }) end } }) do
    it("matches an unscaled run when nothing overflows (" .. o[1] .. ")", function()
      local function run(use_scaler)
        local model = tiny_model(4)
        local opt = o[2](model:parameters())
        local scaler = amp.GradScaler({ init_scale = 2 ^ 12, growth_interval = 2, enabled = use_scaler })
        torch.manual_seed(9)
        local losses = {}
        for s = 1, 5 do
          local x, t = rnd({ 6, 8 }), rnd({ 6, 4 })
          opt:zero_grad()
          local loss = amp.autocast("f16", function() return F.mse_loss(model(x), t) end)
          losses[s] = loss:item()
          scaler:scale(loss):backward()
          scaler:step(opt)
          scaler:update()
        end
        return clone_params(model), losses, scaler
      end
      local w0, l0, s0 = run(false)
      local w1, l1, s1 = run(true)
      assert.are.equal(1.0, s0:get_scale())
      assert.are.equal(2 ^ 14, s1:get_scale()) -- grew at steps 2 and 4
      for i = 1, #w0 do testing.assert_close(w1[i], w0[i], 1e-6, 1e-7, "param " .. i) end
      testing.assert_close(l1, l0, 1e-6, 1e-7, "losses")
    end)
  end

  it("unscale_ before clipping, and refuses misuse", function()
    local model = tiny_model(5)
    local opt = optim.SGD(model:parameters(), { lr = 0.1 })
    local scaler = amp.GradScaler({ init_scale = 256 })
    local x, t = rnd({ 6, 8 }), rnd({ 6, 4 })
    local loss = amp.autocast("bf16", function() return F.mse_loss(model(x), t) end)
    scaler:scale(loss):backward()
    local g_scaled = model:parameters()[1].grad:clone()
    scaler:unscale_(opt)
    testing.assert_close(model:parameters()[1].grad, g_scaled / 256, 0, 0, "unscaled gradient")
    local ok, err = pcall(scaler.unscale_, scaler, opt)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("unscale_() has already been called on this optimizer since the last update()", 1, true))
    nn.utils.clip_grad_norm_(model:parameters(), 0.01)
    scaler:step(opt)
    ok, err = pcall(scaler.step, scaler, opt)
    assert.truthy(tostring(err):find("step() has already been called since the last update()", 1, true))
    ok, err = pcall(scaler.unscale_, scaler, opt)
    assert.truthy(tostring(err):find("unscale_() is being called after step()", 1, true))
    scaler:update()
    ok, err = pcall(scaler.update, scaler)
    assert.truthy(tostring(err):find("no inf checks were recorded prior to update", 1, true))
    ok, err = pcall(scaler.step, scaler, opt, function() end)
    assert.truthy(tostring(err):find("closure use is not currently supported", 1, true))
    ok, err = pcall(amp.GradScaler, { growth_factor = 0.5 })
    assert.truthy(tostring(err):find("growth_factor should be > 1, got 0.5", 1, true))
    ok, err = pcall(amp.GradScaler, { backoff_factor = 2 })
    assert.truthy(tostring(err):find("backoff_factor should be < 1 and > 0, got 2", 1, true))
    ok, err = pcall(amp.GradScaler, { growth_interval = 1.5 })
    assert.truthy(tostring(err):find("growth_interval should be a positive integer, got 1.5", 1, true))
  end)

  it("saves and loads its state, and passes through when disabled", function()
    local s = amp.GradScaler({ init_scale = 64, growth_factor = 4, backoff_factor = 0.25, growth_interval = 7 })
    s:update(128)
    local sd = s:state_dict()
    assert.are.same({ scale = 128, growth_factor = 4, backoff_factor = 0.25, growth_interval = 7, _growth_tracker = 0 }, sd)
    local s2 = amp.GradScaler()
    s2:load_state_dict(sd)
    assert.are.same(sd, s2:state_dict())
    assert.are.equal(128, s2:get_scale())
    s2:update(torch.tensor({ 32.0 }))
    assert.are.equal(32, s2:get_scale())
    local off = amp.GradScaler({ enabled = false })
    assert.is_false(off:is_enabled())
    assert.are.same({}, off:state_dict())
    assert.are.equal(1.0, off:get_scale())
    local l = torch.tensor({ 3.0 })
    assert.are.equal(l, off:scale(l))
    local ok, err = pcall(s2.load_state_dict, s2, {})
    assert.is_false(ok)
    assert.truthy(tostring(err):find("source state dict is empty", 1, true))
    -- scale() of a table of outputs; a low-precision loss is scaled in float32
    local outs = amp.GradScaler({ init_scale = 8 }):scale({ torch.tensor({ 1.0 }), { torch.tensor({ 2.0 }, { dtype = f16 }) } })
    assert.are.equal(8, outs[1]:item())
    assert.are.equal(16, outs[2][1]:item())
    assert.are.equal(f32, outs[2][1].dtype)
  end)

  it("unscales host gradients of streamed ramtorch.Linear layers and skips on inf", function()
    offload.enable_cpu_streams(true)
    local ok, err = pcall(function()
      local function run(use_scaler, poison)
        torch.manual_seed(21)
        local model = nn.Sequential({ torch.Linear(8, 16), nn.ReLU(), torch.Linear(16, 4) })
        local opt = optim.AdamW(model:parameters(), { lr = 1e-2 })
        local scaler = amp.GradScaler({ init_scale = 2 ^ 10, enabled = use_scaler })
        torch.manual_seed(22)
        for s = 1, 3 do
          local x, t = rnd({ 6, 8 }), rnd({ 6, 4 })
          opt:zero_grad()
          local loss = amp.autocast("f16", function()
            local y = model(x)
            assert.are.equal(f16, y.dtype) -- the streamed layers computed in float16
            return F.mse_loss(y, t)
          end)
          scaler:scale(loss):backward()
          local p1 = model:parameters()[1]
          assert.are.equal("cpu", p1.grad.device)
          if poison == s then first_grad_elem_set(p1, math.huge) end
          scaler:step(opt)
          scaler:update()
        end
        return clone_params(model), scaler
      end
      local w0 = run(false)
      local w1, s1 = run(true)
      assert.are.equal(2 ^ 10, s1:get_scale())
      for i = 1, #w0 do testing.assert_close(w1[i], w0[i], 1e-3, 1e-5, "param " .. i) end
      local w2, s2 = run(true, 3) -- the last step skipped: its weights are those after step 2
      assert.are.equal(2 ^ 9, s2:get_scale())
      local differs = false
      for i = 1, #w0 do if not testing.close(w2[i], w0[i], 0, 0) then differs = true end end
      assert.is_true(differs)
    end)
    offload.enable_cpu_streams(false)
    if not ok then error(err, 0) end
  end)
end)

describe("training under autocast", function()
  it("a small model trained under bf16 autocast tracks the float32 loss", function()
    local function train(region)
      torch.manual_seed(31)
      local model = nn.Sequential({ nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 5) })
      local opt = optim.AdamW(model:parameters(), { lr = 5e-3 })
      torch.manual_seed(32)
      local x = rnd({ 64, 16 })
      local proj = rnd({ 16, 5 })
      local y = x:matmul(proj):argmax(1)
      local losses = {}
      for s = 1, 40 do
        opt:zero_grad()
        local loss = region(function() return F.cross_entropy(model(x), y) end)
        assert.are.equal(f32, loss.dtype)
        loss:backward()
        for _, p in ipairs(model:parameters()) do assert.are.equal(f32, p.grad.dtype) end
        opt:step()
        losses[s] = loss:item()
      end
      return losses
    end
    local ref = train(function(f) return f() end)
    local mixed = train(function(f) return amp.autocast("bf16", f) end)
    assert.is_true(ref[40] < 0.5 * ref[1])
    for s = 1, 40 do
      assert.is_true(math.abs(mixed[s] - ref[s]) <= 0.05 * ref[s] + 0.01,
                     ("step %d: autocast loss %g, float32 loss %g"):format(s, mixed[s], ref[s]))
    end
    -- and it is not the float32 run itself (the matmuls really ran in bf16)
    local same = true
    for s = 2, 40 do if mixed[s] ~= ref[s] then same = false end end
    assert.is_false(same)
  end)
end)

describe("autocast through models", function()
  it("a GPT and a transformer layer with masks run under bf16, logits in bf16 and the loss in f32", function()
    torch.manual_seed(41)
    local gpt = require("ramtorch.models.gpt")
    local model = gpt.GPT({ vocab_size = 11, block_size = 8, n_layer = 2, n_head = 2, n_embd = 16 })
    local idx = torch.randint(0, 11, { 2, 8 })
    local logits, loss = amp.autocast("bf16", function() return model(idx, idx) end)
    assert.are.equal(bf16, logits.dtype)
    assert.are.equal(f32, loss.dtype)
    loss:backward()
    for name, p in model:named_parameters() do
      assert.is_not_nil(p.grad, name)
      assert.are.equal(f32, p.grad.dtype, name)
    end
    local _, ref = model(idx, idx)
    assert.is_true(math.abs(loss:item() - ref:item()) < 0.05 * ref:item())
    local L = nn.TransformerEncoderLayer(8, 2, { dim_feedforward = 16, dropout = 0, batch_first = true })
    local x = rnd({ 2, 5, 8 })
    local kpm = torch.tensor({ { false, false, false, true, true }, { false, false, false, false, false } })
    local y = amp.autocast("bf16", function()
      return L(x, { src_key_padding_mask = kpm, mask = torch.zeros({ 5, 5 }) })
    end)
    assert.are.equal(f32, y.dtype) -- the last op is a layer_norm
    testing.assert_close(y, L(x, { src_key_padding_mask = kpm, mask = torch.zeros({ 5, 5 }) }), 0.05, 0.05, "encoder layer")
  end)

  it("activation checkpointing recomputes under the forward's autocast state", function()
    torch.manual_seed(43)
    local lin1, lin2 = nn.Linear(6, 6), nn.Linear(6, 3)
    local x = rnd({ 4, 6 }):requires_grad_(true) -- reentrant checkpointing needs an input that requires grad
    local function block(a) return lin2(lin1(a):relu()) end
    local function grads(use_ckpt)
      lin1:zero_grad()
      lin2:zero_grad()
      x.grad = nil
      local out = amp.autocast("bf16", function()
        local h = use_ckpt and torch.utils.checkpoint(block, x) or block(x)
        assert.are.equal(bf16, h.dtype)
        return h:float():sum()
      end)
      out:backward()
      return { lin1.weight.grad:clone(), lin2.weight.grad:clone(), x.grad:clone() }
    end
    local g0, g1 = grads(false), grads(true)
    testing.assert_close(g1[1], g0[1], 0, 0, "lin1 weight grad")
    testing.assert_close(g1[2], g0[2], 0, 0, "lin2 weight grad")
    testing.assert_close(g1[3], g0[3], 0, 0, "input grad")
  end)
end)
