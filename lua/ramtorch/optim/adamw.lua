-- ramtorch/optim/adamw.lua: AdamW (Loshchilov & Hutter) with PyTorch's semantics: decoupled weight
-- decay, bias correction, amsgrad off. State per parameter: step (a number), exp_avg and exp_avg_sq
-- (f32, or f64 for f64 parameters; a bf16 parameter keeps f32 state and is rounded once per step).
-- Each parameter is updated by one fused C call (rt_adamw_step) where it lives.
local torch = require("ramtorch")
local rffi = require("ramtorch.ffi")
local optimizer = require("ramtorch.optim.optimizer")

local C, check = rffi.C, rffi.check
local Optimizer = optimizer.Optimizer

local M = {}

-- optim.AdamW(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=1e-2, maximize=false})
local AdamW = Optimizer:extend("AdamW")
M.AdamW = AdamW

function AdamW:__init(params, opts)
  opts = opts or {}
  if type(opts) == "number" then opts = { lr = opts } end
  if opts.amsgrad then error("AdamW: amsgrad is not supported", 3) end
  local betas = opts.betas or { 0.9, 0.999 }
  local defaults = {
    lr = opts.lr == nil and 1e-3 or opts.lr,
    betas = { betas[1], betas[2] },
    eps = opts.eps == nil and 1e-8 or opts.eps,
    weight_decay = opts.weight_decay == nil and 1e-2 or opts.weight_decay,
    amsgrad = false,
    maximize = opts.maximize == true,
  }
  Optimizer.__init(self, params, defaults)
end

function AdamW:_check_group(g, level)
  if type(g.lr) ~= "number" or g.lr < 0 then error(("AdamW: Invalid learning rate: %s"):format(tostring(g.lr)), level) end
  if type(g.eps) ~= "number" or g.eps < 0 then error(("AdamW: Invalid epsilon value: %s"):format(tostring(g.eps)), level) end
  local b = g.betas
  if type(b) ~= "table" or type(b[1]) ~= "number" or type(b[2]) ~= "number" then
    error("AdamW: betas must be a table of two numbers {beta1, beta2}", level)
  end
  if b[1] < 0 or b[1] >= 1 then error(("AdamW: Invalid beta parameter at index 0: %s"):format(tostring(b[1])), level) end
  if b[2] < 0 or b[2] >= 1 then error(("AdamW: Invalid beta parameter at index 1: %s"):format(tostring(b[2])), level) end
  if type(g.weight_decay) ~= "number" or g.weight_decay < 0 then
    error(("AdamW: Invalid weight_decay value: %s"):format(tostring(g.weight_decay)), level)
  end
  if g.amsgrad then error("AdamW: amsgrad is not supported", level) end
end

local function state_dtype(p) return p.dtype == torch.float64 and torch.float64 or torch.float32 end

function AdamW:step(closure)
  local loss = self:_closure_loss(closure)
  for _, g in ipairs(self.param_groups) do
    local lr, b1, b2, eps, wd = g.lr, g.betas[1], g.betas[2], g.eps, g.weight_decay
    for _, p in ipairs(g.params) do
      local grad = p.grad
      if grad ~= nil then
        if g.maximize then grad = torch.no_grad(function() return -grad end) end
        if not grad:is_contiguous() then grad = grad:contiguous() end
        local st = self.state[p]
        if st == nil then
          local o = { dtype = state_dtype(p), device = p.device }
          st = { step = 0, exp_avg = torch.zeros(p.shape, o), exp_avg_sq = torch.zeros(p.shape, o) }
          self.state[p] = st
        end
        local step = st.step + 1
        check(C.rt_adamw_step(p.p, grad.p, st.exp_avg.p, st.exp_avg_sq.p, lr, b1, b2, eps, wd, step))
        st.step = step
      end
    end
  end
  return loss
end

return M
