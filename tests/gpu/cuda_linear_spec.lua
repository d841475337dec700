-- tests/gpu/cuda_linear_spec.lua: F.linear with a bias on CUDA, where the bias is added in the
-- cuBLASLt GEMM's epilogue (rt_backend.gemm_bias, CUBLASLT_EPILOGUE_BIAS; runtime/ops_matmul.c's
-- rt_linear) against the CPU's matmul + add, forward and backward (input, weight and bias
-- gradients) in float32, bfloat16 and float16; and the shapes where the epilogue does not apply
-- (1-d input, a strided or misaligned bias, float64), which take matmul + add and must agree as
-- well. The grad_fn name says which path ran: AddmmBackward (fused; a reshape's when batch dims
-- were folded) or AddBackward (matmul + add). Run with RAMTORCH_CUDA_POISON=1 (ctest sets it).
-- Label gpu: FAILS without a CUDA device.
local torch = require("ramtorch")
local F = require("ramtorch.functional")

-- f32: a k-long dot product through cuBLASLt (no TF32 here) against the CPU's; bf16 / f16: the
-- epilogue rounds once (x w^T + b), the CPU twice (x w^T, then + b)
local TOL = { float32 = 1e-5, bfloat16 = 1e-2, float16 = 3e-3, float64 = 1e-12 }

local function rel_err(ref, got)
  ref = ref:to("cpu"):to(torch.float64)
  got = got:to("cpu"):to(torch.float64)
  assert.are.same(ref.shape, got.shape)
  if ref:numel() == 0 then return 0 end
  local nans = torch.ne(got, got):sum():item() + torch.ne(ref, ref):sum():item()
  if nans > 0 then return math.huge end
  local scale = math.max(ref:abs():max():item(), 1e-6)
  return (ref - got):abs():max():item() / scale
end

local function check_close(what, ref, got, tol)
  local e = rel_err(ref, got)
  if not (e <= tol) then error(("%s: relative error %.3g > %.3g"):format(what, e, tol), 2) end
end

local function rand(shape, dtype)
  return (torch.rand(shape) * 2 - 1):to(dtype)
end

-- x, w, b on the CPU (b may be a view: make_b(dtype) returns it); the same values on CUDA
-- (make_b again on the device copy so a strided / offset bias stays strided / offset there)
local function check_linear(what, xshape, n, dtype, make_b, want_fn)
  local k = xshape[#xshape]
  local x0, w0 = rand(xshape, dtype), rand({ n, k }, dtype)
  local bbase = rand({ 2 * n + 1 }, dtype)
  local tol = TOL[dtype.name]
  local xc, wc = x0:clone():requires_grad_(true), w0:clone():requires_grad_(true)
  local xg, wg = x0:to("cuda"):requires_grad_(true), w0:to("cuda"):requires_grad_(true)
  local bcb, bgb = bbase:clone():requires_grad_(true), bbase:to("cuda"):requires_grad_(true)
  local bc, bg = make_b(bcb, n), make_b(bgb, n)
  local yc, yg = F.linear(xc, wc, bc), F.linear(xg, wg, bg)
  if want_fn then assert.are.equal(want_fn, yg.grad_fn, what .. ": grad_fn") end
  check_close(what .. " forward", yc, yg, tol)
  local up = rand(yc.shape, dtype)
  ;(yc * up):sum():backward()
  ;(yg * up:to("cuda")):sum():backward()
  check_close(what .. " grad x", xc.grad, xg.grad, tol * 4)
  check_close(what .. " grad w", wc.grad, wg.grad, tol * 4)
  check_close(what .. " grad b", bcb.grad, bgb.grad, tol * 4)
end

local function contiguous_b(base, n) return base:narrow(0, 0, n) end
local function strided_b(base, n) return base:narrow(0, 0, 2 * n):view({ n, 2 }):select(1, 0) end
local function offset_b(base, n) return base:narrow(0, 1, n) end -- 1 element past 16-byte alignment

describe("cuda linear with the bias epilogue", function()
  it("has a device (this spec fails on machines without one)", function()
    assert.is_true(torch.cuda.is_available(), "no CUDA device: run the gpu label on the GPU machine")
  end)

  for _, dt in ipairs({ torch.float32, torch.bfloat16, torch.float16 }) do
    describe(dt.name, function()
      it("fuses the bias for 2-d and batched inputs, forward and backward", function()
        check_linear("2-d 64x96 -> 48", { 64, 96 }, 48, dt, contiguous_b, "AddmmBackward")
        check_linear("2-d 1x256 -> 1024", { 1, 256 }, 1024, dt, contiguous_b, "AddmmBackward")
        -- batch dims folded into the GEMM's rows (the result is a view of the 2-d product)
        check_linear("3-d 4x16x32 -> 40", { 4, 16, 32 }, 40, dt, contiguous_b, "ViewBackward")
        check_linear("4-d 2x3x5x64 -> 24", { 2, 3, 5, 64 }, 24, dt, contiguous_b, nil)
        -- sizes that are not multiples of 8 (cuBLASLt may have no epilogue algorithm: then the
        -- old path, which must agree just the same)
        check_linear("2-d 33x7 -> 5", { 33, 7 }, 5, dt, contiguous_b, nil)
      end)

      it("takes matmul + add where the epilogue does not apply", function()
        check_linear("1-d input", { 96 }, 48, dt, contiguous_b, "AddBackward")
        check_linear("strided bias", { 64, 96 }, 48, dt, strided_b, "AddBackward")
        check_linear("misaligned bias", { 64, 96 }, 48, dt, offset_b, "AddBackward")
      end)

      it("matches the CPU without grad mode and with a non-contiguous input", function()
        local x0, w0, b0 = rand({ 96, 64 }, dt), rand({ 32, 96 }, dt), rand({ 32 }, dt)
        local xt = x0:transpose(0, 1) -- (64, 96), unit stride along rows: folded without a copy
        local yc = F.linear(xt, w0, b0)
        local yg
        torch.no_grad(function() yg = F.linear(xt:to("cuda"), w0:to("cuda"), b0:to("cuda")) end)
        check_close("transposed input", yc, yg, TOL[dt.name])
        -- a transposed input on the device: the view itself goes to GEMM
        local xdev = x0:to("cuda"):transpose(0, 1)
        check_close("transposed device input", yc, F.linear(xdev, w0:to("cuda"), b0:to("cuda")), TOL[dt.name])
      end)
    end)
  end

  it("float64 keeps matmul + add", function()
    check_linear("float64", { 16, 24 }, 8, torch.float64, contiguous_b, "AddBackward")
  end)
end)
