-- functional_semantics_regress_spec.lua: places where ramtorch's nn.functional and nn.Module API
-- differed from PyTorch 2.x, each failing on the code before its fix: softmax / log_softmax ignored
-- their dtype argument (a silently lower-precision result in the input's dtype); children() and
-- apply() visited a child registered under two names twice (PyTorch's named_children de-duplicates);
-- assigning a plain tensor to a registered parameter silently replaced it with a tensor that does
-- not require grad, and to a registered child module left the module registered and shadowed.
-- Expected values are computed here in plain Lua from PyTorch's definitions.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local F = nn.functional

local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok)
  return tostring(e)
end

describe("softmax / log_softmax dtype", function()
  -- values whose float32 softmax differs from the float64 one
  local X = { 1e-3, 2e-3, 0.1234567890123 }
  local function ref_softmax(i)
    local s = 0
    for k = 1, #X do s = s + math.exp(X[k]) end
    return math.exp(X[i]) / s
  end

  it("casts the input to dtype first (positional and options table)", function()
    local x = torch.tensor(X, { dtype = torch.float32 })
    for _, y in ipairs({ F.softmax(x, 0, torch.float64), F.softmax(x, { dim = 0, dtype = torch.float64 }),
                         torch.softmax(x, -1, torch.float64), x:softmax(0, torch.float64) }) do
      assert.are.equal(torch.float64, y.dtype)
      -- the float32 input values, widened: matches float64 math on them to 1e-15
      local xs = {}
      for i = 1, #X do xs[i] = x[i]:item() end
      local s = 0
      for k = 1, #xs do s = s + math.exp(xs[k]) end
      for i = 1, #xs do assert.is_true(math.abs(y[i]:item() - math.exp(xs[i]) / s) < 1e-15) end
    end
    local l = F.log_softmax(x, { dim = 0, dtype = torch.float64 })
    assert.are.equal(torch.float64, l.dtype)
    assert.is_true(math.abs(l[3]:item() - math.log(ref_softmax(3))) < 1e-6)
    assert.are.equal(torch.float64, x:log_softmax(-1, "float64").dtype)
  end)

  it("keeps autograd through the cast", function()
    local x = torch.tensor(X, { dtype = torch.float32, requires_grad = true })
    F.log_softmax(x, 0, torch.float64)[1]:backward()
    assert.are.equal(torch.float32, x.grad.dtype)
    -- d log_softmax_0 / d x_j = [j == 0] - softmax_j
    assert.is_true(math.abs(x.grad[1]:item() - (1 - ref_softmax(1))) < 1e-6)
    assert.is_true(math.abs(x.grad[2]:item() + ref_softmax(2)) < 1e-6)
  end)

  it("refuses unknown option keys and bad dtypes", function()
    local x = torch.ones({ 2 })
    assert.matches("softmax: unknown option 'dtyp'", err_of(F.softmax, x, { dim = 0, dtyp = torch.float64 }))
    assert.matches("log_softmax: unknown option 'keepdim'", err_of(F.log_softmax, x, { dim = 0, keepdim = true }))
    assert.matches("softmax: expected a dtype", err_of(F.softmax, x, 0, "floaty"))
  end)
end)

describe("Module children / apply with a child under two names", function()
  local Net = nn.Module:extend("SharedChildNet")
  function Net:__init(shared)
    self.a = shared
    self.b = shared
    self.c = nn.Linear(2, 1)
  end

  it("children() and named_children() list it once, under its first name", function()
    local shared = nn.Linear(2, 2)
    local n = Net(shared)
    local kids = n:children()
    assert.are.equal(2, #kids)
    assert.are.equal(shared, kids[1])
    local names = {}
    for name in n:named_children() do names[#names + 1] = name end
    assert.are.same({ "a", "c" }, names)
  end)

  it("apply() calls fn once per module", function()
    local shared = nn.Linear(2, 2)
    local n = Net(shared)
    local count = 0
    n:apply(function(m) if m == shared then count = count + 1 end end)
    assert.are.equal(1, count)
    -- state_dict still lists every path, as PyTorch
    local sd = n:state_dict()
    assert.is_not_nil(sd["a.weight"])
    assert.is_not_nil(sd["b.weight"])
  end)

  it("ModuleDict values() / items() and Sequential's forward still see every entry", function()
    local shared = nn.Linear(2, 2)
    local md = nn.ModuleDict({ { "x", shared }, { "y", shared } })
    assert.are.equal(2, #md:values())
    local keys = {}
    for k, m in md:items() do
      keys[#keys + 1] = k
      assert.are.equal(shared, m)
    end
    assert.are.same({ "x", "y" }, keys)
    assert.are.equal(1, #md:children())
    local calls = 0
    local Count = nn.Module:extend("Count")
    function Count:forward(x) calls = calls + 1 return x end
    local c = Count()
    nn.Sequential(c, c)(torch.ones({ 1 }))
    assert.are.equal(2, calls)
  end)
end)

describe("assigning a plain tensor to a registered name", function()
  it("refuses a tensor that is not a parameter for a parameter name", function()
    local l = nn.Linear(2, 2)
    local w = l.weight
    local e = err_of(function() l.weight = torch.zeros({ 2, 2 }) end)
    assert.matches("cannot assign a Tensor that is not a parameter as parameter 'weight' of Linear", e)
    assert.are.equal(w, l.weight)
    assert.is_true(l.weight.requires_grad)
    -- parameters (frozen ones too) and nil are still accepted
    l.weight = nn.Parameter(torch.zeros({ 2, 2 }), false)
    assert.are.equal(0, l.weight:abs():sum():item())
    l.bias = nil
    assert.are.equal(1, #l:parameters())
  end)

  it("refuses a plain tensor for a child module name", function()
    local s = nn.Sequential(nn.Linear(2, 2))
    local m = nn.Module:extend("Holder")()
    m.fc = s
    local e = err_of(function() m.fc = torch.zeros({ 2 }) end)
    assert.matches("cannot assign a Tensor as child module 'fc' of Holder", e)
    assert.are.equal(s, m.fc)
    assert.are.equal(2, #m:parameters())
  end)
end)
