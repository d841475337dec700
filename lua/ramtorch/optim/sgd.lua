-- ramtorch/optim/sgd.lua: SGD with momentum, dampening, Nesterov and (coupled) weight decay, PyTorch's
-- semantics. Each parameter is updated by one fused C call (rt_sgd_step) on the device it lives on.
local torch = require("ramtorch")
local rffi = require("ramtorch.ffi")
local optimizer = require("ramtorch.optim.optimizer")

local C, check, ffi = rffi.C, rffi.check, rffi.ffi
local Optimizer = optimizer.Optimizer

local M = {}

-- optim.SGD(params, {lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=false, maximize=false,
--                    delayed_update=false})
local SGD = Optimizer:extend("SGD")
M.SGD = SGD

-- PyTorch's foreach / fused / differentiable pick implementations: accepted, no effect.
local SGD_OPTIONS = { lr = true, momentum = true, dampening = true, weight_decay = true, nesterov = true,
                      maximize = true, delayed_update = true, foreach = true, fused = true, differentiable = true }

function SGD:__init(params, opts)
  opts = opts or {}
  if type(opts) == "number" then opts = { lr = opts } end
  optimizer.check_options("SGD", opts, SGD_OPTIONS, 3)
  local defaults = {
    lr = opts.lr == nil and 1e-3 or opts.lr,
    momentum = opts.momentum or 0,
    dampening = opts.dampening or 0,
    weight_decay = opts.weight_decay or 0,
    nesterov = opts.nesterov == true,
    maximize = opts.maximize == true,
  }
  Optimizer.__init(self, params, defaults)
  if opts.delayed_update then self:delay_update(true) end
end

function SGD:_check_group(g, level)
  if type(g.lr) ~= "number" or not (g.lr >= 0) then error(("SGD: Invalid learning rate: %s"):format(tostring(g.lr)), level) end
  if type(g.momentum) ~= "number" or not (g.momentum >= 0) then error(("SGD: Invalid momentum value: %s"):format(tostring(g.momentum)), level) end
  if type(g.weight_decay) ~= "number" or not (g.weight_decay >= 0) then
    error(("SGD: Invalid weight_decay value: %s"):format(tostring(g.weight_decay)), level)
  end
  if g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
    error("SGD: Nesterov momentum requires a momentum and zero dampening", level)
  end
end

-- Momentum buffers are f32 (f64 for f64 parameters), whatever the parameter's dtype.
local function state_dtype(p) return p.dtype == torch.float64 and torch.float64 or torch.float32 end

local hp = ffi.new("rt_sgd_hparams")

local function fill_hparams(g, first)
  hp.lr, hp.momentum, hp.dampening, hp.weight_decay = g.lr, g.momentum, g.dampening, g.weight_decay
  hp.nesterov, hp.first_step, hp.maximize = g.nesterov and 1 or 0, first, g.maximize and 1 or 0
  return hp
end

-- Host float32 parameters take the fused host kernel (rt_host_sgd_step) with a float32 gradient
-- or the bfloat16/float16 one the offload engine lands a first micro-batch's gradient in.
local function host_grad_dtype(d)
  return d == torch.float32 or d == torch.bfloat16 or d == torch.float16
end

local function host_path(p, grad)
  return p.device == "cpu" and p.dtype == torch.float32 and host_grad_dtype(grad.dtype)
    and grad.device == "cpu" and grad:is_contiguous() and p:is_contiguous()
end

-- Overlap (Optimizer.last_backward): armed once the momentum buffer exists.
function SGD:_arm(h, p, g, st)
  if not host_path(p, p) then return false end
  local buf = st.momentum_buffer
  if g.momentum ~= 0 and buf == nil then return false end
  check(C.rt_host_optim_arm_sgd(h, buf and buf.p or nil, fill_hparams(g, 0), st.expected_grads))
  return true
end

function SGD:step(closure)
  local loss = self:_closure_loss(closure)
  local delay = self._delay
  if delay then self:_delay_wait(2) end
  local done = delay and {} or self:_finish_overlap()
  local delayed = {} -- delay mode: streamed host parameters, updated on the update thread
  local offload
  for _, g in ipairs(self.param_groups) do
    local lr, mom, damp, wd, nest = g.lr, g.momentum, g.dampening, g.weight_decay, g.nesterov and 1 or 0
    for _, p in ipairs(g.params) do
      local grad = p.grad
      if grad ~= nil and not done[p] then
        local st = self.state[p]
        if st == nil then
          st = {}
          self.state[p] = st
        elseif st.momentum_buffer ~= nil and st.momentum_buffer.device ~= p.device then
          self:_state_follows(st, p)
        end
        local buf, first = nil, 0
        if mom ~= 0 then
          buf = st.momentum_buffer
          if buf == nil then
            buf = torch.zeros(p.shape, { dtype = state_dtype(p), device = p.device })
            first = 1
            -- in delay mode the buffer is kept once the update is launched (a failed launch
            -- leaves the parameter's first step to come)
            if not delay then st.momentum_buffer = buf end
          end
        end
        offload = offload or require("ramtorch.offload")
        local h = host_path(p, grad) and offload.existing_handle(p) or nil
        if delay and h ~= nil then
          local b = buf
          delayed[#delayed + 1] = {
            p = p,
            add = function(d)
              return C.rt_delayed_update_add_sgd(d, h, grad.p, b and b.p or nil, fill_hparams(g, first))
            end,
            commit = function() if b ~= nil then st.momentum_buffer = b end end,
          }
        elseif host_path(p, grad) then
          if buf ~= nil then st.momentum_buffer = buf end
          check(C.rt_host_sgd_step(p.p, grad.p, buf and buf.p or nil, h, fill_hparams(g, first)))
        else
          if buf ~= nil then st.momentum_buffer = buf end
          if g.maximize then grad = torch.no_grad(function() return -grad end) end
          if not grad:is_contiguous() then grad = grad:contiguous() end
          check(C.rt_sgd_step(p.p, grad.p, buf and buf.p or nil, lr, mom, damp, wd, nest, first))
        end
      end
    end
  end
  if delay then self:_delay_launch(delayed, 2) end
  self:_learn_counts()
  return loss
end

return M
