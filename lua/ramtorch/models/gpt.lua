-- ramtorch/models/gpt.lua: a GPT (decoder-only transformer) whose module names follow Hugging Face's
-- GPT-2 (transformer.wte, transformer.wpe, transformer.h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2,
-- mlp.c_fc, mlp.c_proj}, transformer.ln_f, lm_head), so GPT-2-shaped safetensors checkpoints load with
-- gpt.load_hf_gpt2 (which transposes the (in, out) weights of HF's Conv1D into nn.Linear's (out, in)).
-- Every projection is a plain nn.Linear, so helpers.replace_linear_with_ramtorch can stream them.
--
--   local gpt = require("ramtorch.models.gpt")
--   local model = gpt.GPT({vocab_size = 65, block_size = 64, n_layer = 2, n_head = 2, n_embd = 64})
--   local logits, loss = model(idx, targets)          -- idx (B, T) int64
--   local out = model:generate(idx, 100, {temperature = 0.8, top_k = 10})
--
-- Options: dropout (embeddings, attention probabilities, residuals), bias (Linear and LayerNorm
-- biases), rotary (rotary embeddings on q and k instead of the learned wpe), rope_theta,
-- tie_weights (lm_head shares wte's weight, as GPT-2), layer_norm_epsilon, activation ("gelu_new",
-- the tanh approximation GPT-2 uses, or "gelu").
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local F = require("ramtorch.functional")

local Module = nn.Module

local M = {}

local DEFAULTS = { vocab_size = 50257, block_size = 1024, n_layer = 12, n_head = 12, n_embd = 768,
                   dropout = 0.0, bias = true, rotary = false, rope_theta = 10000, tie_weights = true,
                   layer_norm_epsilon = 1e-5, activation = "gelu_new" }

local function config_of(cfg)
  if type(cfg) ~= "table" then error(("GPT: expected a config table, got %s"):format(type(cfg)), 4) end
  local c = {}
  for k, v in pairs(DEFAULTS) do c[k] = v end
  for k, v in pairs(cfg) do
    if DEFAULTS[k] == nil and k ~= "dtype" and k ~= "device" and k ~= "n_positions" then
      error(("GPT: unknown config key '%s'"):format(tostring(k)), 4)
    end
    c[k] = v
  end
  if cfg.n_positions then c.block_size = cfg.n_positions end
  for _, k in ipairs({ "vocab_size", "block_size", "n_layer", "n_head", "n_embd" }) do
    local v = c[k]
    if type(v) ~= "number" or v < 1 or v ~= math.floor(v) then
      error(("GPT: config.%s must be a positive integer, got %s"):format(k, tostring(v)), 4)
    end
  end
  if c.n_embd % c.n_head ~= 0 then
    error(("GPT: n_embd (%d) must be divisible by n_head (%d)"):format(c.n_embd, c.n_head), 4)
  end
  if c.rotary and (c.n_embd / c.n_head) % 2 ~= 0 then
    error(("GPT: rotary embeddings need an even head size, got %d"):format(c.n_embd / c.n_head), 4)
  end
  return c
end

-- ---- blocks ------------------------------------------------------------------------------------------------

local CausalSelfAttention = Module:extend("GPT2Attention")
M.CausalSelfAttention = CausalSelfAttention

function CausalSelfAttention:__init(c)
  local lo = { bias = c.bias, dtype = c.dtype, device = c.device }
  self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, lo)
  self.c_proj = nn.Linear(c.n_embd, c.n_embd, lo)
  self.resid_dropout = nn.Dropout(c.dropout)
  self.n_head, self.n_embd, self.p = c.n_head, c.n_embd, c.dropout
  self.rotary, self.rope_theta = c.rotary, c.rope_theta
end

function CausalSelfAttention:forward(x)
  local B, T, E = x:size(0), x:size(1), x:size(2)
  local H = self.n_head
  local hd = E / H
  local qkv = self.c_attn(x)
  local q = qkv:narrow(2, 0, E):view(B, T, H, hd)
  local k = qkv:narrow(2, E, E):view(B, T, H, hd)
  local v = qkv:narrow(2, 2 * E, E):view(B, T, H, hd)
  if self.rotary then
    q = F.rope(q, { layout = "bthd", theta = self.rope_theta })
    k = F.rope(k, { layout = "bthd", theta = self.rope_theta })
  end
  local y = F.scaled_dot_product_attention(q:transpose(1, 2), k:transpose(1, 2), v:transpose(1, 2), {
    is_causal = true, dropout_p = self.training and self.p or 0 })
  y = y:transpose(1, 2):reshape(B, T, E)
  return self.resid_dropout(self.c_proj(y))
end

local MLP = Module:extend("GPT2MLP")
M.MLP = MLP

function MLP:__init(c)
  local lo = { bias = c.bias, dtype = c.dtype, device = c.device }
  self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, lo)
  self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, lo)
  self.dropout = nn.Dropout(c.dropout)
  self.approximate = c.activation == "gelu" and "none" or "tanh"
end

function MLP:forward(x)
  return self.dropout(self.c_proj(F.gelu(self.c_fc(x), self.approximate)))
end

-- A pre-norm decoder block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
local Block = Module:extend("GPT2Block")
M.Block = Block

function Block:__init(c)
  local no = { eps = c.layer_norm_epsilon, bias = c.bias, dtype = c.dtype, device = c.device }
  self.ln_1 = nn.LayerNorm(c.n_embd, no)
  self.attn = CausalSelfAttention(c)
  self.ln_2 = nn.LayerNorm(c.n_embd, no)
  self.mlp = MLP(c)
end

function Block:forward(x)
  x = x + self.attn(self.ln_1(x))
  return x + self.mlp(self.ln_2(x))
end

-- ---- the model ------------------------------------------------------------------------------------------------

local GPT = Module:extend("GPT")
M.GPT = GPT

function GPT:__init(cfg)
  local c = config_of(cfg)
  rawset(self, "config", c)
  local t = Module()
  local eo = { dtype = c.dtype, device = c.device }
  t.wte = nn.Embedding(c.vocab_size, c.n_embd, eo)
  if not c.rotary then t.wpe = nn.Embedding(c.block_size, c.n_embd, eo) end
  t.drop = nn.Dropout(c.dropout)
  local blocks = {}
  for i = 1, c.n_layer do blocks[i] = Block(c) end
  t.h = nn.ModuleList(blocks)
  t.ln_f = nn.LayerNorm(c.n_embd, { eps = c.layer_norm_epsilon, bias = c.bias, dtype = c.dtype, device = c.device })
  self.transformer = t
  self.lm_head = nn.Linear(c.n_embd, c.vocab_size, { bias = false, dtype = c.dtype, device = c.device })
  self:_init_weights()
  if c.tie_weights then self.lm_head.weight = t.wte.weight end
end

-- GPT-2's initialisation: N(0, 0.02) for Linear and Embedding weights, zero biases, and the residual
-- projections (c_proj) scaled by 1/sqrt(2 n_layer).
function GPT:_init_weights()
  local c = self.config
  torch.no_grad(function()
    for name, p in self:named_parameters() do
      if name:match("ln_%d?f?%.") or name:match("ln_f%.") then
        -- LayerNorms keep ones and zeros
      elseif name:match("%.bias$") then
        p:zero_()
      elseif name:match("c_proj%.weight$") then
        p:normal_(0, 0.02 / math.sqrt(2 * c.n_layer))
      else
        p:normal_(0, 0.02)
      end
    end
  end)
end

-- forward(idx (B, T) int64, targets (B, T) int64 or nil) -> logits (B, T, V), loss (mean cross entropy,
-- targets of -1 (nanoGPT) or -100 (Hugging Face) ignored) when targets are given
function GPT:forward(idx, targets)
  if not torch.is_tensor(idx) or idx:dim() ~= 2 then
    error("GPT: expected idx as an int64 tensor of shape (batch, seq)", 2)
  end
  local B, T = idx:size(0), idx:size(1)
  local c = self.config
  if T > c.block_size and not c.rotary then
    error(("GPT: sequence of length %d is longer than block_size %d"):format(T, c.block_size), 2)
  end
  local tr = self.transformer
  local x = tr.wte(idx)
  if not c.rotary then
    local pos = torch.arange(T, { dtype = torch.int64, device = idx.device })
    x = x + tr.wpe(pos)
  end
  x = tr.drop(x)
  for _, block in ipairs(tr.h) do x = block(x) end
  x = tr.ln_f(x)
  local logits = self.lm_head(x)
  if targets == nil then return logits end
  if not torch.is_tensor(targets) or table.concat(targets.shape, ",") ~= table.concat(idx.shape, ",") then
    error(("GPT: targets of shape [%s] do not match idx of shape [%d, %d]")
          :format(torch.is_tensor(targets) and table.concat(targets.shape, ", ") or type(targets), B, T), 2)
  end
  local V = logits:size(2)
  -- nanoGPT marks ignored targets with -1 (its ignore_index), Hugging Face with -100: both are ignored
  local flat = targets:reshape(B * T)
  flat = torch.where(flat:eq(-1), -100, flat)
  local loss = F.cross_entropy(logits:reshape(B * T, V), flat)
  return logits, loss
end

-- Sample from (B, V) logits row by row with the global generator: top_k keeps the k largest,
-- temperature 0 is greedy.
local function sample_rows(logits, temperature, top_k)
  local rows = logits:to(torch.float64):totable()
  local u = torch.rand({ #rows }, { dtype = torch.float64 }):totable()
  local out = {}
  for b, row in ipairs(rows) do
    local V = #row
    if temperature == 0 then
      local best = 1
      for j = 2, V do if row[j] > row[best] then best = j end end
      out[b] = { best - 1 }
    else
      local cut = -math.huge
      if top_k and top_k < V then
        local sorted = {}
        for j = 1, V do sorted[j] = row[j] end
        table.sort(sorted, function(a, c) return a > c end)
        cut = sorted[top_k]
      end
      local mx = -math.huge
      for j = 1, V do if row[j] >= cut and row[j] > mx then mx = row[j] end end
      local w, total = {}, 0
      for j = 1, V do
        w[j] = row[j] >= cut and math.exp((row[j] - mx) / temperature) or 0
        total = total + w[j]
      end
      local target, acc, pick = u[b] * total, 0, V
      for j = 1, V do
        acc = acc + w[j]
        if acc > target and w[j] > 0 then pick = j break end
      end
      out[b] = { pick - 1 }
    end
  end
  return torch.tensor(out, { dtype = torch.int64 })
end

-- generate(idx (B, T) int64, max_new_tokens, {temperature=1.0, top_k=nil}) -> (B, T + max_new_tokens).
-- Runs in eval mode without recording (restores every submodule's previous mode); the context is
-- cropped to block_size. temperature 0 is greedy; a negative or NaN temperature, a top_k that is not a
-- positive integer (larger than the vocabulary means all of it) and a max_new_tokens that is not a
-- non-negative integer raise.
function GPT:generate(idx, max_new_tokens, opts)
  opts = opts or {}
  if not torch.is_tensor(idx) or idx:dim() ~= 2 then
    error("generate: expected idx as an int64 tensor of shape (batch, seq)", 2)
  end
  if type(max_new_tokens) ~= "number" or max_new_tokens < 0 or max_new_tokens ~= math.floor(max_new_tokens)
     or max_new_tokens == math.huge then
    error(("generate: max_new_tokens must be a non-negative integer, got %s"):format(tostring(max_new_tokens)), 2)
  end
  local temperature = opts.temperature or 1.0
  -- temperature 0 means greedy (argmax); negative or NaN raises (NaN sampled garbage)
  if type(temperature) ~= "number" or not (temperature >= 0) then
    error(("generate: temperature must be a number >= 0, got %s"):format(tostring(temperature)), 2)
  end
  local top_k = opts.top_k
  if top_k ~= nil and (type(top_k) ~= "number" or not (top_k >= 1) or (top_k ~= math.floor(top_k) and top_k ~= math.huge)) then
    error(("generate: top_k must be a positive integer, got %s"):format(tostring(top_k)), 2)
  end
  -- each module's own mode, so that a submodule kept in eval mode (frozen) stays so afterwards
  local modes = {}
  for _, m in ipairs(self:modules()) do modes[m] = m.training end
  self:eval()
  local ok, res = pcall(torch.no_grad, function()
    local cur = idx
    for _ = 1, max_new_tokens do
      local T = cur:size(1)
      local ctx = T > self.config.block_size and cur:narrow(1, T - self.config.block_size, self.config.block_size) or cur
      local logits = self(ctx)
      local last = logits:select(1, logits:size(1) - 1)
      cur = torch.cat({ cur, sample_rows(last, temperature, opts.top_k):to(cur.device) }, 1)
    end
    return cur
  end)
  for m, mode in pairs(modes) do rawset(m, "training", mode) end
  if not ok then error(res, 0) end
  return res
end

function GPT:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + p:numel() end
  return n
end

-- ---- Hugging Face GPT-2 checkpoints ------------------------------------------------------------------------

-- HF GPT-2 keeps these projections as Conv1D with weights stored (in, out).
local CONV1D = { ["attn.c_attn.weight"] = true, ["attn.c_proj.weight"] = true, ["mlp.c_fc.weight"] = true,
                 ["mlp.c_proj.weight"] = true }

local function is_conv1d(name)
  local tail = name:match("h%.%d+%.(.*)$")
  return tail ~= nil and CONV1D[tail] == true
end

-- The state dict of HF names -> tensors converted to this model's layout: Conv1D weights transposed,
-- the "transformer." prefix added when absent (GPT2Model checkpoints), attn.bias / attn.masked_bias
-- buffers of older transformers versions dropped.
function M.convert_hf_gpt2_state(sd)
  local out = {}
  for name, t in pairs(sd) do
    if type(name) == "string" and torch.is_tensor(t) then
      local n = name
      if not n:match("^transformer%.") and not n:match("^lm_head%.") then n = "transformer." .. n end
      if not (n:match("%.attn%.bias$") or n:match("%.attn%.masked_bias$")) then
        if is_conv1d(n) then t = t:t():contiguous() end
        out[n] = t
      end
    end
  end
  return out
end

-- Whether a checkpoint's lm_head weight is its wte weight (same shape and values).
local function lm_equals(a, b)
  if table.concat(a.shape, ",") ~= table.concat(b.shape, ",") then return false end
  return torch.no_grad(function()
    return (a:to(torch.float64) - b:to(torch.float64)):abs():max():item() == 0
  end)
end

-- Infer a config from a HF GPT-2 state dict (n_head cannot be inferred: pass it in extra).
function M.config_from_hf_state(sd, extra)
  local c = {}
  local wte = sd["transformer.wte.weight"] or sd["wte.weight"]
  local wpe = sd["transformer.wpe.weight"] or sd["wpe.weight"]
  if wte == nil then error("config_from_hf_state: no transformer.wte.weight in the checkpoint", 3) end
  c.vocab_size, c.n_embd = wte:size(0), wte:size(1)
  if wpe then c.block_size = wpe:size(0) else c.rotary = true end
  local n = 0
  for name in pairs(sd) do
    local i = type(name) == "string" and name:match("h%.(%d+)%.")
    if i then n = math.max(n, tonumber(i) + 1) end
  end
  c.n_layer = n
  -- a head stored apart from wte with other values (tie_word_embeddings = false) needs an untied model
  local lm = sd["lm_head.weight"]
  if lm ~= nil and torch.is_tensor(lm) and not lm_equals(lm, wte) then c.tie_weights = false end
  for k, v in pairs(extra or {}) do c[k] = v end
  if c.n_head == nil then error("config_from_hf_state: pass n_head (it is not stored in the weights)", 3) end
  return c
end

-- model:load_hf_gpt2(path_or_state_dict, {strict=true}): load HF GPT-2 weights into this model. A tied
-- model accepts a checkpoint with or without lm_head.weight (it must equal wte's when present).
function GPT:load_hf_gpt2(src, opts)
  opts = opts or {}
  local sd = src
  if type(src) == "string" then sd = torch.load(src) end
  local conv = M.convert_hf_gpt2_state(sd)
  if self.config.tie_weights and conv["lm_head.weight"] ~= nil then
    -- dropping an untied head silently would give other logits than the checkpoint's model
    local lm, wte = conv["lm_head.weight"], conv["transformer.wte.weight"]
    if wte == nil or not lm_equals(lm, wte) then
      error("load_hf_gpt2: the checkpoint's lm_head.weight differs from transformer.wte.weight, but this model "
            .. "ties them (build it with tie_weights = false)", 2)
    end
    conv["lm_head.weight"] = nil
  end
  local own = self:state_dict()
  if self.config.tie_weights then own["lm_head.weight"] = nil end
  local missing, unexpected = {}, {}
  for k in pairs(own) do if type(k) == "string" and torch.is_tensor(own[k]) and conv[k] == nil then missing[#missing + 1] = k end end
  for k in pairs(conv) do if own[k] == nil then unexpected[#unexpected + 1] = k end end
  table.sort(missing)
  table.sort(unexpected)
  if opts.strict ~= false and (#missing > 0 or #unexpected > 0) then
    error(("load_hf_gpt2: missing keys {%s}, unexpected keys {%s}"):format(table.concat(missing, ", "),
                                                                           table.concat(unexpected, ", ")), 2)
  end
  -- every shape is checked before the first copy, so that a failed load changes nothing
  local names = {}
  for k, t in pairs(conv) do
    local dst = own[k]
    if dst ~= nil then
      if table.concat(dst.shape, ",") ~= table.concat(t.shape, ",") then
        error(("load_hf_gpt2: %s has shape {%s} in the checkpoint, the model expects {%s}")
              :format(k, table.concat(t.shape, ", "), table.concat(dst.shape, ", ")), 2)
      end
      names[#names + 1] = k
    end
  end
  torch.no_grad(function()
    for _, k in ipairs(names) do own[k]:copy_(conv[k]) end
  end)
  return self
end

-- gpt.from_hf_gpt2(path_or_state, {n_head=, ...config overrides}) -> a GPT with the checkpoint loaded.
function M.from_hf_gpt2(src, extra)
  local sd = type(src) == "string" and torch.load(src) or src
  local c = M.config_from_hf_state(sd, extra)
  local model = GPT(c)
  return model:load_hf_gpt2(sd)
end

return M
