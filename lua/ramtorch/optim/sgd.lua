-- ramtorch/optim/sgd.lua: SGD with momentum, dampening, Nesterov and (coupled) weight decay, PyTorch's
-- semantics. Each parameter is updated by one fused C call (rt_sgd_step) on the device it lives on.
local torch = require("ramtorch")
local rffi = require("ramtorch.ffi")
local optimizer = require("ramtorch.optim.optimizer")

local C, check = rffi.C, rffi.check
local Optimizer = optimizer.Optimizer

local M = {}

-- optim.SGD(params, {lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=false, maximize=false})
local SGD = Optimizer:extend("SGD")
M.SGD = SGD

function SGD:__init(params, opts)
  opts = opts or {}
  if type(opts) == "number" then opts = { lr = opts } end
  local defaults = {
    lr = opts.lr == nil and 1e-3 or opts.lr,
    momentum = opts.momentum or 0,
    dampening = opts.dampening or 0,
    weight_decay = opts.weight_decay or 0,
    nesterov = opts.nesterov == true,
    maximize = opts.maximize == true,
  }
  Optimizer.__init(self, params, defaults)
end

function SGD:_check_group(g, level)
  if type(g.lr) ~= "number" or g.lr < 0 then error(("SGD: Invalid learning rate: %s"):format(tostring(g.lr)), level) end
  if type(g.momentum) ~= "number" or g.momentum < 0 then error(("SGD: Invalid momentum value: %s"):format(tostring(g.momentum)), level) end
  if type(g.weight_decay) ~= "number" or g.weight_decay < 0 then
    error(("SGD: Invalid weight_decay value: %s"):format(tostring(g.weight_decay)), level)
  end
  if g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
    error("SGD: Nesterov momentum requires a momentum and zero dampening", level)
  end
end

-- Momentum buffers are f32 (f64 for f64 parameters), whatever the parameter's dtype.
local function state_dtype(p) return p.dtype == torch.float64 and torch.float64 or torch.float32 end

function SGD:step(closure)
  local loss = self:_closure_loss(closure)
  for _, g in ipairs(self.param_groups) do
    local lr, mom, damp, wd, nest = g.lr, g.momentum, g.dampening, g.weight_decay, g.nesterov and 1 or 0
    for _, p in ipairs(g.params) do
      local grad = p.grad
      if grad ~= nil then
        if g.maximize then grad = torch.no_grad(function() return -grad end) end
        if not grad:is_contiguous() then grad = grad:contiguous() end
        local st = self.state[p]
        if st == nil then
          st = {}
          self.state[p] = st
        end
        local buf, first = nil, 0
        if mom ~= 0 then
          buf = st.momentum_buffer
          if buf == nil then
            buf = torch.zeros(p.shape, { dtype = state_dtype(p), device = p.device })
            st.momentum_buffer = buf
            first = 1
          end
        end
        check(C.rt_sgd_step(p.p, grad.p, buf and buf.p or nil, lr, mom, damp, wd, nest, first))
      end
    end
  end
  return loss
end

return M
