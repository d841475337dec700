-- core_print_spec.lua: tostring(tensor) against the exact strings PyTorch 2.x prints (torch/_tensor_str.py):
-- integer-valued floats as "1.", 4 decimals, scientific mode, nan/inf/-0, summarisation with "...", line
-- wrapping at 80 columns, and the suffixes (dtype=, size=, requires_grad=True, grad_fn=<XBackward0>).
local torch = require("ramtorch")

local function f32(t) return torch.tensor(t, { dtype = torch.float32 }) end
local nan, inf = 0 / 0, math.huge

describe("tostring like PyTorch", function()
  it("fixed-point floats", function()
    assert.are.equal("tensor([0.5000, 1.2500])", tostring(f32({ 0.5, 1.25 })))
    assert.are.equal("tensor([ 0.1000, -2.5000])", tostring(f32({ 0.1, -2.5 })))
    assert.are.equal("tensor([[  1.5000,  -2.0000],\n        [100.0000,   0.2500]])",
                     tostring(f32({ { 1.5, -2 }, { 100, 0.25 } })))
    assert.are.equal("tensor(0.1000)", tostring(f32(0.1)))
  end)

  it("integer-valued floats end in a dot", function()
    assert.are.equal("tensor([[1., 2.],\n        [3., 4.]])", tostring(f32({ { 1, 2 }, { 3, 4 } })))
    assert.are.equal("tensor([0., 0., 0.])", tostring(torch.zeros(3)))
    assert.are.equal("tensor([-0., 1.])", tostring(f32({ -0.0, 1 })))
    assert.are.equal("tensor(-0.)", tostring(f32(-0.0)))
    assert.are.equal("tensor([-3.,  2.])", tostring(f32({ -3, 2 })))
  end)

  it("switches to scientific notation like _Formatter", function()
    assert.are.equal("tensor([1.0000e+00, 1.0000e+04])", tostring(f32({ 1, 10000 })))    -- int mode, ratio
    assert.are.equal("tensor([1.0000e+09])", tostring(f32({ 1e9 })))                      -- int mode, > 1e8
    assert.are.equal("tensor([1.2346e+08])", tostring(f32({ 123456789 })))
    assert.are.equal("tensor([1.0000e-05, 1.0000e+00])", tostring(f32({ 1e-5, 1 })))      -- min < 1e-4
    assert.are.equal("tensor([1.2000e-04, 5.0000e-01])", tostring(f32({ 0.00012, 0.5 }))) -- ratio > 1000
    assert.are.equal("tensor([-1.0000e-05,  1.0000e+00])", tostring(f32({ -1e-5, 1 })))
    assert.are.equal("tensor([   1., 1000.])", tostring(f32({ 1, 1000 })))                   -- ratio exactly 1000
  end)

  it("nan, inf and zeros do not widen the columns", function()
    assert.are.equal("tensor([nan, 1.])", tostring(f32({ nan, 1 })))
    assert.are.equal("tensor([inf, -inf, nan])", tostring(f32({ inf, -inf, nan })))
    assert.are.equal("tensor([0., nan])", tostring(f32({ 0, nan })))
    assert.are.equal("tensor([   inf, 1.5000])", tostring(f32({ inf, 1.5 })))
    assert.are.equal("tensor([0.0000, 1.5000])", tostring(f32({ 0, 1.5 })))
  end)

  it("integers and booleans", function()
    assert.are.equal("tensor([1, 2, 3])", tostring(torch.tensor({ 1, 2, 3 })))
    assert.are.equal("tensor([  1, -20, 300], dtype=torch.int32)", tostring(torch.tensor({ 1, -20, 300 }, { dtype = torch.int32 })))
    assert.are.equal("tensor([ True, False])", tostring(torch.tensor({ true, false })))
    assert.are.equal("tensor(3)", tostring(torch.tensor(3)))
    assert.are.equal("tensor([0, 1], dtype=torch.uint8)", tostring(torch.tensor({ 0, 1 }, { dtype = torch.uint8 })))
    assert.are.equal("tensor([[[0, 1],\n         [2, 3]],\n\n        [[4, 5],\n         [6, 7]]])",
                     tostring(torch.arange(8):view(2, 2, 2)))
  end)

  it("dtype suffixes and the default dtype", function()
    assert.are.equal("tensor(2., dtype=torch.float64)", tostring(torch.tensor(2, { dtype = torch.float64 })))
    assert.are.equal("tensor([1.5000, 2.0000], dtype=torch.bfloat16)", tostring(torch.tensor({ 1.5, 2 }, { dtype = torch.bfloat16 })))
    assert.are.equal("tensor([1.5000, 2.0000], dtype=torch.float16)", tostring(torch.tensor({ 1.5, 2 }, { dtype = torch.float16 })))
    torch.set_default_dtype(torch.float64)
    local ok, err = pcall(function()
      assert.are.equal("tensor([1.5000])", tostring(torch.tensor({ 1.5 })))
      assert.are.equal("tensor([1.5000], dtype=torch.float32)", tostring(torch.tensor({ 1.5 }, { dtype = torch.float32 })))
    end)
    torch.set_default_dtype(torch.float32)
    assert(ok, err)
  end)

  it("empty tensors", function()
    assert.are.equal("tensor([])", tostring(torch.zeros(0)))
    assert.are.equal("tensor([], dtype=torch.int64)", tostring(torch.zeros(0, { dtype = torch.int64 })))
    assert.are.equal("tensor([], size=(2, 0))", tostring(torch.zeros(2, 0)))
    assert.are.equal("tensor([], size=(0, 3), dtype=torch.bool)", tostring(torch.zeros(0, 3, { dtype = torch.bool })))
  end)

  it("wraps rows at 80 columns", function()
    assert.are.equal(
      "tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.,\n" ..
      "        14., 15., 16., 17., 18., 19., 20., 21., 22., 23., 24., 25., 26., 27.,\n" ..
      "        28., 29.])", tostring(torch.arange(30):float()))
    local row = "1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1.,"
    local rest = "1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1."
    assert.are.equal("tensor([[" .. row .. "\n         " .. rest .. "],\n        [" .. row .. "\n         " .. rest .. "]])",
                     tostring(torch.ones(2, 30)))
  end)

  it("moves a suffix that would pass 80 columns to its own line", function()
    assert.are.equal(
      "tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.],\n" ..
      "       dtype=torch.float64)", tostring(torch.arange(14):double()))
    assert.are.equal("tensor([0., 1., 2.], dtype=torch.float64)", tostring(torch.arange(3):double()))
  end)

  it("summarises above 1000 elements with 3 edge items", function()
    assert.are.equal("tensor([   0,    1,    2,  ..., 1997, 1998, 1999])", tostring(torch.arange(2000)))
    assert.are.equal("tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n" ..
                     "        1.9990e+03])", tostring(torch.arange(2000):float()))
    assert.are.equal("tensor([[   0,    1,    2],\n        [   3,    4,    5],\n        [   6,    7,    8],\n" ..
                     "        ...,\n        [1191, 1192, 1193],\n        [1194, 1195, 1196],\n        [1197, 1198, 1199]])",
                     tostring(torch.arange(1200):view(400, 3)))
    assert.are.equal("tensor([[   0,    1,    2,  ...,   47,   48,   49],\n" ..
                     "        [  50,   51,   52,  ...,   97,   98,   99],\n" ..
                     "        [ 100,  101,  102,  ...,  147,  148,  149],\n" ..
                     "        ...,\n" ..
                     "        [1850, 1851, 1852,  ..., 1897, 1898, 1899],\n" ..
                     "        [1900, 1901, 1902,  ..., 1947, 1948, 1949],\n" ..
                     "        [1950, 1951, 1952,  ..., 1997, 1998, 1999]])",
                     tostring(torch.arange(2000):view(40, 50)))
    -- the formatter only sees the printed edges: a hidden huge value does not force sci mode
    local x = torch.zeros(2000)
    x[1001] = 1e10
    assert.are.equal("tensor([0., 0., 0.,  ..., 0., 0., 0.])", tostring(x))
    -- exactly 1000 elements are not summarised
    assert.is_nil(tostring(torch.zeros(1000)):find("...", 1, true))
  end)

  it("autograd suffixes", function()
    local x = torch.ones(2, { requires_grad = true })
    assert.are.equal("tensor([1., 1.], requires_grad=True)", tostring(x))
    assert.are.equal("tensor([2., 2.], grad_fn=<MulBackward0>)", tostring(x * 2))
    assert.are.equal("tensor([2., 2.], grad_fn=<AddBackward0>)", tostring(x + x))
    assert.are.equal("tensor(2., grad_fn=<SumBackward0>)", tostring(x:sum()))
    assert.are.equal("tensor(1., grad_fn=<MeanBackward0>)", tostring(x:mean()))
    assert.are.equal("tensor([2.7183, 2.7183], grad_fn=<ExpBackward0>)", tostring(x:exp()))
    assert.are.equal("tensor([1., 1.], grad_fn=<PowBackward0>)", tostring(x ^ 2))
    assert.are.equal("tensor([1., 1.], grad_fn=<RsubBackward1>)", tostring(2 - x))
    assert.are.equal("tensor([0., 0.], grad_fn=<SubBackward0>)", tostring(x - 1))
    assert.are.equal("tensor([0.5000, 0.5000], grad_fn=<DivBackward0>)", tostring(x / 2))
    assert.are.equal("tensor([[1., 1.]], grad_fn=<UnsqueezeBackward0>)", tostring(x:unsqueeze(0)))
    assert.are.equal("tensor(1., grad_fn=<SelectBackward0>)", tostring(x[1]))
    assert.are.equal("tensor([1., 1.], grad_fn=<ReluBackward0>)", tostring(x:relu()))
    assert.are.equal("tensor([1., 1.], dtype=torch.float64, grad_fn=<ToCopyBackward0>)", tostring(x:double()))
    local m = torch.ones(2, 2, { requires_grad = true })
    assert.are.equal("tensor([2., 2.], grad_fn=<SumBackward1>)", tostring(m:sum(0)))
    assert.are.equal("tensor([1., 1., 1., 1.], grad_fn=<ViewBackward0>)", tostring(m:view(4)))
    assert.are.equal("tensor([[1., 1.],\n        [1., 1.]], grad_fn=<TransposeBackward0>)", tostring(m:transpose(0, 1)))
    assert.are.equal("tensor(1., grad_fn=<MaxBackward1>)", tostring(m:max()))
    assert.are.equal("tensor([1., 1.])", tostring(x:detach()))
    assert.are.equal("tensor([2., 2.])", tostring(torch.no_grad(function() return x * 2 end)))
  end)
end)
