-- gpt_semantics_regress_spec.lua: regressions found auditing ramtorch.models.gpt (generate, forward,
-- load_hf_gpt2) and train_state's load_checkpoint for silent wrong answers: argument validation of
-- generate, the train/eval mode of every submodule restored after generate, atomic loads (a failed
-- load_hf_gpt2 or load_checkpoint changes nothing), optimizer state that does not fit refused at load.
local torch = require("ramtorch")
local optim = require("ramtorch.optim")
local gpt = require("ramtorch.models.gpt")

local CFG = { vocab_size = 7, block_size = 4, n_layer = 1, n_head = 2, n_embd = 8 }

local function tmpname() return os.tmpname() .. ".safetensors" end

local function flat(t) return t:reshape(-1):to(torch.float64):totable() end

local function same(a, b)
  local x, y = flat(a), flat(b)
  if #x ~= #y then return false end
  for i = 1, #x do if x[i] ~= y[i] then return false end end
  return true
end

local function snapshot(model)
  local s = {}
  for k, v in pairs(model:state_dict()) do s[k] = v:clone() end
  return s
end

local function unchanged(model, snap)
  for k, v in pairs(model:state_dict()) do
    if not same(v, snap[k]) then return false, k end
  end
  return true
end

-- the model's weights under HF GPT-2 names and layout (Conv1D weights (in, out), no lm_head)
local function hf_state(model)
  local sd = {}
  for k, v in pairs(model:state_dict()) do
    if k ~= "lm_head.weight" then
      local t = v:clone()
      if k:match("c_attn%.weight$") or k:match("c_proj%.weight$") or k:match("c_fc%.weight$") then
        t = t:t():contiguous()
      end
      sd[k] = t
    end
  end
  return sd
end

local idx = torch.tensor({ { 1, 2, 3 } }, { dtype = torch.int64 })

describe("GPT generate validates its arguments", function()
  local model
  before_each(function()
    torch.manual_seed(0)
    model = gpt.GPT(CFG)
  end)

  it("refuses a top_k that is not an integer (no 'attempt to compare nil')", function()
    assert.has_error(function() model:generate(idx, 2, { top_k = 2.5 }) end,
      "generate: top_k must be a positive integer, got 2.5")
  end)

  it("refuses a NaN temperature (it sampled garbage)", function()
    local ok, err = pcall(model.generate, model, idx, 2, { temperature = 0 / 0 })
    assert.is_false(ok)
    assert.matches("generate: temperature must be a number >= 0", err)
  end)

  it("refuses max_new_tokens that is not a non-negative integer", function()
    for _, n in ipairs({ -1, 1.5 }) do
      local ok, err = pcall(model.generate, model, idx, n)
      assert.is_false(ok)
      assert.matches("generate: max_new_tokens must be a non%-negative integer", err)
    end
    local ok, err = pcall(model.generate, model, idx)
    assert.is_false(ok)
    assert.matches("generate: max_new_tokens must be a non%-negative integer, got nil", err)
    assert.are.equal(3, model:generate(idx, 0):size(1)) -- 0 returns the prompt
  end)

  it("refuses a prompt that is not (batch, seq) with a clear message", function()
    local ok, err = pcall(model.generate, model, torch.tensor({ 1, 2 }, { dtype = torch.int64 }), 2)
    assert.is_false(ok)
    assert.matches("generate: expected idx as an int64 tensor of shape %(batch, seq%)", err)
  end)

  it("restores each submodule's own train/eval mode, not the root's everywhere", function()
    model:train()
    model.transformer.h[1]:eval() -- a frozen block kept in eval mode
    model:generate(idx, 1)
    assert.is_true(model.training)
    assert.is_true(model.lm_head.training)
    assert.is_false(model.transformer.h[1].training)
    assert.is_false(model.transformer.h[1].attn.training)
  end)

  it("crops a prompt longer than block_size and is reproducible under manual_seed", function()
    local long = torch.zeros({ 2, 9 }, { dtype = torch.int64 })
    torch.manual_seed(3)
    local a = model:generate(long, 3, { top_k = 100 })
    torch.manual_seed(3)
    local b = model:generate(long, 3, { top_k = 100 })
    assert.are.same({ 2, 12 }, a.shape)
    assert.is_true(same(a, b))
  end)
end)

describe("GPT forward", function()
  it("refuses targets whose shape differs from idx's, naming both", function()
    torch.manual_seed(0)
    local model = gpt.GPT(CFG)
    local ok, err = pcall(model.forward, model, idx, torch.tensor({ { 2, 4 } }, { dtype = torch.int64 }))
    assert.is_false(ok)
    assert.matches("GPT: targets of shape %[1, 2%] do not match idx of shape %[1, 3%]", err)
  end)
end)

describe("GPT load_hf_gpt2", function()
  it("changes nothing when one tensor has the wrong shape (atomic)", function()
    torch.manual_seed(0)
    local src = gpt.GPT(CFG)
    local sd = hf_state(src)
    sd["transformer.h.0.mlp.c_fc.weight"] = torch.zeros({ 3, 3 })
    local dst = gpt.GPT(CFG)
    local snap = snapshot(dst)
    local ok, err = pcall(dst.load_hf_gpt2, dst, sd)
    assert.is_false(ok)
    assert.matches("load_hf_gpt2: transformer.h.0.mlp.c_fc.weight has shape {3, 3} in the checkpoint", err)
    assert.is_true((unchanged(dst, snap)))
  end)

  it("refuses an lm_head.weight that differs from wte's into a tied model", function()
    torch.manual_seed(0)
    local src = gpt.GPT(CFG)
    local sd = hf_state(src)
    sd["lm_head.weight"] = torch.randn({ 7, 8 })
    local dst = gpt.GPT(CFG)
    local ok, err = pcall(dst.load_hf_gpt2, dst, sd)
    assert.is_false(ok)
    assert.matches("load_hf_gpt2: the checkpoint's lm_head.weight differs from transformer.wte.weight", err)
    -- an equal one is fine
    sd["lm_head.weight"] = sd["transformer.wte.weight"]:clone()
    dst:load_hf_gpt2(sd)
    assert.is_true(same(dst(idx), src(idx)))
  end)

  it("from_hf_gpt2 builds an untied model when the checkpoint's lm_head differs from wte", function()
    torch.manual_seed(0)
    local untied = { tie_weights = false }
    for k, v in pairs(CFG) do untied[k] = v end
    local src = gpt.GPT(untied)
    local sd = hf_state(src)
    sd["lm_head.weight"] = src.lm_head.weight:clone()
    local m = gpt.from_hf_gpt2(sd, { n_head = 2 })
    assert.is_false(m.config.tie_weights)
    assert.is_true(same(m(idx), src(idx)))
  end)
end)

describe("load_checkpoint is atomic and checks the optimizer", function()
  local path
  local function saved()
    torch.manual_seed(0)
    local m = gpt.GPT(CFG)
    local o = optim.AdamW(m:parameters(), { lr = 1e-2 })
    local _, loss = m(idx, idx)
    loss:backward()
    o:step()
    path = tmpname()
    torch.save_checkpoint(path, { model = m, optimizer = o, step = 1 })
  end
  after_each(function() if path then os.remove(path) end end)

  it("an optimizer with other groups raises before the model is touched", function()
    saved()
    torch.manual_seed(1)
    local m = gpt.GPT(CFG)
    local g1, g2 = {}, {}
    for i, p in ipairs(m:parameters()) do table.insert(i % 2 == 0 and g1 or g2, p) end
    local o = optim.AdamW({ { params = g1 }, { params = g2 } }, { lr = 1e-2 })
    local snap = snapshot(m)
    local rng = torch.get_rng_state()
    local ok, err = pcall(torch.load_checkpoint, path, { model = m, optimizer = o })
    assert.is_false(ok)
    assert.matches("different number of parameter groups", err)
    assert.is_true((unchanged(m, snap)))
    assert.are.same(rng, torch.get_rng_state())
  end)

  it("optimizer state of another shape raises at load, not at the next step()", function()
    saved()
    local wide = {}
    for k, v in pairs(CFG) do wide[k] = v end
    wide.n_embd = 16
    local m = gpt.GPT(wide)
    local o = optim.AdamW(m:parameters(), { lr = 1e-2 })
    local ok, err = pcall(torch.load_checkpoint, path, { optimizer = o })
    assert.is_false(ok)
    assert.matches("load_checkpoint: optimizer state exp_avg of parameter 0 has shape %[7, 8%], the parameter has shape %[7, 16%]", err)
    assert.is_nil(next(o.state))
  end)

  it("an optimizer of another class raises", function()
    saved()
    local m = gpt.GPT(CFG)
    local o = optim.SGD(m:parameters(), { lr = 1e-2, momentum = 0.9 })
    local snap = snapshot(m)
    local ok, err = pcall(torch.load_checkpoint, path, { model = m, optimizer = o })
    assert.is_false(ok)
    assert.matches("load_checkpoint: .* holds the state of a AdamW optimizer, got a SGD", err)
    assert.is_true((unchanged(m, snap)))
    assert.is_nil(o.param_groups[1].betas)
  end)
end)
