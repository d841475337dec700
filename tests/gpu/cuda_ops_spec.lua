-- tests/gpu/cuda_ops_spec.lua: the CUDA backend against the CPU backend on fresh random inputs,
-- forward and backward, per dtype (f32 relative error below 1e-5, bf16 1e-2, f16 2e-3, TF32 1e-3;
-- never NaN), plus RNG equality, copies, pinned memory, the allocator (stats, budget, OOM message,
-- device usable afterwards) and stream/event ordering. Run with RAMTORCH_CUDA_POISON=1 (ctest sets
-- it) so every fresh device block is NaN and an unwritten output element fails. Label gpu: this
-- spec FAILS when no CUDA device is present.
local torch = require("ramtorch")

local TOL = { float32 = 1e-5, bfloat16 = 1e-2, float16 = 2e-3, float64 = 1e-12 }
local FLOATS = { torch.float32, torch.bfloat16, torch.float16 }

-- max |a - b| / max(max |a|, 1e-6), in float64 on the CPU; errors on NaN in b unless a has it there
local function rel_err(ref, got)
  ref = ref:to("cpu"):to(torch.float64)
  got = got:to("cpu"):to(torch.float64)
  assert.are.same(ref.shape, got.shape)
  local nan_ref = torch.ne(ref, ref)
  local nan_got = torch.ne(got, got)
  local nan_mismatch = torch.ne(nan_ref, nan_got):sum():item()
  if nan_mismatch > 0 then return math.huge, nan_mismatch end
  local clean_ref = torch.where(nan_ref, torch.zeros_like(ref), ref)
  local clean_got = torch.where(nan_got, torch.zeros_like(got), got)
  local scale = math.max(clean_ref:abs():max():item(), 1e-6)
  if ref:numel() == 0 then return 0, 0 end
  return (clean_ref - clean_got):abs():max():item() / scale, 0
end

local function check_close(what, ref, got, tol)
  local e, nans = rel_err(ref, got)
  if not (e <= tol) then
    error(("%s: relative error %.3g > %.3g (%d NaN mismatches)"):format(what, e, tol, nans), 2)
  end
end

-- the same values on both devices (drawn on the CPU in f32 and converted)
local function pair(shape, dtype, lo, hi)
  local x = torch.rand(shape) * ((hi or 1) - (lo or -1)) + (lo or -1)
  x = x:to(dtype)
  return x, x:to("cuda")
end

describe("cuda backend", function()
  it("has a device (this spec fails on machines without one)", function()
    assert.is_true(torch.cuda.is_available(), "no CUDA device: run the gpu label on the GPU machine")
    assert.is_true(torch.cuda.device_count() >= 1)
  end)

  it("copies between host and device, contiguous, strided and with casts", function()
    for _, dt in ipairs({ torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64,
                          torch.int32, torch.uint8 }) do
      local x = (torch.rand({ 37, 53 }) * 100):to(dt)
      local g = x:to("cuda")
      assert.are.equal("cuda:0", g.device)
      check_close("roundtrip " .. dt.name, x, g:to("cpu"), 0)
      check_close("transposed d2h " .. dt.name, x:t():contiguous(), g:t():to("cpu"), 0)
      check_close("transposed h2d " .. dt.name, x:t():contiguous(), x:t():to("cuda"), 0)
      for _, dt2 in ipairs(FLOATS) do
        check_close(("cast %s->%s"):format(dt.name, dt2.name), x:to(dt2), g:to(dt2), 0)
      end
      check_close("device strided copy " .. dt.name, x:t():contiguous(), g:t():contiguous(), 0)
      -- rows with a unit-stride inner dim (k_copy_rows: 16/8/4-byte pieces, or k_copy when the
      -- row or an offset is not aligned): permutes around attention, narrowed rows and columns
      local y = (torch.rand({ 2, 6, 3, 8 }) * 100):to(dt)
      local gy = y:to("cuda")
      check_close("permute rows " .. dt.name, y:permute(0, 2, 1, 3):contiguous(),
                  gy:permute(0, 2, 1, 3):contiguous(), 0)
      check_close("narrow rows " .. dt.name, y:narrow(3, 1, 6):contiguous(), gy:narrow(3, 1, 6):contiguous(), 0)
      check_close("narrow cols " .. dt.name, y:narrow(1, 1, 4):contiguous(), gy:narrow(1, 1, 4):contiguous(), 0)
      local dstg = torch.zeros({ 3, 2, 6, 8 }, { dtype = dt, device = "cuda" })
      dstg:permute(1, 2, 0, 3):copy_(gy)
      check_close("copy_ into permuted " .. dt.name, y:permute(2, 0, 1, 3):contiguous(), dstg, 0)
      local h = torch.zeros({ 53, 37 }, { dtype = dt }):t()
      h:copy_(g)
      check_close("d2h into strided " .. dt.name, x, h, 0)
    end
    -- broadcast source into a device tensor
    local row = torch.rand({ 1, 17 })
    local d = torch.zeros({ 9, 17 }, { device = "cuda" })
    d:copy_(row)
    check_close("broadcast copy_", row:expand({ 9, 17 }), d, 0)
  end)

  it("fills and creates on the device", function()
    for _, dt in ipairs({ torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool }) do
      local t = torch.full({ 5, 7 }, 3, { dtype = dt, device = "cuda" })
      check_close("full " .. dt.name, torch.full({ 5, 7 }, 3, { dtype = dt }), t, 0)
    end
    local z = torch.zeros({ 4, 6 }, { device = "cuda" }):t()
    z:fill_(2.5)
    check_close("fill_ strided", torch.full({ 6, 4 }, 2.5), z, 0)
  end)

  it("draws the same random numbers as the CPU", function()
    for _, dt in ipairs({ torch.float32, torch.float64, torch.bfloat16 }) do
      torch.manual_seed(1234)
      local a = torch.rand({ 1000, 3 }, { dtype = dt })
      torch.manual_seed(1234)
      local b = torch.rand({ 1000, 3 }, { dtype = dt, device = "cuda" })
      check_close("rand " .. dt.name, a, b, 0)
      torch.manual_seed(99)
      local c = torch.randn({ 4097 }, { dtype = dt })
      torch.manual_seed(99)
      local d = torch.randn({ 4097 }, { dtype = dt, device = "cuda" })
      check_close("randn " .. dt.name, c, d, dt == torch.float64 and 1e-14 or 1e-6)
    end
    torch.manual_seed(5)
    local i1 = torch.randint(-7, 1000, { 333 })
    torch.manual_seed(5)
    local i2 = torch.randint(-7, 1000, { 333 }, { device = "cuda" })
    check_close("randint", i1, i2, 0)
    -- a range wider than INT64_MAX (high - low overflows int64; the CPU takes it unsigned)
    torch.manual_seed(6)
    local i3 = torch.randint(-2 ^ 62, 2 ^ 62, { 64 })
    torch.manual_seed(6)
    local i4 = torch.randint(-2 ^ 62, 2 ^ 62, { 64 }, { device = "cuda" })
    assert.are.equal(0, torch.ne(i3, i4:to("cpu")):sum():item())
  end)

  local binops = { "add", "sub", "mul", "div", "maximum", "minimum", "pow" }
  local cmpops = { "eq", "ne", "lt", "le", "gt", "ge" }

  for _, dt in ipairs(FLOATS) do
    describe(dt.name, function()
      local tol = TOL[dt.name]

      it("binary ops (same shape, broadcast, strided) forward and backward", function()
        for _, name in ipairs(binops) do
          local lo = name == "pow" and 0.5 or -1
          local a, ga = pair({ 33, 65 }, dt, lo, 2)
          local b, gb = pair({ 65 }, dt, lo, 2)
          if name == "div" then b, gb = b + 3, gb + 3 end
          local f = torch[name]
          check_close(name .. " broadcast", f(a, b), f(ga, gb), tol)
          local at, gat = pair({ 65, 33 }, dt, lo, 2)
          check_close(name .. " strided", f(a, at:t()), f(ga, gat:t()), tol)
          check_close(name .. " contiguous", f(a, a), f(ga, ga), tol)
          check_close(name .. " scalar", f(a, 1.5), f(ga, 1.5), tol)
          if dt ~= torch.float32 then
            -- f32 with a reduced dtype, contiguous (k_map2_mixed), aligned and one element off
            local fa, gfa = a:float(), ga:float()
            check_close(name .. " mixed", f(fa, a), f(gfa, ga), 4e-5)
            check_close(name .. " mixed rev", f(a, fa), f(ga, gfa), 4e-5)
            local n = a:numel() - 1
            check_close(name .. " mixed unaligned", f(fa:view(-1):narrow(0, 1, n), a:view(-1):narrow(0, 0, n)),
                        f(gfa:view(-1):narrow(0, 1, n), ga:view(-1):narrow(0, 0, n)), 4e-5)
          end
          -- backward through autograd
          local a1 = a:clone():requires_grad_(true)
          local b1 = b:clone():requires_grad_(true)
          local ga1 = ga:clone():requires_grad_(true)
          local gb1 = gb:clone():requires_grad_(true)
          local w, gw = pair({ 33, 65 }, dt)
          local l1 = (f(a1, b1) * w):sum()
          l1:backward()
          local l2 = (f(ga1, gb1) * gw):sum()
          l2:backward()
          check_close(name .. " grad a", a1.grad, ga1.grad, tol * 4)
          check_close(name .. " grad b", b1.grad, gb1.grad, tol * 40)
        end
        for _, name in ipairs(cmpops) do
          local a, ga = pair({ 40, 41 }, dt)
          local b, gb = pair({ 41 }, dt)
          check_close(name, torch[name](a, b), torch[name](ga, gb), 0)
        end
      end)

      it("unary ops forward and backward", function()
        for _, name in ipairs({ "neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu",
                                "gelu", "silu", "sin", "cos", "square", "reciprocal" }) do
          local positive = name == "log" or name == "sqrt" or name == "rsqrt" or name == "reciprocal"
          local a, ga = pair({ 129, 31 }, dt, positive and 0.2 or -3, 3)
          local f = torch[name]
          check_close(name, f(a), f(ga), tol)
          check_close(name .. " strided", f(a:t()), f(ga:t()), tol)
          local a1 = a:clone():requires_grad_(true)
          local ga1 = ga:clone():requires_grad_(true)
          f(a1):sum():backward()
          f(ga1):sum():backward()
          check_close(name .. " grad", a1.grad, ga1.grad, tol * 4)
          -- a contiguous upstream gradient (the 16-byte FUnBwd path; sum's is an expanded one)
          local w, gw = pair({ 129, 31 }, dt)
          local a2 = a:clone():requires_grad_(true)
          local ga2 = ga:clone():requires_grad_(true)
          ; (f(a2) * w):sum():backward()
          ; (f(ga2) * gw):sum():backward()
          check_close(name .. " grad contiguous", a2.grad, ga2.grad, tol * 4)
        end
      end)

      it("reductions over any dims, forward and backward", function()
        local a, ga = pair({ 6, 70, 50 }, dt)
        for _, name in ipairs({ "sum", "mean", "amax", "amin" }) do
          local rtol = (name == "sum" or name == "mean") and math.max(tol, 1e-5) * 4 or 0
          check_close(name .. " all", torch[name](a), torch[name](ga), rtol)
          for _, dims in ipairs({ 0, 1, 2, { 0, 2 }, { 1, 2 }, { 0, 1 } }) do
            check_close(name .. " dims", torch[name](a, dims), torch[name](ga, dims), rtol)
            check_close(name .. " keepdim", torch[name](a, dims, true), torch[name](ga, dims, true), rtol)
          end
        end
        local big, gbig = pair({ 3, 100003 }, dt)
        check_close("sum long rows", big:sum(1), gbig:sum(1), math.max(tol, 1e-5) * 4)
        check_close("sum long cols", big:t():sum(0), gbig:t():sum(0), math.max(tol, 1e-5) * 4)
        -- column reductions over many rows (a bias gradient's shape): split into row chunks whose
        -- partials are combined in order (kernels/cuda/reduce.cu k_reduce_cols_split); one reduced
        -- dim, two merged ones, and two that cannot merge
        local cols, gcols = pair({ 4099, 70 }, dt)
        local c4, gc4 = pair({ 400, 3, 50, 7 }, dt)
        local cv, gcv = pair({ 3001, 256 }, dt) -- aligned rows: the 16-byte path (k_reduce_cols_vec)
        for _, name in ipairs({ "sum", "mean", "amax", "amin" }) do
          local rtol = (name == "sum" or name == "mean") and math.max(tol, 1e-5) * 4 or 0
          check_close(name .. " cols", torch[name](cols, 0), torch[name](gcols, 0), rtol)
          check_close(name .. " cols vec", torch[name](cv, 0), torch[name](gcv, 0), rtol)
          check_close(name .. " cols vec narrowed", torch[name](cv:narrow(1, 8, 240), 0),
                      torch[name](gcv:narrow(1, 8, 240), 0), rtol)
          check_close(name .. " cols {0,1}", torch[name](c4, { 0, 1 }), torch[name](gc4, { 0, 1 }), rtol)
          check_close(name .. " cols {0,2}", torch[name](c4, { 0, 2 }), torch[name](gc4, { 0, 2 }), rtol)
        end
        local a1 = a:clone():requires_grad_(true)
        local ga1 = ga:clone():requires_grad_(true)
        a1:mean({ 0, 2 }):sum():backward()
        ga1:mean({ 0, 2 }):sum():backward()
        check_close("mean grad", a1.grad, ga1.grad, tol)
      end)

      it("matmul (2-d, batched, transposed operands) forward and backward", function()
        local a, ga = pair({ 64, 96 }, dt)
        local b, gb = pair({ 96, 80 }, dt)
        local mtol = dt == torch.float32 and 1e-5 or tol
        check_close("mm", a:matmul(b), ga:matmul(gb), mtol)
        check_close("mm a^T", a:t():contiguous():t():matmul(b), ga:t():contiguous():t():matmul(gb), mtol)
        check_close("mm b^T", a:matmul(b:t():contiguous():t()), ga:matmul(gb:t():contiguous():t()), mtol)
        local x, gx = pair({ 4, 32, 48 }, dt)
        local y, gy = pair({ 4, 48, 16 }, dt)
        check_close("bmm", x:matmul(y), gx:matmul(gy), mtol)
        check_close("broadcast batch", x:matmul(y[1]), gx:matmul(gy[1]), mtol)
        local a1, b1 = a:clone():requires_grad_(true), b:clone():requires_grad_(true)
        local ga1, gb1 = ga:clone():requires_grad_(true), gb:clone():requires_grad_(true)
        a1:matmul(b1):sum():backward()
        ga1:matmul(gb1):sum():backward()
        check_close("mm grad a", a1.grad, ga1.grad, mtol * 4)
        check_close("mm grad b", b1.grad, gb1.grad, mtol * 4)
      end)

      it("where / masked copy", function()
        local a, ga = pair({ 20, 30 }, dt)
        local b, gb = pair({ 30 }, dt)
        check_close("where", torch.where(a:gt(0), a, b), torch.where(ga:gt(0), ga, gb), 0)
      end)
    end)
  end

  it("f32 matmul through TF32 when allowed", function()
    local a, ga = pair({ 256, 512 }, torch.float32)
    local b, gb = pair({ 512, 128 }, torch.float32)
    torch.cuda.set_allow_tf32(true)
    local ok, err = pcall(function() check_close("tf32 mm", a:matmul(b), ga:matmul(gb), 3e-3) end)
    torch.cuda.set_allow_tf32(false)
    assert(ok, err)
  end)

  it("float64 matmul and elementwise on the device", function()
    local a, ga = pair({ 40, 50 }, torch.float64)
    local b, gb = pair({ 50, 30 }, torch.float64)
    check_close("f64 mm", a:matmul(b), ga:matmul(gb), 1e-12)
    check_close("f64 exp", a:exp(), ga:exp(), 1e-12)
  end)

  it("pins host memory and copies without blocking", function()
    local x = torch.rand({ 1024, 1024 })
    local p = x:pin_memory()
    assert.is_true(p:is_pinned())
    assert.is_false(x:is_pinned())
    local g = p:to("cuda", true)
    local back = torch.empty({ 1024, 1024 }):pin_memory()
    back:copy_(g)
    torch.cuda.synchronize()
    check_close("pinned roundtrip", x, back, 0)
    check_close("pinned to cuda", x, g, 0)
  end)

  it("keeps statistics and reuses cached blocks", function()
    collectgarbage("collect")
    torch.cuda.synchronize()
    local base = torch.cuda.memory_allocated()
    local t = torch.empty({ 1024, 1024 }, { device = "cuda" })
    assert.is_true(torch.cuda.memory_allocated() >= base + 4 * 1024 * 1024)
    assert.is_true(torch.cuda.max_memory_allocated() >= torch.cuda.memory_allocated())
    t = nil
    collectgarbage("collect")
    assert.are.equal(base, torch.cuda.memory_allocated())
    -- steady state: a loop of ops does not grow the reserved bytes after its first iteration
    local x = torch.rand({ 512, 512 }, { device = "cuda" })
    local reserved
    for i = 1, 5 do
      local y = (x:matmul(x) + 1):relu():sum(0)
      y = nil
      collectgarbage("collect")
      if i == 2 then reserved = torch.cuda.memory_reserved() end
      if i > 2 then assert.are.equal(reserved, torch.cuda.memory_reserved()) end
    end
    torch.cuda.reset_peak_memory_stats()
    assert.are.equal(torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated())
    torch.cuda.empty_cache()
    assert.is_true(torch.cuda.memory_reserved() <= torch.cuda.memory_allocated() + 64 * 1024 * 1024)
  end)

  it("reports out of memory with the request, usage and budget, and stays usable", function()
    collectgarbage("collect")
    torch.cuda.set_memory_budget(256 * 1024 * 1024)
    local ok, err = pcall(torch.empty, { 1024, 1024, 128 }, { device = "cuda" }) -- 512 MiB
    torch.cuda.set_memory_budget(nil)
    assert.is_false(ok)
    err = tostring(err)
    assert.matches("out of memory", err)
    assert.matches("512%.00 MiB", err)
    assert.matches("allocated", err)
    assert.matches("reserved", err)
    assert.matches("budget 256%.00 MiB", err)
    -- a real driver OOM: far more than the card has
    local ok2, err2 = pcall(torch.empty, { 1024, 1024, 1024, 512 }, { device = "cuda" }) -- 2 TiB
    assert.is_false(ok2)
    assert.matches("out of memory", tostring(err2))
    local a, ga = pair({ 64, 64 }, torch.float32)
    check_close("usable after OOM", a:matmul(a), ga:matmul(ga), 1e-5)
  end)

  -- DESIGN section 2 inside the backward engine (runtime/autograd.c): a node whose backward runs out of
  -- memory is retried once after a full garbage collection frees the device blocks of dead handles.
  it("retries a backward that runs out of memory once dead tensors are collected", function()
    local autograd = require("ramtorch.autograd")
    local core = require("ramtorch.core")
    local xc = torch.randn({ 1024, 1024 }) -- 4 MiB in float32: one caching-allocator block exactly
    local function run(retry)
      local x = xc:to("cuda"):requires_grad_(true)
      local y = (x * x):sum() -- backward: two 4 MiB gradients g * x
      collectgarbage("collect")
      core.pace_gc() -- collects, and no automatic collection comes while the garbage below is made
      torch.cuda.synchronize()
      torch.cuda.empty_cache()
      local budget = torch.cuda.memory_reserved() + 32 * 1024 * 1024
      torch.cuda.set_memory_budget(budget)
      collectgarbage("stop")
      for _ = 1, 8 do torch.empty({ 1024, 1024 }, { device = "cuda" }) end -- handles dropped at once
      local full = torch.cuda.memory_reserved() == budget -- no room left until a collection
      local prev = autograd.set_oom_retry(retry)
      local ok, err = pcall(function() y:backward() end)
      autograd.set_oom_retry(prev)
      collectgarbage("restart")
      torch.cuda.set_memory_budget(nil)
      return ok, err, x, full
    end
    local ok, err, x, full = run(true)
    assert.is_true(full)
    assert(ok, err)
    check_close("gradient after the retry", xc * 2, x.grad, 0)
    ok, err, x, full = run(false)
    assert.is_true(full)
    assert.is_false(ok)
    assert.matches("CUDA out of memory", tostring(err))
    assert.matches("budget", tostring(err))
    assert.is_nil(x.grad)
    -- and the device is usable afterwards
    local z = xc:to("cuda"):requires_grad_(true)
    local loss = (z * z):sum()
    loss:backward()
    check_close("gradient after the failure", xc * 2, z.grad, 0)
  end)

  it("orders work across streams with events", function()
    local s = torch.cuda.Stream()
    local e0 = torch.cuda.Event({ enable_timing = true })
    local e1 = torch.cuda.Event({ enable_timing = true })
    local x = torch.rand({ 2048, 2048 }, { device = "cuda" })
    torch.cuda.synchronize()
    local y
    s:wait_stream(torch.cuda.current_stream())
    torch.cuda.with_stream(s, function()
      e0:record()
      y = x:matmul(x)
      for _ = 1, 10 do y = y * 0.5 end
      e1:record()
    end)
    assert.is_true(torch.cuda.current_stream() ~= s)
    torch.cuda.current_stream():wait_event(e1)
    local z = y:sum() -- on the default stream, after the event
    e1:synchronize()
    assert.is_true(e1:query())
    assert.is_true(e0:elapsed_time(e1) > 0)
    local ref = (x:to("cpu"):matmul(x:to("cpu")) * (0.5 ^ 10)):sum()
    check_close("cross-stream result", ref, z, 1e-4)
  end)

  it("raises clear errors for bad devices and missing ops", function()
    local ok, err = pcall(torch.zeros, { 2 }, { device = "cuda:" .. torch.cuda.device_count() })
    assert.is_false(ok)
    assert.matches("no such device", tostring(err))
  end)
end)
