-- nn_regress_spec.lua: regressions found in review of ramtorch.nn, each failing on the code before
-- its fix: Embedding's padding_idx row gets no gradient; MultiheadAttention keeps is_causal when a
-- key_padding_mask is given; the transformer layers do not read (seq, batch, feature) input as
-- (batch, seq, feature) (batch_first=false is supported and the default since, as in PyTorch:
-- semantics_leftovers_spec.lua); train()/eval() go through children's train().
local torch = require("ramtorch")
local nn = require("ramtorch.nn")

local function max_abs_diff(a, b) return (a - b):abs():max():item() end

describe("nn regressions", function()
  it("Embedding with padding_idx passes no gradient to the padding row (PyTorch)", function()
    local e = nn.Embedding(5, 3, { padding_idx = 1 })
    local idx = torch.tensor({ 1, 2, 1, 4 }, { dtype = torch.int64 })
    local y = e(idx)
    -- the forward still returns the padding row as it is
    assert.are.equal(0, max_abs_diff(y, e.weight:detach():index_select(0, idx)))
    y:sum():backward()
    local g = e.weight.grad
    assert.are.equal(0, g[2]:abs():sum():item()) -- row 1: padding
    assert.are.equal(3, g[3]:sum():item()) -- row 2 looked up once
    assert.are.equal(3, g[5]:sum():item()) -- row 4 looked up once
    -- a negative padding_idx counts from the end; F.embedding takes it as its third argument
    local w = torch.randn(4, 2):requires_grad_(true)
    torch.nn.functional.embedding(torch.tensor({ 3, 0, 3 }, { dtype = torch.int64 }), w, -1):sum():backward()
    assert.are.equal(0, w.grad[4]:abs():sum():item())
    assert.are.equal(2, w.grad[1]:sum():item())
  end)

  it("MultiheadAttention keeps is_causal when only a key_padding_mask is given", function()
    torch.manual_seed(0)
    local m = nn.MultiheadAttention(4, 2, { batch_first = true })
    local x = torch.randn(2, 3, 4)
    local kpm = torch.tensor({ { false, false, false }, { false, false, true } }, { dtype = torch.bool })
    local causal = torch.arange(3):view(1, 3):gt(torch.arange(3):view(3, 1)) -- true = masked
    local ref, ref_w = m(x, x, x, { attn_mask = causal, key_padding_mask = kpm })
    local out, w = m(x, x, x, { is_causal = true, key_padding_mask = kpm })
    assert.is_true(max_abs_diff(out, ref) < 1e-6)
    assert.is_true(max_abs_diff(w, ref_w) < 1e-6)
    -- the first query sees only the first key
    assert.is_true(math.abs(w[1][1][1]:item() - 1) < 1e-6)
  end)

  it("TransformerEncoderLayer / DecoderLayer hand batch_first=false to their attention", function()
    for _, cls in ipairs({ nn.TransformerEncoderLayer, nn.TransformerDecoderLayer }) do
      assert.is_false(cls(4, 2, { batch_first = false, dim_feedforward = 8 }).self_attn.batch_first)
      local ok, err = pcall(cls, 4, 2, { batch_first = "no", dim_feedforward = 8 })
      assert.is_false(ok)
      assert.matches("expected a boolean batch_first, got no", err)
    end
    assert.has_no.errors(function() nn.TransformerEncoderLayer(4, 2, { batch_first = true, dim_feedforward = 8 }) end)
  end)

  it("train() and eval() call each child's train(), so overrides run (PyTorch)", function()
    local Frozen = nn.Module:extend("Frozen")
    function Frozen:__init() self.drop = nn.Dropout(0.5) end
    function Frozen:forward(x) return self.drop(x) end
    -- the common pattern: a part that stays in eval mode whatever the parent says
    function Frozen:train(mode)
      nn.Module.train(self, mode)
      self.drop:eval()
      return self
    end
    local net = nn.Sequential(nn.Linear(2, 2), Frozen())
    net:train()
    assert.is_true(net.training)
    assert.is_true(net[1].training)
    assert.is_true(net[2].training)
    assert.is_false(net[2].drop.training)
    net:eval()
    assert.is_false(net[1].training)
    assert.is_false(net[2].drop.training)
    local ok, err = pcall(net.train, net, "yes")
    assert.is_false(ok)
    assert.matches("train: expected a boolean mode", err)
  end)
end)
