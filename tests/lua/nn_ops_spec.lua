-- nn_ops_spec.lua: softmax, log_softmax, cross_entropy, nll_loss, mse_loss, embedding, layer_norm,
-- dropout, cat, stack, max/min along a dim, argmax/argmin: forward values against float64 references
-- computed here in Lua, float64 finite-difference gradchecks, bf16 against f32, and the error paths.
local torch = require("ramtorch")
local F = require("ramtorch.functional")
local testing = require("ramtorch.testing")
local gradcheck, assert_close = testing.gradcheck, testing.assert_close

local f64 = torch.float64
local function r(...) return torch.randn({ ... }, { dtype = f64, requires_grad = true }) end
local function rd(...) return torch.randn({ ... }, { dtype = f64 }) end
local function long(t) return torch.tensor(t, { dtype = torch.int64 }) end

local assert_error_has = testing.assert_error_has

-- ---- float64 references by hand ---------------------------------------------------------------

-- rows of a 2-d table: softmax / log_softmax along the last dim
local function ref_softmax_rows(rows, log)
  local out = {}
  for i, row in ipairs(rows) do
    local m = -math.huge
    for _, v in ipairs(row) do m = math.max(m, v) end
    local s = 0
    for _, v in ipairs(row) do s = s + math.exp(v - m) end
    out[i] = {}
    for j, v in ipairs(row) do
      out[i][j] = log and (v - m - math.log(s)) or math.exp(v - m) / s
    end
  end
  return out
end

-- per-sample cross entropy of 2-d logits rows with targets, label smoothing eps; nil for ignored
local function ref_ce(rows, targets, ignore, eps)
  local lsm = ref_softmax_rows(rows, true)
  local out = {}
  for i, row in ipairs(lsm) do
    local t = targets[i]
    if t == ignore then
      out[i] = false
    else
      local c = #row
      local sum = 0
      for _, v in ipairs(row) do sum = sum + v end
      out[i] = -(1 - eps) * row[t + 1] - eps / c * sum
    end
  end
  return out
end

local function reduce_ref(per, reduction)
  if reduction == "none" then
    local t = {}
    for i, v in ipairs(per) do t[i] = v or 0 end
    return t
  end
  local s, n = 0, 0
  for _, v in ipairs(per) do
    if v then s, n = s + v, n + 1 end
  end
  return reduction == "sum" and s or s / n
end

describe("softmax and log_softmax", function()
  before_each(function() torch.manual_seed(11) end)

  it("match a float64 reference along every dim, contiguous or not", function()
    local x = rd(3, 4, 5)
    for _, dim in ipairs({ 0, 1, 2, -1 }) do
      -- move dim last, compare row by row
      local d = dim < 0 and dim + 3 or dim
      local xm = x:transpose(d, 2):contiguous():reshape(-1, x:size(d))
      for _, log in ipairs({ false, true }) do
        local y = log and x:log_softmax(dim) or x:softmax(dim)
        local ym = y:transpose(d, 2):contiguous():reshape(-1, x:size(d))
        assert_close(ym, torch.tensor(ref_softmax_rows(xm:totable(), log), { dtype = f64 }), 1e-12, 1e-12)
      end
    end
    -- a transposed (non-contiguous) input gives the same as its contiguous copy
    local xt = x:transpose(0, 2)
    assert_close(xt:softmax(1), xt:contiguous():softmax(1), 0, 0)
    assert_close(xt:log_softmax(-1), xt:contiguous():log_softmax(-1), 0, 0)
  end)

  it("is numerically stable for large logits and f32 uses the fast path correctly", function()
    local x = torch.tensor({ { 1000, 1001, 1002 }, { -1000, -1001, -1002 } }, { dtype = torch.float32 })
    local ref = torch.tensor(ref_softmax_rows({ { 0, 1, 2 }, { 0, -1, -2 } }, false), { dtype = f64 })
    assert_close(x:softmax(1), ref, 1e-6, 1e-7)
    local lref = torch.tensor(ref_softmax_rows({ { 0, 1, 2 }, { 0, -1, -2 } }, true), { dtype = f64 })
    assert_close(x:log_softmax(1), lref, 1e-6, 1e-6)
    local s = torch.randn(7, 33):softmax(-1):sum(-1)
    assert_close(s, torch.ones(7), 1e-6, 1e-6)
  end)

  it("handles 0-d inputs and torch.softmax / F names", function()
    local s = torch.tensor(3.0, { dtype = f64 })
    assert.are.equal(1, s:softmax(0):item())
    assert.are.equal(0, F.log_softmax(s, -1):item())
    assert_close(torch.softmax(torch.ones(4), 0), { 0.25, 0.25, 0.25, 0.25 }, 1e-7, 0)
  end)

  it("gradcheck", function()
    for _, dim in ipairs({ 0, 1, -1 }) do
      gradcheck(function(a) return a:softmax(dim) end, { r(3, 4, 2) })
      gradcheck(function(a) return a:log_softmax(dim) end, { r(3, 4, 2) })
    end
    -- through a non-contiguous input and a broadcast (expanded) incoming gradient
    gradcheck(function(a) return a:t():softmax(1) end, { r(4, 3) })
    gradcheck(function(a) return a:log_softmax(1):sum(1) end, { r(3, 5) })
    gradcheck(function(a) return a:softmax(0) end, { r(1) })
  end)

  it("bf16 and f16 are within their tolerance of f32", function()
    local x = torch.randn(8, 50)
    for _, dt in ipairs({ torch.bfloat16, torch.float16 }) do
      local tol = dt == torch.bfloat16 and 1e-2 or 2e-3
      assert_close(x:to(dt):softmax(1):float(), x:to(dt):float():softmax(1), tol, 1e-3)
      assert_close(x:to(dt):log_softmax(1):float(), x:to(dt):float():log_softmax(1), tol, tol)
    end
  end)

  it("rejects integer inputs and bad dims", function()
    assert_error_has(function() return torch.tensor({ 1, 2 }):softmax(0) end, "softmax", "floating-point", "int64")
    assert_error_has(function() return torch.randn(2, 3):log_softmax(2) end, "log_softmax")
    assert_error_has(function() return torch.randn(2, 3):softmax() end, "softmax: expected an integer dim")
  end)
end)

describe("cross_entropy", function()
  before_each(function() torch.manual_seed(21) end)

  local logits_t = { { 0.1, -1.2, 2.0, 0.5 }, { 1.5, 0.3, -0.7, 0.0 }, { -0.2, 0.8, 0.4, -1.1 },
                     { 2.2, -0.4, 0.1, 0.9 }, { 0.0, 0.0, 0.0, 0.0 } }
  local targets_t = { 2, 0, -100, 3, 1 }

  it("matches a float64 reference for every reduction, ignore_index and label smoothing", function()
    local x = torch.tensor(logits_t, { dtype = f64 })
    local t = long(targets_t)
    for _, eps in ipairs({ 0, 0.1, 0.35 }) do
      local per = ref_ce(logits_t, targets_t, -100, eps)
      for _, red in ipairs({ "none", "mean", "sum" }) do
        local got = F.cross_entropy(x, t, { reduction = red, label_smoothing = eps })
        assert_close(got, reduce_ref(per, red), 1e-12, 1e-12, red .. " eps " .. eps)
      end
    end
    -- a custom ignore_index; -100 is then a real (out of range) target, so use valid ones
    local t2 = long({ 2, 0, 1, 3, 1 })
    local per = ref_ce(logits_t, { 2, 0, 1, 3, 1 }, 1, 0)
    assert_close(F.cross_entropy(x, t2, { ignore_index = 1 }), reduce_ref(per, "mean"), 1e-12, 1e-12)
    assert_close(F.cross_entropy(x, t2, { ignore_index = 1, reduction = "none" }),
                 { per[1], per[2], 0, per[4], 0 }, 1e-12, 1e-12)
  end)

  it("takes (N, C, d1, d2) logits and 1-d (C) logits", function()
    local x = rd(2, 3, 2, 2)
    local t = torch.randint(0, 3, { 2, 2, 2 })
    t[1][1][1] = -100
    local per = F.cross_entropy(x, t, { reduction = "none" })
    assert.are.same({ 2, 2, 2 }, per.shape)
    -- against the (N*d1*d2, C) form
    local x2 = x:permute(0, 2, 3, 1):reshape(-1, 3)
    local t2 = t:reshape(-1)
    assert_close(per:reshape(-1), F.cross_entropy(x2, t2, { reduction = "none" }), 1e-12, 1e-12)
    assert_close(F.cross_entropy(x, t, { label_smoothing = 0.2 }),
                 F.cross_entropy(x2, t2, { label_smoothing = 0.2 }), 1e-12, 1e-12)
    -- unbatched
    local x1 = torch.tensor({ 0.5, 1.5, -0.5 }, { dtype = f64 })
    local ref = ref_ce({ { 0.5, 1.5, -0.5 } }, { 1 }, -100, 0)[1]
    assert_close(F.cross_entropy(x1, torch.tensor(1, { dtype = torch.int64 })), ref, 1e-12, 1e-12)
  end)

  it("mean over all-ignored targets is NaN like PyTorch", function()
    local v = F.cross_entropy(rd(2, 3), long({ -100, -100 })):item()
    assert.is_true(v ~= v)
  end)

  it("gradcheck for every reduction, ignore_index, label smoothing and extra dims", function()
    local t = long({ 2, 0, -100, 3, 1 })
    for _, red in ipairs({ "none", "mean", "sum" }) do
      for _, eps in ipairs({ 0, 0.2 }) do
        gradcheck(function(a) return F.cross_entropy(a, t, { reduction = red, label_smoothing = eps }) end,
                  { r(5, 4) })
      end
    end
    local t4 = long({ { { 0, 2 }, { 1, -100 } }, { { 2, 2 }, { 0, 1 } } })
    gradcheck(function(a) return F.cross_entropy(a, t4, { label_smoothing = 0.1 }) end, { r(2, 3, 2, 2) })
    gradcheck(function(a) return F.cross_entropy(a, t4, { reduction = "none" }) end, { r(2, 3, 2, 2) })
    -- a non-contiguous logits view
    gradcheck(function(a) return F.cross_entropy(a:t(), long({ 1, 0, 2 })) end, { r(4, 3) })
  end)

  it("the gradient is softmax - onehot scaled by 1/count", function()
    local x = r(5, 4)
    local t = long(targets_t)
    F.cross_entropy(x, t):backward()
    local p = x:detach():softmax(1):totable()
    local g = x.grad:totable()
    for i = 1, 5 do
      for c = 1, 4 do
        local want = targets_t[i] == -100 and 0 or (p[i][c] - (c - 1 == targets_t[i] and 1 or 0)) / 4
        assert.is_true(math.abs(g[i][c] - want) < 1e-12)
      end
    end
  end)

  it("bf16 logits are within bf16 tolerance of f32", function()
    local x = torch.randn(256, 10)
    local t = torch.randint(0, 10, { 256 })
    local xb = x:to(torch.bfloat16)
    local lb = F.cross_entropy(xb, t)
    assert.are.equal(torch.bfloat16, lb.dtype)
    assert_close(lb:float(), F.cross_entropy(xb:float(), t), 1e-2, 1e-2)
    xb:requires_grad_()
    F.cross_entropy(xb, t, { label_smoothing = 0.1 }):backward()
    local xf = xb:detach():float():requires_grad_()
    F.cross_entropy(xf, t, { label_smoothing = 0.1 }):backward()
    assert_close(xb.grad:float(), xf.grad, 2e-2, 1e-4)
  end)

  it("error paths name the problem", function()
    local x = torch.randn(4, 3)
    assert_error_has(function() return F.cross_entropy(x, torch.tensor({ 0, 1, 2, 1 }, { dtype = torch.float32 })) end,
                     "cross_entropy: expected target of dtype int64", "float32")
    assert_error_has(function() return F.cross_entropy(x, long({ 0, 1, 2 })) end,
                     "cross_entropy: target of shape [3] does not fit logits of shape [4, 3]",
                     "expected target shape [4]")
    assert_error_has(function() return F.cross_entropy(x, long({ 0, 1, 3, 1 })) end,
                     "cross_entropy: target 3 is out of bounds for 3 classes", "position 2")
    assert_error_has(function() return F.cross_entropy(x, long({ 0, -1, 2, 1 })) end,
                     "target -1 is out of bounds")
    assert_error_has(function() return F.cross_entropy(x, long({ 0, 1, 2, 1 }), { reduction = "avg" }) end,
                     "cross_entropy: reduction must be")
    assert_error_has(function() return F.cross_entropy(x, long({ 0, 1, 2, 1 }), { label_smoothing = 1.5 }) end,
                     "label_smoothing must be in [0, 1]")
    assert_error_has(function() return F.cross_entropy(torch.tensor({ { 1, 2 } }), long({ 0 })) end,
                     "expected floating-point logits")
  end)
end)

describe("nll_loss", function()
  it("matches cross_entropy of log_softmax, with gradcheck", function()
    torch.manual_seed(3)
    local x = rd(5, 4)
    local t = long({ 2, 0, -100, 3, 1 })
    for _, red in ipairs({ "none", "mean", "sum" }) do
      assert_close(F.nll_loss(x:log_softmax(1), t, { reduction = red }),
                   F.cross_entropy(x, t, { reduction = red }), 1e-12, 1e-12)
    end
    gradcheck(function(a) return F.nll_loss(a, t) end, { r(5, 4) })
    assert_error_has(function() return F.nll_loss(x, long({ 0, 1, 9, 1, 1 })) end, "nll_loss: target out of bounds")
  end)
end)

describe("mse_loss", function()
  it("matches a reference for every reduction, broadcasting, and gradcheck", function()
    local a = torch.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = f64 })
    local b = torch.tensor({ { 0.5, 2 }, { 1, 6 } }, { dtype = f64 })
    assert_close(F.mse_loss(a, b), (0.25 + 0 + 4 + 4) / 4, 1e-15, 0)
    assert_close(F.mse_loss(a, b, { reduction = "sum" }), 8.25, 1e-15, 0)
    assert_close(F.mse_loss(a, b, { reduction = "none" }), { 0.25, 0, 4, 4 }, 1e-15, 0)
    assert_close(F.mse_loss(a, torch.tensor({ 1, 2 }, { dtype = f64 }), { reduction = "sum" }), 8, 1e-15, 0)
    for _, red in ipairs({ "none", "mean", "sum" }) do
      gradcheck(function(x, y) return F.mse_loss(x, y, { reduction = red }) end, { r(3, 4), r(3, 4) })
    end
    gradcheck(function(x, y) return F.mse_loss(x, y) end, { r(3, 4), r(4) })
    gradcheck(function(x, y) return F.mse_loss(x, y) end, { r(3, 1), r(1, 4) })
  end)

  it("error paths", function()
    assert_error_has(function() return F.mse_loss(torch.zeros(2, 3), torch.zeros(4)) end,
                     "mse_loss", "[2, 3]", "[4]")
    assert_error_has(function() return F.mse_loss(torch.zeros(2), torch.tensor({ 1, 2 })) end,
                     "mse_loss: expected floating-point input and target", "int64")
    assert_error_has(function() return F.mse_loss(torch.zeros(2), torch.zeros(2), { reduction = "max" }) end,
                     "mse_loss: reduction must be")
  end)
end)

describe("embedding", function()
  it("gathers rows for indices of any shape, int64 and int32", function()
    local w = torch.arange(12, { dtype = torch.float32 }):view(4, 3)
    local e = F.embedding(long({ { 3, 0 }, { 1, 1 } }), w)
    assert.are.same({ 2, 2, 3 }, e.shape)
    assert.are.same({ { { 9, 10, 11 }, { 0, 1, 2 } }, { { 3, 4, 5 }, { 3, 4, 5 } } }, e:totable())
    local e32 = F.embedding(torch.tensor({ 2 }, { dtype = torch.int32 }), w)
    assert.are.same({ { 6, 7, 8 } }, e32:totable())
    assert.are.same({ 3 }, F.embedding(torch.tensor(1, { dtype = torch.int64 }), w).shape)
    -- a non-contiguous weight
    assert.are.same({ { 2, 5, 8, 11 } }, F.embedding(long({ 2 }), w:t()):totable())
  end)

  it("scatter-adds the gradient (repeated indices accumulate); gradcheck", function()
    local w = torch.zeros(5, 2, { requires_grad = true })
    F.embedding(long({ 1, 3, 1, 1 }), w):sum():backward()
    assert.are.same({ { 0, 0 }, { 3, 3 }, { 0, 0 }, { 1, 1 }, { 0, 0 } }, w.grad:totable())
    gradcheck(function(wt) return F.embedding(long({ { 0, 2, 2 }, { 4, 0, 1 } }), wt) end, { r(5, 3) })
    gradcheck(function(wt) return F.embedding(torch.tensor({ 1, 1 }, { dtype = torch.int32 }), wt) end, { r(2, 4) })
  end)

  it("the weight gradient does not depend on the thread count", function()
    local nt = torch.get_num_threads()
    local idx = torch.randint(0, 50, { 3000 })
    local g = torch.randn(3000, 40)
    local res = {}
    for k, threads in ipairs({ 1, 2 }) do
      torch.set_num_threads(threads)
      local w = torch.zeros(50, 40, { requires_grad = true })
      F.embedding(idx, w):backward(g)
      res[k] = w.grad
    end
    torch.set_num_threads(nt)
    assert.are.equal(0, res[1]:ne(res[2]):sum():item())
  end)

  it("bf16 weight gradient accumulates in f32", function()
    local w = torch.zeros(2, 1, { dtype = torch.bfloat16, requires_grad = true })
    local idx = torch.zeros(300, { dtype = torch.int64 })
    F.embedding(idx, w):sum():backward()
    assert.are.equal(torch.bfloat16, w.grad.dtype)
    assert.are.equal(300, w.grad[1][1]:item())  -- 300 is exact in bf16; a bf16 running sum stalls at 256
  end)

  it("error paths: out-of-range index names it and V, never crashes", function()
    local w = torch.randn(10, 3)
    assert_error_has(function() return F.embedding(long({ 1, 12, 3 }), w) end,
                     "embedding: index 12 is out of range for an embedding of 10 rows", "position 1")
    assert_error_has(function() return F.embedding(long({ -1 }), w) end, "index -1 is out of range")
    assert_error_has(function() return F.embedding(torch.tensor({ 1 }, { dtype = torch.float32 }), w) end,
                     "embedding: expected indices of dtype int64 or int32, got float32")
    assert_error_has(function() return F.embedding(long({ 1 }), torch.randn(10)) end,
                     "embedding: weight must be 2-d")
  end)
end)

describe("layer_norm", function()
  before_each(function() torch.manual_seed(5) end)

  local function ref_ln(rows, w, b, eps)
    local out = {}
    for i, row in ipairs(rows) do
      local n, mu, var = #row, 0, 0
      for _, v in ipairs(row) do mu = mu + v end
      mu = mu / n
      for _, v in ipairs(row) do var = var + (v - mu) ^ 2 end
      var = var / n
      out[i] = {}
      for j, v in ipairs(row) do
        out[i][j] = (v - mu) / math.sqrt(var + eps) * (w and w[j] or 1) + (b and b[j] or 0)
      end
    end
    return out
  end

  it("matches a float64 reference with and without affine parameters", function()
    local x, w, b = rd(4, 6), rd(6), rd(6)
    local ref = ref_ln(x:totable(), w:totable(), b:totable(), 1e-5)
    assert_close(F.layer_norm(x, 6, w, b), torch.tensor(ref, { dtype = f64 }), 1e-12, 1e-12)
    assert_close(F.layer_norm(x, { 6 }, nil, nil, 0.1),
                 torch.tensor(ref_ln(x:totable(), nil, nil, 0.1), { dtype = f64 }), 1e-12, 1e-12)
    -- over the last two dims = over the flattened pair
    local x3 = rd(2, 3, 4)
    local ref3 = ref_ln(x3:reshape(2, 12):totable(), nil, nil, 1e-5)
    assert_close(F.layer_norm(x3, { 3, 4 }):reshape(2, 12), torch.tensor(ref3, { dtype = f64 }), 1e-12, 1e-12)
    -- f32 fast path against f64
    local xf = torch.randn(5, 64)
    local wf, bf = torch.randn(64), torch.randn(64)
    assert_close(F.layer_norm(xf, 64, wf, bf), F.layer_norm(xf:double(), 64, wf:double(), bf:double()), 1e-5, 1e-5)
    -- non-contiguous input
    local xt = rd(6, 4):t()
    assert_close(F.layer_norm(xt, 6), F.layer_norm(xt:contiguous(), 6), 0, 0)
  end)

  it("gradcheck for input, weight and bias", function()
    gradcheck(function(a, w, b) return F.layer_norm(a, 5, w, b) end, { r(3, 5), r(5), r(5) })
    gradcheck(function(a, w, b) return F.layer_norm(a, { 2, 3 }, w, b, 1e-3) end, { r(2, 2, 3), r(2, 3), r(2, 3) })
    gradcheck(function(a) return F.layer_norm(a, 4) end, { r(3, 4) })
    gradcheck(function(a, w) return F.layer_norm(a, 4, w) end, { r(2, 4), r(4) })
    gradcheck(function(a, b) return F.layer_norm(a, 4, nil, b) end, { r(2, 4), r(4) })
    -- only the parameters require grad
    local x = rd(3, 4)
    gradcheck(function(w, b) return F.layer_norm(x, 4, w, b) end, { r(4), r(4) })
    -- many rows (> one column block of the parameter-gradient kernel)
    gradcheck(function(a, w, b) return F.layer_norm(a, 70, w, b) end, { r(2, 70), r(70), r(70) })
  end)

  it("f32 gradients (fast path) match f64 gradients", function()
    for _, affine in ipairs({ true, false }) do
      local x = torch.randn(8, 100)
      local w, b = torch.randn(100), torch.randn(100)
      local g = torch.randn(8, 100)
      local grads = {}
      for k, dt in ipairs({ torch.float32, f64 }) do
        local xx = x:to(dt):clone():requires_grad_()
        local ww = affine and w:to(dt):clone():requires_grad_() or nil
        local bb = affine and b:to(dt):clone():requires_grad_() or nil
        F.layer_norm(xx, 100, ww, bb):backward(g:to(dt))
        grads[k] = { xx.grad, ww and ww.grad, bb and bb.grad }
      end
      assert_close(grads[1][1], grads[2][1], 1e-4, 1e-5, "grad x")
      if affine then
        assert_close(grads[1][2], grads[2][2], 1e-4, 1e-5, "grad weight")
        assert_close(grads[1][3], grads[2][3], 1e-4, 1e-5, "grad bias")
      end
    end
  end)

  it("bf16 is within bf16 tolerance of f32", function()
    local x = torch.randn(16, 32)
    local w, b = torch.randn(32), torch.randn(32)
    local xb, wb, bb = x:bfloat16(), w:bfloat16(), b:bfloat16()
    local yb = F.layer_norm(xb, 32, wb, bb)
    assert.are.equal(torch.bfloat16, yb.dtype)
    assert_close(yb:float(), F.layer_norm(xb:float(), 32, wb:float(), bb:float()), 2e-2, 2e-2)
  end)

  it("error paths", function()
    local x = torch.randn(2, 4)
    assert_error_has(function() return F.layer_norm(x, 4, torch.randn(3)) end,
                     "layer_norm: weight of shape [3] does not match normalized_shape [4]")
    assert_error_has(function() return F.layer_norm(x, 4, nil, torch.randn(4, 1)) end,
                     "layer_norm: bias of shape [4, 1]")
    assert_error_has(function() return F.layer_norm(x, 5) end, "layer_norm: normalized_shape {5} does not match")
    assert_error_has(function() return F.layer_norm(torch.tensor({ { 1, 2 } }), 2) end,
                     "layer_norm: expected a floating-point input, got int64")
  end)
end)

describe("dropout", function()
  it("is the identity for p = 0 or training = false, zeros for p = 1", function()
    local x = torch.randn(4, 5)
    assert.are.equal(x:data_ptr(), F.dropout(x, 0):data_ptr())
    assert.are.equal(x:data_ptr(), F.dropout(x, 0.5, false):data_ptr())
    local z = F.dropout(x, 1)
    assert.are.same(torch.zeros(4, 5):totable(), z:totable())
  end)

  it("keeps about 1 - p of the elements, scaled by 1 / (1 - p)", function()
    torch.manual_seed(1)
    local x = torch.ones(100000)
    local y = F.dropout(x, 0.3)
    local kept = y:ne(0):sum():item()
    assert.is_true(math.abs(kept / 100000 - 0.7) < 0.01, "kept fraction " .. kept / 100000)
    assert_close(y:max(), 1 / 0.7, 1e-6, 0)
    assert_close(y:sum() / kept, 1 / 0.7, 1e-5, 0)
    -- a second call draws a new mask
    assert.is_true(y:ne(F.dropout(x, 0.3)):sum():item() > 1000)
  end)

  it("the mask depends only on the seed, not on the thread count", function()
    local nt = torch.get_num_threads()
    local x = torch.randn(300, 257)
    torch.set_num_threads(1)
    torch.manual_seed(42)
    local a = F.dropout(x, 0.4)
    torch.set_num_threads(2)
    torch.manual_seed(42)
    local b = F.dropout(x, 0.4)
    torch.set_num_threads(nt)
    assert.are.equal(0, a:ne(b):sum():item())
    -- bf16 and a non-contiguous input follow the same mask (element order is logical order)
    torch.manual_seed(42)
    local c = F.dropout(x:bfloat16(), 0.4)
    assert.are.equal(0, a:eq(0):ne(c:eq(0)):sum():item())
    torch.manual_seed(42)
    local d = F.dropout(x:t():contiguous():t(), 0.4)
    assert.are.equal(0, a:ne(d):sum():item())
  end)

  it("the backward uses the forward's mask; gradcheck with a fixed seed", function()
    torch.manual_seed(9)
    local x = torch.randn(50, 20, { requires_grad = true })
    local y = F.dropout(x, 0.5)
    y:sum():backward()
    local kept_y = y:ne(0)
    assert.are.equal(0, kept_y:ne(x.grad:ne(0)):sum():item())
    assert_close(x.grad:sum(), kept_y:sum():item() * 2, 1e-6, 0)
    gradcheck(function(a)
      torch.manual_seed(77)
      return F.dropout(a, 0.3)
    end, { r(4, 5) })
  end)

  it("error paths", function()
    assert_error_has(function() return F.dropout(torch.randn(3), 1.5) end,
                     "dropout: probability has to be between 0 and 1, but got 1.5")
    assert_error_has(function() return F.dropout(torch.tensor({ 1, 2 }), 0.5) end,
                     "dropout: expected a floating-point tensor, got int64")
  end)
end)

describe("cat and stack", function()
  it("concatenate along any dim with values in order", function()
    local a = torch.tensor({ { 1, 2 }, { 3, 4 } })
    local b = torch.tensor({ { 5, 6 } })
    assert.are.same({ { 1, 2 }, { 3, 4 }, { 5, 6 } }, torch.cat({ a, b }):totable())
    assert.are.same({ { 1, 2, 1 }, { 3, 4, 3 } }, torch.cat({ a, a:narrow(1, 0, 1) }, -1):totable())
    -- legacy empty 1-d inputs are skipped
    assert.are.same({ { 1, 2 }, { 3, 4 } }, torch.cat({ torch.zeros(0, { dtype = torch.int64 }), a }, 0):totable())
    -- dtype promotion
    local m = torch.cat({ torch.tensor({ 1 }), torch.tensor({ 2.5 }, { dtype = f64 }) })
    assert.are.equal(f64, m.dtype)
    assert.are.same({ 1, 2.5 }, m:totable())
    -- a non-contiguous input
    assert.are.same({ { 1, 3 }, { 2, 4 }, { 1, 2 } }, torch.cat({ a:t(), a:narrow(0, 0, 1) }, 0):totable())
  end)

  it("stack inserts a new dim", function()
    local a, b = torch.tensor({ 1, 2, 3 }), torch.tensor({ 4, 5, 6 })
    assert.are.same({ { 1, 2, 3 }, { 4, 5, 6 } }, torch.stack({ a, b }):totable())
    assert.are.same({ { 1, 4 }, { 2, 5 }, { 3, 6 } }, torch.stack({ a, b }, 1):totable())
    assert.are.same({ { 1, 4 }, { 2, 5 }, { 3, 6 } }, torch.stack({ a, b }, -1):totable())
    assert.are.same({ 2, 3, 4 }, torch.stack({ torch.zeros(3, 4), torch.ones(3, 4) }).shape)
  end)

  it("gradcheck, including more than four inputs and mixed requires_grad", function()
    gradcheck(function(x, y) return torch.cat({ x, y }, 1) end, { r(2, 3), r(2, 1) })
    gradcheck(function(x, y) return torch.cat({ x, y, x }, -2) end, { r(2, 3), r(1, 3) })
    local c = rd(2, 2)
    gradcheck(function(p, q, s, t, u, v)
      return torch.cat({ p, c, q, s, t, u, v }, 0)
    end, { r(1, 2), r(2, 2), r(3, 2), r(1, 2), r(1, 2), r(2, 2) })
    gradcheck(function(x, y) return torch.stack({ x, y }, 1) end, { r(2, 3), r(2, 3) })
    gradcheck(function(x, y) return torch.stack({ x, y, x, y, x }, 0) end, { r(3), r(3) })
    -- gradient of a promoted input comes back in its dtype
    local x32 = torch.randn(2, { requires_grad = true })
    torch.cat({ x32, rd(3) }):sum():backward()
    assert.are.equal(torch.float32, x32.grad.dtype)
    assert.are.same({ 1, 1 }, x32.grad:totable())
  end)

  it("error paths", function()
    assert_error_has(function() return torch.cat({ torch.zeros(2, 3), torch.zeros(2, 4) }, 0) end,
                     "cat: sizes of tensors must match except in dim 0", "expected size 3 but got size 4",
                     "position 1")
    assert_error_has(function() return torch.cat({ torch.zeros(2, 3), torch.zeros(2, 3, 1) }) end,
                     "cat: tensors must have the same number of dims")
    assert_error_has(function() return torch.cat({ torch.zeros(2), torch.tensor(1.0) }) end,
                     "cat: zero-dimensional tensor (at position 1)")
    assert_error_has(function() return torch.cat({ torch.zeros(2), 3 }) end, "cat: expected a Tensor at position 2")
    assert_error_has(function() return torch.cat({}) end, "cat: expected a non-empty table")
    assert_error_has(function() return torch.cat({ torch.zeros(2, 3) }, 2) end, "cat")
    assert_error_has(function() return torch.stack({ torch.zeros(2, 3), torch.zeros(2, 4) }) end,
                     "stack: expected each tensor to be equal size, but got [2, 3] at entry 0 and [2, 4] at entry 1")
  end)
end)

describe("max/min along a dim, argmax, argmin", function()
  it("values and indices, keepdim, first occurrence on ties, NaN wins", function()
    local x = torch.tensor({ { 1, 5, 5 }, { 7, -2, 0 } }, { dtype = torch.float32 })
    local v, i = x:max(1)
    assert.are.same({ 5, 7 }, v:totable())
    assert.are.same({ 1, 0 }, i:totable())
    assert.are.equal(torch.int64, i.dtype)
    v, i = x:min(0, true)
    assert.are.same({ { 1, -2, 0 } }, v:totable())
    assert.are.same({ { 0, 1, 1 } }, i:totable())
    v, i = torch.max(x, -1, true)
    assert.are.same({ 2, 1 }, v.shape)
    local n = torch.tensor({ 1, 0 / 0, 3 }):max(0)
    assert.is_true(n:item() ~= n:item())
    local _, ni = torch.tensor({ 1, 0 / 0, 3 }):max(0)
    assert.are.equal(1, ni:item())
    -- integers stay exact
    local big = torch.tensor({ 9007199254740993, 9007199254740992 }, { dtype = torch.int64 })
    local bv, bi = big:max(0)
    assert.are.equal(0, bi:item())
    -- a scalar
    local sv, si = torch.tensor(4.0):max(0)
    assert.are.equal(4, sv:item())
    assert.are.equal(0, si:item())
  end)

  it("argmax / argmin flat and along a dim", function()
    local x = torch.tensor({ { 1, 9, 3 }, { 8, 2, 9 } }, { dtype = torch.float32 })
    assert.are.equal(1, torch.argmax(x):item())
    assert.are.equal(0, x:argmin():item())
    assert.are.same({ 1, 0, 1 }, x:argmax(0):totable())
    assert.are.same({ { 0 }, { 1 } }, x:argmin(1, true):totable())
    assert.are.same({ 1, 1 }, torch.argmax(x, nil, true).shape)
    assert.are.same({ 1, 2 }, x:t():argmax(0):totable())
  end)

  it("gradcheck: the gradient goes to the winner", function()
    gradcheck(function(a) return (a:max(1)) end, { r(3, 4) })
    gradcheck(function(a) return (a:min(0, true)) end, { r(3, 4) })
    gradcheck(function(a) return (a:max(-1)) end, { r(2, 3, 4) })
    gradcheck(function(a) return (a:t():max(0)) end, { r(3, 4) })
    local x = torch.tensor({ { 1, 5, 5 } }, { dtype = torch.float32, requires_grad = true })
    local v = x:max(1)
    v:sum():backward()
    assert.are.same({ { 0, 1, 0 } }, x.grad:totable())
  end)

  it("error paths", function()
    assert_error_has(function() return torch.zeros(2, 0):max(1) end, "max: cannot reduce over dim 1 of size 0")
    assert_error_has(function() return torch.zeros(2, 3):argmax(2) end, "argmax")
    assert_error_has(function() return torch.zeros(0):argmax() end, "argmax: cannot take the argmax of an empty tensor")
  end)
end)

describe("nn ops memory", function()
  it("forward + backward of every op leaves no live tensors behind (no reference cycles)", function()
    local function run()
      local x = torch.randn(4, 6, { dtype = f64, requires_grad = true })
      local w, b = torch.randn(6, { dtype = f64, requires_grad = true }), torch.randn(6, { dtype = f64, requires_grad = true })
      local E = torch.randn(5, 6, { dtype = f64, requires_grad = true })
      local t = long({ 1, 0, -100, 5 })
      local y = x:softmax(1):sum() + x:log_softmax(0):sum() + F.cross_entropy(x, t, { label_smoothing = 0.1 })
        + F.mse_loss(x, x * 2) + F.embedding(long({ 1, 4, 1 }), E):sum() + F.layer_norm(x, 6, w, b):sum()
        + F.dropout(x, 0.5):sum() + torch.cat({ x, x, x, x, x }, 1):sum() + torch.stack({ x, x }):sum()
        + (x:max(1)):sum() + (x:min(0)):sum()
      y:backward()
      return x.grad:sum():item() + w.grad:sum():item() + E.grad:sum():item()
    end
    run()
    collectgarbage("collect")
    collectgarbage("collect")
    local before = torch.live_tensors()
    for _ = 1, 3 do run() end
    collectgarbage("collect")
    collectgarbage("collect")
    assert.are.equal(before, torch.live_tensors())
  end)
end)
