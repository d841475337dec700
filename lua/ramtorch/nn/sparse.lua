-- ramtorch/nn/sparse.lua: Embedding (a lookup table of num_embeddings rows of embedding_dim), N(0, 1)
-- initialisation with an optional zeroed padding row, as PyTorch.
local torch = require("ramtorch")
local mod = require("ramtorch.nn.module")

local Module, Parameter = mod.Module, mod.Parameter

local F_mod
local function F()
  F_mod = F_mod or require("ramtorch.functional")
  return F_mod
end

local M = {}

-- nn.Embedding(num_embeddings, embedding_dim, {padding_idx=, max_norm=, norm_type=2, dtype=, device=})
-- max_norm renormalises looked-up rows in place at each forward, as PyTorch; scale_grad_by_freq and
-- sparse are refused (silently dense, unscaled gradients would differ from PyTorch's).
local Embedding = Module:extend("Embedding")
M.Embedding = Embedding

function Embedding:__init(num_embeddings, embedding_dim, opts)
  opts = opts or {}
  for _, v in ipairs({ { num_embeddings, "num_embeddings" }, { embedding_dim, "embedding_dim" } }) do
    if type(v[1]) ~= "number" or v[1] ~= math.floor(v[1]) or v[1] < 0 then
      error(("Embedding: expected a non-negative integer %s, got %s"):format(v[2], tostring(v[1])), 3)
    end
  end
  self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
  local pad = opts.padding_idx
  if pad ~= nil then
    if pad < 0 then pad = pad + num_embeddings end
    if pad < 0 or pad >= num_embeddings then
      error(("Embedding: padding_idx must be within num_embeddings (got %d for %d rows)"):format(opts.padding_idx, num_embeddings), 3)
    end
  end
  self.padding_idx = pad
  if opts.max_norm ~= nil and (type(opts.max_norm) ~= "number" or not (opts.max_norm > 0)) then
    error(("Embedding: max_norm must be a positive number, got %s"):format(tostring(opts.max_norm)), 3)
  end
  if opts.scale_grad_by_freq then error("Embedding: scale_grad_by_freq is not supported", 3) end
  if opts.sparse then error("Embedding: sparse gradients are not supported", 3) end
  self.max_norm, self.norm_type = opts.max_norm, opts.norm_type or 2
  self.weight = Parameter(torch.empty({ num_embeddings, embedding_dim }, { dtype = opts.dtype, device = opts.device }))
  self:reset_parameters()
end

function Embedding:reset_parameters()
  self.weight:normal_(0, 1)
  -- under no_grad, as PyTorch: the row is a view of the parameter (a SelectBackward output), and
  -- writing a view that requires grad in place is refused in grad mode
  if self.padding_idx ~= nil then
    torch.no_grad(function() self.weight[self.padding_idx + 1]:fill_(0) end)
  end
end

function Embedding:forward(idx)
  return F().embedding(idx, self.weight, self.padding_idx, self.max_norm, self.norm_type)
end

function Embedding:extra_repr()
  local s = ("%d, %d"):format(self.num_embeddings, self.embedding_dim)
  if self.padding_idx ~= nil then s = s .. (", padding_idx=%d"):format(self.padding_idx) end
  if self.max_norm ~= nil then s = s .. ", max_norm=" .. mod.pyrepr(self.max_norm) end
  if self.max_norm ~= nil and self.norm_type ~= 2 then s = s .. ", norm_type=" .. mod.pyrepr(self.norm_type) end
  return s
end

return M
