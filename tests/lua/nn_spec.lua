-- nn_spec.lua: nn.Module and the layers: registration and PyTorch-style names, traversal, state dicts
-- (round trip and the strict error), train/eval, to(), printing, containers, Linear's initialisation,
-- the layer forwards against hand computations, nn.init and nn.utils.clip_grad_norm_.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local testing = require("ramtorch.testing")

local function names_of(iter)
  local out = {}
  for name in iter do out[#out + 1] = name end
  return out
end

local function shape_of(t) return table.concat(t.shape, "x") end

-- The model used by several tests: own parameter, buffer, nested Sequential, another child.
local Net = nn.Module:extend("Net")
function Net:__init(hidden)
  self.scale = nn.Parameter(torch.ones(1))
  self:register_buffer("steps", torch.zeros(1, { dtype = torch.int64 }))
  self.layers = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))
  self.head = nn.Linear(3, 2, { bias = false })
end
function Net:forward(x) return self.head(self.layers(x)) * self.scale end

describe("nn.Module", function()
  it("registers parameters, buffers and children by name in insertion order", function()
    local m = Net(8)
    assert.are.same({ "scale", "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias", "head.weight" },
                    names_of(m:named_parameters()))
    assert.are.same({ "steps" }, names_of(m:named_buffers()))
    assert.are.same({ "layers", "head" }, names_of(m:named_children()))
    assert.are.same({ "", "layers", "layers.0", "layers.1", "layers.2", "head" }, names_of(m:named_modules()))
    assert.are.equal(6, #m:parameters())
    assert.are.equal(2, #m:children())
    assert.are.equal(6, #m:modules())
    assert.are.equal("8x4", shape_of(m.layers[1].weight))
    assert.is_nil(m.head.bias)
    -- the handle read back is the registered one
    assert.are.equal(m:parameters()[2], m.layers[1].weight)
    assert.is_true(m.scale.requires_grad)
    assert.is_true(nn.is_parameter(m.scale))
  end)

  it("lists a shared parameter once, and get_submodule / get_parameter find things by path", function()
    local a = nn.Linear(3, 3)
    local m = nn.Sequential(a, nn.ReLU(), a)
    assert.are.equal(2, #m:parameters())
    -- the state dict, like PyTorch's, names it under both paths
    assert.are.same({ "0.weight", "0.bias", "2.weight", "2.bias" }, nn.utils.state_dict_keys(m:state_dict()))
    m:load_state_dict(m:state_dict())
    assert.are.equal(a, m:get_submodule("2"))
    local n = Net(5)
    assert.are.equal(n.layers[3].bias, n:get_parameter("layers.2.bias"))
    local ok, err = pcall(n.get_submodule, n, "layers.7")
    assert.is_false(ok)
    assert.matches("has no submodule '7'", err)
  end)

  it("re-assigning or clearing a name updates the registry", function()
    local m = Net(4)
    m.head = nn.Linear(3, 5)
    assert.are.equal("5x3", shape_of(m.head.weight))
    m.head = nil
    assert.are.same({ "layers" }, names_of(m:named_children()))
    m.extra = torch.zeros(2) -- a plain tensor is a plain attribute, not a parameter
    assert.are.equal(5, #m:parameters())
    m.w2 = torch.zeros(2):requires_grad_(true) -- a leaf that requires grad is a parameter
    assert.are.equal(6, #m:parameters())
    m.steps = torch.ones(1, { dtype = torch.int64 }) -- a registered buffer stays a buffer
    assert.are.same({ "steps" }, names_of(m:named_buffers()))
    assert.are.equal(1, m.steps:item())
    local ok0, err0 = pcall(nn.Parameter, torch.zeros(2, { dtype = torch.int64 }))
    assert.is_false(ok0)
    assert.matches("only floating%-point tensors can require gradients", err0)
    local ok, err = pcall(function() m.scale = 3 end)
    assert.is_false(ok)
    assert.matches("cannot assign a number to 'scale' of Net: it is a registered parameter", err)
  end)

  it("calls forward when called, and says so when forward is missing", function()
    torch.manual_seed(0)
    local m = Net(6)
    local x = torch.randn(5, 4)
    local y = m(x)
    assert.are.equal("5x2", shape_of(y))
    local Bare = nn.Module:extend("Bare")
    local ok, err = pcall(function() return Bare()(x) end)
    assert.is_false(ok)
    assert.matches("Bare: forward is not implemented", err)
  end)

  it("subclasses chain constructors through super", function()
    local Wide = nn.Linear:extend("Wide")
    function Wide:__init(n) Wide.super.__init(self, n, 2 * n) self.tag = "wide" end
    local w = Wide(3)
    assert.are.equal("6x3", shape_of(w.weight))
    assert.is_true(w:is_a(nn.Linear))
    assert.is_true(w:is_a(nn.Module))
    assert.are.equal("Wide(in_features=3, out_features=6, bias=True)", tostring(w))
  end)

  it("prints the module tree like PyTorch", function()
    local m = Net(8)
    assert.are.equal(table.concat({
      "Net(",
      "  (layers): Sequential(",
      "    (0): Linear(in_features=4, out_features=8, bias=True)",
      "    (1): ReLU()",
      "    (2): Linear(in_features=8, out_features=3, bias=True)",
      "  )",
      "  (head): Linear(in_features=3, out_features=2, bias=False)",
      ")" }, "\n"), tostring(m))
    assert.are.equal("LayerNorm((5,), eps=1e-05, elementwise_affine=True)", tostring(nn.LayerNorm(5)))
    assert.are.equal("Dropout(p=0.1, inplace=False)", tostring(nn.Dropout(0.1)))
    assert.are.equal("GELU(approximate='tanh')", tostring(nn.GELU("tanh")))
    assert.are.equal("Embedding(10, 3)", tostring(nn.Embedding(10, 3)))
    assert.are.equal("Softmax(dim=-1)", tostring(nn.Softmax(-1)))
    assert.are.equal("Flatten(start_dim=1, end_dim=-1)", tostring(nn.Flatten()))
  end)

  it("propagates train/eval to every descendant", function()
    local m = Net(4)
    assert.is_true(m.training and m.layers.training and m.layers[2].training)
    assert.are.equal(m, m:eval())
    for _, sub in ipairs(m:modules()) do assert.is_false(sub.training) end
    m.layers:train()
    assert.is_false(m.training)
    assert.is_true(m.layers[3].training)
    m:train()
    for _, sub in ipairs(m:modules()) do assert.is_true(sub.training) end
  end)

  it("applies a function to children first, then self", function()
    local m = Net(4)
    local order = {}
    m:apply(function(sub) order[#order + 1] = sub:_get_name() end)
    assert.are.same({ "Linear", "ReLU", "Linear", "Sequential", "Linear", "Net" }, order)
  end)

  it("zero_grad drops gradients by default and zeroes them with false", function()
    torch.manual_seed(1)
    local m = Net(4)
    m(torch.randn(2, 4)):sum():backward()
    assert.is_not_nil(m.head.weight.grad)
    m:zero_grad(false)
    assert.are.equal(0, m.head.weight.grad:abs():sum():item())
    m:zero_grad()
    for _, p in ipairs(m:parameters()) do assert.is_nil(p.grad) end
  end)

  it("requires_grad_ switches every parameter", function()
    local m = Net(4)
    m:requires_grad_(false)
    for _, p in ipairs(m:parameters()) do assert.is_false(p.requires_grad) end
    m:requires_grad_()
    for _, p in ipairs(m:parameters()) do assert.is_true(p.requires_grad) end
  end)

  it("to(dtype) converts floating parameters and buffers, keeps integer buffers and requires_grad", function()
    local m = Net(4)
    m:register_buffer("ratio", torch.ones(2))
    assert.are.equal(m, m:to(torch.float64))
    for _, p in ipairs(m:parameters()) do
      assert.are.equal(torch.float64, p.dtype)
      assert.is_true(p.requires_grad)
      assert.is_true(p.is_leaf)
    end
    assert.are.equal(torch.int64, m.steps.dtype)
    assert.are.equal(torch.float64, m.ratio.dtype)
    assert.are.equal(torch.float64, m(torch.randn(2, 4, { dtype = torch.float64 })).dtype)
    -- shared parameters stay shared
    local a = nn.Linear(2, 2)
    local s = nn.Sequential(a, a):double()
    assert.are.equal(s[1].weight, s[2].weight)
    assert.are.equal(2, #s:parameters())
    -- tied weights in two different modules stay tied too
    local l1, l2 = nn.Linear(2, 2), nn.Linear(2, 2)
    l2.weight = l1.weight
    local tied = nn.Sequential(l1, l2):double()
    assert.are.equal(tied[1].weight:data_ptr(), tied[2].weight:data_ptr())
    assert.are.equal(torch.float64, tied[2].weight.dtype)
    assert.are.equal(3, #tied:parameters())
    local ok, err = pcall(m.to, m, torch.int64)
    assert.is_false(ok)
    assert.matches("only accepts floating point dtypes", err)
    ok, err = pcall(m.to, m, "tpu")
    assert.is_false(ok)
    assert.matches("to: expected a device", err)
  end)
end)

describe("state dicts", function()
  it("hold detached tensors sharing storage, in registration order, without non-persistent buffers", function()
    local m = Net(4)
    m:register_buffer("scratch", torch.zeros(3), false)
    local sd = m:state_dict()
    assert.are.same({ "scale", "steps", "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias", "head.weight" },
                    nn.utils.state_dict_keys(sd))
    assert.is_nil(sd.scratch)
    assert.is_false(sd["layers.0.weight"].requires_grad)
    assert.are.equal(m.layers[1].weight:data_ptr(), sd["layers.0.weight"]:data_ptr())
  end)

  it("round-trip: loading reproduces the outputs", function()
    torch.manual_seed(2)
    local a, b = Net(6), Net(6)
    local x = torch.randn(3, 4)
    local before = b(x):totable()
    local res = b:load_state_dict(a:state_dict())
    assert.are.same({}, res.missing_keys)
    assert.are.same({}, res.unexpected_keys)
    assert.are.same(a(x):totable(), b(x):totable())
    assert.are_not.same(before, b(x):totable())
    -- the copy converts dtypes
    local c = Net(6):double()
    c:load_state_dict(a:state_dict())
    testing.assert_close(c(x:double()), a(x), 1e-6, 1e-6)
  end)

  it("a strict load lists missing keys, unexpected keys and shape mismatches", function()
    local m = Net(4)
    local sd = Net(5):state_dict()
    sd["head.weight"] = nil
    sd["head.bias"] = torch.zeros(2)
    local ok, err = pcall(m.load_state_dict, m, sd)
    assert.is_false(ok)
    assert.matches("Error%(s%) in loading state_dict for Net:", err)
    assert.matches('Missing key%(s%) in state_dict: "head.weight"%.', err)
    assert.matches('Unexpected key%(s%) in state_dict: "head.bias"%.', err)
    assert.matches("size mismatch for layers.0.weight: copying a param with shape %[5, 4%] from checkpoint, the shape in current model is %[4, 4%]%.", err)
    assert.matches("size mismatch for layers.2.weight: copying a param with shape %[3, 5%]", err)
  end)

  it("strict=false reports missing and unexpected keys but still refuses shape mismatches", function()
    local m = Net(4)
    local sd = Net(4):state_dict()
    sd["head.weight"] = nil
    sd["extra"] = torch.zeros(1)
    local res = m:load_state_dict(sd, { strict = false })
    assert.are.same({ "head.weight" }, res.missing_keys)
    assert.are.same({ "extra" }, res.unexpected_keys)
    sd["layers.0.bias"] = torch.zeros(7)
    local ok, err = pcall(m.load_state_dict, m, sd, { strict = false })
    assert.is_false(ok)
    assert.matches("size mismatch for layers.0.bias", err)
    ok, err = pcall(m.load_state_dict, m, { scale = 3 }, { strict = false })
    assert.is_false(ok)
    assert.matches('value for "scale" is a number, expected a Tensor', err)
  end)
end)

describe("containers", function()
  it("Sequential indexes from 1 in Lua, names from 0, and chains forward", function()
    local a, r, b = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    local s = nn.Sequential(a, r, b)
    assert.are.equal(a, s[1])
    assert.are.equal(b, s[3])
    assert.are.equal(b, s[-1])
    assert.are.equal(3, #s)
    assert.are.equal(3, s:len())
    local n = 0
    for i, m in ipairs(s) do n = n + 1 assert.are.equal(s[i], m) end
    assert.are.equal(3, n)
    local x = torch.randn(4, 2)
    assert.are.same(b(r(a(x))):totable(), s(x):totable())
    s:append(nn.Tanh())
    assert.are.equal(4, #s)
    assert.are.same({ "0", "1", "2", "3" }, names_of(s:named_children()))
    local named = nn.Sequential({ { "fc", nn.Linear(2, 2) }, { "act", nn.ReLU() } })
    assert.are.same({ "fc.weight", "fc.bias" }, names_of(named:named_parameters()))
    assert.are.equal(named.fc, named[1])
    local ok, err = pcall(nn.Sequential, nn.ReLU(), 3)
    assert.is_false(ok)
    assert.matches("Sequential: argument 2 is a number, expected a Module", err)
  end)

  it("ModuleList registers its entries and ModuleDict looks them up by name", function()
    local l = nn.ModuleList({ nn.Linear(2, 2), nn.Linear(2, 2) })
    l:append(nn.Linear(2, 1))
    assert.are.equal(3, #l)
    assert.are.same({ "0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias" }, names_of(l:named_parameters()))
    local d = nn.ModuleDict({ { "enc", nn.Linear(2, 3) }, { "dec", nn.Linear(3, 2) } })
    assert.are.same({ "enc", "dec" }, d:keys())
    assert.are.equal("3x2", shape_of(d.enc.weight))
    assert.are.equal("2x3", shape_of(d["dec"].weight))
    assert.is_true(d:contains("enc"))
    local ok, err = pcall(function() return l(torch.zeros(1)) end)
    assert.is_false(ok)
    assert.matches("ModuleList has no forward", err)
  end)
end)

describe("layers", function()
  it("Linear uses PyTorch's default initialisation bounds and computes x W^T + b", function()
    torch.manual_seed(5)
    local lin = nn.Linear(400, 300)
    local bound = 1 / math.sqrt(400)
    assert.are.equal("300x400", shape_of(lin.weight))
    assert.are.equal("300", shape_of(lin.bias))
    assert.is_true(lin.weight:abs():max():item() <= bound)
    assert.is_true(lin.bias:abs():max():item() <= bound)
    -- U(-b, b) has standard deviation b / sqrt(3)
    local w = lin.weight
    local std = math.sqrt((w * w):mean():item())
    assert.is_true(math.abs(std - bound / math.sqrt(3)) < 0.02 * bound, ("std %g"):format(std))
    assert.is_true(lin.weight:max():item() > 0.9 * bound)
    local x = torch.randn(7, 400)
    testing.assert_close(lin(x), x:matmul(lin.weight:t()) + lin.bias, 1e-5, 1e-5)
    local nb = nn.Linear(3, 2, { bias = false, dtype = torch.float64 })
    assert.are.equal(torch.float64, nb.weight.dtype)
    assert.are.equal(1, #nb:parameters())
    local ok, err = pcall(nn.Linear, 3, -1)
    assert.is_false(ok)
    assert.matches("Linear: expected a non%-negative integer out_features, got %-1", err)
  end)

  it("activations match their formulas", function()
    local x = torch.tensor({ -2, -0.5, 0, 0.5, 2 }, { dtype = torch.float64 })
    local xs = x:totable()
    local cases = {
      { nn.ReLU(), function(v) return math.max(v, 0) end },
      { nn.Tanh(), math.tanh },
      { nn.Sigmoid(), function(v) return 1 / (1 + math.exp(-v)) end },
      { nn.SiLU(), function(v) return v / (1 + math.exp(-v)) end },
      { nn.GELU("tanh"), function(v) return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ^ 3))) end },
      { nn.Identity(), function(v) return v end },
    }
    for _, c in ipairs(cases) do
      local want = {}
      for i, v in ipairs(xs) do want[i] = c[2](v) end
      testing.assert_close(c[1](x), want, 1e-12, 1e-12, c[1]:_get_name())
    end
    local g = nn.GELU()(x):totable()
    assert.is_true(math.abs(g[5] - 1.9544997361036416) < 1e-9)
    local ok, err = pcall(nn.GELU, "fast")
    assert.is_false(ok)
    assert.matches("approximate must be 'none' or 'tanh'", err)
  end)

  it("Softmax normalises along its dim", function()
    local x = torch.tensor({ { 1, 2, 3 }, { 0, 0, 0 } }, { dtype = torch.float64 })
    local y = nn.Softmax(1)(x):totable()
    local e = { math.exp(1), math.exp(2), math.exp(3) }
    local s = e[1] + e[2] + e[3]
    testing.assert_close(y[1], { e[1] / s, e[2] / s, e[3] / s }, 1e-12)
    testing.assert_close(y[2], { 1 / 3, 1 / 3, 1 / 3 }, 1e-12)
  end)

  it("LayerNorm normalises the last dims and starts with weight 1, bias 0", function()
    torch.manual_seed(6)
    local ln = nn.LayerNorm(8, { dtype = torch.float64 })
    assert.are.same({ 1, 1, 1, 1, 1, 1, 1, 1 }, ln.weight:totable())
    assert.are.same({ 0, 0, 0, 0, 0, 0, 0, 0 }, ln.bias:totable())
    local x = torch.randn(3, 8, { dtype = torch.float64 }) * 3 + 1
    local y = ln(x)
    testing.assert_close(y:mean(-1), { 0, 0, 0 }, 0, 1e-12)
    testing.assert_close((y * y):mean(-1), { 1, 1, 1 }, 1e-4)
    local plain = nn.LayerNorm({ 2, 4 }, { elementwise_affine = false })
    assert.are.equal(0, #plain:parameters())
    assert.are.equal("3x2x4", shape_of(plain(torch.randn(3, 2, 4))))
  end)

  it("Embedding looks rows up and zeroes the padding row", function()
    torch.manual_seed(7)
    local e = nn.Embedding(10, 3, { padding_idx = 0 })
    assert.are.same({ 0, 0, 0 }, e.weight[1]:totable())
    local out = e(torch.tensor({ { 2, 0 }, { 9, 2 } }))
    assert.are.equal("2x2x3", shape_of(out))
    assert.are.same(e.weight[3]:totable(), out[1][1]:totable())
    assert.are.same(e.weight[10]:totable(), out[2][1]:totable())
  end)

  it("Flatten and Dropout (identity in eval mode, scaled in training)", function()
    assert.are.equal("2x12", shape_of(nn.Flatten()(torch.zeros(2, 3, 4))))
    assert.are.equal("6x4", shape_of(nn.Flatten(0, 1)(torch.zeros(2, 3, 4))))
    torch.manual_seed(8)
    local d = nn.Dropout(0.5)
    local x = torch.ones(1000)
    local y = d(x)
    local vals = y:totable()
    local zeros = 0
    for _, v in ipairs(vals) do
      assert.is_true(v == 0 or v == 2)
      if v == 0 then zeros = zeros + 1 end
    end
    assert.is_true(zeros > 400 and zeros < 600, ("zeros %d"):format(zeros))
    d:eval()
    assert.are.same(x:totable(), d(x):totable())
    local ok, err = pcall(nn.Dropout, 1.5)
    assert.is_false(ok)
    assert.matches("dropout probability has to be between 0 and 1, but got 1.5", err)
  end)

  it("CrossEntropyLoss and MSELoss match hand computations", function()
    local logits = torch.tensor({ { 1, 2, 3 }, { 1, 0, 0 } }, { dtype = torch.float64 })
    local target = torch.tensor({ 2, 0 })
    local function ce(row, k)
      local s = 0
      for _, v in ipairs(row) do s = s + math.exp(v) end
      return math.log(s) - row[k]
    end
    local l1, l2 = ce({ 1, 2, 3 }, 3), ce({ 1, 0, 0 }, 1)
    testing.assert_close(nn.CrossEntropyLoss()(logits, target), { (l1 + l2) / 2 }, 1e-12)
    testing.assert_close(nn.CrossEntropyLoss({ reduction = "sum" })(logits, target), { l1 + l2 }, 1e-12)
    testing.assert_close(nn.CrossEntropyLoss({ ignore_index = 0 })(logits, torch.tensor({ 2, 0 })), { l1 }, 1e-12)
    local a = torch.tensor({ 1, 2, 3 }, { dtype = torch.float64 })
    local b = torch.tensor({ 1, 0, 1 }, { dtype = torch.float64 })
    testing.assert_close(nn.MSELoss()(a, b), { 8 / 3 }, 1e-12)
    testing.assert_close(nn.MSELoss({ reduction = "sum" })(a, b), { 8 }, 1e-12)
    local ok, err = pcall(nn.MSELoss, { reduction = "avg" })
    assert.is_false(ok)
    assert.matches("reduction must be 'mean', 'sum' or 'none', got avg", err)
  end)

  it("nn.functional is reachable", function()
    assert.are.equal(require("ramtorch.functional"), nn.functional)
    assert.is_function(nn.functional.linear)
  end)
end)

describe("nn.init", function()
  it("fills in place with PyTorch's bounds", function()
    torch.manual_seed(9)
    local t = torch.empty(64, 32)
    nn.init.zeros_(t)
    assert.are.equal(0, t:abs():max():item())
    nn.init.ones_(t)
    assert.are.equal(1, t:min():item())
    nn.init.xavier_uniform_(t)
    local a = math.sqrt(6 / (32 + 64))
    assert.is_true(t:abs():max():item() <= a and t:abs():max():item() > 0.9 * a)
    nn.init.kaiming_uniform_(t, { a = 0, nonlinearity = "relu" })
    local kb = math.sqrt(2) * math.sqrt(3 / 32)
    assert.is_true(t:abs():max():item() <= kb and t:abs():max():item() > 0.9 * kb)
    nn.init.uniform_(t, 2, 3)
    assert.is_true(t:min():item() >= 2 and t:max():item() <= 3)
    nn.init.normal_(t, 5, 0.1)
    assert.is_true(math.abs(t:mean():item() - 5) < 0.01)
    assert.are.equal(math.sqrt(2), nn.init.calculate_gain("relu"))
    local ok, err = pcall(nn.init.xavier_uniform_, torch.zeros(3))
    assert.is_false(ok)
    assert.matches("fewer than 2 dimensions", err)
  end)
end)

describe("nn.utils.clip_grad_norm_", function()
  local function params_with_grads()
    local a = torch.zeros(2, { dtype = torch.float64 }):requires_grad_(true)
    local b = torch.zeros(3, { dtype = torch.float64 }):requires_grad_(true)
    local c = torch.zeros(1, { dtype = torch.float64 }):requires_grad_(true) -- no gradient
    a.grad = torch.tensor({ 3, 4 }, { dtype = torch.float64 })
    b.grad = torch.tensor({ 0, 12, 0 }, { dtype = torch.float64 })
    return { a, b, c }
  end

  it("returns the global 2-norm and scales the gradients by max_norm / (norm + 1e-6)", function()
    local ps = params_with_grads()
    local total = nn.utils.clip_grad_norm_(ps, 6.5)
    assert.are.equal(13, total:item()) -- sqrt(9 + 16 + 144)
    local coef = 6.5 / (13 + 1e-6)
    testing.assert_close(ps[1].grad, { 3 * coef, 4 * coef }, 1e-12)
    testing.assert_close(ps[2].grad, { 0, 12 * coef, 0 }, 1e-12)
    assert.is_nil(ps[3].grad)
  end)

  it("leaves gradients alone under the limit, and supports other norms", function()
    local ps = params_with_grads()
    nn.utils.clip_grad_norm_(ps, 100)
    assert.are.same({ 3, 4 }, ps[1].grad:totable())
    assert.are.equal(12, nn.utils.clip_grad_norm_(params_with_grads(), 100, math.huge):item())
    assert.are.equal(19, nn.utils.clip_grad_norm_(params_with_grads(), 100, 1):item())
    local t3 = (27 + 64 + 1728) ^ (1 / 3)
    assert.is_true(math.abs(nn.utils.clip_grad_norm_(params_with_grads(), 100, 3):item() - t3) < 1e-12)
  end)

  it("accepts a module and checks its arguments", function()
    torch.manual_seed(10)
    local m = nn.Linear(3, 2)
    m(torch.randn(4, 3)):sum():backward()
    local g = m.weight.grad:to(torch.float64):totable()
    local s = 0
    for _, row in ipairs(g) do for _, v in ipairs(row) do s = s + v * v end end
    for _, v in ipairs(m.bias.grad:totable()) do s = s + v * v end
    local total = nn.utils.clip_grad_norm_(m, 1e-3)
    assert.is_true(math.abs(total:item() - math.sqrt(s)) < 1e-5 * math.sqrt(s))
    local ok, err = pcall(nn.utils.clip_grad_norm_, { 1 }, 1)
    assert.is_false(ok)
    assert.matches("element 1 is a number, expected a Tensor", err)
  end)
end)
