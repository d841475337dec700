-- adamw_multi_spec.lua: rt_adamw_step_multi (runtime/optim.c) on the CPU, and AdamW's batching of
-- non-host parameters into it (lua/ramtorch/optim/adamw.lua). One multi call must equal n
-- rt_adamw_step calls bit for bit (params and both states) over several steps, for tensors of
-- awkward sizes (0, 1, 3, 5, 7, 9, 8193, ...), every dtype combination the single entry takes and
-- views at an element offset; a bad entry at index k fails with a message naming k and leaves every
-- tensor unchanged. tests/gpu/cuda_optim_spec.lua asserts the same of the CUDA kernel.
local torch = require("ramtorch")
local optim = require("ramtorch.optim")
local rffi = require("ramtorch.ffi")

local C, ffi, check = rffi.C, rffi.ffi, rffi.check
local f32, bf16, f16, f64 = torch.float32, torch.bfloat16, torch.float16, torch.float64

local function bytes(t)
  if t == nil then return "<NULL>" end
  t = t:to("cpu"):contiguous()
  return ffi.string(ffi.cast("const char *", t:data_ptr()), t:numel() * t:element_size())
end

local function numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

-- shape, param / grad / state dtypes, element offset of the views (a narrow of a bigger tensor)
local CASES = {
  { { 0 }, f32, f32, f32 },
  { { 1 }, f32, f32, f32 },
  { { 3 }, f32, f32, f32 },
  { { 4 }, f32, f32, f32 },
  { { 5 }, f32, f32, f32, 1 },
  { { 7 }, f32, f32, f32 },
  { { 2, 4 }, f32, f32, f32 },
  { { 9 }, f32, f32, f32, 3 },
  { { 17, 3 }, f32, f32, f32 },
  { { 8193 }, f32, f32, f32 },
  { { 8193 }, f32, f32, f32, 1 },
  { { 20000 }, f32, f32, f32 },
  { { 0, 3 }, bf16, bf16, f32 },
  { { 13 }, bf16, bf16, f32 },
  { { 1000 }, bf16, bf16, f32, 1 },
  { { 33 }, bf16, f32, f32 },
  { { 31 }, f16, f16, f32 },
  { { 6, 5 }, f16, f32, f32 },
  { { 11 }, f32, bf16, f32 },
  { { 12 }, f32, f32, f64 },
  { { 10 }, bf16, f32, f64 },
  { { 15 }, f64, f64, f64 },
  { { 14 }, f64, f32, f64, 2 },
}

local function mk(shape, dtype, offset, positive)
  local n = numel(shape)
  if offset then
    local base = torch.randn({ n + offset })
    if positive then base = base:abs() end
    return base:to(dtype):narrow(0, offset, n)
  end
  local t = torch.randn(shape)
  if positive then t = t:abs() end
  return t:to(dtype)
end

-- n entries: param, exp_avg, exp_avg_sq (the written ones; exp_avg_sq >= 0) and a grad maker
local function entries(seed)
  torch.manual_seed(seed)
  local E = {}
  for i, c in ipairs(CASES) do
    local shape, pd, gd, sd, off = c[1], c[2], c[3], c[4], c[5]
    local e = { shape = shape, gd = gd, off = off }
    e.p = mk(shape, pd, off)
    e.m = mk(shape, sd, off)
    e.v = mk(shape, sd, off, true)
    assert(e.p:is_contiguous(), "case " .. i)
    E[i] = e
  end
  return E
end

local function ptrs(list, field)
  local a = ffi.new("rt_tensor *[?]", math.max(#list, 1))
  for i, e in ipairs(list) do
    local t = e[field]
    a[i - 1] = t ~= nil and t.p or nil
  end
  return a
end

local function multi(list, h, step)
  return C.rt_adamw_step_multi(#list, ptrs(list, "p"), ptrs(list, "g"), ptrs(list, "m"), ptrs(list, "v"),
                               h.lr, h.b1, h.b2, h.eps, h.wd, step)
end

local function snapshot(list)
  local s = {}
  for i, e in ipairs(list) do s[i] = { bytes(e.p), bytes(e.m), bytes(e.v) } end
  return s
end

local function assert_same(list, snap, what)
  for i, e in ipairs(list) do
    assert.are.equal(snap[i][1], bytes(e.p), ("%s: tensor %d's param"):format(what, i - 1))
    assert.are.equal(snap[i][2], bytes(e.m), ("%s: tensor %d's exp_avg"):format(what, i - 1))
    assert.are.equal(snap[i][3], bytes(e.v), ("%s: tensor %d's exp_avg_sq"):format(what, i - 1))
  end
end

local function expect_error(rc, pattern)
  local ok, err = pcall(check, rc)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.truthy(tostring(err):find(pattern, 1, true), ("%q does not contain %q"):format(tostring(err), pattern))
end

local H1 = { lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1 }
local H2 = { lr = 3e-3, b1 = 0.3, b2 = 0.95, eps = 1e-6, wd = 0 } -- the other lerp branch, no decay

describe("rt_adamw_step_multi", function()
  for hi, h in ipairs({ H1, H2 }) do
    it(("equals rt_adamw_step per tensor bit for bit over five steps (hyper-parameters %d)"):format(hi), function()
      local A = entries(7)
      -- B: fresh copies (offset 0, other alignment) updated one tensor at a time
      local B = {}
      for i, e in ipairs(A) do B[i] = { p = e.p:clone(), m = e.m:clone(), v = e.v:clone() } end
      local start = snapshot(A)
      for step = 1, 5 do
        for i, e in ipairs(A) do
          e.g = torch.randn(e.shape):to(e.gd)
          B[i].g = e.g
        end
        check(multi(A, h, step))
        for i, b in ipairs(B) do
          check(C.rt_adamw_step(b.p.p, b.g.p, b.m.p, b.v.p, h.lr, h.b1, h.b2, h.eps, h.wd, step))
        end
        for i, e in ipairs(A) do
          assert.are.equal(bytes(B[i].p), bytes(e.p), ("step %d tensor %d param"):format(step, i - 1))
          assert.are.equal(bytes(B[i].m), bytes(e.m), ("step %d tensor %d exp_avg"):format(step, i - 1))
          assert.are.equal(bytes(B[i].v), bytes(e.v), ("step %d tensor %d exp_avg_sq"):format(step, i - 1))
        end
      end
      -- every non-empty parameter moved
      for i, e in ipairs(A) do
        if e.p:numel() > 0 then assert.are_not.equal(start[i][1], bytes(e.p), "tensor " .. (i - 1) .. " moved") end
      end
    end)
  end

  it("writes nothing outside a view at an element offset", function()
    torch.manual_seed(3)
    local base = torch.randn({ 40 })
    local mbase, vbase = torch.zeros({ 40 }), torch.ones({ 40 })
    local e = { p = base:narrow(0, 1, 37), m = mbase:narrow(0, 1, 37), v = vbase:narrow(0, 1, 37) }
    e.g = torch.randn({ 37 })
    local head = { bytes(base:narrow(0, 0, 1)), bytes(base:narrow(0, 38, 2)) }
    local before = bytes(e.p)
    check(multi({ e }, H1, 1))
    assert.are_not.equal(before, bytes(e.p))
    assert.are.equal(head[1], bytes(base:narrow(0, 0, 1)))
    assert.are.equal(head[2], bytes(base:narrow(0, 38, 2)))
    assert.are.equal(0, mbase:narrow(0, 0, 1):item())
    assert.are.equal(1, vbase:narrow(0, 39, 1):item())
  end)

  it("does nothing for n = 0 and rejects n < 0", function()
    check(C.rt_adamw_step_multi(0, nil, nil, nil, nil, 1e-3, 0.9, 0.999, 1e-8, 0, 1))
    expect_error(C.rt_adamw_step_multi(-1, nil, nil, nil, nil, 1e-3, 0.9, 0.999, 1e-8, 0, 1),
                 "adamw_step_multi: n must be >= 0, got -1")
  end)

  describe("checks every tensor before it writes any", function()
    local function with_grads(list)
      for _, e in ipairs(list) do e.g = torch.randn(e.shape):to(e.gd) end
      return list
    end

    local function fails_untouched(mutate, pattern, h, step)
      local list = with_grads(entries(11))
      mutate(list)
      local snap = snapshot(list)
      expect_error(multi(list, h or H1, step or 1), pattern)
      assert_same(list, snap, pattern)
    end

    local last = #CASES - 1

    it("a shape mismatch names the index", function()
      fails_untouched(function(l) l[4].m = torch.zeros({ 5 }) end,
                      "adamw_step_multi: tensor 3: exp_avg has shape [5] but the parameter has shape [4]")
      fails_untouched(function(l) l[last + 1].g = torch.zeros({ 3 }) end,
                      ("adamw_step_multi: tensor %d: grad has shape [3] but the parameter has shape [14]"):format(last))
    end)

    it("a dtype the single entry refuses names the index", function()
      fails_untouched(function(l) l[3].g = torch.zeros({ 3 }, { dtype = torch.int64 }) end,
                      "adamw_step_multi: tensor 2: grad has dtype int64; expected a floating dtype")
      fails_untouched(function(l) l[last + 1].v = torch.zeros({ 14 }, { dtype = bf16 }) end,
                      ("adamw_step_multi: tensor %d: exp_avg_sq has dtype bfloat16; expected float32 or float64"):format(last))
    end)

    it("a non-contiguous tensor or a NULL entry names the index", function()
      fails_untouched(function(l)
        l[7].p = torch.randn({ 4, 2 }):transpose(0, 1)
      end, "adamw_step_multi: tensor 6: param must be contiguous")
      fails_untouched(function(l) l[last + 1].g = nil end, ("adamw_step_multi: tensor %d: grad is NULL"):format(last))
      fails_untouched(function(l) l[2].p = nil end, "adamw_step_multi: tensor 1: param is NULL")
    end)

    it("overlapping written tensors name both indices", function()
      -- the same parameter listed twice would race on a GPU
      fails_untouched(function(l)
        l[#l + 1] = { p = l[3].p, g = torch.randn({ 3 }), m = torch.zeros({ 3 }), v = torch.zeros({ 3 }), shape = { 3 } }
      end, ("adamw_step_multi: tensor 2's param overlaps tensor %d's param"):format(#CASES))
      fails_untouched(function(l) l[5].v = l[5].m end, "adamw_step_multi: tensor 4's exp_avg overlaps tensor 4's exp_avg_sq")
      -- partial overlap: two views of one storage sharing one element
      fails_untouched(function(l)
        local s = torch.zeros({ 9 })
        l[2].m = s:narrow(0, 0, 1)
        l[6].v = s:narrow(0, 0, 7)
      end, "adamw_step_multi: tensor 1's exp_avg overlaps tensor 5's exp_avg_sq")
      -- a gradient read from memory another entry writes (one launch on a GPU would race)
      fails_untouched(function(l) l[4].g = l[12].p:narrow(0, 0, 4) end,
                      "adamw_step_multi: tensor 3's grad overlaps tensor 11's param")
      fails_untouched(function(l) l[4].g = l[9].m:view(-1):narrow(0, 1, 4) end,
                      "adamw_step_multi: tensor 3's grad overlaps tensor 8's exp_avg")
    end)

    it("a gradient that is its own parameter exactly is read before each element is written", function()
      torch.manual_seed(3)
      local p1, p2 = torch.randn({ 37 }), nil
      p2 = p1:clone()
      local m1, v1, m2, v2 = torch.zeros({ 37 }), torch.zeros({ 37 }), torch.zeros({ 37 }), torch.zeros({ 37 })
      check(multi({ { p = p1, g = p1, m = m1, v = v1 } }, H1, 1))
      check(C.rt_adamw_step(p2.p, p2:clone().p, m2.p, v2.p, H1.lr, H1.b1, H1.b2, H1.eps, H1.wd, 1))
      assert.are.equal(bytes(p2), bytes(p1))
      assert.are.equal(bytes(m2), bytes(m1))
    end)

    it("bad hyper-parameters use rt_adamw_step's messages", function()
      fails_untouched(function() end, "adamw_step_multi: invalid learning rate -1 (expected >= 0)",
                      { lr = -1, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0 })
      fails_untouched(function() end, "adamw_step_multi: invalid beta2 1 (expected 0 <= beta2 < 1)",
                      { lr = 1, b1 = 0.9, b2 = 1, eps = 1e-8, wd = 0 })
      fails_untouched(function() end, "adamw_step_multi: step must be >= 1 (the count after this update), got 0", H1, 0)
    end)
  end)
end)

describe("AdamW batches non-host parameters into rt_adamw_step_multi", function()
  -- float64 CPU parameters take the batched path (host_path is for f32/bf16): compare with
  -- rt_adamw_step per parameter, state by state
  local function reference(values, grads_per_step, opts)
    local P, M, V = {}, {}, {}
    for i, v in ipairs(values) do
      P[i], M[i], V[i] = v:clone(), torch.zeros(v.shape, { dtype = f64 }), torch.zeros(v.shape, { dtype = f64 })
    end
    local steps = {}
    for s, gs in ipairs(grads_per_step) do
      for i, g in pairs(gs) do
        if g ~= false then
          steps[i] = (steps[i] or 0) + 1
          local gg = opts.maximize and -g or g
          check(C.rt_adamw_step(P[i].p, gg.p, M[i].p, V[i].p, opts.lr, 0.9, 0.999, 1e-8, opts.weight_decay, steps[i]))
        end
      end
      assert(s)
    end
    return P, M, V
  end

  for _, maximize in ipairs({ false, true }) do
    it(("matches per-parameter updates bit for bit, parameters without a gradient on some steps (maximize %s)")
       :format(tostring(maximize)), function()
      torch.manual_seed(5)
      local shapes = { { 3, 4 }, { 7 }, { 1 }, { 0 }, { 8193 } }
      local values, params = {}, {}
      for i, s in ipairs(shapes) do
        values[i] = torch.randn(s, { dtype = f64 })
        params[i] = values[i]:clone():requires_grad_(true)
      end
      local opts = { lr = 1e-2, weight_decay = 0.05, maximize = maximize }
      local opt = optim.AdamW(params, opts)
      local grads_per_step = {}
      for s = 1, 4 do
        local gs = {}
        for i, sh in ipairs(shapes) do
          -- parameter 2 has no gradient on step 1, parameter 5 none on step 3: step counts differ
          if (i == 2 and s == 1) or (i == 5 and s == 3) then
            gs[i] = false
            params[i].grad = nil
          else
            gs[i] = torch.randn(sh, { dtype = f64 })
            params[i].grad = gs[i]
          end
        end
        grads_per_step[s] = gs
        opt:step()
      end
      local P, M, V = reference(values, grads_per_step, opts)
      for i = 1, #shapes do
        assert.are.equal(bytes(P[i]), bytes(params[i]:detach()), "param " .. i)
        assert.are.equal(bytes(M[i]), bytes(opt.state[params[i]].exp_avg), "exp_avg " .. i)
        assert.are.equal(bytes(V[i]), bytes(opt.state[params[i]].exp_avg_sq), "exp_avg_sq " .. i)
      end
      assert.are.equal(3, opt.state[params[2]].step)
      assert.are.equal(3, opt.state[params[5]].step)
      assert.are.equal(4, opt.state[params[1]].step)
    end)
  end

  it("updates a parameter listed twice in a group twice, in turn", function()
    torch.manual_seed(9)
    local v = torch.randn({ 6 }, { dtype = f64 })
    local p = v:clone():requires_grad_(true)
    local q = torch.randn({ 4 }, { dtype = f64 }):requires_grad_(true)
    local opt = optim.AdamW({ p, q, p }, { lr = 1e-2 })
    local g = torch.randn({ 6 }, { dtype = f64 })
    p.grad, q.grad = g, torch.randn({ 4 }, { dtype = f64 })
    opt:step()
    local P, M, V = v:clone(), torch.zeros({ 6 }, { dtype = f64 }), torch.zeros({ 6 }, { dtype = f64 })
    check(C.rt_adamw_step(P.p, g.p, M.p, V.p, 1e-2, 0.9, 0.999, 1e-8, 1e-2, 1))
    check(C.rt_adamw_step(P.p, g.p, M.p, V.p, 1e-2, 0.9, 0.999, 1e-8, 1e-2, 2))
    assert.are.equal(bytes(P), bytes(p:detach()))
    assert.are.equal(2, opt.state[p].step)
  end)
end)
