-- autocast_helpers_regress_spec.lua: regressions found in review of the mixed-precision and helpers changes:
--  * the autocast cast cache served a cast whose graph a backward had already freed, so a second
--    forward + backward inside one region (gradient accumulation, a training loop in one region)
--    failed with "backward through the graph a second time" (PyTorch runs it: ToCopyBackward saves
--    nothing). A backward without retain_graph now drops the grad-mode casts.
--  * replace_linear_with_ramtorch converted a Linear registered under two names once per name: two
--    modules instead of one, and for a device model two host copies of the weight that train apart.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local F = require("ramtorch.functional")
local optim = require("ramtorch.optim")
local amp = require("ramtorch.amp")
local ac = require("ramtorch.autocast")
local helpers = require("ramtorch.helpers")

local function max_abs(a, b) return (a:float() - b:float()):abs():max():item() end

describe("autocast cache and freed graphs", function()
  it("accumulates gradients over two forward + backward passes in one region", function()
    torch.manual_seed(11)
    local lin = nn.Linear(4, 3)
    local x = torch.randn({ 2, 4 })
    amp.autocast("bf16", function() lin(x):float():sum():backward() end)
    local once_w, once_b = lin.weight.grad:clone(), lin.bias.grad:clone()
    lin:zero_grad()
    amp.autocast("bf16", function()
      for _ = 1, 2 do lin(x):float():sum():backward() end
    end)
    assert.are.equal(0, max_abs(lin.weight.grad, once_w * 2))
    assert.are.equal(0, max_abs(lin.bias.grad, once_b * 2))
    assert.are.equal(0, ac.cache_size())
  end)

  it("a training loop inside one region follows the optimizer's updates", function()
    torch.manual_seed(12)
    local x, y = torch.randn({ 8, 4 }), torch.randn({ 8, 2 })
    local function train(one_region)
      torch.manual_seed(13)
      local lin = nn.Linear(4, 2)
      local opt = optim.SGD(lin:parameters(), { lr = 0.1 })
      local losses = {}
      local function step()
        local loss = F.mse_loss(lin(x), y)
        opt:zero_grad()
        loss:backward()
        opt:step()
        losses[#losses + 1] = loss:item()
      end
      if one_region then
        amp.autocast("bf16", function() for _ = 1, 3 do step() end end)
      else
        for _ = 1, 3 do amp.autocast("bf16", step) end
      end
      return losses
    end
    local a, b = train(false), train(true)
    assert.are.same(a, b)
    assert.is_true(a[3] < a[1])
  end)

  it("keeps serving casts after a backward with retain_graph", function()
    local lin = nn.Linear(4, 3)
    local x = torch.randn({ 2, 4 })
    amp.autocast("bf16", function()
      local out = lin(x):float():sum()
      out:backward(nil, true)
      local h = ac.cache_hits()
      lin(x):float():sum():backward()
      assert.are.equal(h + 2, ac.cache_hits()) -- weight and bias from the cache
      -- the graph is freed now: the next forward casts afresh and its backward runs
      lin(x):float():sum():backward()
      assert.are.equal(h + 2, ac.cache_hits())
    end)
  end)
end)

describe("replace_linear_with_ramtorch and a Linear registered twice", function()
  it("converts one instance once and registers the replacement under both names", function()
    torch.manual_seed(14)
    local lin = nn.Linear(4, 4)
    local model = nn.Sequential(lin, nn.Tanh(), lin)
    local x = torch.randn({ 3, 4 })
    local ref = model(x)
    helpers.replace_linear_with_ramtorch(model)
    local names = {}
    -- (the registry: named_children lists a module registered twice once, as PyTorch)
    for _, name in ipairs(model._modules.keys) do names[name] = model._modules.map[name] end
    assert.is_true(names["0"].is_ramtorch == true)
    assert.are.equal(names["0"], names["2"])
    assert.are.equal(2, #model:parameters())
    assert.are.equal(0, max_abs(model(x), ref))
  end)

  it("does the same for a Linear reached through a parent registered twice", function()
    local lin = nn.Linear(4, 4)
    local block = nn.Sequential(lin, nn.ReLU())
    local model = nn.Sequential(block, block, lin)
    helpers.replace_linear_with_ramtorch(model)
    local a = block._modules.map["0"]
    local top = model._modules.map["2"]
    assert.is_true(a.is_ramtorch == true)
    assert.are.equal(a, top)
    assert.are.equal(2, #model:parameters())
  end)

  it("GradScaler refuses to unscale float16 gradients of float16 parameters, as PyTorch does", function()
    local p = torch.zeros({ 8 }, { dtype = torch.float16 }):requires_grad_(true)
    p.grad = torch.ones({ 8 }, { dtype = torch.float16 })
    local scaler = amp.GradScaler("cpu")
    scaler:scale(torch.ones({}))
    local ok, err = pcall(function() scaler:unscale_(optim.SGD({ p }, { lr = 0 })) end)
    assert.is_false(ok)
    assert.matches("attempting to unscale float16 gradients", tostring(err))
  end)
end)
