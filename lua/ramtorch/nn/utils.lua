-- ramtorch/nn/utils.lua: nn.utils: gradient clipping (clip_grad_norm_, clip_grad_value_) with PyTorch's
-- semantics, and state-dict helpers.
local torch = require("ramtorch")
local mod = require("ramtorch.nn.module")

local M = {}

-- A tensor, an array of tensors, or a module (its parameters), as a Lua array.
local function param_list(params, what)
  if torch.is_tensor(params) then return { params } end
  if mod.is_module(params) then return params:parameters() end
  if type(params) ~= "table" then
    error(("%s: expected a Tensor, an array of Tensors or a Module, got %s"):format(what, type(params)), 3)
  end
  for i, p in ipairs(params) do
    if not torch.is_tensor(p) then
      error(("%s: element %d is a %s, expected a Tensor"):format(what, i, type(p)), 3)
    end
  end
  return params
end

-- clip_grad_norm_(parameters, max_norm, norm_type=2, error_if_nonfinite=false): scale the gradients in
-- place so that their global norm (the norm of the per-tensor norms) is at most max_norm, using
-- PyTorch's coefficient max_norm / (total + 1e-6) clamped to 1. Returns the total norm before clipping
-- as a 0-dim tensor (float32, or the gradients' dtype when they are float64). norm_type may be math.huge
-- (or "inf") for the max-abs norm. Parameters without a gradient are skipped.
function M.clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite)
  if type(norm_type) == "table" then
    norm_type, error_if_nonfinite = norm_type.norm_type, norm_type.error_if_nonfinite
  end
  local params = param_list(parameters, "clip_grad_norm_")
  if type(max_norm) ~= "number" then
    error(("clip_grad_norm_: expected a number max_norm, got %s"):format(type(max_norm)), 2)
  end
  norm_type = norm_type or 2
  if norm_type == "inf" then norm_type = math.huge end
  if type(norm_type) ~= "number" or norm_type <= 0 then
    error(("clip_grad_norm_: norm_type must be a positive number or math.huge, got %s"):format(tostring(norm_type)), 2)
  end
  local grads, out_dtype = {}, torch.float32
  for _, p in ipairs(params) do
    local g = p.grad
    if g ~= nil then
      grads[#grads + 1] = g
      if g.dtype == torch.float64 then out_dtype = torch.float64 end
    end
  end
  if #grads == 0 then return torch.tensor(0, { dtype = out_dtype }) end
  local total
  torch.no_grad(function()
    if norm_type == math.huge then
      total = 0
      for _, g in ipairs(grads) do
        if g:numel() > 0 then
          -- math.max(nan, x) is x in LuaJIT: keep a NaN once seen (PyTorch's norm is NaN then)
          local m = g:abs():max():item()
          if m ~= m or m > total then total = m end
        end
      end
    else
      -- per-tensor sums of |g|^p (one reduction each), combined in double
      local acc = 0
      for _, g in ipairs(grads) do
        if g:numel() > 0 then
          local a = g:abs()
          -- in float32 for float16/bfloat16 (PyTorch's vector_norm accumulates in float): squaring a
          -- float16 gradient above 256 would overflow to inf and zero every gradient
          if a.dtype == torch.float16 or a.dtype == torch.bfloat16 then a = a:float() end
          local s
          if norm_type == 2 then s = (a * a):sum():item()
          elseif norm_type == 1 then s = a:sum():item()
          else s = (a ^ norm_type):sum():item() end
          acc = acc + s
        end
      end
      total = acc ^ (1 / norm_type)
    end
  end)
  if error_if_nonfinite and (total ~= total or total == math.huge) then
    error(("clip_grad_norm_: the total norm of order %s for gradients is non-finite, so it cannot be clipped. "
           .. "To disable this error and scale the gradients by the non-finite norm anyway, set error_if_nonfinite=false")
          :format(tostring(norm_type)), 2)
  end
  local coef = max_norm / (total + 1e-6)
  -- a NaN coefficient scales too (PyTorch clamps it to at most 1, which keeps NaN)
  if coef < 1 or coef ~= coef then
    for _, g in ipairs(grads) do g:mul_(coef) end
  end
  return torch.tensor(total, { dtype = out_dtype })
end

-- clip_grad_value_(parameters, clip_value): clamp every gradient element to [-clip_value, clip_value].
function M.clip_grad_value_(parameters, clip_value)
  local params = param_list(parameters, "clip_grad_value_")
  if type(clip_value) ~= "number" then
    error(("clip_grad_value_: expected a number clip_value, got %s"):format(type(clip_value)), 2)
  end
  torch.no_grad(function()
    for _, p in ipairs(params) do
      local g = p.grad
      if g ~= nil then g:copy_(g:clamp(-clip_value, clip_value)) end
    end
  end)
end

-- The keys of a state dict in insertion order (Module.state_dict keeps it; other tables are sorted).
M.state_dict_keys = mod.state_dict_keys

-- Total number of elements of the parameters (trainable only when requires_grad_only).
function M.count_parameters(params, requires_grad_only)
  local n = 0
  for _, p in ipairs(param_list(params, "count_parameters")) do
    if not requires_grad_only or p.requires_grad then n = n + p:numel() end
  end
  return n
end

return M
