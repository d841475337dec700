-- transformer_nn_spec.lua: nn.RMSNorm, nn.MultiheadAttention (masks with PyTorch's meanings, weights),
-- nn.TransformerEncoderLayer / TransformerDecoderLayer (pre- and post-norm against compositions of
-- their parts), and ramtorch.models.gpt (Hugging Face naming, Conv1D loading, tying, generation,
-- streaming through replace_linear_with_ramtorch).
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local F = require("ramtorch.functional")
local gpt = require("ramtorch.models.gpt")
local testing = require("ramtorch.testing")
local assert_close = testing.assert_close

local f64 = torch.float64

local assert_error_has = testing.assert_error_has

-- attention by its definition, with explicit matrices
local function ref_mha(m, q_in, k_in, v_in, add_mask)
  local B, T, S, H = q_in:size(0), q_in:size(1), k_in:size(1), m.num_heads
  local hd = m.embed_dim / H
  local q = m.q_proj(q_in):view(B, T, H, hd):transpose(1, 2)
  local k = m.k_proj(k_in):view(B, S, H, hd):transpose(1, 2)
  local v = m.v_proj(v_in):view(B, S, H, hd):transpose(1, 2)
  local s = q:matmul(k:transpose(-2, -1)) / math.sqrt(hd)
  if add_mask then s = s + add_mask end
  local p = s:softmax(-1)
  return m.out_proj(p:matmul(v):transpose(1, 2):reshape(B, T, m.embed_dim)), p
end

describe("nn.RMSNorm", function()
  it("matches F.rms_norm, has a weight, and a PyTorch-like repr", function()
    local m = nn.RMSNorm(6, { eps = 1e-6 })
    m.weight:copy_(torch.randn({ 6 }))
    local x = torch.randn({ 2, 3, 6 })
    assert_close(m(x), F.rms_norm(x, 6, m.weight, 1e-6), 0, 0)
    assert.are.equal("RMSNorm((6,), eps=1e-06, elementwise_affine=True)", tostring(m))
    assert.are.equal(0, #nn.RMSNorm(6, { elementwise_affine = false }):parameters())
  end)
end)

describe("nn.MultiheadAttention", function()
  it("matches the definition, with the averaged weights", function()
    torch.manual_seed(1)
    local m = nn.MultiheadAttention(8, 2, { batch_first = true }):double()
    local x, mem = torch.randn({ 2, 4, 8 }, { dtype = f64 }), torch.randn({ 2, 5, 8 }, { dtype = f64 })
    local out, w = m(x, mem, mem)
    local ref, p = ref_mha(m, x, mem, mem)
    assert_close(out, ref, 1e-12, 1e-12)
    assert_close(w, p:mean(1), 1e-12, 1e-12)
    assert.are.same({ 2, 4, 5 }, w.shape)
  end)

  it("bool masks mean NOT allowed, key_padding_mask ignores keys, float masks add", function()
    torch.manual_seed(2)
    local m = nn.MultiheadAttention(8, 2, { batch_first = true }):double()
    local x = torch.randn({ 2, 4, 8 }, { dtype = f64 })
    local kpm = torch.tensor({ { false, false, true, true }, { false, false, false, false } })
    local am = torch.tensor({ { false, true, true, true }, { false, false, true, true }, { false, false, false, true },
                              { false, false, false, false } })
    local add = torch.where(kpm:view(2, 1, 1, 4), -math.huge, torch.zeros({}, { dtype = f64 }))
              + torch.where(am:view(1, 1, 4, 4), -math.huge, torch.zeros({}, { dtype = f64 }))
    local out = m(x, x, x, { key_padding_mask = kpm, attn_mask = am, need_weights = false })
    assert_close(out, (ref_mha(m, x, x, x, add)), 1e-12, 1e-12)
    -- the causal attn_mask equals is_causal
    local causal = m(x, x, x, { is_causal = true, need_weights = false })
    assert_close(causal, (m(x, x, x, { attn_mask = am, need_weights = false })), 1e-12, 1e-12)
    local fl = torch.randn({ 4, 4 }, { dtype = f64 })
    assert_close((m(x, x, x, { attn_mask = fl })), (ref_mha(m, x, x, x, fl)), 1e-12, 1e-12)
  end)

  it("unbatched input, gradcheck through the module, errors", function()
    torch.manual_seed(3)
    local m = nn.MultiheadAttention(4, 2, { batch_first = true }):double()
    local x = torch.randn({ 3, 4 }, { dtype = f64 })
    assert_close((m(x)), (m(x:unsqueeze(0))):squeeze(0), 0, 0)
    assert.is_true(testing.gradcheck(function(a) return (m(a, a, a, { need_weights = false, is_causal = true })) end,
                                     { torch.randn({ 1, 3, 4 }, { dtype = f64, requires_grad = true }) }))
    assert_error_has(function() nn.MultiheadAttention(6, 4) end, "embed_dim (6) must be divisible by num_heads (4)")
    assert_error_has(function() nn.MultiheadAttention(4, 2, { batch_first = 1 }) end, "expected a boolean batch_first, got 1")
    assert_error_has(function() m(x:unsqueeze(0), x:unsqueeze(0), x:unsqueeze(0), { key_padding_mask = torch.zeros({ 2, 3 }) }) end,
                     "key_padding_mask must be (batch, S) = (1, 3)")
  end)
end)

describe("nn.TransformerEncoderLayer / TransformerDecoderLayer", function()
  it("post-norm and pre-norm equal the compositions of their parts", function()
    torch.manual_seed(4)
    local x = torch.randn({ 2, 5, 8 })
    for _, nf in ipairs({ false, true }) do
      for _, act in ipairs({ "relu", "gelu" }) do
        local L = nn.TransformerEncoderLayer(8, 2, { dim_feedforward = 16, dropout = 0, norm_first = nf, activation = act,
                                                   batch_first = true })
        local function sa(a) return (L.self_attn(a, a, a, { need_weights = false, is_causal = true })) end
        local function ff(a)
          local h = L.linear1(a)
          h = act == "relu" and h:relu() or h:gelu()
          return L.linear2(h)
        end
        local ref
        if nf then
          ref = x + sa(L.norm1(x))
          ref = ref + ff(L.norm2(ref))
        else
          ref = L.norm1(x + sa(x))
          ref = L.norm2(ref + ff(ref))
        end
        assert_close(L(x, { is_causal = true }), ref, 1e-6, 1e-6)
      end
    end
    local names = {}
    for n in nn.TransformerEncoderLayer(8, 2):named_parameters() do names[#names + 1] = n end
    assert.are.equal("self_attn.q_proj.weight", names[1])
    assert.is_truthy(table.concat(names, " "):find("linear2.bias", 1, true))
  end)

  it("the decoder layer attends to memory (post-norm composition)", function()
    torch.manual_seed(5)
    local D = nn.TransformerDecoderLayer(8, 2, { dim_feedforward = 16, dropout = 0, batch_first = true })
    local t, mem = torch.randn({ 2, 3, 8 }), torch.randn({ 2, 4, 8 })
    local x = D.norm1(t + (D.self_attn(t, t, t, { is_causal = true, need_weights = false })))
    x = D.norm2(x + (D.multihead_attn(x, mem, mem, { need_weights = false })))
    x = D.norm3(x + D.linear2(D.linear1(x):relu()))
    assert_close(D(t, mem, { tgt_is_causal = true }), x, 1e-6, 1e-6)
  end)
end)

describe("models.gpt", function()
  local cfg = { vocab_size = 17, block_size = 8, n_layer = 2, n_head = 2, n_embd = 16 }

  it("uses Hugging Face GPT-2 names, ties lm_head to wte, and computes a causal LM loss", function()
    torch.manual_seed(6)
    local m = gpt.GPT(cfg)
    local sd = m:state_dict()
    for _, k in ipairs({ "transformer.wte.weight", "transformer.wpe.weight", "transformer.h.1.ln_1.weight",
                         "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.bias",
                         "transformer.h.0.ln_2.bias", "transformer.h.1.mlp.c_fc.weight", "transformer.h.1.mlp.c_proj.weight",
                         "transformer.ln_f.weight", "lm_head.weight" }) do
      assert.is_true(torch.is_tensor(sd[k]), k)
    end
    assert.are.equal(m.lm_head.weight.p, m.transformer.wte.weight.p)
    local idx = torch.randint(0, 17, { 2, 8 })
    local logits, loss = m(idx, idx)
    assert.are.same({ 2, 8, 17 }, logits.shape)
    assert_close(loss, F.cross_entropy(logits:reshape(16, 17), idx:reshape(16)), 0, 0)
    -- causality: changing the last token leaves earlier logits unchanged
    local idx2 = idx:clone()
    idx2[1][8] = (idx[1][8]:item() + 1) % 17
    local l2 = m(idx2)
    assert_close(l2:narrow(1, 0, 7), logits:narrow(1, 0, 7), 0, 0)
    assert_error_has(function() m(torch.randint(0, 17, { 1, 9 })) end, "longer than block_size 8")
  end)

  it("loads a GPT-2 state in HF layout (Conv1D weights (in, out)) and gives the same logits", function()
    torch.manual_seed(7)
    local a = gpt.GPT(cfg)
    local hf = {}
    for k, t in pairs(a:state_dict()) do
      if type(k) == "string" and k ~= "lm_head.weight" then
        local tail = k:match("h%.%d+%.(.*)$")
        if tail and (tail == "attn.c_attn.weight" or tail == "attn.c_proj.weight" or tail == "mlp.c_fc.weight"
                     or tail == "mlp.c_proj.weight") then
          t = t:t():contiguous()
        end
        hf[k] = t
      end
    end
    hf["transformer.h.0.attn.bias"] = torch.ones({ 1, 1, 8, 8 }) -- old transformers' causal-mask buffer
    local path = os.tmpname() .. ".safetensors"
    torch.save(hf, path)
    local b = gpt.from_hf_gpt2(path, { n_head = 2 })
    os.remove(path)
    local idx = torch.randint(0, 17, { 2, 8 })
    assert_close(b(idx), a(idx), 0, 0)
    assert_error_has(function() gpt.GPT(cfg):load_hf_gpt2({ ["transformer.wte.weight"] = torch.zeros({ 17, 16 }) }) end,
                     "load_hf_gpt2: missing keys", "transformer.wpe.weight")
  end)

  it("generates (greedy is deterministic; top_k restricts), rotary variant trains", function()
    torch.manual_seed(8)
    local m = gpt.GPT(cfg)
    local idx = torch.tensor({ { 1, 2, 3 } }, { dtype = torch.int64 })
    local g1 = m:generate(idx, 10, { temperature = 0 })
    local g2 = m:generate(idx, 10, { temperature = 0 })
    assert.are.same({ 1, 13 }, g1.shape)
    assert.are.same(g1:totable(), g2:totable())
    assert.are.same({ 1, 2, 3 }, g1:narrow(1, 0, 3):reshape(-1):totable())
    -- greedy picks the argmax of the last logits
    local first = m(idx):select(1, 2):argmax(-1):item()
    assert.are.equal(first, g1[1][4]:item())
    local r = gpt.GPT({ vocab_size = 17, block_size = 8, n_layer = 1, n_head = 2, n_embd = 16, rotary = true })
    assert.is_nil(r.transformer.wpe)
    local _, loss = r(torch.randint(0, 17, { 2, 8 }), torch.randint(0, 17, { 2, 8 }))
    loss:backward()
    assert.is_true(r.transformer.h[1].attn.c_attn.weight.grad:abs():sum():item() > 0)
  end)

  for _, tie in ipairs({ true, false }) do
    it(("every Linear can be streamed by replace_linear_with_ramtorch with the same logits (tie_weights %s)")
      :format(tostring(tie)), function()
      torch.manual_seed(9)
      local c = {}
      for k, v in pairs(cfg) do c[k] = v end
      c.tie_weights = tie
      local m = gpt.GPT(c)
      local idx = torch.randint(0, 17, { 2, 8 })
      local before = m(idx)
      local helpers = require("ramtorch.helpers")
      helpers.replace_linear_with_ramtorch(m)
      local n = 0
      for _, mod in ipairs(m:modules()) do if mod.is_ramtorch then n = n + 1 end end
      -- a tied lm_head stays a plain Linear sharing wte's weight (streaming it would split the tie)
      assert.are.equal(2 * 4 + (tie and 0 or 1), n)
      assert.are.equal(tie, tostring(m.lm_head.weight.p) == tostring(m.transformer.wte.weight.p))
      local out = m(idx)
      assert_close(out, before, 1e-6, 1e-6)
      out:sum():backward()
      if tie then -- the shared weight's gradient has both uses (embedding rows and the output projection)
        local g = m.transformer.wte.weight.grad
        assert.is_true(g ~= nil and g:abs():sum():item() > 0)
        assert.are.equal(tostring(g.p), tostring(m.lm_head.weight.grad.p))
      end
    end)
  end
end)
