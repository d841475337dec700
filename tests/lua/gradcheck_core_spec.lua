-- gradcheck_core_spec.lua: every differentiable core op against central finite differences in float64.
local torch = require("ramtorch")
local testing = require("ramtorch.testing")
local gradcheck = testing.gradcheck

local function r(...) return torch.randn({ ... }, { dtype = torch.float64, requires_grad = true }) end
local function pos(...) return (torch.rand({ ... }, { dtype = torch.float64 }) + 0.5):requires_grad_() end

describe("gradcheck of core ops", function()
  before_each(function() torch.manual_seed(1234) end)

  it("broadcasting binary ops", function()
    gradcheck(function(a, b) return a + b end, { r(3, 4), r(4) })
    gradcheck(function(a, b) return a - b end, { r(3, 1), r(1, 4) })
    gradcheck(function(a, b) return a * b end, { r(2, 3, 4), r(3, 1) })
    gradcheck(function(a, b) return a / b end, { r(3, 4), pos(3, 4) })
    gradcheck(function(a, b) return a ^ b end, { pos(3, 4), r(3, 4) })
    gradcheck(function(a, b) return torch.maximum(a, b) end, { r(5), r(5) })
  end)

  it("scalar ops on both sides", function()
    gradcheck(function(a) return 3 - a * 2 end, { r(4) })
    gradcheck(function(a) return 2 / a end, { pos(4) })
    gradcheck(function(a) return a ^ 3 end, { r(4) })
    gradcheck(function(a) return 2 ^ a end, { r(4) })
  end)

  it("unary ops", function()
    for _, name in ipairs({ "neg", "exp", "tanh", "sigmoid", "silu", "sin", "cos", "square" }) do
      gradcheck(function(a) return a[name](a) end, { r(3, 4) })
    end
    for _, name in ipairs({ "log", "sqrt", "rsqrt", "reciprocal" }) do
      gradcheck(function(a) return a[name](a) end, { pos(3, 4) })
    end
    gradcheck(function(a) return a:gelu() end, { r(3, 4) })
    gradcheck(function(a) return a:gelu("tanh") end, { r(3, 4) })
  end)

  it("reductions", function()
    gradcheck(function(a) return a:sum() end, { r(3, 4) })
    gradcheck(function(a) return a:sum(1) end, { r(3, 4) })
    gradcheck(function(a) return a:mean({ 0, 2 }, true) end, { r(2, 3, 4) })
    gradcheck(function(a) return a:amax(1) end, { r(3, 4) })
    gradcheck(function(a) return a:amin() end, { r(3, 4) })
  end)

  it("matmul in every shape combination", function()
    gradcheck(function(a, b) return a:matmul(b) end, { r(3, 4), r(4, 5) })
    gradcheck(function(a, b) return a:matmul(b) end, { r(4), r(4, 5) })
    gradcheck(function(a, b) return a:matmul(b) end, { r(3, 4), r(4) })
    gradcheck(function(a, b) return a:matmul(b) end, { r(2, 3, 4), r(4, 5) })
    gradcheck(function(a, b) return a:matmul(b) end, { r(2, 1, 3, 4), r(3, 4, 2) })
    gradcheck(function(a, b) return a:matmul(b:t()) end, { r(3, 4), r(5, 4) })
  end)

  it("views", function()
    gradcheck(function(a) return a:view(4, 3) end, { r(3, 4) })
    gradcheck(function(a) return a:t():reshape(12) end, { r(3, 4) })
    gradcheck(function(a) return a:permute(2, 0, 1) end, { r(2, 3, 4) })
    gradcheck(function(a) return a:narrow(1, 1, 2) end, { r(3, 4) })
    gradcheck(function(a) return a:select(0, 1) end, { r(3, 4) })
    gradcheck(function(a) return a:expand(2, 3, 4) end, { r(3, 1) })
    gradcheck(function(a) return a:unsqueeze(1):squeeze() end, { r(3, 4) })
    gradcheck(function(a) return a:clone() end, { r(3) })
  end)

  it("clamp and where", function()
    gradcheck(function(a) return a:clamp(-0.5, 0.5) end, { r(10) })
    local cond = torch.tensor({ true, false, true, false })
    gradcheck(function(a, b) return torch.where(cond, a, b) end, { r(4), r(4) })
  end)
end)
