-- ramtorch/nn/transformer.lua: nn.MultiheadAttention, nn.TransformerEncoderLayer and
-- nn.TransformerDecoderLayer with PyTorch's argument names and defaults: batch_first=false, as in
-- PyTorch, reads batched input as (seq, batch, feature); batch_first=true as (batch, seq, feature);
-- unbatched (seq, feature) input is the same for both. key_padding_mask is (batch, S) and the attention
-- weights (batch, T, S) (or (batch, num_heads, T, S)) whatever batch_first says, as in PyTorch.
--
-- Differences from PyTorch, on purpose: MultiheadAttention keeps its input projection as three
-- nn.Linear layers q_proj, k_proj and v_proj (not one in_proj_weight), so that every projection is a
-- plain Linear that helpers.replace_linear_with_ramtorch can stream; the attention itself is
-- F.scaled_dot_product_attention (no T x S matrix unless need_weights asks for the weights).
local torch = require("ramtorch")
local mod = require("ramtorch.nn.module")
local linear = require("ramtorch.nn.linear")
local norm = require("ramtorch.nn.normalization")
local dropout = require("ramtorch.nn.dropout")

local Module, pyrepr = mod.Module, mod.pyrepr
local Linear, LayerNorm, Dropout = linear.Linear, norm.LayerNorm, dropout.Dropout

local F_mod
local function F()
  F_mod = F_mod or require("ramtorch.functional")
  return F_mod
end

local M = {}

local function expect_pos_int(v, what, name)
  if type(v) ~= "number" or v ~= math.floor(v) or v < 1 then
    error(("%s: expected a positive integer %s, got %s"):format(what, name, tostring(v)), 4)
  end
end

-- ---- MultiheadAttention ---------------------------------------------------------------------------------

-- nn.MultiheadAttention(embed_dim, num_heads, {dropout=0, bias=true, kdim=, vdim=, batch_first=false,
-- dtype=, device=})
local MultiheadAttention = Module:extend("MultiheadAttention")
M.MultiheadAttention = MultiheadAttention

function MultiheadAttention:__init(embed_dim, num_heads, opts)
  opts = opts or {}
  expect_pos_int(embed_dim, "MultiheadAttention", "embed_dim")
  expect_pos_int(num_heads, "MultiheadAttention", "num_heads")
  if embed_dim % num_heads ~= 0 then
    error(("MultiheadAttention: embed_dim (%d) must be divisible by num_heads (%d)"):format(embed_dim, num_heads), 3)
  end
  if opts.batch_first ~= nil and type(opts.batch_first) ~= "boolean" then
    error(("MultiheadAttention: expected a boolean batch_first, got %s"):format(tostring(opts.batch_first)), 3)
  end
  self.embed_dim, self.num_heads = embed_dim, num_heads
  self.head_dim = math.floor(embed_dim / num_heads)
  self.kdim, self.vdim = opts.kdim or embed_dim, opts.vdim or embed_dim
  self.dropout = opts.dropout or 0
  self.batch_first = opts.batch_first == true
  local lo = { bias = opts.bias ~= false, dtype = opts.dtype, device = opts.device }
  self.q_proj = Linear(embed_dim, embed_dim, lo)
  self.k_proj = Linear(self.kdim, embed_dim, lo)
  self.v_proj = Linear(self.vdim, embed_dim, lo)
  self.out_proj = Linear(embed_dim, embed_dim, lo)
  -- PyTorch: xavier_uniform_ on the (3E, E) in_proj_weight and zero biases
  local init = require("ramtorch.nn.initializers")
  local bound = math.sqrt(6 / (embed_dim + 3 * embed_dim))
  for _, p in ipairs({ self.q_proj, self.k_proj, self.v_proj }) do
    init.uniform_(p.weight, -bound, bound)
    if p.bias ~= nil then p.bias:fill_(0) end
  end
  if self.out_proj.bias ~= nil then self.out_proj.bias:fill_(0) end
end

-- An additive float mask (or an "allowed" bool mask when only one bool mask is given) of shape
-- broadcastable to (B, H, T, S), from PyTorch's attn_mask ((T, S) or (B*H, T, S); bool true = NOT
-- allowed) and key_padding_mask ((B, S); bool true = ignore).
local function merge_masks(attn_mask, kpm, B, H, T, S, dtype)
  local parts = {}
  if attn_mask ~= nil then
    local m = attn_mask
    if m:dim() == 2 then m = m:view(1, 1, T, S)
    elseif m:dim() == 3 then m = m:view(B, H, T, S)
    else error(("MultiheadAttention: attn_mask must be (T, S) or (B*num_heads, T, S), got %s"):format(tostring(m)), 4) end
    parts[#parts + 1] = m
  end
  if kpm ~= nil then
    if kpm:dim() ~= 2 or kpm:size(0) ~= B or kpm:size(1) ~= S then
      error(("MultiheadAttention: key_padding_mask must be (batch, S) = (%d, %d), got shape {%s}")
            :format(B, S, table.concat(kpm.shape, ", ")), 4)
    end
    parts[#parts + 1] = kpm:view(B, 1, 1, S)
  end
  if #parts == 0 then return nil end
  if #parts == 1 and parts[1].dtype == torch.bool then return parts[1]:eq(0) end
  local add
  for _, m in ipairs(parts) do
    if m.dtype == torch.bool then m = torch.where(m, -math.huge, torch.zeros({}, { dtype = dtype })) end
    add = add and (add + m) or m
  end
  return add
end

-- forward(query, key, value, {key_padding_mask=, need_weights=true, attn_mask=, average_attn_weights=true,
-- is_causal=false}) -> attn_output, attn_weights (nil unless need_weights)
function MultiheadAttention:forward(query, key, value, opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error(("MultiheadAttention: expected an options table as the 4th argument, got %s"):format(type(opts)), 2)
  end
  key, value = key or query, value or key or query
  local is_tensor = require("ramtorch").is_tensor
  local args, names, dims = { query, key, value }, { "query", "key", "value" },
                            { self.embed_dim, self.kdim, self.vdim }
  for i = 1, 3 do
    local t = args[i]
    if not is_tensor(t) then
      error(("MultiheadAttention: expected a Tensor as %s, got %s"):format(names[i], type(t)), 2)
    end
    if t:dim() < 1 or t:size(-1) ~= dims[i] then
      error(("MultiheadAttention: expected %s with last dim %d, got shape {%s}")
            :format(names[i], dims[i], table.concat(t.shape, ", ")), 2)
    end
  end
  local unbatched = query:dim() == 2
  if unbatched then query, key, value = query:unsqueeze(0), key:unsqueeze(0), value:unsqueeze(0) end
  -- batch_first=false (PyTorch's default): batched inputs are (seq, batch, feature); unbatched ones were
  -- made (1, seq, feature) above, which is batch-first
  local bf = self.batch_first or unbatched
  local layout = bf and "(batch, seq, embed_dim)" or "(seq, batch, embed_dim)"
  if query:dim() ~= 3 then
    error(("MultiheadAttention: expected query of shape %s or (seq, embed_dim), got {%s}")
          :format(layout, table.concat(query.shape, ", ")), 2)
  end
  for i = 2, 3 do
    local t = i == 2 and key or value
    if t:dim() ~= 3 then
      error(("MultiheadAttention: expected a 3-D %s %s with a 3-D query, got {%s}")
            :format(names[i], layout, table.concat(t.shape, ", ")), 2)
    end
  end
  local bd, sd = bf and 0 or 1, bf and 1 or 0 -- the batch and seq dims of the inputs
  local B, T, S = query:size(bd), query:size(sd), key:size(sd)
  if key:size(bd) ~= B or value:size(bd) ~= B or value:size(sd) ~= S then
    error(("MultiheadAttention: expected key and value of batch %d and one seq length, got query {%s}, key {%s}, value {%s}")
          :format(B, table.concat(query.shape, ", "), table.concat(key.shape, ", "), table.concat(value.shape, ", ")), 2)
  end
  local H, hd, E = self.num_heads, self.head_dim, self.embed_dim
  -- project in the input's layout (the Linear outputs are contiguous), then view as (B, H, seq, hd)
  local function heads(x, L)
    if bf then return x:view(B, L, H, hd):transpose(1, 2) end
    return x:view(L, B, H, hd):permute(1, 2, 0, 3)
  end
  local q = heads(self.q_proj(query), T)
  local k = heads(self.k_proj(key), S)
  local v = heads(self.v_proj(value), S)
  local attn_mask = opts.attn_mask
  if opts.is_causal and attn_mask == nil and opts.key_padding_mask ~= nil then
    -- the padding mask must not replace the causal one: spell it out as a (T, S) bool mask (true = masked)
    attn_mask = torch.arange(S):view(1, S):gt(torch.arange(T):view(T, 1))
  end
  local mask = merge_masks(attn_mask, opts.key_padding_mask, B, H, T, S, q.dtype)
  local p = self.training and self.dropout or 0
  local out = F().scaled_dot_product_attention(q, k, v, { attn_mask = mask, dropout_p = p,
                                                          is_causal = opts.is_causal and mask == nil })
  if bf then out = self.out_proj(out:transpose(1, 2):reshape(B, T, E))
  else out = self.out_proj(out:permute(2, 0, 1, 3):reshape(T, B, E)) end
  local weights
  if opts.need_weights ~= false then
    -- the (B, H, T, S) probabilities, computed explicitly (no dropout), as PyTorch returns them
    local scores = q:matmul(k:transpose(-2, -1)) * (1 / math.sqrt(hd))
    if mask ~= nil then
      if mask.dtype == torch.bool then scores = torch.where(mask, scores, -math.huge)
      else scores = scores + mask end
    end
    if opts.is_causal and mask == nil then
      local i = torch.arange(T):view(T, 1)
      local j = torch.arange(S):view(1, S)
      scores = torch.where(j:gt(i), -math.huge, scores)
    end
    weights = scores:softmax(-1)
    if opts.average_attn_weights ~= false then weights = weights:mean(1) end
    if unbatched then weights = weights:squeeze(0) end
  end
  if unbatched then out = out:squeeze(0) end
  return out, weights
end

function MultiheadAttention:extra_repr()
  return ("embed_dim=%d, num_heads=%d, dropout=%s, batch_first=%s"):format(self.embed_dim, self.num_heads,
                                                                         pyrepr(self.dropout), pyrepr(self.batch_first))
end

-- ---- encoder / decoder layers -----------------------------------------------------------------------------

local function activation_fn(a)
  if a == nil or a == "relu" then return function(x) return F().relu(x) end, "relu" end
  if a == "gelu" then return function(x) return F().gelu(x) end, "gelu" end
  if type(a) == "function" then return a, "custom" end
  if mod.is_module(a) then return function(x) return a(x) end, "module" end
  error(("activation must be \"relu\", \"gelu\", a function or a Module, got %s"):format(tostring(a)), 4)
end

local function layer_common(self, d_model, nhead, opts, what)
  expect_pos_int(d_model, what, "d_model")
  expect_pos_int(nhead, what, "nhead")
  if opts.batch_first ~= nil and type(opts.batch_first) ~= "boolean" then
    error(("%s: expected a boolean batch_first, got %s"):format(what, tostring(opts.batch_first)), 4)
  end
  local ff = opts.dim_feedforward or 2048
  local p = opts.dropout == nil and 0.1 or opts.dropout
  local topts = { dtype = opts.dtype, device = opts.device }
  local lo = { bias = opts.bias ~= false, dtype = opts.dtype, device = opts.device }
  local no = { eps = opts.layer_norm_eps or 1e-5, bias = opts.bias ~= false, dtype = opts.dtype, device = opts.device }
  -- batch_first goes to the attention modules, as in PyTorch: the rest of the layer works per token
  self.self_attn = MultiheadAttention(d_model, nhead, { dropout = p, bias = opts.bias ~= false, dtype = topts.dtype,
                                                        device = topts.device, batch_first = opts.batch_first })
  self.linear1 = Linear(d_model, ff, lo)
  self.dropout = Dropout(p)
  self.linear2 = Linear(ff, d_model, lo)
  self.norm_first = opts.norm_first == true
  self.norm1 = LayerNorm(d_model, no)
  self.norm2 = LayerNorm(d_model, no)
  self.dropout1 = Dropout(p)
  self.dropout2 = Dropout(p)
  local fn, name = activation_fn(opts.activation)
  rawset(self, "activation_fn", fn)
  rawset(self, "activation_name", name)
  return no, p
end

-- nn.TransformerEncoderLayer(d_model, nhead, {dim_feedforward=2048, dropout=0.1, activation="relu",
-- layer_norm_eps=1e-5, batch_first=false, norm_first=false, bias=true, dtype=, device=})
local TransformerEncoderLayer = Module:extend("TransformerEncoderLayer")
M.TransformerEncoderLayer = TransformerEncoderLayer

function TransformerEncoderLayer:__init(d_model, nhead, opts)
  layer_common(self, d_model, nhead, opts or {}, "TransformerEncoderLayer")
end

function TransformerEncoderLayer:_sa(x, mask, kpm, causal)
  local y = self.self_attn(x, x, x, { attn_mask = mask, key_padding_mask = kpm, is_causal = causal,
                                      need_weights = false })
  return self.dropout1(y)
end

function TransformerEncoderLayer:_ff(x)
  return self.dropout2(self.linear2(self.dropout(self.activation_fn(self.linear1(x)))))
end

-- forward(src, {src_mask=, src_key_padding_mask=, is_causal=false})
function TransformerEncoderLayer:forward(src, opts)
  opts = opts or {}
  local x = src
  if self.norm_first then
    x = x + self:_sa(self.norm1(x), opts.src_mask, opts.src_key_padding_mask, opts.is_causal)
    x = x + self:_ff(self.norm2(x))
  else
    x = self.norm1(x + self:_sa(x, opts.src_mask, opts.src_key_padding_mask, opts.is_causal))
    x = self.norm2(x + self:_ff(x))
  end
  return x
end

function TransformerEncoderLayer:extra_repr()
  return ("norm_first=%s, activation=%s"):format(pyrepr(self.norm_first), self.activation_name)
end

-- nn.TransformerDecoderLayer(d_model, nhead, opts as the encoder layer): self-attention (causal with
-- tgt_is_causal), cross-attention over memory, feed-forward.
local TransformerDecoderLayer = Module:extend("TransformerDecoderLayer")
M.TransformerDecoderLayer = TransformerDecoderLayer

function TransformerDecoderLayer:__init(d_model, nhead, opts)
  opts = opts or {}
  local no, p = layer_common(self, d_model, nhead, opts, "TransformerDecoderLayer")
  self.multihead_attn = MultiheadAttention(d_model, nhead, { dropout = p, bias = opts.bias ~= false,
                                                             dtype = opts.dtype, device = opts.device,
                                                             batch_first = opts.batch_first })
  self.norm3 = LayerNorm(d_model, no)
  self.dropout3 = Dropout(p)
end

function TransformerDecoderLayer:_ff(x)
  return self.dropout3(self.linear2(self.dropout(self.activation_fn(self.linear1(x)))))
end

-- forward(tgt, memory, {tgt_mask=, memory_mask=, tgt_key_padding_mask=, memory_key_padding_mask=,
-- tgt_is_causal=false, memory_is_causal=false})
function TransformerDecoderLayer:forward(tgt, memory, opts)
  opts = opts or {}
  local function sa(x)
    return self.dropout1(self.self_attn(x, x, x, { attn_mask = opts.tgt_mask, key_padding_mask = opts.tgt_key_padding_mask,
                                                   is_causal = opts.tgt_is_causal, need_weights = false }))
  end
  local function mha(x)
    return self.dropout2(self.multihead_attn(x, memory, memory, { attn_mask = opts.memory_mask,
                                                                  key_padding_mask = opts.memory_key_padding_mask,
                                                                  is_causal = opts.memory_is_causal,
                                                                  need_weights = false }))
  end
  local x = tgt
  if self.norm_first then
    x = x + sa(self.norm1(x))
    x = x + mha(self.norm2(x))
    x = x + self:_ff(self.norm3(x))
  else
    x = self.norm1(x + sa(x))
    x = self.norm2(x + mha(x))
    x = self.norm3(x + self:_ff(x))
  end
  return x
end

TransformerDecoderLayer.extra_repr = TransformerEncoderLayer.extra_repr

return M
