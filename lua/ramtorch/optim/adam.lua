-- ramtorch/optim/adam.lua: Adam (Kingma & Ba) with PyTorch's semantics (torch.optim.Adam): bias
-- correction, amsgrad off, and weight_decay as an L2 term added to the gradient before the moments
-- (grad + weight_decay * p, after maximize's negation), unlike AdamW's decoupled decay. It is AdamW
-- with the fused update given weight_decay = 0 and a gradient that already holds the L2 term, so it
-- takes the same kernels on every device, the host path and delayed updates included. p.grad is
-- never modified: the L2 term goes into a new tensor (only when weight_decay ~= 0).
-- PyTorch 2.6's decoupled_weight_decay = true makes it AdamW (the decay goes to the fused update).
local torch = require("ramtorch")
local AdamW = require("ramtorch.optim.adamw").AdamW

local M = {}

-- optim.Adam(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=0, amsgrad=false,
--                     maximize=false, decoupled_weight_decay=false, state_dtype="f32" | "bf16",
--                     seed=0, delayed_update=false})
local Adam = AdamW:extend("Adam")
M.Adam = Adam

Adam._default_weight_decay = 0
Adam._extra_options = { decoupled_weight_decay = true }

function Adam:_extra_defaults(defaults, opts)
  local d = opts.decoupled_weight_decay
  if d == nil then d = false end
  defaults.decoupled_weight_decay = d -- checked in _check_group
end

-- The L2 term goes into the gradient unless the group's decay is decoupled (or zero).
local function coupled(g) return g.weight_decay ~= 0 and not g.decoupled_weight_decay end

function Adam:_fused_opts(g)
  if g.decoupled_weight_decay then return g.weight_decay, g.maximize end
  -- with an L2 term the gradient is negated before the term is added (PyTorch's order), so the
  -- fused update gets the final gradient and no maximize
  if coupled(g) then return 0, false end
  return 0, g.maximize
end

function Adam:_update_grad(p, grad, g)
  if not coupled(g) then return grad end
  local wd, maximize = g.weight_decay, g.maximize
  return torch.no_grad(function()
    local d = maximize and -grad or grad
    return d + p:detach() * wd
  end)
end

-- The engine-landed gradient cannot take the L2 term: such groups are updated in step().
function Adam:_can_arm(g) return not coupled(g) end

function Adam:_check_group(g, level)
  AdamW._check_group(self, g, level + 1)
  local d = g.decoupled_weight_decay
  if d ~= nil and type(d) ~= "boolean" then
    error(("Adam: decoupled_weight_decay must be a boolean, got %s"):format(type(d)), level)
  end
end

return M
