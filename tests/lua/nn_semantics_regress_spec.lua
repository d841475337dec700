-- nn_semantics_regress_spec.lua: places where ramtorch's nn/functional/data layers differed from
-- PyTorch 2.x, each failing on the code before its fix: F.nll_loss ignored its weight option (a silent
-- unweighted loss) and broadcast a mis-shaped target; F.cross_entropy refused class weights and class
-- probabilities as target; nn.Embedding ignored max_norm (and scale_grad_by_freq / sparse);
-- RandomSampler refused num_samples > #data without replacement and accepted num_samples = 0.
-- Expected values are computed here in plain Lua from PyTorch's definitions.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local data = require("ramtorch.data")
local testing = require("ramtorch.testing")
local F = nn.functional

local f64 = { dtype = torch.float64 }
local function long(t) return torch.tensor(t, { dtype = torch.int64 }) end
local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok)
  return tostring(e)
end
local function close(a, b, tol) assert.is_true(math.abs(a - b) <= (tol or 1e-12), ("%.17g vs %.17g"):format(a, b)) end

local X = { { 1, 2, 3 }, { 0, 1, 0 }, { -1, 0.5, 2 }, { 2, -2, 0 } }
local W = { 1, 2, 3 }
-- log_softmax of row r, class c (1-based)
local function logp(r, c)
  local s = 0
  for k = 1, 3 do s = s + math.exp(X[r][k]) end
  return X[r][c] - math.log(s)
end

describe("losses as PyTorch defines them", function()
  local x = torch.tensor(X, f64)
  local w = torch.tensor(W, f64)
  local t = long({ 2, 0, -100, 1 }) -- row 3 ignored

  it("nll_loss with weight: -w[t] * logp, mean divided by the summed weights of non-ignored targets", function()
    local lp = x:log_softmax(1)
    local rows = { { 1, 3 }, { 2, 1 }, { 4, 2 } } -- {row, class} of the non-ignored targets
    local num, den = 0, 0
    for _, e in ipairs(rows) do
      num = num - W[e[2]] * logp(e[1], e[2])
      den = den + W[e[2]]
    end
    close(F.nll_loss(lp, t, { weight = w }):item(), num / den)
    close(F.nll_loss(lp, t, { weight = w, reduction = "sum" }):item(), num)
    local none = F.nll_loss(lp, t, { weight = w, reduction = "none" })
    close(none[3]:item(), 0)
    close(none[1]:item(), -3 * logp(1, 3))
    -- all ignored: 0 / 0 = nan, as PyTorch
    local v = F.nll_loss(lp, long({ -100, -100, -100, -100 }), { weight = w }):item()
    assert.is_true(v ~= v)
    testing.gradcheck(function(a) return F.nll_loss(a, t, { weight = w }) end, { torch.randn(4, 3, f64):requires_grad_(true) })
  end)

  it("nll_loss raises for a target that does not match the input and a weight of the wrong size", function()
    local lp = x:log_softmax(1)
    assert.matches("nll_loss: target of shape {1} does not fit input of shape {4, 3}", err_of(F.nll_loss, lp, long({ 0 })))
    assert.matches("nll_loss: weight tensor should be defined either for all 3 classes or no classes but got weight tensor of shape: %[2%]",
                   err_of(F.nll_loss, lp, t, { weight = torch.ones(2, f64) }))
  end)

  it("cross_entropy with class weights (and label smoothing) follows PyTorch's composition", function()
    local rows = { { 1, 3 }, { 2, 1 }, { 4, 2 } }
    for _, ls in ipairs({ 0, 0.2 }) do
      local nll, smooth, den, nll_sum = 0, 0, 0, 0
      for _, e in ipairs(rows) do
        local r, c = e[1], e[2]
        nll_sum = nll_sum - W[c] * logp(r, c)
        den = den + W[c]
        for k = 1, 3 do smooth = smooth - W[k] * logp(r, k) end
      end
      nll = nll_sum / den
      local want_mean = (1 - ls) * nll + ls / 3 * smooth / den
      local want_sum = (1 - ls) * nll_sum + ls / 3 * smooth
      close(F.cross_entropy(x, t, { weight = w, label_smoothing = ls }):item(), want_mean)
      close(F.cross_entropy(x, t, { weight = w, label_smoothing = ls, reduction = "sum" }):item(), want_sum)
      local none = F.cross_entropy(x, t, { weight = w, label_smoothing = ls, reduction = "none" })
      close(none[3]:item(), 0)
      local s1 = 0
      for k = 1, 3 do s1 = s1 - W[k] * logp(1, k) end
      close(none[1]:item(), (1 - ls) * -W[3] * logp(1, 3) + ls / 3 * s1)
      testing.gradcheck(function(a) return F.cross_entropy(a, t, { weight = w, label_smoothing = ls }) end,
                        { torch.randn(4, 3, f64):requires_grad_(true) })
    end
    -- the module takes weight too, and keeps it as a buffer (state_dict key "weight", as PyTorch)
    local m = nn.CrossEntropyLoss({ weight = w, label_smoothing = 0.2 })
    close(m(x, t):item(), F.cross_entropy(x, t, { weight = w, label_smoothing = 0.2 }):item())
    assert.are.same({ "weight" }, nn.utils.state_dict_keys(m:state_dict()))
    -- unweighted results are unchanged (weights of 1 give the fused kernel's value)
    close(F.cross_entropy(x, t, { weight = torch.ones(3, f64), label_smoothing = 0.2 }):item(),
          F.cross_entropy(x, t, { label_smoothing = 0.2 }):item(), 1e-12)
  end)

  it("cross_entropy with class probabilities as target (soft labels)", function()
    local P = { { 0.2, 0.3, 0.5 }, { 1, 0, 0 }, { 0, 0.5, 0.5 }, { 0.1, 0.1, 0.8 } }
    local p = torch.tensor(P, f64)
    for _, ls in ipairs({ 0, 0.3 }) do
      for _, wt in ipairs({ false, true }) do
        local total, first = 0, nil
        for r = 1, 4 do
          local row = 0
          for k = 1, 3 do
            local tk = P[r][k] * (1 - ls) + ls / 3
            row = row - tk * logp(r, k) * (wt and W[k] or 1)
          end
          first = first or row
          total = total + row
        end
        local o = { label_smoothing = ls, weight = wt and w or nil }
        close(F.cross_entropy(x, p, o):item(), total / 4) -- mean: over rows, not weights
        o.reduction = "sum"
        close(F.cross_entropy(x, p, o):item(), total)
        o.reduction = "none"
        close(F.cross_entropy(x, p, o)[1]:item(), first)
      end
    end
    -- a 1-d input with a 1-d probability target
    close(F.cross_entropy(x[1], p[1]):item(), -(0.2 * logp(1, 1) + 0.3 * logp(1, 2) + 0.5 * logp(1, 3)))
    testing.gradcheck(function(a) return F.cross_entropy(a, p, { label_smoothing = 0.1 }) end, { torch.randn(4, 3, f64):requires_grad_(true) })
    assert.matches("cross_entropy: ignore_index is not supported for floating point target",
                   err_of(F.cross_entropy, x, p, { ignore_index = 0 }))
  end)
end)

describe("Embedding options", function()
  it("max_norm renormalises the looked-up rows in place to norm max_norm (PyTorch's embedding_renorm_)", function()
    local e = nn.Embedding(3, 2, { max_norm = 1 })
    torch.no_grad(function() e.weight:copy_(torch.tensor({ { 3, 4 }, { 0.3, 0.4 }, { 6, 8 } }, { dtype = torch.float32 })) end)
    local y = e(long({ 0, 1, 0 }))
    local s = 1 / (5 + 1e-7)
    testing.assert_close(y, torch.tensor({ { 3 * s, 4 * s }, { 0.3, 0.4 }, { 3 * s, 4 * s } }, { dtype = torch.float32 }), 1e-6, 1e-7)
    -- the weight itself changed for row 0 only; row 2 was not looked up
    testing.assert_close(e.weight[1], torch.tensor({ 3 * s, 4 * s }, { dtype = torch.float32 }), 1e-6, 1e-7)
    assert.are.same({ 6, 8 }, e.weight[3]:totable())
    -- norm_type 1: |3| + |4| = 7
    local e1 = nn.Embedding(1, 2, { max_norm = 1, norm_type = 1, dtype = torch.float64 })
    torch.no_grad(function() e1.weight:copy_(torch.tensor({ { 3, 4 } }, f64)) end)
    close(e1(long({ 0 }))[1][1]:item(), 3 / (7 + 1e-7))
    -- gradients still flow to the (renormalised) rows
    local g = torch.randn(2, 3, f64):requires_grad_(true)
    testing.gradcheck(function(wt) return F.embedding(long({ 0, 1 }), wt, { max_norm = 100 }) end, { g })
    assert.matches("Embedding: max_norm must be a positive number", err_of(nn.Embedding, 3, 2, { max_norm = -1 }))
  end)

  it("scale_grad_by_freq and sparse are refused rather than ignored", function()
    assert.matches("Embedding: scale_grad_by_freq is not supported", err_of(nn.Embedding, 3, 2, { scale_grad_by_freq = true }))
    assert.matches("Embedding: sparse gradients are not supported", err_of(nn.Embedding, 3, 2, { sparse = true }))
  end)
end)

describe("RandomSampler as PyTorch", function()
  local ds = data.TensorDataset(torch.arange(5))

  it("num_samples > #data without replacement concatenates permutations", function()
    local s = data.RandomSampler(ds, { num_samples = 12, generator = 3 })
    assert.are.equal(12, data.len(s))
    local idx = s:indices()
    assert.are.equal(12, #idx)
    -- each block of 5 is a permutation of 0..4; the tail 2 are distinct
    for b = 0, 1 do
      local seen = {}
      for i = 1, 5 do seen[idx[b * 5 + i]] = true end
      for v = 0, 4 do assert.is_true(seen[v]) end
    end
    assert.are_not.equal(idx[11], idx[12])
  end)

  it("num_samples must be a positive integer", function()
    assert.matches("RandomSampler: num_samples should be a positive integer value, but got num_samples=0",
                   err_of(data.RandomSampler, ds, { num_samples = 0 }))
  end)
end)
