-- reduce_composite_spec.lua: var / std / var_mean / std_mean, logsumexp, torch.norm and
-- torch.linalg.vector_norm (ramtorch/ops_reduce.lua, compositions of existing ops): values against
-- float64 references computed here in plain Lua for random inputs over several shapes, dims (negative,
-- lists, {}), keepdim and corrections; PyTorch's edge cases (n <= correction, infinities and NaN in
-- logsumexp, norms of zeros, empty tensors); float16/bfloat16 computed in float32; integer inputs;
-- finite-difference gradchecks in float64; and the messages of every refused argument.
local torch = require("ramtorch")
local testing = require("ramtorch.testing")
local assert_close = testing.assert_close
local assert_error_has = testing.assert_error_has

local f64, f32, f16, bf16 = torch.float64, torch.float32, torch.float16, torch.bfloat16
local INF, NAN = math.huge, 0 / 0

-- ---- plain-Lua references --------------------------------------------------------------------------------

local function numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

-- the reduced dims as a set of 1-based positions (dim nil or {}: all)
local function dim_set(shape, dim)
  local set, nd = {}, #shape
  if dim == nil or (type(dim) == "table" and #dim == 0) then
    for i = 1, nd do set[i] = true end
    return set
  end
  if type(dim) == "number" then dim = { dim } end
  for _, d in ipairs(dim) do set[(d < 0 and d + nd or d) + 1] = true end
  return set
end

-- fn(values of one slice) for every output element, in row-major order (same with or without keepdim)
local function ref_reduce(flat, shape, dim, fn)
  local set, nd = dim_set(shape, dim), #shape
  local out_shape = {}
  for i = 1, nd do out_shape[i] = set[i] and 1 or shape[i] end
  local groups = {}
  for lin = 0, numel(shape) - 1 do
    local rem, key, mul = lin, 0, 1
    -- decompose lin (row-major) and re-linearize into the keepdim output
    local idx = {}
    for i = nd, 1, -1 do
      idx[i] = rem % shape[i]
      rem = (rem - idx[i]) / shape[i]
    end
    for i = nd, 1, -1 do
      if not set[i] then key = key + idx[i] * mul end
      mul = mul * out_shape[i]
    end
    groups[key + 1] = groups[key + 1] or {}
    table.insert(groups[key + 1], flat[lin + 1])
  end
  local out = {}
  for k = 1, numel(out_shape) do out[k] = fn(groups[k] or {}) end
  return out, out_shape
end

local function ref_mean(v)
  local s = 0
  for _, x in ipairs(v) do s = s + x end
  return s / #v
end
local function ref_var(c)
  return function(v)
    local m, s = ref_mean(v), 0
    for _, x in ipairs(v) do s = s + (x - m) ^ 2 end
    return s / math.max(0, #v - c)
  end
end
local function ref_lse(v)
  local m = -INF
  for _, x in ipairs(v) do
    if x ~= x then return NAN end
    if x > m then m = x end
  end
  if m == INF or m == -INF then return m end
  local s = 0
  for _, x in ipairs(v) do s = s + math.exp(x - m) end
  return m + math.log(s)
end
local function ref_norm(p)
  return function(v)
    if p == INF or p == -INF then
      local r = p == INF and 0 or INF
      for _, x in ipairs(v) do
        r = p == INF and math.max(r, math.abs(x)) or math.min(r, math.abs(x))
      end
      return r
    end
    local s = 0
    for _, x in ipairs(v) do
      if p == 0 then s = s + (x ~= 0 and 1 or 0) else s = s + math.abs(x) ^ p end
    end
    if p == 0 then return s end
    return s ^ (1 / p)
  end
end

-- reduced shape as PyTorch gives it
local function out_shape_of(shape, dim, keepdim)
  local set, r = dim_set(shape, dim), {}
  for i = 1, #shape do
    if keepdim then r[#r + 1] = set[i] and 1 or shape[i]
    elseif not set[i] then r[#r + 1] = shape[i] end
  end
  return r
end

math.randomseed(1234)
local function rand_flat(n, lo, hi)
  local t = {}
  for i = 1, n do t[i] = lo + (hi - lo) * math.random() end
  return t
end
local function tensor_of(flat, shape, dtype)
  return torch.tensor(flat, { dtype = dtype or f64 }):reshape(shape)
end

local CASES = {
  { shape = { 7 }, dims = { false, 0, -1, { 0 } } },
  { shape = { 3, 4 }, dims = { false, 0, 1, -1, { 0, 1 }, { -1, -2 }, {} } },
  { shape = { 2, 3, 4 }, dims = { false, 1, -3, { 0, 2 }, { -1, 0 }, { 2, 1, 0 } } },
  { shape = { 2, 1, 3, 2 }, dims = { 1, { 0, 3 }, { -2, -4, 1 } } },
}

-- ---- var / std ---------------------------------------------------------------------------------------------

describe("var / std / var_mean / std_mean", function()
  it("match float64 references over shapes, dims, keepdim and corrections", function()
    local checked = 0
    for _, case in ipairs(CASES) do
      local flat = rand_flat(numel(case.shape), -2, 3)
      local x = tensor_of(flat, case.shape)
      for _, d in ipairs(case.dims) do
        local dim = d or nil
        for _, keepdim in ipairs({ false, true }) do
          for _, c in ipairs({ 0, 1, 2 }) do
            local want = ref_reduce(flat, case.shape, dim, ref_var(c))
            local wstd = {}
            for i, v in ipairs(want) do wstd[i] = math.sqrt(v) end
            local wmean = ref_reduce(flat, case.shape, dim, ref_mean)
            local what = ("shape %s dim %s keepdim %s correction %d"):format(
              table.concat(case.shape, "x"), d and (type(d) == "table" and "{" .. table.concat(d, ",") .. "}" or d) or "nil",
              tostring(keepdim), c)
            local v = torch.var(x, dim, { correction = c, keepdim = keepdim })
            assert.are.same(out_shape_of(case.shape, dim, keepdim), v.shape)
            assert.are.equal(f64, v.dtype)
            assert_close(v, want, 1e-12, 1e-12, "var " .. what)
            assert_close(x:std(dim, { correction = c, keepdim = keepdim }), wstd, 1e-12, 1e-12, "std " .. what)
            local vv, vm = x:var_mean(dim, { correction = c, keepdim = keepdim })
            assert_close(vv, want, 1e-12, 1e-12, "var_mean " .. what)
            assert_close(vm, wmean, 1e-12, 1e-12, "var_mean mean " .. what)
            assert.are.same(v.shape, vm.shape)
            local ss, sm = torch.std_mean(x, dim, { correction = c, keepdim = keepdim })
            assert_close(ss, wstd, 1e-12, 1e-12, "std_mean " .. what)
            assert_close(sm, wmean, 1e-12, 1e-12, "std_mean mean " .. what)
            checked = checked + 1
          end
        end
      end
    end
    assert.are.equal(120, checked) -- 20 dims x 2 keepdim x 3 corrections
  end)

  it("take PyTorch's older unbiased flag and its positional forms", function()
    local flat = rand_flat(12, -1, 1)
    local x = tensor_of(flat, { 3, 4 })
    assert_close(x:var(true), ref_reduce(flat, { 3, 4 }, nil, ref_var(1)), 1e-12, 1e-12)
    assert_close(x:var(false), ref_reduce(flat, { 3, 4 }, nil, ref_var(0)), 1e-12, 1e-12)
    -- var(x, dim, unbiased, keepdim)
    local r = torch.var(x, 1, false, true)
    assert.are.same({ 3, 1 }, r.shape)
    assert_close(r, ref_reduce(flat, { 3, 4 }, 1, ref_var(0)), 1e-12, 1e-12)
    assert_close(x:std(0, { unbiased = false }), (function()
      local w = ref_reduce(flat, { 3, 4 }, 0, ref_var(0))
      for i = 1, #w do w[i] = math.sqrt(w[i]) end
      return w
    end)(), 1e-12, 1e-12)
    -- every option by name, and a fractional correction (PyTorch accepts any number)
    assert_close(x:var({ dim = -1, correction = 0.5 }), ref_reduce(flat, { 3, 4 }, -1, ref_var(0.5)), 1e-12, 1e-12)
  end)

  it("divide by max(0, n - correction) as PyTorch: inf, or NaN for a constant or single slice", function()
    local x = torch.tensor({ 1, 2 }, { dtype = f64 })
    assert.are.equal(INF, x:var({ correction = 3 }):item())   -- n - c < 0: 0.5 / 0
    assert.are.equal(INF, x:var({ correction = 2 }):item())   -- n == c
    local c = torch.tensor({ 1, 1 }, { dtype = f64 }):var({ correction = 2 }):item()
    assert.is_true(c ~= c)                                     -- 0 / 0
    local one = torch.tensor({ 5 }, { dtype = f64 }):var():item()
    assert.is_true(one ~= one)                                 -- PyTorch: var of one element is nan
    assert.are.equal(0, torch.tensor({ 5 }, { dtype = f64 }):var({ correction = 0 }):item())
    local e = torch.zeros({ 0 }, { dtype = f64 }):var():item()
    assert.is_true(e ~= e)
    assert.are.same({ 0 }, torch.zeros({ 0, 3 }):var(1).shape)
    -- a 0-d tensor reduces over dim 0 / -1
    assert.are.equal(0, torch.tensor(2.5, { dtype = f64 }):var(-1, { correction = 0 }):item())
  end)

  it("compute float16 / bfloat16 in float32 and return the input dtype", function()
    -- the squared deviations sum to 160000, beyond float16's 65504; the result 53333.3 fits
    local h = torch.tensor({ 0, 0, 400, 400 }, { dtype = f16 })
    local v = h:var()
    assert.are.equal(f16, v.dtype)
    assert_close(v, { 160000 / 3 }, 1e-3, 0)
    local s, m = h:std_mean()
    assert.are.equal(f16, s.dtype)
    assert.are.equal(f16, m.dtype)
    assert_close(s, { math.sqrt(160000 / 3) }, 1e-3, 0)
    assert_close(m, { 200 }, 0, 0)
    local flat = rand_flat(12, -3, 3)
    local b = tensor_of(flat, { 3, 4 }, bf16)
    local exact = b:to(f64):totable()
    local bflat = {}
    for _, row in ipairs(exact) do for _, x in ipairs(row) do bflat[#bflat + 1] = x end end
    local r = b:var(1)
    assert.are.equal(bf16, r.dtype)
    assert_close(r, ref_reduce(bflat, { 3, 4 }, 1, ref_var(1)), 1e-2, 1e-2)
  end)

  it("refuse integer and bool inputs as PyTorch does", function()
    assert_error_has(function() return torch.tensor({ 1, 2, 3 }):var() end,
      "var: std and var only support floating point dtypes, got int64")
    assert_error_has(function() return torch.tensor({ 1, 2, 3 }, { dtype = torch.int32 }):std(0) end,
      "std: std and var only support floating point dtypes, got int32")
    assert_error_has(function() return torch.var_mean(torch.tensor({ true, false })) end,
      "var_mean: std and var only support floating point dtypes, got bool")
  end)

  it("name bad dims and options", function()
    local x = torch.zeros({ 2, 3 })
    assert_error_has(function() return x:var(2) end, "var: dimension 2 out of range for a tensor of 2 dims (expected -2 to 1)")
    assert_error_has(function() return x:std({ 0, -2 }) end, "std: dim 0 appears more than once")
    assert_error_has(function() return x:var(0.5) end, "var: expected integer dims, got 0.5 at position 1")
    assert_error_has(function() return x:var("x") end, "var: expected dim as an integer or a table of integers")
    assert_error_has(function() return x:var(0, { correction = 1, unbiased = true }) end,
      "var: cannot specify both unbiased and correction")
    assert_error_has(function() return x:var(0, { ddof = 1 }) end, "var: unknown option 'ddof'")
    assert_error_has(function() return x:var(0, { correction = "1" }) end, "var: expected correction to be a number")
    assert_error_has(function() return x:var(0, { keepdim = 1 }) end, "var: expected keepdim to be a boolean, got 1")
    assert_error_has(function() return x:var(0, { dim = 1 }) end, "var: argument 'dim' given twice")
    assert_error_has(function() return x:var(0, true, false, 1) end, "var: too many arguments")
    assert_error_has(function() return torch.var(3) end, "var: expected a Tensor, got number")
  end)

  it("pass gradcheck in float64", function()
    local x = torch.randn({ 3, 4 }, { dtype = f64 }):requires_grad_(true)
    for _, c in ipairs({ 0, 1, 2 }) do
      testing.gradcheck(function(t) return t:var(1, { correction = c }) end, { x })
      testing.gradcheck(function(t) return t:var({ 0, -1 }, { correction = c, keepdim = true }) end, { x })
      testing.gradcheck(function(t) return torch.std(t, 0, { correction = c }) end, { x })
    end
    testing.gradcheck(function(t) return t:std() end, { x })
    testing.gradcheck(function(t)
      local v, m = t:var_mean(-1, { keepdim = true })
      return v + m * 3
    end, { x })
    testing.gradcheck(function(t)
      local s, m = torch.std_mean(t, { 0 })
      return s * 2 - m
    end, { x })
    local y = torch.randn({ 2, 3, 2 }, { dtype = f64 }):requires_grad_(true)
    testing.gradcheck(function(t) return t:var({ 2, 0 }) end, { y })
  end)
end)

-- ---- logsumexp ------------------------------------------------------------------------------------------------

describe("logsumexp", function()
  it("matches float64 references over shapes, dims and keepdim", function()
    for _, case in ipairs(CASES) do
      local flat = rand_flat(numel(case.shape), -5, 5)
      local x = tensor_of(flat, case.shape)
      for _, d in ipairs(case.dims) do
        local dim = d or {}
        for _, keepdim in ipairs({ false, true }) do
          local r = torch.logsumexp(x, dim, keepdim)
          assert.are.same(out_shape_of(case.shape, dim, keepdim), r.shape)
          assert_close(r, ref_reduce(flat, case.shape, dim, ref_lse), 1e-12, 1e-12)
          assert_close(x:logsumexp({ dim = dim, keepdim = keepdim }), r, 0, 0)
        end
      end
    end
  end)

  it("is stable for large magnitudes and handles infinities and NaN as PyTorch", function()
    local x = torch.tensor({ 1000, 1001, -1000 }, { dtype = f64 })
    assert_close(x:logsumexp(0), { 1001 + math.log(1 + math.exp(-1)) }, 1e-14, 0)
    local y = torch.tensor({ -800, -801 }, { dtype = f32 })
    assert_close(y:logsumexp(0), { -800 + math.log(1 + math.exp(-1)) }, 1e-6, 0)
    local e = torch.tensor({ { -INF, -INF }, { INF, 1 }, { NAN, 1 }, { INF, -INF }, { -INF, 2 } }, { dtype = f64 })
    local r = e:logsumexp(1):totable()
    assert.are.equal(-INF, r[1])
    assert.are.equal(INF, r[2])
    assert.is_true(r[3] ~= r[3])
    assert.are.equal(INF, r[4])
    assert.are.equal(2, r[5])
    -- a slice that is empty along dim: log(0) = -inf; empty elsewhere: an empty result
    assert.are.same({ -INF, -INF, -INF }, torch.zeros({ 0, 3 }):logsumexp(0):totable())
    assert.are.same({ 0 }, torch.zeros({ 0, 3 }):logsumexp(1).shape)
    -- a 0-d tensor is its own logsumexp
    assert.are.equal(2.5, torch.tensor(2.5, { dtype = f64 }):logsumexp(0):item())
  end)

  it("has the softmax as gradient, the max detached (ties and infinite maxima included)", function()
    local x = torch.tensor({ { 1, 2, 3 }, { 5, 5, 5 }, { 1000, 0, -1000 } }, { dtype = f64, requires_grad = true })
    x:logsumexp(1):sum():backward()
    assert_close(x.grad, x:detach():softmax(1), 1e-14, 0)
    assert_close(x.grad:sum(1), { 1, 1, 1 }, 1e-14, 0)
    local z = torch.tensor({ -INF, 0 }, { dtype = f64, requires_grad = true })
    z:logsumexp(0):backward()
    assert.are.same({ 0, 1 }, z.grad:totable())
  end)

  it("promotes integers and bools to the default dtype; float16 / bfloat16 compute in float32", function()
    local r = torch.tensor({ 1, 2, 3 }):logsumexp(0)
    assert.are.equal(f32, r.dtype)
    assert_close(r, { ref_lse({ 1, 2, 3 }) }, 1e-6, 0)
    assert_close(torch.logsumexp(torch.tensor({ true, false }), 0), { math.log(math.exp(1) + 1) }, 1e-6, 0)
    local h = torch.tensor({ 10, 11, 12 }, { dtype = f16 })
    local hr = h:logsumexp(0)
    assert.are.equal(f16, hr.dtype)
    assert_close(hr, { ref_lse({ 10, 11, 12 }) }, 1e-3, 0)
    assert.are.equal(bf16, torch.tensor({ 1, 2 }, { dtype = bf16 }):logsumexp(0).dtype)
  end)

  it("names bad arguments", function()
    local x = torch.zeros({ 2, 3 })
    assert_error_has(function() return x:logsumexp() end, "logsumexp: missing argument dim")
    assert_error_has(function() return x:logsumexp(-3) end, "logsumexp: dimension -3 out of range for a tensor of 2 dims")
    assert_error_has(function() return x:logsumexp({ 1, 1 }) end, "logsumexp: dim 1 appears more than once")
    assert_error_has(function() return x:logsumexp(0, "yes") end, "logsumexp: expected keepdim to be a boolean")
    assert_error_has(function() return x:logsumexp({ dim = 0, axis = 1 }) end, "logsumexp: unknown option 'axis'")
  end)

  it("passes gradcheck in float64, including large magnitudes", function()
    local x = torch.randn({ 3, 4 }, { dtype = f64 }):requires_grad_(true)
    testing.gradcheck(function(t) return t:logsumexp(1) end, { x })
    testing.gradcheck(function(t) return torch.logsumexp(t, { 0, 1 }, true) end, { x })
    local big = (torch.randn({ 2, 5 }, { dtype = f64 }) * 300 + 1000):requires_grad_(true)
    testing.gradcheck(function(t) return t:logsumexp(-1) end, { big })
    local y = torch.randn({ 2, 3, 2 }, { dtype = f64 }):requires_grad_(true)
    testing.gradcheck(function(t) return t:logsumexp({ -1, 0 }) end, { y })
  end)
end)

-- ---- norms ---------------------------------------------------------------------------------------------------

describe("linalg.vector_norm / norm", function()
  local vector_norm = torch.linalg.vector_norm
  local ORDS = { 2, 1, INF, -INF, 0, 3, 0.5, -1.5 }

  it("match float64 references over ords, shapes, dims and keepdim", function()
    for _, case in ipairs(CASES) do
      local flat = rand_flat(numel(case.shape), -2, 2)
      flat[1] = 0 -- a zero: counts for ord 0, makes the -1.5 norm of its slices 0
      local x = tensor_of(flat, case.shape)
      for _, d in ipairs(case.dims) do
        local dim = d or nil
        for _, keepdim in ipairs({ false, true }) do
          for _, p in ipairs(ORDS) do
            local want = ref_reduce(flat, case.shape, dim, ref_norm(p))
            local r = vector_norm(x, p, dim, keepdim)
            assert.are.same(out_shape_of(case.shape, dim, keepdim), r.shape)
            assert_close(r, want, 1e-12, 1e-12, ("ord %s"):format(tostring(p)))
            assert_close(x:norm(p, dim, keepdim), want, 1e-12, 1e-12)
            assert_close(torch.norm(x, { p = p, dim = dim, keepdim = keepdim }), want, 1e-12, 1e-12)
          end
        end
      end
    end
  end)

  it("default to the 2-norm of every element; 'fro' is the 2-norm over at most two dims", function()
    local x = torch.tensor({ { 3, 0 }, { 0, 4 } }, { dtype = f64 })
    assert.are.equal(5, vector_norm(x):item())
    assert.are.equal(5, x:norm():item())
    assert.are.equal(5, torch.norm(x, "fro"):item())
    assert.are.same({ { 5 } }, x:norm("fro", { 0, 1 }, true):totable())
    assert.are.same({ 3, 4 }, x:norm("fro", 0):totable())
    assert.are.same({ 3, 4 }, vector_norm(x, { dim = 1 }):totable())
    assert.are.same({ 5 }, torch.linalg.vector_norm(torch.tensor({ 3, 4 }), 2, nil, false, { dtype = f64 }):reshape(-1):totable())
    assert.are.same(torch.linalg, require("ramtorch.linalg"))
  end)

  it("give the subgradient 0 at zero, not NaN", function()
    for _, p in ipairs(ORDS) do
      local z = torch.zeros({ 3 }, { dtype = f64, requires_grad = true })
      vector_norm(z, p):backward()
      assert.are.same({ 0, 0, 0 }, z.grad:totable())
    end
    -- a zero row beside a non-zero one: 0 there, x / ||x|| elsewhere
    local x = torch.tensor({ { 0, 0 }, { 3, 4 } }, { dtype = f64, requires_grad = true })
    x:norm(2, 1):sum():backward()
    assert_close(x.grad, { 0, 0, 0.6, 0.8 }, 1e-15, 0)
    -- zero elements of a p < 1 norm take 0, the others their finite gradient
    local y = torch.tensor({ 0, 1, 4 }, { dtype = f64, requires_grad = true })
    y:norm(0.5):backward()
    local g = y.grad:totable()
    assert.are.equal(0, g[1])
    -- d/dy (sum sqrt|y|)^2 = 2 (sum sqrt|y|) * 0.5 / sqrt(y) = 3 / sqrt(y)
    assert_close(g, { 0, 3, 1.5 }, 1e-12, 0)
  end)

  it("compute float16 / bfloat16 in float32 and return the input dtype", function()
    -- 300^2 + 400^2 overflows float16; the norm 500 does not
    local h = torch.tensor({ 300, 400 }, { dtype = f16 })
    local r = vector_norm(h)
    assert.are.equal(f16, r.dtype)
    assert.are.equal(500, r:item())
    assert.are.equal(500, h:norm():item())
    local b = torch.tensor({ 3, 4 }, { dtype = bf16 })
    assert.are.equal(bf16, b:norm(3).dtype)
    assert_close(b:norm(3), { (27 + 64) ^ (1 / 3) }, 1e-2, 0)
    assert.are.equal(f32, vector_norm(h, 2, nil, false, { dtype = f32 }).dtype)
  end)

  it("name bad ords, dims and dtypes", function()
    local x = torch.zeros({ 2, 3 })
    assert_error_has(function() return vector_norm(x, "fro") end,
      "linalg.vector_norm: expected ord to be a number", "got 'fro'")
    assert_error_has(function() return vector_norm(x, NAN) end, "linalg.vector_norm: expected ord to be a number")
    assert_error_has(function() return vector_norm(x, 2, 2) end,
      "linalg.vector_norm: dimension 2 out of range for a tensor of 2 dims")
    assert_error_has(function() return vector_norm(x, 2, { 0, 0 }) end, "linalg.vector_norm: dim 0 appears more than once")
    assert_error_has(function() return vector_norm(x, { p = 2 }) end, "linalg.vector_norm: unknown option 'p'")
    assert_error_has(function() return vector_norm(torch.tensor({ 1, 2 })) end,
      "linalg.vector_norm: expected a floating point tensor as input, got int64")
    assert_error_has(function() return vector_norm(x, 2, nil, false, { dtype = torch.int32 }) end,
      "linalg.vector_norm: dtype must be a floating point dtype, got int32")
    assert_error_has(function() return vector_norm(torch.zeros({ 0, 3 }), -1) end,
      "linalg.vector_norm: cannot compute the -1 norm on an empty tensor")
    assert_error_has(function() return vector_norm(torch.zeros({ 0, 3 }), INF, 0) end, "on an empty tensor")
    assert.are.same({ 0 }, vector_norm(torch.zeros({ 0, 3 }), INF, 1).shape)
    assert.are.equal(0, vector_norm(torch.zeros({ 0, 3 })):item())
    assert_error_has(function() return x:norm("nuc") end, "norm: p='nuc'", "not supported")
    assert_error_has(function() return x:norm("abc") end, "norm: expected p to be 'fro' or a number, got 'abc'")
    assert_error_has(function() return torch.zeros({ 2, 2, 2 }):norm("fro", { 0, 1, 2 }) end,
      "norm: the 'fro' norm takes at most 2 dims, got 3")
    assert_error_has(function() return torch.tensor({ 1, 2 }):norm() end, "norm: expected a floating point tensor")
  end)

  it("pass gradcheck in float64 away from 0", function()
    -- |x| in [0.5, 1.5]: no element crosses zero under the finite differences
    local base = torch.rand({ 3, 4 }, { dtype = f64 }) + 0.5
    local sign = torch.rand({ 3, 4 }, { dtype = f64 }):lt(0.5):to(f64) * 2 - 1
    local x = (base * sign):requires_grad_(true)
    for _, p in ipairs(ORDS) do
      testing.gradcheck(function(t) return vector_norm(t, p, 1) end, { x })
      testing.gradcheck(function(t) return t:norm(p, { 0, 1 }, true) end, { x })
    end
    testing.gradcheck(function(t) return t:norm() end, { x })
    testing.gradcheck(function(t) return torch.norm(t, "fro", -1) end, { x })
  end)
end)
