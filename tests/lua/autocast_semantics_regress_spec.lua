-- autocast_semantics_regress_spec.lua: regressions found by an audit of ramtorch.amp.autocast against
-- PyTorch 2.x's torch.autocast (CUDA lists, which ramtorch applies on both device types): ops that
-- PyTorch reaches through a listed op (square is pow(x, 2); number / tensor is reciprocal(x) * number),
-- float64 inputs of a streamed ramtorch.Linear (PyTorch never casts float64), and the per-region cast
-- cache serving a parameter's old values after an in-place change inside the region.
local torch = require("ramtorch")
local F = require("ramtorch.functional")
local testing = require("ramtorch.testing")
local amp = require("ramtorch.amp")
local offload = require("ramtorch.offload")

local f32, bf16, f16, f64 = torch.float32, torch.bfloat16, torch.float16, torch.float64

describe("autocast: ops PyTorch routes through its float32 list", function()
  before_each(function() torch.manual_seed(11) end)

  it("square runs in float32 (PyTorch's square is pow(x, 2))", function()
    for _, reg in ipairs({ "bf16", "f16" }) do
      local x = torch.randn({ 3, 5 }, { dtype = reg == "bf16" and bf16 or f16 })
      local y, z = amp.autocast(reg, function() return x:square(), torch.square(x) end)
      assert.are.equal(f32, y.dtype)
      assert.are.equal(f32, z.dtype)
      testing.assert_close(y, x:float():square(), 0, 0, "square under " .. reg)
      -- float64 and integers are left alone, and nothing leaks out of the region
      local d = torch.randn({ 4 }, { dtype = f64 })
      assert.are.equal(f64, amp.autocast(reg, function() return d:square() end).dtype)
      local i = torch.tensor({ 1, 2, 3 }, { dtype = torch.int64 })
      assert.are.equal(torch.int64, amp.autocast(reg, function() return i:square() end).dtype)
      assert.are.equal(x.dtype, x:square().dtype)
    end
  end)

  it("number / tensor runs in float32 (PyTorch's __rtruediv__ is reciprocal(x) * number)", function()
    local x = torch.rand({ 4, 3 }, { dtype = bf16 }) + 0.5
    local y = amp.autocast("bf16", function() return 1 / x end)
    assert.are.equal(f32, y.dtype)
    testing.assert_close(y, 1 / x:float(), 1e-6, 1e-7, "1 / x under autocast")
    local w = amp.autocast("f16", function() return 3 / x:half() end)
    assert.are.equal(f32, w.dtype)
    -- tensor / number and tensor / tensor are on no list: they keep the input dtype
    amp.autocast("bf16", function()
      assert.are.equal(bf16, (x / 2).dtype)
      assert.are.equal(bf16, (x / x).dtype)
      assert.are.equal(f64, (1 / x:double()).dtype)
    end)
    assert.are.equal(bf16, (1 / x).dtype)
  end)
end)

describe("autocast: streamed ramtorch.Linear and float64", function()
  it("leaves float64 alone: an f64 layer computes in f64, an f64 input is not silently lowered", function()
    offload.enable_cpu_streams(true)
    local ok, err = pcall(function()
      torch.manual_seed(12)
      local x = torch.randn({ 2, 4 }, { dtype = f64 })
      local l64 = torch.Linear(4, 3, { dtype = f64 })
      local ref = l64(x)
      local y = amp.autocast("bf16", function() return l64(x) end)
      assert.are.equal(f64, y.dtype)
      testing.assert_close(y, ref, 0, 0, "f64 streamed linear under autocast")
      -- an f32 layer fed float64: PyTorch casts only the weight and then refuses the mixed dtypes
      local l32 = torch.Linear(4, 3)
      local ok2, err2 = pcall(amp.autocast, "bf16", function() return l32(x) end)
      assert.is_false(ok2)
      assert.truthy(tostring(err2):find("expected the input and the weight of one dtype, got float64 and float32", 1, true))
      -- float32 inputs are still lowered
      assert.are.equal(bf16, amp.autocast("bf16", function() return l32(x:float()) end).dtype)
    end)
    offload.enable_cpu_streams(false)
    if not ok then error(err, 0) end
  end)
end)

describe("autocast: the per-region cast cache", function()
  it("does not serve a parameter's old values after an in-place change in the same region", function()
    torch.manual_seed(13)
    local w = torch.randn({ 3, 4 })
    w.requires_grad = true
    local x = torch.randn({ 2, 4 })
    amp.autocast("bf16", function()
      local y1 = F.linear(x, w)
      testing.assert_close(y1, F.linear(x:to(bf16), w:detach():to(bf16)), 0, 0, "first forward")
      torch.no_grad(function() w:mul_(-2) end)
      local y2 = F.linear(x, w)
      testing.assert_close(y2, F.linear(x:to(bf16), w:detach():to(bf16)), 0, 0, "forward after w:mul_(-2)")
      -- the same under no_grad (an evaluation inside a long region)
      local e1 = torch.no_grad(function() return F.linear(x, w) end)
      torch.no_grad(function() w:add_(1) end)
      local e2 = torch.no_grad(function() return F.linear(x, w) end)
      testing.assert_close(e2, F.linear(x:to(bf16), w:detach():to(bf16)), 0, 0, "no_grad forward after w:add_(1)")
      assert.is_false(testing.close(e1, e2, 0, 0))
      -- unchanged parameters are still cast once
      local before = require("ramtorch.autocast").cache_hits()
      F.linear(x, w)
      F.linear(x, w)
      assert.are.equal(before + 1, require("ramtorch.autocast").cache_hits())
      -- and the gradient still reaches the float32 master
      F.linear(x, w):float():sum():backward()
      assert.are.equal(f32, w.grad.dtype)
    end)
  end)
end)
