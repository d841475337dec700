-- transformer_ops_spec.lua: rms_norm, rope and scaled_dot_product_attention (runtime/ops_attention.c):
-- forward values against float64 references computed here in plain Lua, float64 finite-difference
-- gradchecks, masks (bool, additive, causal, fully masked rows), dropout determinism and its mask rule
-- (the same counter-based rule as F.dropout), bf16 against f32, and the error messages.
local torch = require("ramtorch")
local F = require("ramtorch.functional")
local testing = require("ramtorch.testing")
local gradcheck, assert_close = testing.gradcheck, testing.assert_close

local f64 = torch.float64
local function r(...) return torch.randn({ ... }, { dtype = f64, requires_grad = true }) end
local function rd(...) return torch.randn({ ... }, { dtype = f64 }) end

local assert_error_has = testing.assert_error_has

-- ---- references in plain Lua --------------------------------------------------------------------------

-- attention of nested tables q[b][h][i][d], k[b][h][j][d], v[b][h][j][e]; mask(b, h, i, j) returns
-- false (excluded) or an additive number; keep(b, h, i, j) returns the dropout factor.
local function ref_attention(q, k, v, scale, causal, mask, keep)
  local out = {}
  for b = 1, #q do
    out[b] = {}
    for h = 1, #q[b] do
      out[b][h] = {}
      local Q, K, V = q[b][h], k[b][h], v[b][h]
      for i = 1, #Q do
        local s, m = {}, -math.huge
        for j = 1, #K do
          local x = 0
          for d = 1, #Q[i] do x = x + Q[i][d] * K[j][d] end
          x = x * scale
          if causal and j > i then x = -math.huge end
          if mask and x > -math.huge then
            local a = mask(b, h, i, j)
            if a == false then x = -math.huge else x = x + a end
          end
          s[j] = x
          m = math.max(m, x)
        end
        local row = {}
        for e = 1, #V[1] do row[e] = 0 end
        if m > -math.huge then
          local l = 0
          for j = 1, #K do s[j] = s[j] > -math.huge and math.exp(s[j] - m) or 0; l = l + s[j] end
          for j = 1, #K do
            local p = s[j] / l * (keep and keep(b, h, i, j) or 1)
            for e = 1, #V[j] do row[e] = row[e] + p * V[j][e] end
          end
        end
        out[b][h][i] = row
      end
    end
  end
  return out
end

local function flat(t, acc)
  acc = acc or {}
  if type(t) == "number" then acc[#acc + 1] = t return acc end
  for _, x in ipairs(t) do flat(x, acc) end
  return acc
end

local function ref_rope(x, seq_dim, theta, offset, interleaved)
  -- x: 4-d nested table; returns the rotated copy (float64 math)
  local xs = x
  local out = {}
  local function rec(t, idx, o)
    if type(t[1]) == "number" then
      local D, half = #t, #t / 2
      local pos = idx[seq_dim + 1] - 1 + offset
      for i = 1, D do o[i] = t[i] end
      for p = 0, half - 1 do
        local i1, i2
        if interleaved then i1, i2 = 2 * p + 1, 2 * p + 2 else i1, i2 = p + 1, p + half + 1 end
        local ang = pos * theta ^ (-2 * p / D)
        local c, s = math.cos(ang), math.sin(ang)
        o[i1] = t[i1] * c - t[i2] * s
        o[i2] = t[i2] * c + t[i1] * s
      end
      return
    end
    for i = 1, #t do
      o[i] = {}
      idx[#idx + 1] = i
      rec(t[i], idx, o[i])
      idx[#idx] = nil
    end
  end
  rec(xs, {}, out)
  return out
end

-- ---- rms_norm --------------------------------------------------------------------------------------------

describe("rms_norm", function()
  it("matches the float64 definition, with and without weight", function()
    local x, w = rd(3, 5), rd(5)
    local xt, wt = x:totable(), w:totable()
    for _, use_w in ipairs({ true, false }) do
      local expect = {}
      for i = 1, 3 do
        local ss = 0
        for j = 1, 5 do ss = ss + xt[i][j] ^ 2 end
        local rs = 1 / math.sqrt(ss / 5 + 1e-6)
        for j = 1, 5 do expect[#expect + 1] = xt[i][j] * rs * (use_w and wt[j] or 1) end
      end
      assert_close(F.rms_norm(x, 5, use_w and w or nil, 1e-6), expect, 1e-12, 1e-12)
    end
  end)

  it("normalises over several trailing dims and uses finfo eps by default", function()
    local x = rd(2, 3, 4)
    local y = F.rms_norm(x, { 3, 4 })
    local ref = x / (x:square():mean({ -2, -1 }, true) + 2.220446049250313e-16):sqrt()
    assert_close(y, ref, 1e-12, 1e-12)
  end)

  it("passes gradcheck for input and weight", function()
    assert.is_true(gradcheck(function(x, w) return F.rms_norm(x, 4, w, 1e-5) end, { r(3, 4), r(4) }))
    assert.is_true(gradcheck(function(x) return F.rms_norm(x, { 2, 3 }) end, { r(2, 2, 3) }))
  end)

  it("computes bf16 in f32", function()
    local x, w = torch.randn({ 4, 16 }), torch.randn({ 16 })
    local y32 = F.rms_norm(x, 16, w)
    local y16 = F.rms_norm(x:to(torch.bfloat16), 16, w:to(torch.bfloat16))
    assert.are.equal(torch.bfloat16, y16.dtype)
    assert_close(y16, y32, 2e-2, 2e-2)
  end)

  it("reports shape errors", function()
    assert_error_has(function() F.rms_norm(rd(2, 3), 4) end, "rms_norm", "does not match")
    assert_error_has(function() F.rms_norm(rd(2, 3), 3, rd(4)) end, "rms_norm: weight of shape [4]",
                     "normalized_shape [3]")
  end)
end)

-- ---- rope --------------------------------------------------------------------------------------------------

describe("rope", function()
  it("matches the float64 rotation for both layouts, both pairings and an offset", function()
    for _, case in ipairs({
      { layout = "bthd", sd = 1, inter = false, off = 0 },
      { layout = "bhtd", sd = 2, inter = false, off = 3 },
      { layout = "bthd", sd = 1, inter = true, off = 5 },
    }) do
      local x = rd(2, 3, 2, 6)
      local y = F.rope(x, { layout = case.layout, theta = 100, offset = case.off, interleaved = case.inter })
      local ref = ref_rope(x:totable(), case.sd, 100, case.off, case.inter)
      assert_close(y, flat(ref), 1e-12, 1e-12)
    end
  end)

  it("keeps norms, and position 0 is the identity", function()
    local x = rd(1, 4, 1, 8)
    local y = F.rope(x)
    assert_close(y:square():sum(-1), x:square():sum(-1), 1e-12, 1e-12)
    assert_close(y:narrow(1, 0, 1), x:narrow(1, 0, 1), 0, 0)
  end)

  it("f32 matches float64 closely", function()
    local x = rd(1, 64, 2, 16)
    local y = F.rope(x:float(), { offset = 100 })
    assert_close(y, F.rope(x, { offset = 100 }), 1e-4, 1e-4)
  end)

  it("passes gradcheck (the backward is the inverse rotation)", function()
    assert.is_true(gradcheck(function(x) return F.rope(x, { theta = 10 }) end, { r(1, 3, 2, 4) }))
    assert.is_true(gradcheck(function(x) return F.rope(x, { layout = "bhtd", interleaved = true, offset = 2 }) end,
                             { r(1, 2, 3, 4) }))
  end)

  it("reports bad shapes and options", function()
    assert_error_has(function() F.rope(rd(1, 2, 1, 5)) end, "rope: the head dim (last) must be even", "[1, 2, 1, 5]")
    assert_error_has(function() F.rope(rd(1, 2, 4), { seq_dim = -1 }) end, "rope: seq_dim must not be the last dim")
    assert_error_has(function() F.rope(rd(1, 2, 4), { layout = "tbhd" }) end, "rope: layout must be")
    assert_error_has(function() F.rope(rd(1, 2, 1, 4), { theta = -1 }) end, "rope: theta must be > 0")
  end)
end)

-- ---- scaled_dot_product_attention ---------------------------------------------------------------------------

local sdpa = F.scaled_dot_product_attention

describe("scaled_dot_product_attention", function()
  it("matches the float64 reference: plain, causal, T ~= S, custom scale", function()
    local q, k, v = rd(2, 2, 5, 4), rd(2, 2, 7, 4), rd(2, 2, 7, 3)
    local qt, kt, vt = q:totable(), k:totable(), v:totable()
    assert_close(sdpa(q, k, v), flat(ref_attention(qt, kt, vt, 0.5, false)), 1e-12, 1e-12)
    assert_close(sdpa(q, k, v, { is_causal = true }), flat(ref_attention(qt, kt, vt, 0.5, true)), 1e-12, 1e-12)
    assert_close(sdpa(q, k, v, { scale = 0.3 }), flat(ref_attention(qt, kt, vt, 0.3, false)), 1e-12, 1e-12)
  end)

  it("applies broadcast bool and additive masks", function()
    local q, k, v = rd(2, 2, 4, 3), rd(2, 2, 5, 3), rd(2, 2, 5, 2)
    local qt, kt, vt = q:totable(), k:totable(), v:totable()
    -- padding mask (B, 1, 1, S): batch 2 ignores its last two keys
    local pad = torch.ones({ 2, 1, 1, 5 }, { dtype = torch.bool })
    pad[2][1][1][4] = 0
    pad[2][1][1][5] = 0
    local pt = pad:to(torch.int64):totable()
    local expect = ref_attention(qt, kt, vt, 1 / math.sqrt(3), false,
                                 function(b, _, _, j) return pt[b][1][1][j] == 1 and 0 or false end)
    assert_close(sdpa(q, k, v, { attn_mask = pad }), flat(expect), 1e-12, 1e-12)
    -- additive (T, S) with causal as well
    local add = rd(4, 5)
    local at = add:totable()
    expect = ref_attention(qt, kt, vt, 1 / math.sqrt(3), true, function(_, _, i, j) return at[i][j] end)
    assert_close(sdpa(q, k, v, add, 0, true), flat(expect), 1e-12, 1e-12)
  end)

  it("gives zeros (and zero gradients) for rows whose keys are all masked", function()
    local q, k, v = r(1, 1, 2, 2), r(1, 1, 3, 2), r(1, 1, 3, 2)
    local m = torch.tensor({ { true, true, false }, { false, false, false } })
    local o = sdpa(q, k, v, { attn_mask = m })
    assert_close(o[1][1][2], { 0, 0 }, 0, 0)
    o:sum():backward()
    assert_close(q.grad[1][1][2], { 0, 0 }, 0, 0)
    assert_close(k.grad[1][1][3], { 0, 0 }, 0, 0)
  end)

  it("accepts 3-d inputs (N, T, D)", function()
    local q, k, v = rd(2, 3, 4), rd(2, 5, 4), rd(2, 5, 4)
    local o = sdpa(q, k, v)
    assert.are.same({ 2, 3, 4 }, o.shape)
    assert_close(o, sdpa(q:unsqueeze(1), k:unsqueeze(1), v:unsqueeze(1)):squeeze(1), 0, 0)
  end)

  it("passes gradcheck: plain, causal, masks with a float mask gradient", function()
    assert.is_true(gradcheck(function(q, k, v) return sdpa(q, k, v) end, { r(1, 2, 3, 4), r(1, 2, 5, 4), r(1, 2, 5, 3) }))
    assert.is_true(gradcheck(function(q, k, v) return sdpa(q, k, v, { is_causal = true, scale = 0.7 }) end,
                             { r(2, 1, 4, 3), r(2, 1, 4, 3), r(2, 1, 4, 2) }))
    local pad = torch.tensor({ { { { true, false, true, true } } } })
    assert.is_true(gradcheck(function(q, k, v, m) return sdpa(q, k, v, { attn_mask = m }) end,
                             { r(1, 2, 3, 2), r(1, 2, 4, 2), r(1, 2, 4, 2), pad }))
    assert.is_true(gradcheck(function(q, k, v, m) return sdpa(q, k, v, { attn_mask = m, is_causal = true }) end,
                             { r(1, 1, 3, 2), r(1, 1, 3, 2), r(1, 1, 3, 2), r(3, 3) }))
  end)

  it("passes gradcheck with dropout (the RNG state fixed per call)", function()
    local function fn(q, k, v)
      torch.manual_seed(7)
      return sdpa(q, k, v, { dropout_p = 0.3 })
    end
    assert.is_true(gradcheck(fn, { r(1, 2, 4, 3), r(1, 2, 5, 3), r(1, 2, 5, 2) }))
  end)

  it("dropout: deterministic under a seed, uses F.dropout's counter rule, keeps the mean", function()
    local q, k, v = rd(2, 2, 6, 4), rd(2, 2, 8, 4), rd(2, 2, 8, 3)
    torch.manual_seed(123)
    local a = sdpa(q, k, v, { dropout_p = 0.4 })
    torch.manual_seed(123)
    local b = sdpa(q, k, v, { dropout_p = 0.4 })
    assert_close(a, b, 0, 0)
    local c = sdpa(q, k, v, { dropout_p = 0.4 })
    assert.is_false((testing.close(a, c, 0, 0)))
    -- the mask is the one F.dropout draws on a (B, H, T, S) tensor from the same generator state
    torch.manual_seed(99)
    local keep = F.dropout(torch.ones({ 2, 2, 6, 8 }, { dtype = f64 }), 0.4):totable()
    torch.manual_seed(99)
    local got = sdpa(q, k, v, { dropout_p = 0.4 })
    local expect = ref_attention(q:totable(), k:totable(), v:totable(), 0.5, false, nil,
                                 function(bb, h, i, j) return keep[bb][h][i][j] end)
    assert_close(got, flat(expect), 1e-12, 1e-12)
    -- the generator advanced by the draw: the state after equals the state after F.dropout
    torch.manual_seed(5)
    sdpa(q, k, v, { dropout_p = 0.1 })
    local s1 = torch.get_rng_state()
    torch.manual_seed(5)
    F.dropout(torch.ones({ 2, 2, 6, 8 }), 0.1)
    assert.are.same(torch.get_rng_state(), s1)
  end)

  it("bf16 and f32 agree with the f64 result; long sequences run in blocks", function()
    local q, k, v = rd(1, 2, 70, 16), rd(1, 2, 70, 16), rd(1, 2, 70, 16)
    local ref = sdpa(q, k, v, { is_causal = true })
    assert_close(sdpa(q:float(), k:float(), v:float(), { is_causal = true }), ref, 1e-5, 1e-5)
    local o16 = sdpa(q:to(torch.bfloat16), k:to(torch.bfloat16), v:to(torch.bfloat16), { is_causal = true })
    assert.are.equal(torch.bfloat16, o16.dtype)
    assert_close(o16, ref, 3e-2, 3e-2)
    -- gradients of the f32 kernel against the f64 one
    local q32, k32, v32 = q:float():requires_grad_(true), k:float():requires_grad_(true), v:float():requires_grad_(true)
    local q64, k64, v64 = q:clone():requires_grad_(true), k:clone():requires_grad_(true), v:clone():requires_grad_(true)
    local w = rd(1, 2, 70, 16)
    local l32 = (sdpa(q32, k32, v32, { is_causal = true }) * w:float()):sum()
    l32:backward()
    local l64 = (sdpa(q64, k64, v64, { is_causal = true }) * w):sum()
    l64:backward()
    assert_close(q32.grad, q64.grad, 1e-4, 1e-4)
    assert_close(k32.grad, k64.grad, 1e-4, 1e-4)
    assert_close(v32.grad, v64.grad, 1e-4, 1e-4)
  end)

  it("non-contiguous inputs (a transposed (B, T, H, D) projection) give the same result", function()
    local q, k, v = rd(2, 5, 3, 4), rd(2, 5, 3, 4), rd(2, 5, 3, 4)
    local a = sdpa(q:transpose(1, 2), k:transpose(1, 2), v:transpose(1, 2), { is_causal = true })
    local b = sdpa(q:transpose(1, 2):contiguous(), k:transpose(1, 2):contiguous(), v:transpose(1, 2):contiguous(),
                   { is_causal = true })
    assert_close(a, b, 0, 0)
  end)

  it("reports shape, dtype and option errors", function()
    assert_error_has(function() sdpa(rd(1, 2, 3, 4), rd(1, 2, 5, 3), rd(1, 2, 5, 4)) end,
                     "scaled_dot_product_attention: shapes do not fit", "query [1, 2, 3, 4]", "key [1, 2, 5, 3]")
    assert_error_has(function() sdpa(rd(1, 2, 3, 4), rd(1, 2, 5, 4), rd(1, 2, 6, 4)) end, "value [1, 2, 6, 4]")
    assert_error_has(function() sdpa(rd(1, 2, 3, 4), rd(2, 3), rd(1, 2, 3, 4)) end, "expected key of 4 dims", "got [2, 3]")
    assert_error_has(function() sdpa(rd(1, 1, 3, 4), rd(1, 1, 5, 4), rd(1, 1, 5, 4), { attn_mask = rd(4, 5) }) end,
                     "attn_mask of shape [4, 5] is not broadcastable to (B, H, T, S) = [1, 1, 3, 5]")
    assert_error_has(function() sdpa(rd(1, 1, 3, 4), rd(1, 1, 5, 4):float(), rd(1, 1, 5, 4)) end,
                     "must share a dtype")
    assert_error_has(function() sdpa(rd(1, 1, 3, 4), rd(1, 1, 5, 4), rd(1, 1, 5, 4), { dropout_p = 1.5 }) end,
                     "dropout_p has to be between 0 and 1")
    assert_error_has(function()
      sdpa(rd(1, 1, 3, 4), rd(1, 1, 5, 4), rd(1, 1, 5, 4), { attn_mask = torch.zeros({ 3, 5 }, { dtype = torch.int64 }) })
    end, "attn_mask must be bool")
  end)
end)
