-- helpers_spec.lua: ramtorch.Linear (host-resident parameters, nn.Linear's arguments and results) and
-- helpers.replace_linear_with_ramtorch (in place, same names, shared storage, identical outputs).
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local helpers = require("ramtorch.helpers")
local testing = require("ramtorch.testing")

local Linear = torch.Linear

local function names_of(iter)
  local out = {}
  for name in iter do out[#out + 1] = name end
  return out
end

local Model = nn.Module:extend("Model")
function Model:__init()
  self.encoder = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 16))
  self.norm = nn.LayerNorm(16)
  self.blocks = nn.ModuleList({ nn.Sequential(nn.Linear(16, 16), nn.ReLU()) })
  self.head = nn.Linear(16, 4, { bias = false })
end
function Model:forward(x)
  x = self.norm(self.encoder(x))
  for _, b in ipairs(self.blocks) do x = b(x) end
  return self.head(x)
end

describe("ramtorch.Linear", function()
  it("takes nn.Linear's arguments, keeps its parameters in host memory, and is an nn.Linear", function()
    torch.manual_seed(1)
    local l = Linear(100, 20, { device = "cuda:0", dtype = torch.float32 })
    assert.is_true(l.is_ramtorch)
    assert.is_true(l:is_a(nn.Linear))
    assert.are.equal("cpu", l.weight.device)
    assert.are.equal("cpu", l.bias.device)
    assert.are.equal("cuda:0", l.device)
    assert.is_true(helpers.is_ramtorch_param(l.weight))
    assert.are.same({ 20, 100 }, l.weight.shape)
    assert.is_true(l.weight.requires_grad)
    local bound = 1 / math.sqrt(100)
    assert.is_true(l.weight:abs():max():item() <= bound and l.weight:abs():max():item() > 0.9 * bound)
    assert.is_true(l.bias:abs():max():item() <= bound)
    assert.are.equal("CPUBouncingLinear(in_features=100, out_features=20, bias=True)", tostring(l))
    assert.are.equal(require("ramtorch.linear").Linear, Linear)
  end)

  it("skip_init leaves zeros and bias=false drops the bias", function()
    local l = Linear(3, 2, { skip_init = true, bias = false })
    assert.are.equal(0, l.weight:abs():sum():item())
    assert.is_nil(l.bias)
    assert.are.same({ "weight" }, names_of(l:named_parameters()))
  end)

  it("computes like nn.Linear, gradients included", function()
    torch.manual_seed(2)
    local ref = nn.Linear(5, 3, { dtype = torch.float64 })
    local l = Linear(5, 3, { dtype = torch.float64 })
    l:load_state_dict(ref:state_dict())
    local x = torch.randn(4, 5, { dtype = torch.float64 })
    assert.are.same(ref(x):totable(), l(x):totable())
    l(x):sum():backward()
    ref(x):sum():backward()
    assert.are.same(ref.weight.grad:totable(), l.weight.grad:totable())
    testing.gradcheck(function(w, b, inp) return l:forward(inp) end, { l.weight, l.bias, x:requires_grad_(true) })
  end)

  it("model:to(device) leaves its parameters on the host and only records the compute device", function()
    local m = nn.Sequential(Linear(4, 4), nn.ReLU(), Linear(4, 2))
    local w = m[1].weight
    m:to("cuda:0")
    assert.are.equal("cpu", m[1].weight.device)
    assert.are.equal("cpu", m[3].bias.device)
    assert.are.equal(w, m[1].weight) -- untouched: same handle
    assert.are.equal("cuda:0", m[1].device)
    -- dtype conversions still apply to them (in host memory)
    m:to(torch.float64)
    assert.are.equal(torch.float64, m[1].weight.dtype)
    assert.are.equal("cpu", m[1].weight.device)
    assert.is_true(helpers.is_ramtorch_param(m[1].weight))
    assert.is_true(m[1].weight.requires_grad)
    assert.are.equal(torch.float64, m(torch.randn(2, 4, { dtype = torch.float64 })).dtype)
  end)

  it("refuses non-tensor inputs with a clear message", function()
    local l = Linear(2, 2)
    local ok, err = pcall(function() return l({ 1, 2 }) end)
    assert.is_false(ok)
    assert.matches("ramtorch.Linear: expected a Tensor input, got table", err)
    ok, err = pcall(Linear, 2.5, 2)
    assert.is_false(ok)
    assert.matches("expected a non%-negative integer in_features, got 2.5", err)
  end)
end)

describe("helpers.replace_linear_with_ramtorch", function()
  it("replaces every nn.Linear in place, keeping names, storage and outputs", function()
    torch.manual_seed(3)
    local m = Model()
    local x = torch.randn(5, 6)
    local before = m(x):totable()
    local names = names_of(m:named_parameters())
    local ptrs = {}
    for name, p in m:named_parameters() do ptrs[name] = tostring(p:data_ptr()) end
    local old_first = m.encoder[1]
    assert.are.equal(m, helpers.replace_linear_with_ramtorch(m, 0))
    -- every linear layer is now a ramtorch one, found where the old one was
    local count = 0
    for _, sub in ipairs(m:modules()) do
      if sub:is_a(nn.Linear) then
        assert.is_true(sub.is_ramtorch)
        count = count + 1
      end
    end
    assert.are.equal(4, count)
    assert.are_not.equal(old_first, m.encoder[1])
    assert.is_true(m.encoder[1].is_ramtorch)
    assert.is_true(m.blocks[1][1].is_ramtorch)
    assert.is_nil(m.head.bias)
    -- same names, same storage
    assert.are.same(names, names_of(m:named_parameters()))
    for name, p in m:named_parameters() do assert.are.equal(ptrs[name], tostring(p:data_ptr())) end
    assert.are.equal(old_first.weight, m.encoder[1].weight)
    -- identical results
    assert.are.same(before, m(x):totable())
    -- gradients reach the shared tensors
    m(x):sum():backward()
    assert.is_not_nil(old_first.weight.grad)
    assert.are.same(old_first.weight.grad:totable(), m.encoder[1].weight.grad:totable())
    -- the training flag is carried over
    assert.are.equal(old_first.training, m.encoder[1].training)
  end)

  it("is idempotent and converts a bare nn.Linear", function()
    local m = nn.Sequential(nn.Linear(2, 2))
    helpers.replace_linear_with_ramtorch(m, 1)
    local first = m[1]
    assert.are.equal("cuda:1", first.device)
    helpers.replace_linear_with_ramtorch(m, 1)
    assert.are.equal(first, m[1])
    local lin = nn.Linear(3, 3)
    local r = helpers.replace_linear_with_ramtorch(lin, 0)
    assert.is_true(r.is_ramtorch)
    assert.are.equal(lin.weight, r.weight)
  end)

  it("works with optimizers and state dicts after the swap", function()
    torch.manual_seed(4)
    local m = helpers.replace_linear_with_ramtorch(Model(), 0)
    local opt = torch.AdamW(m:parameters(), { lr = 1e-2 })
    local x, y = torch.randn(8, 6), torch.randint(0, 4, { 8 })
    local crit = nn.CrossEntropyLoss()
    local first
    for i = 1, 20 do
      opt:zero_grad()
      local loss = crit(m(x), y)
      if i == 1 then first = loss:item() end
      loss:backward()
      opt:step()
    end
    assert.is_true(crit(m(x), y):item() < first)
    local fresh = Model()
    fresh:load_state_dict(m:state_dict())
    assert.are.same(m(x):totable(), fresh(x):totable())
  end)

  it("checks its arguments", function()
    local ok, err = pcall(helpers.replace_linear_with_ramtorch, {}, 0)
    assert.is_false(ok)
    assert.matches("expected a Module, got table", err)
    ok, err = pcall(helpers.replace_linear_with_ramtorch, nn.Linear(1, 1), -1)
    assert.is_false(ok)
    assert.matches("rank must be a non%-negative integer, got %-1", err)
  end)
end)
