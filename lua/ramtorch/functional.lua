-- ramtorch/functional.lua: torch.nn.functional: the stateless neural-network functions under their
-- PyTorch names (softmax, cross_entropy, layer_norm, dropout, ...). Keyword arguments of PyTorch are
-- given as an options table: F.cross_entropy(logits, target, {ignore_index = -100, reduction = "sum"}).
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local ops = require("ramtorch.ops")
local ops_nn = require("ramtorch.ops_nn")
local C = rffi.C

local is_tensor, expect_tensor = tensor.is_tensor, tensor.expect_tensor
local box, result = core.box, core.result
local oom = core.oom

local M = {}

local REDUCTION = { none = 0, mean = 1, sum = 2 }

local function reduction_code(r, name, level)
  if r == nil then return 1 end
  local c = REDUCTION[r]
  if not c then
    error(("%s: reduction must be \"none\", \"mean\" or \"sum\", got %s"):format(name, tostring(r)), level + 1)
  end
  return c
end

local function opts_table(opts, name, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s: expected an options table, got %s"):format(name, type(opts)), level + 1)
  end
  return opts
end

-- ---- activations -----------------------------------------------------------------------------------

M.softmax = ops_nn.softmax
M.log_softmax = ops_nn.log_softmax
M.relu = ops.relu
M.gelu = ops.gelu
M.silu = ops.silu
M.tanh = ops.tanh
M.sigmoid = ops.sigmoid
-- leaky_relu, elu, selu, celu, softplus, hardtanh, relu6, hardsigmoid, hardswish, mish, logsigmoid,
-- softsign, tanhshrink (compositions; ramtorch/functional_activation.lua)
for k, v in pairs(require("ramtorch.functional_activation")) do
  if type(v) == "function" and k:sub(1, 1) ~= "_" then M[k] = v end
end

-- ---- linear -------------------------------------------------------------------------------------------

-- y = x @ w^T + b (b optional)
function M.linear(x, w, b)
  expect_tensor(x, "linear", 2)
  expect_tensor(w, "linear", 2)
  if b ~= nil then expect_tensor(b, "linear", 2) end
  return result(oom(C.rt_linear(x.p, w.p, b and b.p or nil, box)) or C.rt_linear(x.p, w.p, b and b.p or nil, box))
end

-- ---- losses -------------------------------------------------------------------------------------------

-- Class weights as a (C) tensor in the input's dtype and device (PyTorch's weight argument).
local function class_weight(weight, ncls, input, name, level)
  if weight == nil then return nil end
  expect_tensor(weight, name, level + 1)
  if weight:dim() ~= 1 or weight:size(0) ~= ncls then
    error(("%s: weight tensor should be defined either for all %d classes or no classes but got weight tensor of shape: [%s]")
          :format(name, ncls, table.concat(weight.shape, ", ")), level + 1)
  end
  if weight.dtype ~= input.dtype or weight.device ~= input.device then
    weight = weight:to({ dtype = input.dtype, device = input.device })
  end
  return weight
end

-- The shape (1, C, 1, ...) that broadcasts a (C) tensor over input's class dim.
local function class_view_shape(input, cdim, ncls)
  local shape = {}
  for i = 1, input:dim() do shape[i] = 1 end
  shape[cdim + 1] = ncls
  return shape
end

-- cross_entropy with class probabilities as target (same shape as input), PyTorch's
-- cross_entropy_loss_prob_target: -(log_softmax(input) * target' * weight) summed over classes, with
-- target' = target * (1 - ls) + ls / C; "mean" divides by the number of rows (numel / C), not by weights.
local function cross_entropy_prob(input, target, weight, ii, red, ls)
  local cdim = input:dim() == 1 and 0 or 1
  local ncls = input:size(cdim)
  if ii >= 0 then
    error(("cross_entropy: ignore_index is not supported for floating point target (got ignore_index %d)"):format(ii), 3)
  end
  weight = class_weight(weight, ncls, input, "cross_entropy", 3)
  local logp = ops_nn.log_softmax(input, cdim)
  local tgt = target
  if tgt.dtype ~= input.dtype then tgt = tgt:to(input.dtype) end
  if ls > 0 then tgt = tgt * (1 - ls) + ls / ncls end
  local prod = logp * tgt
  if weight ~= nil then prod = prod * weight:view(class_view_shape(input, cdim, ncls)) end
  if red == 0 then return -prod:sum(cdim) end
  if red == 2 then return -prod:sum() end
  return -prod:sum() / (input:numel() / ncls) -- 0 / 0 = nan for an empty input, as PyTorch
end

-- cross_entropy with class indices and class weights, PyTorch's composition: (1 - ls) * nll_loss(
-- log_softmax, weight) + ls / C * smooth, where smooth sums -log_softmax * weight over classes
-- (0 where ignored) and, for "mean", is divided by the summed weights of the non-ignored targets.
local function cross_entropy_weighted(input, target, weight, ii, red, ls)
  local cdim = input:dim() == 1 and 0 or 1
  local ncls = input:size(cdim)
  local logp = ops_nn.log_softmax(input, cdim)
  local nll = M.nll_loss(logp, target, { weight = weight, ignore_index = ii, reduction = ({ "none", "mean", "sum" })[red + 1] }, 4)
  if ls == 0 then return nll end
  weight = class_weight(weight, ncls, input, "cross_entropy", 3)
  local valid = target:ne(ii)
  local smooth = -(logp * weight:view(class_view_shape(input, cdim, ncls))):sum(cdim)
  smooth = ops.where(valid, smooth, 0)
  local ret
  if red == 0 then ret = smooth
  elseif red == 2 then ret = smooth:sum()
  else
    local safe = ops.where(valid, target, 0)
    local wt = ops.where(valid, weight:index_select(0, safe:reshape(-1)):view(target.shape), 0)
    ret = smooth:sum() / wt:sum()
  end
  return nll * (1 - ls) + ret * (ls / ncls)
end

-- cross_entropy(input (N, C) or (N, C, d1...) or (C), target, {weight=, ignore_index=-100,
-- reduction="mean", label_smoothing=0}). target: int64 class indices (input's shape without the class
-- dim), or class probabilities (floating, input's shape). Class indices without weights take the fused
-- kernel; weights and probabilities are composed of autograd ops as PyTorch defines them.
function M.cross_entropy(input, target, opts)
  expect_tensor(input, "cross_entropy", 2)
  expect_tensor(target, "cross_entropy", 2)
  opts = opts_table(opts, "cross_entropy", 2)
  local ii = opts.ignore_index or -100
  local ls = opts.label_smoothing or 0
  if type(ii) ~= "number" or ii ~= math.floor(ii) then
    error(("cross_entropy: ignore_index must be an integer, got %s"):format(tostring(ii)), 2)
  end
  if type(ls) ~= "number" then
    error(("cross_entropy: label_smoothing must be a number, got %s"):format(tostring(ls)), 2)
  end
  if not (ls >= 0 and ls <= 1) then
    error(("cross_entropy: label_smoothing must be in [0, 1], got %g"):format(ls), 2)
  end
  local red = reduction_code(opts.reduction, "cross_entropy", 2)
  if target:is_floating_point() and input:dim() == target:dim() then
    local same = true
    for i = 0, input:dim() - 1 do if input:size(i) ~= target:size(i) then same = false end end
    if same then return cross_entropy_prob(input, target, opts.weight, ii, red, ls) end
  end
  if opts.weight ~= nil then
    if target.dtype ~= core.int64 then
      error(("cross_entropy: expected target of dtype int64 (class indices), got %s"):format(target.dtype.name), 2)
    end
    return cross_entropy_weighted(input, target, opts.weight, ii, red, ls)
  end
  return result(oom(C.rt_cross_entropy(input.p, target.p, ii, red, ls, box))
                or C.rt_cross_entropy(input.p, target.p, ii, red, ls, box))
end

-- nll_loss(log_probs (N, C) or (N, C, d1...) or (C), target int64, {weight=, ignore_index=-100,
-- reduction="mean"}), composed of autograd ops: -weight[t] * log_probs[n, t] (t = target[n]); "mean"
-- divides by the summed weights of the non-ignored targets (their count without weights), as PyTorch.
function M.nll_loss(input, target, opts, level)
  level = level or 2
  expect_tensor(input, "nll_loss", level)
  expect_tensor(target, "nll_loss", level)
  opts = opts_table(opts, "nll_loss", level)
  local red = reduction_code(opts.reduction, "nll_loss", level)
  local ii = opts.ignore_index or -100
  if target.dtype ~= core.int64 then
    error(("nll_loss: expected target of dtype int64 (class indices), got %s"):format(target.dtype.name), level)
  end
  if input:dim() == 0 then error("nll_loss: input must have a class dim, got a 0-d tensor", level) end
  local cdim = input:dim() == 1 and 0 or 1
  local ncls = input:size(cdim)
  -- target's shape must be input's without the class dim (no broadcasting, as PyTorch)
  local want = {}
  for i = 0, input:dim() - 1 do if i ~= cdim then want[#want + 1] = input:size(i) end end
  local ok = target:dim() == #want
  for i = 1, #want do if ok and target:size(i - 1) ~= want[i] then ok = false end end
  if not ok then
    error(("nll_loss: target of shape {%s} does not fit input of shape {%s} (expected {%s}: input's shape without the class dim)")
          :format(table.concat(target.shape, ", "), table.concat(input.shape, ", "), table.concat(want, ", ")), level)
  end
  local weight = class_weight(opts.weight, ncls, input, "nll_loss", level)
  local valid = target:ne(ii)
  local oob = ops.where(valid, target, 0)
  if oob:numel() > 0 and (oob:min():item() < 0 or oob:max():item() >= ncls) then
    error(("nll_loss: target out of bounds for %d classes"):format(ncls), level)
  end
  local creation = require("ramtorch.creation")
  local classes = creation.arange(ncls, { device = input.device }):view(class_view_shape(input, cdim, ncls))
  local picked = ops.where(classes:eq(target:unsqueeze(cdim)), input, 0):sum(cdim)
  local vf = valid:to(input.dtype)
  if weight ~= nil then
    vf = vf * weight:index_select(0, oob:reshape(-1)):view(target.shape)
  end
  local loss = -picked * vf
  if red == 0 then return loss end
  if red == 2 then return loss:sum() end
  return loss:sum() / vf:sum()
end

-- mse_loss(input, target, {reduction="mean"})
function M.mse_loss(input, target, opts)
  expect_tensor(input, "mse_loss", 2)
  expect_tensor(target, "mse_loss", 2)
  opts = opts_table(opts, "mse_loss", 2)
  return result(oom(C.rt_mse_loss(input.p, target.p, reduction_code(opts.reduction, "mse_loss", 2), box)) or C.rt_mse_loss(input.p, target.p, reduction_code(opts.reduction, "mse_loss", 2), box))
end

-- ---- embedding, normalisation, dropout --------------------------------------------------------------------

-- PyTorch's embedding_renorm_: in place and without autograd, each row of weight looked up by indices
-- whose norm_type-norm exceeds max_norm is scaled by max_norm / (norm + 1e-7).
local function embedding_renorm_(weight, indices, max_norm, norm_type)
  local autograd = require("ramtorch.autograd")
  local creation = require("ramtorch.creation")
  autograd.no_grad(function()
    local flat = indices:reshape(-1)
    if flat.dtype ~= core.int64 then flat = flat:to(core.int64) end
    local V = weight:size(0)
    local hit = creation.zeros({ V }, { dtype = core.float32, device = weight.device })
    if flat:numel() > 0 then
      hit:index_add_(0, flat, creation.ones({ flat:numel() }, { dtype = core.float32, device = weight.device }))
    end
    local a = weight:abs()
    local norms
    if norm_type == math.huge then norms = a:amax(1)
    elseif norm_type == 1 then norms = a:sum(1)
    elseif norm_type == 2 then norms = (a * a):sum(1):sqrt()
    else norms = (a ^ norm_type):sum(1) ^ (1 / norm_type) end
    local over = ops.where(hit:gt(0), norms, 0):gt(max_norm)
    local scale = ops.where(over, max_norm / (norms + 1e-7), 1)
    weight:mul_(scale:unsqueeze(1))
  end)
end

-- embedding(indices (any shape, int64/int32), weight (V, D), padding_idx=nil, max_norm=nil,
-- norm_type=2), or embedding(indices, weight, {padding_idx=, max_norm=, norm_type=}) ->
-- indices.shape .. (D). As PyTorch, positions looking up padding_idx pass no gradient to that row
-- (forward unchanged), and max_norm renormalises the looked-up rows of weight in place first.
function M.embedding(indices, weight, padding_idx, max_norm, norm_type)
  expect_tensor(indices, "embedding", 2)
  expect_tensor(weight, "embedding", 2)
  if type(padding_idx) == "table" then
    local o = padding_idx
    padding_idx, max_norm, norm_type = o.padding_idx, o.max_norm, o.norm_type
    if o.scale_grad_by_freq then error("embedding: scale_grad_by_freq is not supported", 2) end
    if o.sparse then error("embedding: sparse gradients are not supported", 2) end
  end
  if max_norm ~= nil then
    norm_type = norm_type or 2
    if type(max_norm) ~= "number" or not (max_norm > 0) then
      error(("embedding: max_norm must be a positive number, got %s"):format(tostring(max_norm)), 2)
    end
    if type(norm_type) ~= "number" or not (norm_type > 0) then
      error(("embedding: norm_type must be a positive number, got %s"):format(tostring(norm_type)), 2)
    end
    embedding_renorm_(weight, indices, max_norm, norm_type)
  end
  local out = result(oom(C.rt_embedding(weight.p, indices.p, box)) or C.rt_embedding(weight.p, indices.p, box))
  if padding_idx ~= nil and out.requires_grad then
    if padding_idx < 0 then padding_idx = padding_idx + weight:size(0) end
    out = ops.where(indices:ne(padding_idx):unsqueeze(-1), out, out:detach())
  end
  return out
end

-- layer_norm(x, normalized_shape (number or table), weight, bias, eps=1e-5)
function M.layer_norm(x, normalized_shape, weight, bias, eps)
  expect_tensor(x, "layer_norm", 2)
  local ns = normalized_shape
  if type(ns) == "number" then ns = { ns } end
  if type(ns) ~= "table" or #ns == 0 then
    error(("layer_norm: expected normalized_shape as a number or a non-empty table, got %s"):format(tostring(normalized_shape)), 2)
  end
  local xs, nd = x.shape, x:dim()
  if #ns > nd then
    error(("layer_norm: normalized_shape has %d dims but the input has only %d"):format(#ns, nd), 2)
  end
  for i = 1, #ns do
    if xs[nd - #ns + i] ~= ns[i] then
      error(("layer_norm: normalized_shape {%s} does not match the last %d dims of input of shape {%s}")
            :format(table.concat(ns, ", "), #ns, table.concat(xs, ", ")), 2)
    end
  end
  if weight ~= nil then expect_tensor(weight, "layer_norm", 2) end
  if bias ~= nil then expect_tensor(bias, "layer_norm", 2) end
  eps = eps or 1e-5
  return result(oom(C.rt_layer_norm(x.p, #ns, weight and weight.p or nil, bias and bias.p or nil, eps, box)) or C.rt_layer_norm(x.p, #ns, weight and weight.p or nil, bias and bias.p or nil, eps, box))
end

-- dropout(x, p=0.5, training=true)
function M.dropout(x, p, training)
  expect_tensor(x, "dropout", 2)
  if type(p) == "table" then p, training = p.p, p.training end
  p = p == nil and 0.5 or p
  if type(p) ~= "number" then error(("dropout: p must be a number, got %s"):format(type(p)), 2) end
  if training == nil then training = true end
  return result(oom(C.rt_dropout(x.p, p, training and 1 or 0, box)) or C.rt_dropout(x.p, p, training and 1 or 0, box))
end


-- batch_norm, group_norm (compositions; ramtorch/functional_norm.lua)
M.batch_norm = require("ramtorch.functional_norm").batch_norm
M.group_norm = require("ramtorch.functional_norm").group_norm
M._verify_batch_size = require("ramtorch.functional_norm")._verify_batch_size

-- ---- transformer ops (runtime/ops_attention.c) ------------------------------------------------------------

-- torch.finfo(dtype).eps: PyTorch's default eps of rms_norm
local FINFO_EPS = { float32 = 1.1920928955078125e-07, float64 = 2.220446049250313e-16,
                    bfloat16 = 0.0078125, float16 = 0.0009765625 }

-- rms_norm(x, normalized_shape (number or table), weight=nil, eps=finfo(x.dtype).eps)
function M.rms_norm(x, normalized_shape, weight, eps)
  expect_tensor(x, "rms_norm", 2)
  local ns = normalized_shape
  if type(ns) == "number" then ns = { ns } end
  if type(ns) ~= "table" or #ns == 0 then
    error(("rms_norm: expected normalized_shape as a number or a non-empty table, got %s"):format(tostring(normalized_shape)), 2)
  end
  local xs, nd = x.shape, x:dim()
  if #ns > nd then
    error(("rms_norm: normalized_shape has %d dims but the input has only %d"):format(#ns, nd), 2)
  end
  for i = 1, #ns do
    if xs[nd - #ns + i] ~= ns[i] then
      error(("rms_norm: normalized_shape {%s} does not match the last %d dims of input of shape {%s}")
            :format(table.concat(ns, ", "), #ns, table.concat(xs, ", ")), 2)
    end
  end
  if weight ~= nil then expect_tensor(weight, "rms_norm", 2) end
  if eps == nil then eps = FINFO_EPS[x.dtype.name] or FINFO_EPS.float32 end
  if type(eps) ~= "number" then error(("rms_norm: eps must be a number, got %s"):format(type(eps)), 2) end
  return result(oom(C.rt_rms_norm(x.p, #ns, weight and weight.p or nil, eps, box)) or C.rt_rms_norm(x.p, #ns, weight and weight.p or nil, eps, box))
end

local ROPE_LAYOUT = { bthd = 1, bhtd = 2 }

-- rope(x, {layout="bthd" | "bhtd", seq_dim=, theta=10000, offset=0, interleaved=false}): rotary
-- position embedding over the last dim of x. layout names where the sequence dim is: (B, T, H, D)
-- (seq_dim 1, the default) or (B, H, T, D) (seq_dim 2); seq_dim overrides it. offset is the position
-- of the first element (decoding with a cache). interleaved pairs (2p, 2p+1) (GPT-J) instead of
-- (p, p + D/2) (Hugging Face Llama's rotate_half).
function M.rope(x, opts)
  expect_tensor(x, "rope", 2)
  opts = opts_table(opts, "rope", 2)
  local sd = opts.seq_dim
  if sd == nil then
    local layout = opts.layout or "bthd"
    sd = ROPE_LAYOUT[layout]
    if sd == nil then
      error(("rope: layout must be \"bthd\" or \"bhtd\", got %s"):format(tostring(layout)), 2)
    end
  end
  local theta, offset = opts.theta or 10000, opts.offset or 0
  if type(theta) ~= "number" then error(("rope: theta must be a number, got %s"):format(type(theta)), 2) end
  if type(offset) ~= "number" or offset ~= math.floor(offset) then
    error(("rope: offset must be an integer, got %s"):format(tostring(offset)), 2)
  end
  return result(oom(C.rt_rope(x.p, sd, theta, offset, opts.interleaved and 1 or 0, box)) or C.rt_rope(x.p, sd, theta, offset, opts.interleaved and 1 or 0, box))
end
M.apply_rotary = M.rope

-- scaled_dot_product_attention(q, k, v, {attn_mask=, dropout_p=0, is_causal=false, scale=}) with
-- q (B, H, T, D), k (B, H, S, D), v (B, H, S, Dv), or 3-d (N, T, D); attn_mask may also be given as the
-- 4th argument (PyTorch's positional order). Bool masks: true takes part; float masks are added.
function M.scaled_dot_product_attention(q, k, v, opts, ...)
  local name = "scaled_dot_product_attention"
  expect_tensor(q, name, 2)
  expect_tensor(k, name, 2)
  expect_tensor(v, name, 2)
  if is_tensor(opts) or (opts == nil and select("#", ...) > 0) then
    local dropout_p, is_causal, scale = ...
    opts = { attn_mask = opts, dropout_p = dropout_p, is_causal = is_causal, scale = scale }
  end
  opts = opts_table(opts, name, 2)
  local mask = opts.attn_mask
  if mask ~= nil then expect_tensor(mask, name, 2) end
  local p = opts.dropout_p or 0
  if type(p) ~= "number" then error(("%s: dropout_p must be a number, got %s"):format(name, type(p)), 2) end
  local scale = opts.scale or 0
  if type(scale) ~= "number" or (opts.scale ~= nil and not (scale > 0)) then
    error(("%s: scale must be a positive number, got %s"):format(name, tostring(opts.scale)), 2)
  end
  local three = q:dim() == 3 and k:dim() == 3 and v:dim() == 3
  if three then q, k, v = q:unsqueeze(0), k:unsqueeze(0), v:unsqueeze(0) end
  local causal = opts.is_causal and 1 or 0
  -- (the retry names mask, not a saved mask.p: the handle stays referenced across the collection)
  local out = result(oom(C.rt_scaled_dot_product_attention(q.p, k.p, v.p, mask and mask.p or nil, p, causal,
                                                           scale, box))
                     or C.rt_scaled_dot_product_attention(q.p, k.p, v.p, mask and mask.p or nil, p, causal,
                                                          scale, box))
  if three then out = out:squeeze(0) end
  return out
end

-- autocast: PyTorch's cast policies (linear and attention in the low dtype, losses and norms in float32;
-- ramtorch/autocast.lua)
require("ramtorch.autocast").install(M)

return M
