-- nn_activations_norm_spec.lua: the activations of functional_activation.lua / nn/activation_more.lua
-- and the normalisations of functional_norm.lua / nn/batchnorm.lua: values against float64 references
-- computed here in plain Lua (and PyTorch's exact constants), gradchecks in float64 away from kinks,
-- the gradients at the kinks against PyTorch's backward kernels exactly, BatchNorm's running stats
-- over three steps, train vs eval, state dicts, GroupNorm, reprs and error messages.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local testing = require("ramtorch.testing")
local F = nn.functional

local f64 = torch.float64
local exp, log, tanh = math.exp, math.log, math.tanh

local function t64(v, rg) return torch.tensor(v, { dtype = f64, requires_grad = rg }) end

-- plain-Lua references in float64
local function log1p(u)
  if math.abs(u) < 1e-4 then return u - u * u / 2 + u * u * u / 3 - u * u * u * u / 4 end
  return log(1 + u)
end
local function softplus(z) -- log(1 + e^z) without overflow
  if z > 0 then return z + log1p(exp(-z)) end
  return log1p(exp(z))
end
local SA, SS = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
local REF = {
  leaky_relu = function(x) return x > 0 and x or 0.01 * x end,
  elu = function(x) return x > 0 and x or exp(x) - 1 end,
  selu = function(x) return x > 0 and SS * x or SS * SA * (exp(x) - 1) end,
  celu = function(x) return x > 0 and x or exp(x) - 1 end,
  softplus = function(x) return x > 20 and x or softplus(x) end,
  hardtanh = function(x) return math.min(1, math.max(-1, x)) end,
  relu6 = function(x) return math.min(6, math.max(0, x)) end,
  hardsigmoid = function(x) return math.min(1, math.max(0, x / 6 + 0.5)) end,
  hardswish = function(x) return x * math.min(6, math.max(0, x + 3)) / 6 end,
  mish = function(x) return x * tanh(softplus(x)) end,
  logsigmoid = function(x) return -softplus(-x) end,
  softsign = function(x) return x / (1 + math.abs(x)) end,
  tanhshrink = function(x) return x - tanh(x) end,
}
local NAMES = { "leaky_relu", "elu", "selu", "celu", "softplus", "hardtanh", "relu6", "hardsigmoid", "hardswish",
                "mish", "logsigmoid", "softsign", "tanhshrink" }

local XS = { -60, -7.5, -3, -2.2, -1, -0.3, 0, 0.4, 1, 2.9, 3, 5.5, 6, 7, 25, 60 }
-- away from every kink (0, +-1, +-3, 6, the softplus threshold 20)
local SMOOTH = { -4.1, -2.5, -1.7, -0.6, -0.2, 0.15, 0.7, 1.6, 2.4, 4.3, 5.2, 6.8 }

local function grads(fn, xs)
  local x = t64(xs, true)
  fn(x):sum():backward()
  return x.grad:totable()
end

describe("activations: values", function()
  for _, name in ipairs(NAMES) do
    it(name .. " matches a float64 reference", function()
      local want = {}
      for i, v in ipairs(XS) do want[i] = REF[name](v) end
      testing.assert_close(F[name](t64(XS)), want, 1e-13, 1e-300, name)
      -- float32 too (the default dtype), against the same reference
      testing.assert_close(F[name](torch.tensor(XS)), want, 2e-6, 1e-6, name .. " f32")
    end)
  end

  it("uses PyTorch's exact constants and reference values", function()
    local FA = require("ramtorch.functional_activation")
    assert.are.equal(1.6732632423543772848170429916717, FA.SELU_ALPHA)
    assert.are.equal(1.0507009873554804934193349852946, FA.SELU_SCALE)
    local s = F.selu(t64({ 1, -1, 0 })):totable()
    assert.are.equal(1.0507009873554805, s[1])
    testing.assert_close(s[2], -1.1113307378125625, 1e-15, 0)
    assert.are.equal(0, s[3])
    testing.assert_close(F.softplus(t64({ 0 })), { 0.6931471805599453 }, 1e-15, 0)
    testing.assert_close(F.mish(t64({ 1 })), { 0.8650983882673103 }, 1e-15, 0)
    testing.assert_close(F.hardswish(t64({ 1 })), { 2 / 3 }, 1e-15, 0)
  end)

  it("honours the arguments: slopes, alphas, beta/threshold, bounds", function()
    local x = t64({ -2, -0.5, 0.5, 2 })
    testing.assert_close(F.leaky_relu(x, 0.2), { -0.4, -0.1, 0.5, 2 }, 1e-15, 0)
    testing.assert_close(F.leaky_relu(x, { negative_slope = 0.3 }), { -0.6, -0.15, 0.5, 2 }, 1e-15, 0)
    testing.assert_close(F.elu(x, 2), { 2 * (exp(-2) - 1), 2 * (exp(-0.5) - 1), 0.5, 2 }, 1e-14, 0)
    testing.assert_close(F.celu(x, 2), { 2 * (exp(-1) - 1), 2 * (exp(-0.25) - 1), 0.5, 2 }, 1e-14, 0)
    -- softplus(beta=2, threshold=3): x itself where 2x > 3
    testing.assert_close(F.softplus(t64({ -1, 1, 1.5, 1.6 }), 2, 3),
                         { softplus(-2) / 2, softplus(2) / 2, softplus(3) / 2, 1.6 }, 1e-14, 0)
    testing.assert_close(F.hardtanh(x, -1, 0.25), { -1, -0.5, 0.25, 0.25 }, 0, 0)
    testing.assert_close(F.hardtanh(x, { min_val = -0.4, max_val = 1 }), { -0.4, -0.4, 0.5, 1 }, 0, 0)
  end)

  it("stays finite and accurate for large |x|", function()
    local x = t64({ -1000, -40, 40, 1000 })
    local ls = F.logsigmoid(x):totable()
    assert.are.equal(-1000, ls[1])
    testing.assert_close(ls[2], -40 - exp(-40), 1e-15, 0)
    testing.assert_close(ls[3], -exp(-40), 1e-12, 0) -- -4.248e-18, not 0
    assert.are.equal(0, ls[4])
    local sp = F.softplus(x, 1, 1e9):totable() -- no linear region: the stable formula everywhere
    testing.assert_close(sp, { 0, exp(-40), 40, 1000 }, 1e-12, 0)
    testing.assert_close(F.mish(x), { -1000 * tanh(exp(-1000)), -40 * tanh(exp(-40)), 40, 1000 }, 1e-12, 0)
    testing.assert_close(F.elu(x), { -1, exp(-40) - 1, 40, 1000 }, 1e-15, 0)
    -- the gradients too: no inf * 0 from an unselected branch
    for _, name in ipairs(NAMES) do
      for _, v in ipairs(grads(F[name], { -1000, 1000 })) do
        assert.is_true(v == v, name .. " gradient is NaN at |x| = 1000")
      end
    end
    assert.are.same({ 1, 0 }, grads(F.logsigmoid, { -1000, 1000 }))
    assert.are.same({ 0, 1 }, grads(F.softplus, { -1000, 1000 }))
  end)

  it("propagates NaN", function()
    for _, name in ipairs(NAMES) do
      local v = F[name](t64({ 0 / 0 })):item()
      assert.is_true(v ~= v, name)
    end
  end)

  it("refuses integer tensors, a bad argument and min_val > max_val", function()
    testing.assert_error_has(function() F.elu(torch.tensor({ 1, 2 }, { dtype = torch.int64 })) end,
                             "elu: expected a floating point tensor, got int64")
    testing.assert_error_has(function() F.leaky_relu(t64({ 1 }), "x") end,
                             "leaky_relu: expected negative_slope to be a number")
    testing.assert_error_has(function() F.softplus(t64({ 1 }), { beta = 1, treshold = 2 }) end,
                             "softplus: unknown option 'treshold'")
    testing.assert_error_has(function() F.hardtanh(t64({ 1 }), 1, -1) end,
                             "hardtanh: min_val cannot be greater than max_val")
    testing.assert_error_has(function() F.celu(t64({ 1 }), 0) end, "celu: ZeroDivisionError")
    testing.assert_error_has(function() nn.Hardtanh(1, 1) end, "Hardtanh: max_val must be greater than min_val")
    testing.assert_error_has(function() nn.LeakyReLU({ slope = 1 }) end, "LeakyReLU: unknown option 'slope'")
  end)
end)

describe("activations: gradients", function()
  for _, name in ipairs(NAMES) do
    it(name .. " passes gradcheck away from kinks", function()
      testing.gradcheck(F[name], { t64(SMOOTH, true) })
    end)
  end

  it("pass gradcheck with non-default arguments", function()
    local x = t64(SMOOTH, true)
    testing.gradcheck(function(t) return F.leaky_relu(t, 0.3) end, { x })
    testing.gradcheck(function(t) return F.elu(t, 1.7) end, { x })
    testing.gradcheck(function(t) return F.celu(t, 0.6) end, { x })
    testing.gradcheck(function(t) return F.softplus(t, 2, 9) end, { x })
    testing.gradcheck(function(t) return F.hardtanh(t, -2, 2) end, { x })
  end)

  -- PyTorch's backward kernels at the kinks: leaky_relu x > 0 ? 1 : slope; elu x <= 0 is the negative
  -- side; hardtanh/relu6/hardsigmoid 0 at the bounds; hardswish x/3 + 1/2 on [-3, 3]
  it("match PyTorch's conventions exactly at the kinks", function()
    assert.are.same({ 0.2 }, grads(function(t) return F.leaky_relu(t, 0.2) end, { 0 }))
    assert.are.same({ 2 }, grads(function(t) return F.elu(t, 2) end, { 0 }))
    assert.are.same({ 1 }, grads(function(t) return F.celu(t, 2) end, { 0 }))
    testing.assert_close(grads(F.selu, { 0 }), { SS * SA }, 1e-15, 0)
    assert.are.same({ 0, 1, 0 }, grads(F.hardtanh, { -1, 0.5, 1 }))
    assert.are.same({ 0, 0, 1, 0, 0 }, grads(function(t) return F.hardtanh(t, -2, 3) end, { -2.5, -2, 0, 3, 3.5 }))
    assert.are.same({ 0, 0, 1, 0, 0 }, grads(F.relu6, { -1, 0, 3, 6, 7 }))
    assert.are.same({ 0, 0, 1 / 6, 0, 0 }, grads(F.hardsigmoid, { -4, -3, 0, 3, 4 }))
    assert.are.same({ 0, -0.5, 0.5, 1.5, 1 }, grads(F.hardswish, { -3.5, -3, 0, 3, 3.5 }))
    -- softplus: sigmoid(beta x) up to and at the threshold, 1 beyond it
    local g = grads(function(t) return F.softplus(t, 2, 4) end, { 0, 2, 2.5 })
    assert.are.equal(0.5, g[1])
    testing.assert_close(g[2], 1 / (1 + exp(-4)), 1e-15, 0)
    assert.are.equal(1, g[3])
    assert.are.same({ 0.5 }, grads(F.logsigmoid, { 0 }))
    assert.are.same({ 1 }, grads(F.softsign, { 0 }))
    testing.assert_close(grads(F.mish, { 0 }), { 0.6 }, 1e-15, 0) -- tanh(log 2) = 3/5
  end)
end)

describe("activation modules", function()
  it("forward through the functional forms with the constructor's arguments", function()
    local x = t64({ -2, -0.5, 0, 0.5, 2, 4 })
    local cases = {
      { nn.LeakyReLU(), F.leaky_relu(x) }, { nn.LeakyReLU(0.2), F.leaky_relu(x, 0.2) },
      { nn.LeakyReLU({ negative_slope = 0.2 }), F.leaky_relu(x, 0.2) },
      { nn.ELU(0.5), F.elu(x, 0.5) }, { nn.SELU(), F.selu(x) }, { nn.CELU(3), F.celu(x, 3) },
      { nn.Softplus(2, 3), F.softplus(x, 2, 3) }, { nn.Hardtanh(-0.5, 1.5), F.hardtanh(x, -0.5, 1.5) },
      { nn.ReLU6(), F.relu6(x) }, { nn.Hardsigmoid(), F.hardsigmoid(x) }, { nn.Hardswish(), F.hardswish(x) },
      { nn.Mish(), F.mish(x) }, { nn.LogSigmoid(), F.logsigmoid(x) }, { nn.Softsign(), F.softsign(x) },
      { nn.Tanhshrink(), F.tanhshrink(x) }, { nn.Identity(), x },
    }
    for i, c in ipairs(cases) do testing.assert_close(c[1](x), c[2], 0, 0, "case " .. i) end
  end)

  it("print as PyTorch's", function()
    assert.are.equal("LeakyReLU(negative_slope=0.01)", tostring(nn.LeakyReLU()))
    assert.are.equal("LeakyReLU(negative_slope=0.2, inplace=True)", tostring(nn.LeakyReLU(0.2, true)))
    assert.are.equal("Softplus(beta=2, threshold=10)", tostring(nn.Softplus(2, 10)))
    assert.are.equal("Hardtanh(min_val=-2, max_val=2)", tostring(nn.Hardtanh(-2, 2)))
    assert.are.equal("ELU(alpha=0.5)", tostring(nn.ELU(0.5)))
    assert.are.equal("ReLU6(inplace=True)", tostring(nn.ReLU6(true)))
    assert.are.equal("SELU()", tostring(nn.SELU()))
    assert.are.equal("Mish()", tostring(nn.Mish()))
  end)
end)

-- ---- normalisation --------------------------------------------------------------------------------------

-- per-channel statistics of x given as nested tables (N, C) or (N, C, L): mean, biased and unbiased var
local function channel_stats(x, C)
  local mean, bvar, uvar = {}, {}, {}
  for c = 1, C do
    local vals = {}
    for n = 1, #x do
      local row = x[n][c]
      if type(row) == "table" then
        for _, v in ipairs(row) do vals[#vals + 1] = v end
      else
        vals[#vals + 1] = row
      end
    end
    local s = 0
    for _, v in ipairs(vals) do s = s + v end
    local m = s / #vals
    local q = 0
    for _, v in ipairs(vals) do q = q + (v - m) ^ 2 end
    mean[c], bvar[c], uvar[c] = m, q / #vals, q / (#vals - 1)
  end
  return mean, bvar, uvar
end

local BATCHES = {
  { { 1, -2, 0.5 }, { 3, 0, 1.5 }, { -1, 4, 2 }, { 0.5, 1, -3 } },
  { { 2, 2, 2 }, { 0, -1, 1 }, { 1, 5, -2 } },
  { { -4, 0.25, 1 }, { 6, -3, 0 } },
}

describe("nn.BatchNorm1d", function()
  it("normalises with the batch statistics and tracks running stats over 3 steps", function()
    local bn = nn.BatchNorm1d(3, { dtype = f64 })
    local rm, rv = { 0, 0, 0 }, { 1, 1, 1 }
    for step, b in ipairs(BATCHES) do
      local y = bn(t64(b))
      local mean, bvar, uvar = channel_stats(b, 3)
      local want = {}
      for n = 1, #b do
        for c = 1, 3 do want[#want + 1] = (b[n][c] - mean[c]) / math.sqrt(bvar[c] + 1e-5) end
      end
      testing.assert_close(y, want, 1e-12, 1e-12, "step " .. step)
      for c = 1, 3 do
        rm[c] = 0.9 * rm[c] + 0.1 * mean[c]
        rv[c] = 0.9 * rv[c] + 0.1 * uvar[c]
      end
    end
    testing.assert_close(bn.running_mean, rm, 1e-13, 1e-15, "running_mean")
    testing.assert_close(bn.running_var, rv, 1e-13, 1e-15, "running_var")
    assert.are.equal(3, bn.num_batches_tracked:item())
    assert.are.equal(torch.int64, bn.num_batches_tracked.dtype)
    -- eval: the running stats, and nothing is updated
    bn:eval()
    local x = t64({ { 1, 2, 3 } })
    local y = bn(x):totable()[1]
    for c = 1, 3 do testing.assert_close(y[c], (({ 1, 2, 3 })[c] - rm[c]) / math.sqrt(rv[c] + 1e-5), 1e-13, 0) end
    assert.are.equal(3, bn.num_batches_tracked:item())
    testing.assert_close(bn.running_mean, rm, 1e-13, 1e-15)
  end)

  it("momentum=false is PyTorch's momentum=None: the cumulative average", function()
    local bn = nn.BatchNorm1d(3, { momentum = false, dtype = f64 })
    assert.are.equal("BatchNorm1d(3, eps=1e-05, momentum=None, affine=True, track_running_stats=True)", tostring(bn))
    local sm, sv = { 0, 0, 0 }, { 0, 0, 0 }
    for _, b in ipairs(BATCHES) do
      bn(t64(b))
      local mean, _, uvar = channel_stats(b, 3)
      for c = 1, 3 do sm[c], sv[c] = sm[c] + mean[c] / 3, sv[c] + uvar[c] / 3 end
    end
    testing.assert_close(bn.running_mean, sm, 1e-13, 1e-15)
    testing.assert_close(bn.running_var, sv, 1e-13, 1e-15)
  end)

  it("takes (N, C, L) inputs, statistics over N and L; the affine applies per channel", function()
    local x = { { { 1, 2 }, { 0, -1 } }, { { 3, 5 }, { 4, 2 } }, { { -2, 0 }, { 1, 1 } } }
    local bn = nn.BatchNorm1d(2, 1e-3, 0.5, true, true):double()
    torch.no_grad(function()
      bn.weight:copy_(t64({ 2, -1 }))
      bn.bias:copy_(t64({ 0.5, 3 }))
    end)
    local y = bn(t64(x))
    local mean, bvar, uvar = channel_stats(x, 2)
    local w, b = { 2, -1 }, { 0.5, 3 }
    local want = {}
    for n = 1, 3 do
      for c = 1, 2 do
        for l = 1, 2 do want[#want + 1] = (x[n][c][l] - mean[c]) / math.sqrt(bvar[c] + 1e-3) * w[c] + b[c] end
      end
    end
    testing.assert_close(y, want, 1e-12, 1e-12)
    testing.assert_close(bn.running_mean, { 0.5 * mean[1], 0.5 * mean[2] }, 1e-14, 0)
    testing.assert_close(bn.running_var, { 0.5 + 0.5 * uvar[1], 0.5 + 0.5 * uvar[2] }, 1e-14, 0)
  end)

  it("state_dict has the parameters and buffers in PyTorch's order and round-trips", function()
    local a = nn.BatchNorm1d(3, { dtype = f64 })
    for _, b in ipairs(BATCHES) do a(t64(b)) end
    assert.are.same({ "weight", "bias", "running_mean", "running_var", "num_batches_tracked" },
                    nn.utils.state_dict_keys(a:state_dict()))
    local b = nn.BatchNorm1d(3, { dtype = f64 })
    b:load_state_dict(a:state_dict())
    assert.are.equal(3, b.num_batches_tracked:item())
    a:eval()
    b:eval()
    local x = t64({ { 0.3, -1, 2 }, { 1, 1, 1 } })
    testing.assert_close(b(x), a(x), 0, 0)
    -- without running stats: no buffers, batch statistics in eval too
    local c = nn.BatchNorm1d(3, { track_running_stats = false, affine = false })
    assert.are.same({}, nn.utils.state_dict_keys(c:state_dict()))
    assert.is_nil(c.running_mean)
    c:eval()
    local mean, bvar = channel_stats(BATCHES[1], 3)
    local y = c(torch.tensor(BATCHES[1])):totable()
    testing.assert_close(y[1][2], (-2 - mean[2]) / math.sqrt(bvar[2] + 1e-5), 1e-5, 1e-6)
    assert.are.equal("BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=False, track_running_stats=False)", tostring(c))
  end)

  it("passes gradcheck in training and eval mode, through input, weight and bias", function()
    local x = t64({ { 0.3, -1.2, 2 }, { 1.1, 0.4, -0.5 }, { -0.7, 2.2, 0.9 }, { 0.2, -0.3, 1.4 } }, true)
    local w, b = t64({ 1.5, -0.5, 0.8 }, true), t64({ 0.1, 0.2, -0.3 }, true)
    local rm, rv = t64({ 0.1, -0.2, 0.3 }), t64({ 0.5, 2, 1.5 })
    testing.gradcheck(function(xx, ww, bb) return F.batch_norm(xx, nil, nil, ww, bb, true) end, { x, w, b })
    testing.gradcheck(function(xx, ww, bb) return F.batch_norm(xx, rm, rv, ww, bb, false) end, { x, w, b })
    local x3 = torch.randn({ 3, 2, 4 }, { dtype = f64 }):requires_grad_(true)
    testing.gradcheck(function(xx) return F.batch_norm(xx, nil, nil, { training = true, eps = 1e-3 }) end, { x3 })
  end)

  it("refuses wrong ranks, channel counts and a single value per channel in training", function()
    local bn = nn.BatchNorm1d(3)
    testing.assert_error_has(function() bn(torch.zeros({ 2, 3, 4, 5 })) end,
                             "BatchNorm1d: expected 2D or 3D input (got 4D input)")
    testing.assert_error_has(function() bn(torch.zeros({ 3 })) end, "expected 2D or 3D input (got 1D input)")
    testing.assert_error_has(function() bn(torch.zeros({ 2, 4 })) end, "BatchNorm1d: expected input with 3 channels")
    testing.assert_error_has(function() bn(torch.zeros({ 1, 3 })) end,
                             "Expected more than 1 value per channel when training, got input size [1, 3]")
    testing.assert_error_has(function() bn(torch.zeros({ 1, 3, 1 })) end,
                             "Expected more than 1 value per channel when training, got input size [1, 3, 1]")
    assert.are.equal(0, bn.num_batches_tracked:item()) -- a refused batch is not counted
    bn(torch.zeros({ 1, 3, 2 })) -- two values per channel is enough
    bn:eval()
    assert.are.same({ 1, 3 }, bn(torch.zeros({ 1, 3 })).shape) -- eval takes a batch of one
    testing.assert_error_has(function() nn.BatchNorm1d(0) end, "BatchNorm1d: expected num_features to be a positive integer")
    testing.assert_error_has(function() nn.BatchNorm1d(3, { moment = 0.1 }) end, "BatchNorm1d: unknown option 'moment'")
    testing.assert_error_has(function() F.batch_norm(torch.zeros({ 2, 3 }), nil, nil) end,
                             "running_mean and running_var must be defined in evaluation mode")
    testing.assert_error_has(function() F.batch_norm(torch.zeros({ 2, 3 }), torch.zeros(4), torch.ones(4)) end,
                             "batch_norm: running_mean should contain 3 elements not 4")
    testing.assert_error_has(function() F.batch_norm(torch.zeros({ 2, 3 }), nil, nil, torch.ones(2), nil, true) end,
                             "batch_norm: weight should contain 3 elements not 2")
    testing.assert_error_has(function() F.batch_norm(torch.zeros({ 3 }), nil, nil, nil, nil, true) end,
                             "batch_norm: expected an input of at least 2 dims")
  end)
end)

describe("nn.BatchNorm2d", function()
  it("normalises 4-d inputs over N, H, W and checks the rank", function()
    local x = torch.randn({ 3, 2, 2, 3 }, { dtype = f64 })
    local bn = nn.BatchNorm2d(2):double()
    local y = bn(x)
    local xt = x:totable()
    local nested = {} -- (N, C, L) with L = H * W
    for n = 1, 3 do
      nested[n] = {}
      for c = 1, 2 do
        local l = {}
        for h = 1, 2 do for w = 1, 3 do l[#l + 1] = xt[n][c][h][w] end end
        nested[n][c] = l
      end
    end
    local mean, bvar, uvar = channel_stats(nested, 2)
    local yt = y:totable()
    for n = 1, 3 do
      for c = 1, 2 do
        for h = 1, 2 do
          for w = 1, 3 do
            testing.assert_close(yt[n][c][h][w], (xt[n][c][h][w] - mean[c]) / math.sqrt(bvar[c] + 1e-5), 1e-12, 1e-12)
          end
        end
      end
    end
    testing.assert_close(bn.running_var, { 0.9 + 0.1 * uvar[1], 0.9 + 0.1 * uvar[2] }, 1e-13, 0)
    testing.assert_error_has(function() bn(torch.zeros({ 2, 2, 3 }, { dtype = f64 })) end,
                             "BatchNorm2d: expected 4D input (got 3D input)")
    testing.assert_error_has(function() bn(torch.zeros({ 1, 2, 1, 1 }, { dtype = f64 })) end,
                             "Expected more than 1 value per channel when training, got input size [1, 2, 1, 1]")
    bn(torch.zeros({ 1, 2, 1, 2 }, { dtype = f64 })) -- one sample, two positions: fine
    testing.gradcheck(function(t) return bn(t) end, { torch.randn({ 2, 2, 2, 2 }, { dtype = f64 }):requires_grad_(true) })
  end)

  it("float32 module on float32 input agrees with float64", function()
    local x = torch.randn({ 4, 3, 2, 2 })
    local a, b = nn.BatchNorm2d(3), nn.BatchNorm2d(3):double()
    testing.assert_close(a(x), b(x:double()), 1e-5, 1e-5)
    testing.assert_close(a.running_var, b.running_var, 1e-5, 1e-6)
    assert.are.equal(torch.float32, a(x).dtype)
  end)
end)

describe("nn.GroupNorm", function()
  local function ref_group_norm(xt, G, w, b, eps)
    local out = {}
    for n = 1, #xt do
      local C = #xt[n]
      local per = C / G
      out[n] = {}
      for g = 0, G - 1 do
        local vals = {}
        for c = g * per + 1, (g + 1) * per do for _, v in ipairs(xt[n][c]) do vals[#vals + 1] = v end end
        local s = 0
        for _, v in ipairs(vals) do s = s + v end
        local m = s / #vals
        local q = 0
        for _, v in ipairs(vals) do q = q + (v - m) ^ 2 end
        local r = 1 / math.sqrt(q / #vals + eps)
        for c = g * per + 1, (g + 1) * per do
          out[n][c] = {}
          for l, v in ipairs(xt[n][c]) do out[n][c][l] = (v - m) * r * w[c] + b[c] end
        end
      end
    end
    return out
  end
  local function flat(t, acc)
    acc = acc or {}
    for _, v in ipairs(t) do
      if type(v) == "table" then flat(v, acc) else acc[#acc + 1] = v end
    end
    return acc
  end

  it("normalises each sample's channel groups against a reference", function()
    local x = torch.randn({ 2, 6, 3 }, { dtype = f64 })
    local gn = nn.GroupNorm(3, 6, { eps = 1e-4, dtype = f64 })
    local w, b = { 1, 2, -1, 0.5, 3, 1 }, { 0, 0.1, 0.2, -0.3, 1, 2 }
    torch.no_grad(function()
      gn.weight:copy_(t64(w))
      gn.bias:copy_(t64(b))
    end)
    testing.assert_close(gn(x), flat(ref_group_norm(x:totable(), 3, w, b, 1e-4)), 1e-12, 1e-12)
    -- 2-d (N, C) and 4-d inputs too; eval changes nothing (no running stats)
    local x2 = torch.randn({ 3, 6 }, { dtype = f64 })
    local rows = {}
    for n, r in ipairs(x2:totable()) do
      rows[n] = {}
      for c, v in ipairs(r) do rows[n][c] = { v } end
    end
    testing.assert_close(gn(x2), flat(ref_group_norm(rows, 3, w, b, 1e-4)), 1e-12, 1e-12)
    local x4 = torch.randn({ 2, 6, 2, 2 }, { dtype = f64 })
    local y4 = gn(x4)
    gn:eval()
    testing.assert_close(gn(x4), y4, 0, 0)
    testing.assert_close(y4:reshape({ 2, 6, 4 }), gn(x4:reshape({ 2, 6, 4 })), 1e-14, 1e-14)
    assert.are.same({ "weight", "bias" }, nn.utils.state_dict_keys(gn:state_dict()))
    assert.are.equal("GroupNorm(3, 6, eps=0.0001, affine=True)", tostring(gn))
  end)

  it("passes gradcheck", function()
    local x = torch.randn({ 2, 4, 3 }, { dtype = f64 }):requires_grad_(true)
    local w, b = t64({ 1.5, -0.5, 0.8, 1 }, true), t64({ 0.1, 0.2, -0.3, 0 }, true)
    testing.gradcheck(function(xx, ww, bb) return F.group_norm(xx, 2, ww, bb) end, { x, w, b })
    testing.gradcheck(function(xx) return F.group_norm(xx, 4, { eps = 1e-3 }) end, { x })
  end)

  it("refuses channels not divisible by the groups", function()
    testing.assert_error_has(function() nn.GroupNorm(3, 4) end, "GroupNorm: num_channels must be divisible by num_groups")
    testing.assert_error_has(function() F.group_norm(torch.zeros({ 2, 5, 3 }), 2) end,
                             "Expected number of channels in input to be divisible by num_groups, but got input of shape [2, 5, 3] and num_groups=2")
    testing.assert_error_has(function() F.group_norm(torch.zeros({ 5 }), 1) end,
                             "Expected at least 2 dimensions for input tensor but received 1")
    testing.assert_error_has(function() nn.GroupNorm(2, 4)(torch.zeros({ 2, 6 })) end, "weight should contain 6 elements not 4")
  end)
end)
