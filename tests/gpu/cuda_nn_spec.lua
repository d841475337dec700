-- tests/gpu/cuda_nn_spec.lua: the CUDA kernels of the neural-network ops and optimizer updates
-- (kernels/cuda/softmax.cu, cross_entropy.cu, embedding.cu, layer_norm.cu, dropout.cu,
-- reduce_indices.cu, index.cu, optim.cu) against the CPU backend on fresh random inputs, forward
-- and backward through autograd, per dtype (f32 relative error below 1e-5, bf16 1e-2, f16 2e-3,
-- f64 1e-12; NaN only where the CPU has it). Shapes are chosen to take every kernel path: rows
-- held in registers (aligned, short), block-per-row (long or unaligned rows), and strided rows.
-- Dropout masks, argmax indices and optimizer steps must match the CPU exactly (the same Philox
-- mapping, the same tie rules, the same op order). Run with RAMTORCH_CUDA_POISON=1 (ctest sets it)
-- so an unwritten output element is NaN and fails. A bad cross_entropy target is reported late (at
-- the next synchronisation point, kernels/cuda/deferred.c): its test checks every such point and
-- that the device is usable afterwards. Label gpu: FAILS without a CUDA device.
local torch = require("ramtorch")
local F = require("ramtorch.functional")
local optim = require("ramtorch.optim")

local TOL = { float32 = 1e-5, bfloat16 = 1e-2, float16 = 2e-3, float64 = 1e-12 }
local DTYPES = { torch.float32, torch.bfloat16, torch.float16, torch.float64 }

-- max |a - b| / max(max |a|, 1e-6) in float64 on the CPU; NaN positions must agree
local function rel_err(ref, got)
  ref = ref:to("cpu"):to(torch.float64)
  got = got:to("cpu"):to(torch.float64)
  assert.are.same(ref.shape, got.shape)
  if ref:numel() == 0 then return 0, 0 end
  local nan_ref, nan_got = torch.ne(ref, ref), torch.ne(got, got)
  local mism = torch.ne(nan_ref, nan_got):sum():item()
  if mism > 0 then return math.huge, mism end
  local r = torch.where(nan_ref, torch.zeros_like(ref), ref)
  local g = torch.where(nan_got, torch.zeros_like(got), got)
  local inf_r = torch.eq(r:abs(), math.huge)
  if torch.ne(torch.where(inf_r, r, torch.zeros_like(r)), torch.where(inf_r, g, torch.zeros_like(g))):sum():item() > 0 then
    return math.huge, 0
  end
  r = torch.where(inf_r, torch.zeros_like(r), r)
  g = torch.where(inf_r, torch.zeros_like(g), g)
  local scale = math.max(r:abs():max():item(), 1e-6)
  return (r - g):abs():max():item() / scale, 0
end

local function check_close(what, ref, got, tol)
  local e, nans = rel_err(ref, got)
  if not (e <= tol) then
    error(("%s: relative error %.3g > %.3g (%d NaN mismatches)"):format(what, e, tol, nans), 2)
  end
end

local function pair(shape, dtype, lo, hi)
  local x = (torch.rand(shape) * ((hi or 1) - (lo or -1)) + (lo or -1)):to(dtype)
  return x, x:to("cuda")
end

-- run f on CPU and CUDA copies of inputs (requires_grad), backward with the same random upstream
-- gradient; compare outputs and input gradients
local unpack = unpack or table.unpack

local function check_fwd_bwd(what, f, inputs, tol, gtol)
  local cpu, gpu = {}, {}
  for i, x in ipairs(inputs) do
    cpu[i] = x:detach():clone():requires_grad_(true)
    gpu[i] = x:detach():to("cuda"):requires_grad_(true)
  end
  local yc, yg = f(unpack(cpu)), f(unpack(gpu))
  check_close(what .. " forward", yc, yg, tol)
  local w = torch.rand(yc.shape):to(yc.dtype)
  ;(yc * w):sum():backward()
  ;(yg * w:to("cuda")):sum():backward()
  for i = 1, #inputs do
    check_close(("%s grad %d"):format(what, i), cpu[i].grad, gpu[i].grad, gtol or tol * 4)
  end
end

describe("cuda nn kernels", function()
  it("has a device (this spec fails on machines without one)", function()
    assert.is_true(torch.cuda.is_available(), "no CUDA device: run the gpu label on the GPU machine")
  end)

  for _, dt in ipairs(DTYPES) do
    describe(dt.name, function()
      local tol = TOL[dt.name]

      it("softmax and log_softmax on every path, forward and backward", function()
        -- {shape, dim}: warp rows (aligned), unaligned rows, long rows, strided rows, 3-d
        for _, case in ipairs({ { { 64, 1024 }, -1 }, { { 33, 37 }, -1 }, { { 5, 3000 }, 1 },
                                { { 40, 24 }, 0 }, { { 3, 16, 8 }, 1 }, { { 7 }, 0 } }) do
          local x = pair(case[1], dt, -4, 4)
          for _, fname in ipairs({ "softmax", "log_softmax" }) do
            check_fwd_bwd(("%s %s dim %d"):format(fname, table.concat(case[1], "x"), case[2]),
                          function(t) return F[fname](t, case[2]) end, { x }, tol)
          end
        end
        -- -inf entries contribute nothing; an all -inf row is NaN on both backends
        local x = torch.tensor({ { -math.huge, 0, 1, 2 }, { -math.huge, -math.huge, -math.huge, -math.huge } }):to(dt)
        check_close("softmax -inf", F.softmax(x, -1), F.softmax(x:to("cuda"), -1), tol)
        check_close("log_softmax -inf", F.log_softmax(x, -1), F.log_softmax(x:to("cuda"), -1), tol)
      end)

      it("cross_entropy with ignore_index, label smoothing and reductions, forward and backward", function()
        -- {logits shape, classes}: 16-byte rows held in registers (k_ce_fwd_reg: 32 x 1024, also
        -- with many rows per warp of its persistent grid, 20000 x 8, and a partial last vector
        -- step, 300 x 200 and 40 x 1000, where lanes past the row's end load nothing), warp
        -- scalar, thread per row (N, C, S), and rows too long for registers through the streaming
        -- path, of several chunks with a partial last one (6 x 5000; f64 also 40 x 1000)
        for _, shape in ipairs({ { 32, 1024 }, { 64, 10 }, { 4, 7, 5 }, { 10 }, { 20000, 8 }, { 6, 5000 },
                                 { 300, 200 }, { 40, 1000 } }) do
          local C = #shape == 1 and shape[1] or shape[2]
          local tshape = {}
          for i, s in ipairs(shape) do if i ~= (#shape == 1 and 1 or 2) then tshape[#tshape + 1] = s end end
          local nt = 1
          for _, s in ipairs(tshape) do nt = nt * s end
          for _, opts in ipairs({ {}, { reduction = "sum" }, { reduction = "none" },
                                  { label_smoothing = 0.1 }, { ignore_index = 3, label_smoothing = 0.2 } }) do
            local vals = {}
            for i = 1, nt do vals[i] = (i * 7 + 3) % C end
            -- some rows ignored: -100 (the default ignore_index) or 3 (the explicit one)
            if nt > 2 then vals[1] = opts.ignore_index and 3 or -100; vals[3] = 3 end
            local t = torch.tensor(vals):long()
            t = #tshape > 0 and t:view(tshape) or t:view({})
            local x = pair(shape, dt, -3, 3)
            local what = ("cross_entropy %s %s"):format(table.concat(shape, "x"), opts.reduction or "mean")
            local cpu_t, gpu_t = t, t:to("cuda")
            local xc, xg = x:detach():clone():requires_grad_(true), x:detach():to("cuda"):requires_grad_(true)
            local lc, lg = F.cross_entropy(xc, cpu_t, opts), F.cross_entropy(xg, gpu_t, opts)
            check_close(what, lc, lg, math.max(tol, 1e-5) * 4)
            local w = torch.rand(lc.shape):to(lc.dtype)
            ;(lc * w):sum():backward()
            ;(lg * w:to("cuda")):sum():backward()
            check_close(what .. " grad", xc.grad, xg.grad, math.max(tol, 1e-5) * 4)
          end
        end
      end)

      -- A bad target does not stall the forward: the kernel skips it (loss 0, not counted) and
      -- records it in the device's error slot; the error surfaces at the next point where the host
      -- waits for the device (item, to("cpu"), totable, synchronize, stream / event synchronize) or
      -- at the next cross_entropy call, once, and the device stays usable.
      it("cross_entropy reports a bad target at the next synchronisation point", function()
        local ctol = math.max(tol, 1e-5) * 4
        local function expect_report(what, f, value, classes, pos)
          local ok, err = pcall(f)
          assert.is_false(ok, what .. ": expected the deferred cross_entropy error")
          err = tostring(err)
          assert.matches(("cross_entropy: target %s is out of bounds for %d classes"):format(value, classes), err)
          assert.matches("at flat target position " .. pos, err)
          assert.matches("deferred report", err)
          return err
        end
        -- the same targets with the bad one ignored: what the device must have computed
        local function ignoring(vals, i)
          local v = { unpack(vals) }
          v[i] = -100
          return torch.tensor(v):long()
        end
        local x = pair({ 4, 10 }, dt, -3, 3)
        local vals = { 1, 2, 10, 3 }
        local tb = torch.tensor(vals):long():to("cuda")
        local good = torch.tensor({ 1, 2, 9, 3 }):long()
        -- mean (the fused reduction), raised by item(); the bad row is left out of sum and count
        local loss = F.cross_entropy(x:to("cuda"), tb)
        local err = expect_report("item", function() return loss:item() end, "10", 10, 2)
        assert.matches("copy from the device to the host", err)
        check_close("mean without the bad row", F.cross_entropy(x, ignoring(vals, 3)), loss, ctol)
        -- sum, raised by torch.cuda.synchronize(); a negative target
        local vneg = { 1, 2, 3, -5 }
        local lsum = F.cross_entropy(x:to("cuda"), torch.tensor(vneg):long():to("cuda"), { reduction = "sum" })
        expect_report("synchronize", function() torch.cuda.synchronize() end, "%-5", 10, 3)
        check_close("sum without the bad row", F.cross_entropy(x, ignoring(vneg, 4), { reduction = "sum" }), lsum, ctol)
        -- none on the thread-per-row path (N, C, S), raised by to("cpu"); the bad row's loss is 0
        local x3 = pair({ 2, 7, 3 }, dt, -3, 3)
        local v3 = { 0, 6, 2, 1, 7, 5 }
        local l3 = F.cross_entropy(x3:to("cuda"), torch.tensor(v3):long():view({ 2, 3 }):to("cuda"), { reduction = "none" })
        expect_report("to cpu", function() return l3:to("cpu") end, "7", 7, 4)
        check_close("none with the bad row 0", F.cross_entropy(x3, ignoring(v3, 5):view({ 2, 3 }), { reduction = "none" }), l3, ctol)
        -- totable, event and stream synchronize
        local lt = F.cross_entropy(x:to("cuda"), tb, { reduction = "none" })
        expect_report("totable", function() return lt:totable() end, "10", 10, 2)
        local _ = F.cross_entropy(x:to("cuda"), tb)
        local ev = torch.cuda.Event()
        ev:record()
        expect_report("Event.synchronize", function() ev:synchronize() end, "10", 10, 2)
        _ = F.cross_entropy(x:to("cuda"), tb)
        expect_report("Stream.synchronize", function() torch.cuda.current_stream():synchronize() end, "10", 10, 2)
        -- the next cross_entropy call: wait for the kernel without a checking sync (event query)
        _ = F.cross_entropy(x:to("cuda"), tb)
        ev:record()
        while not ev:query() do end
        err = expect_report("next call", function() return F.cross_entropy(x:to("cuda"), good:to("cuda")) end, "10", 10, 2)
        assert.matches("start of the next cross_entropy", err)
        -- a backward queued before the report neither crashes nor hides it
        local xg = x:detach():to("cuda"):requires_grad_(true)
        local lb = F.cross_entropy(xg, tb)
        local okb, errb = pcall(function() lb:backward() end)
        if okb then
          expect_report("after backward", function() torch.cuda.synchronize() end, "10", 10, 2)
        else
          assert.matches("target 10 is out of bounds for 10 classes", tostring(errb))
        end
        -- reported once: the device is usable and agrees with the CPU again
        torch.cuda.synchronize()
        local xc2, xg2 = x:detach():clone():requires_grad_(true), x:detach():to("cuda"):requires_grad_(true)
        local lc, lg = F.cross_entropy(xc2, good), F.cross_entropy(xg2, good:to("cuda"))
        check_close("after the report", lc, lg, ctol)
        lc:backward()
        lg:backward()
        check_close("after the report grad", xc2.grad, xg2.grad, ctol)
      end)

      -- the 16-byte forward (kernels/cuda/cross_entropy.cu k_ce_fwd_reg: many rows per warp of a
      -- persistent grid): a bad target in a late row is left out and reported, a target in the
      -- last element of a row is picked out of the registers
      it("cross_entropy streaming path: bad target reported late, last-class targets", function()
        local ctol = math.max(tol, 1e-5) * 4
        local N, C = 5000, 16
        local x = pair({ N, C }, dt, -3, 3)
        local vals = {}
        for i = 1, N do vals[i] = (i % 3 == 0) and (C - 1) or ((i * 5) % C) end
        vals[4001] = C + 2
        local tb = torch.tensor(vals):long():to("cuda")
        local loss = F.cross_entropy(x:to("cuda"), tb)
        local ok, err = pcall(function() return loss:item() end)
        assert.is_false(ok, "expected the deferred cross_entropy error")
        assert.matches(("cross_entropy: target %d is out of bounds for %d classes"):format(C + 2, C), tostring(err))
        assert.matches("at flat target position 4000", tostring(err))
        vals[4001] = -100
        local good = torch.tensor(vals):long()
        check_close("mean without the bad row", F.cross_entropy(x, good), loss, ctol)
        for _, red in ipairs({ "sum", "none" }) do
          check_close("streaming " .. red, F.cross_entropy(x, good, { reduction = red }),
            F.cross_entropy(x:to("cuda"), good:to("cuda"), { reduction = red }), ctol)
        end
      end)

      it("layer_norm with and without affine parameters, forward and backward", function()
        for _, case in ipairs({ { { 33, 256 }, true }, { { 17, 100 }, true }, { { 5, 3000 }, true },
                                { { 8, 64 }, false }, { { 2, 3, 40 }, true } }) do
          local shape = case[1]
          local N = shape[#shape]
          local x = pair(shape, dt, -2, 3)
          local what = ("layer_norm %s"):format(table.concat(shape, "x"))
          if case[2] then
            local w = pair({ N }, dt, 0.5, 1.5)
            local b = pair({ N }, dt, -0.5, 0.5)
            check_fwd_bwd(what, function(a, ww, bb) return F.layer_norm(a, { N }, ww, bb, 1e-5) end,
                          { x, w, b }, math.max(tol, 1e-5) * 4, math.max(tol, 1e-5) * 40)
          else
            check_fwd_bwd(what, function(a) return F.layer_norm(a, { N }) end, { x },
                          math.max(tol, 1e-5) * 4)
          end
        end
      end)

      it("embedding forward and backward (repeated indices)", function()
        local w = pair({ 50, 24 }, dt)
        local idx = torch.tensor({ { 1, 5, 5, 49 }, { 0, 5, 7, 1 } }):long()
        for _, ix in ipairs({ idx, idx:to(torch.int32) }) do
          check_fwd_bwd("embedding " .. ix.dtype.name, function(ww) return F.embedding(ix:to(ww.device), ww) end,
                        { w }, 0, math.max(tol, 1e-5) * 4)
        end
        local ok, err = pcall(F.embedding, torch.tensor({ 3, 50 }):long():to("cuda"), w:to("cuda"))
        assert.is_false(ok)
        assert.matches("index 50 is out of range for an embedding of 50 rows", tostring(err))
        assert.matches("position 1", tostring(err))
      end)

      it("embedding backward sums repeated rows in the CPU's order, bit for bit (sorted groups)", function()
        -- 3000 positions into 300 rows (about 10 repeats each, one row 400 times), 130 columns
        torch.manual_seed(17)
        local idx = torch.randint(0, 300, { 3000 }):long()
        idx:narrow(0, 0, 400):fill_(7)
        local w = torch.randn({ 300, 130 }):to(dt)
        local go = torch.randn({ 3000, 130 }):to(dt)
        local function grad_on(device)
          local ww = w:to(device):detach():requires_grad_(true) -- a fresh leaf on each device
          ; (F.embedding(idx:to(device), ww) * go:to(device)):sum():backward() -- upstream gradient: go exactly
          return ww.grad:to("cpu"):to(torch.float64)
        end
        assert.are.same(grad_on("cpu"):totable(), grad_on("cuda"):totable())
      end)

      it("dropout draws the CPU's mask from the same seed, forward and backward", function()
        local x = pair({ 37, 129 }, dt, 0.5, 2)
        for _, src in ipairs({ x, x:t() }) do
          for _, p in ipairs({ 0.1, 0.5, 0.9 }) do
            torch.manual_seed(77)
            local xc = src:detach():clone():requires_grad_(true)
            local yc = F.dropout(xc, p)
            torch.manual_seed(77)
            local xg = src:detach():to("cuda"):requires_grad_(true)
            local yg = F.dropout(xg, p)
            check_close(("dropout p=%g"):format(p), yc, yg, 0)
            yc:sum():backward()
            yg:sum():backward()
            check_close(("dropout grad p=%g"):format(p), xc.grad, xg.grad, 0)
            assert.are.equal(yc:eq(0):sum():item(), yg:eq(0):sum():item())
          end
        end
      end)

      it("max / min with indices and argmax (ties, NaN)", function()
        local a = (torch.randint(-3, 4, { 6, 70, 50 })):to(dt) -- many ties
        local ga = a:to("cuda")
        for _, dim in ipairs({ 0, 1, 2, -1 }) do
          for _, name in ipairs({ "max", "min" }) do
            local v1, i1 = a[name](a, dim)
            local v2, i2 = ga[name](ga, dim)
            check_close(("%s dim %d values"):format(name, dim), v1, v2, 0)
            check_close(("%s dim %d indices"):format(name, dim), i1, i2, 0)
            local v3, i3 = a[name](a, dim, true)
            local v4, i4 = ga[name](ga, dim, true)
            check_close(name .. " keepdim", v3, v4, 0)
            check_close(name .. " keepdim indices", i3, i4, 0)
          end
          check_close("argmax dim " .. dim, a:argmax(dim), ga:argmax(dim), 0)
        end
        check_close("argmax all", a:argmax(), ga:argmax(), 0)
        local n = torch.tensor({ { 1, 0 / 0, 3, 0 / 0 }, { 2, 5, 5, 1 } }):to(dt)
        local v1, i1 = n:max(1)
        local v2, i2 = n:to("cuda"):max(1)
        check_close("max NaN values", v1, v2, 0)
        check_close("max NaN indices", i1, i2, 0)
        -- gradient flows to the winners
        check_fwd_bwd("max values grad", function(t) return (t:max(1)) end, { (pair({ 9, 33 }, dt)) }, 0, tol)
      end)

      it("index_select forward and backward (index_add), errors", function()
        local x = pair({ 12, 9, 5 }, dt)
        local idx = torch.tensor({ 3, 0, 3, 11, 2 }):long()
        for _, dim in ipairs({ 0, 1, 2 }) do
          local ix = dim == 0 and idx or torch.tensor({ 1, 1, 0, 4 }):long()
          check_fwd_bwd("index_select dim " .. dim,
                        function(t) return t:index_select(dim, ix:to(t.device)) end, { x }, 0,
                        math.max(tol, 1e-6))
        end
        local ok, err = pcall(function() return x:to("cuda"):index_select(0, torch.tensor({ 0, 12 }):long():to("cuda")) end)
        assert.is_false(ok)
        assert.matches("index 12 %(at position 1%) is out of range for dimension 0 of size 12", tostring(err))
      end)
    end)
  end

  it("AdamW and SGD steps match the CPU's update", function()
    for _, dt in ipairs({ torch.float32, torch.float64, torch.bfloat16 }) do
      local tol = dt == torch.float32 and 1e-6 or TOL[dt.name]
      for _, kind in ipairs({ "AdamW", "SGD", "SGD nesterov" }) do
        local p0 = pair({ 1000 }, dt)
        local pc = p0:detach():clone():requires_grad_(true)
        local pg = p0:detach():to("cuda"):requires_grad_(true)
        local mk = function(p)
          if kind == "AdamW" then return optim.AdamW({ p }, { lr = 1e-2, weight_decay = 0.1 }) end
          return optim.SGD({ p }, { lr = 0.1, momentum = 0.9, weight_decay = 0.01, nesterov = kind == "SGD nesterov" })
        end
        local oc, og = mk(pc), mk(pg)
        for step = 1, 3 do
          local w = torch.randn({ 1000 }):to(dt) * step
          oc:zero_grad()
          og:zero_grad()
          ;(pc * w):sum():backward()
          ;(pg * w:to("cuda")):sum():backward()
          oc:step()
          og:step()
        end
        check_close(("%s %s params"):format(kind, dt.name), pc:detach(), pg:detach(), tol)
      end
    end
  end)

  it("trains a small MLP on the device like on the CPU", function()
    local nn = require("ramtorch.nn")
    torch.manual_seed(3)
    local m1 = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.1), nn.LayerNorm(32), nn.Linear(32, 5))
    local m2 = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.1), nn.LayerNorm(32), nn.Linear(32, 5))
    m2:load_state_dict(m1:state_dict())
    m2:to("cuda")
    local o1 = optim.AdamW(m1:parameters(), { lr = 1e-2 })
    local o2 = optim.AdamW(m2:parameters(), { lr = 1e-2 })
    local x, y = torch.randn({ 64, 20 }), torch.randint(0, 5, { 64 })
    local l1, l2
    for _ = 1, 5 do
      torch.manual_seed(11)
      l1 = F.cross_entropy(m1(x), y)
      m1:zero_grad(); l1:backward(); o1:step()
      torch.manual_seed(11)
      l2 = F.cross_entropy(m2(x:to("cuda")), y:to("cuda"))
      m2:zero_grad(); l2:backward(); o2:step()
    end
    check_close("loss after 5 steps", l1, l2, 1e-4)
  end)
end)
