-- ramtorch/optim/adamw.lua: AdamW (Loshchilov & Hutter) with PyTorch's semantics: decoupled weight
-- decay, bias correction, amsgrad off. State per parameter: step (a number), exp_avg and exp_avg_sq
-- (f32, or f64 for f64 parameters; a bf16 parameter keeps f32 state and is rounded once per step).
-- Host parameters are updated by one fused C call each (rt_host_adamw_step); the rest (device
-- parameters, float64 ones) in batches: one rt_adamw_step_multi call per device and step count in
-- each param group, a few kernel launches on a GPU instead of one per parameter.
local torch = require("ramtorch")
local rffi = require("ramtorch.ffi")
local optimizer = require("ramtorch.optim.optimizer")

local C, check, ffi = rffi.C, rffi.check, rffi.ffi
local Optimizer = optimizer.Optimizer

local M = {}

-- optim.AdamW(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=1e-2, maximize=false,
--                      state_dtype="f32" | "bf16", seed=0, delayed_update=false})
-- state_dtype "bf16" keeps exp_avg and exp_avg_sq of host parameters in bfloat16 with stochastic
-- rounding (deterministic: keyed by seed, the parameter's index, the step and the element index).
local AdamW = Optimizer:extend("AdamW")
M.AdamW = AdamW

-- PyTorch's foreach / fused / capturable / differentiable pick implementations: accepted, no effect.
local ADAMW_OPTIONS = { lr = true, betas = true, eps = true, weight_decay = true, amsgrad = true, maximize = true,
                        state_dtype = true, seed = true, delayed_update = true, foreach = true, fused = true,
                        capturable = true, differentiable = true }

-- Subclasses (optim.Adam) share this constructor: messages name the class, and the default
-- weight_decay and extra options come from the class (_default_weight_decay, _extra_options).
AdamW._default_weight_decay = 1e-2

function AdamW:__init(params, opts)
  local name = getmetatable(self).__name
  opts = opts or {}
  if type(opts) == "number" then opts = { lr = opts } end
  local allowed = ADAMW_OPTIONS
  if self._extra_options then
    allowed = {}
    for k in pairs(ADAMW_OPTIONS) do allowed[k] = true end
    for k in pairs(self._extra_options) do allowed[k] = true end
  end
  optimizer.check_options(name, opts, allowed, 3)
  if opts.amsgrad then error(name .. ": amsgrad is not supported", 3) end
  local betas = opts.betas or { 0.9, 0.999 }
  local defaults = {
    lr = opts.lr == nil and 1e-3 or opts.lr,
    betas = { betas[1], betas[2] },
    eps = opts.eps == nil and 1e-8 or opts.eps,
    weight_decay = opts.weight_decay == nil and self._default_weight_decay or opts.weight_decay,
    amsgrad = false,
    maximize = opts.maximize == true,
  }
  local sd = opts.state_dtype
  if sd == "bfloat16" or sd == torch.bfloat16 then sd = "bf16" end
  if sd == "float32" or sd == torch.float32 or sd == nil then sd = "f32" end
  if sd ~= "f32" and sd ~= "bf16" then
    error((name .. ": state_dtype must be \"f32\" or \"bf16\", got %s"):format(tostring(opts.state_dtype)), 3)
  end
  self.state_dtype = sd
  self.seed = opts.seed or 0
  if self._extra_defaults then self:_extra_defaults(defaults, opts) end
  Optimizer.__init(self, params, defaults)
  if opts.delayed_update then self:delay_update(true) end
end

function AdamW:_check_group(g, level)
  local name = getmetatable(self).__name
  if type(g.lr) ~= "number" or not (g.lr >= 0) then error((name .. ": Invalid learning rate: %s"):format(tostring(g.lr)), level) end
  if type(g.eps) ~= "number" or not (g.eps >= 0) then error((name .. ": Invalid epsilon value: %s"):format(tostring(g.eps)), level) end
  local b = g.betas
  if type(b) ~= "table" or type(b[1]) ~= "number" or type(b[2]) ~= "number" then
    error(name .. ": betas must be a table of two numbers {beta1, beta2}", level)
  end
  if not (b[1] >= 0 and b[1] < 1) then error((name .. ": Invalid beta parameter at index 0: %s"):format(tostring(b[1])), level) end
  if not (b[2] >= 0 and b[2] < 1) then error((name .. ": Invalid beta parameter at index 1: %s"):format(tostring(b[2])), level) end
  if type(g.weight_decay) ~= "number" or not (g.weight_decay >= 0) then
    error((name .. ": Invalid weight_decay value: %s"):format(tostring(g.weight_decay)), level)
  end
  if g.amsgrad then error(name .. ": amsgrad is not supported", level) end
end

-- Host parameters (CPU float32 or bfloat16, with a float32 gradient or the bfloat16/float16 one
-- the offload engine lands a first micro-batch's gradient in) take the fused host kernel
-- (rt_host_adamw_step: SIMD, threads, the transfer shadow written in the same pass); the rest
-- (device, float64) take rt_adamw_step where they live.
local function host_path(p, grad)
  local d, gd = p.dtype, grad.dtype
  return p.device == "cpu" and (d == torch.float32 or d == torch.bfloat16)
    and (gd == torch.float32 or gd == torch.bfloat16 or gd == torch.float16)
    and grad.device == "cpu" and grad:is_contiguous() and p:is_contiguous()
end

local hp = ffi.new("rt_adamw_hparams")

-- wd, maximize: what the fused update applies (AdamW:_fused_opts; optim.Adam folds its L2 term
-- into the gradient first and passes 0 here).
local function fill_hparams(g, step, seed, wd, maximize)
  hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay = g.lr, g.betas[1], g.betas[2], g.eps, wd
  hp.step, hp.seed, hp.maximize = step, seed, maximize and 1 or 0
  return hp
end

-- Hooks for subclasses. _fused_opts(g) -> the decoupled weight decay and the maximize flag the
-- fused update applies for group g; _update_grad(p, grad, g) -> the gradient it is given (a new
-- tensor when changed: p.grad is never modified); _can_arm(g) -> whether the engine-landed
-- gradient can be used as it is (overlap with the backward).
function AdamW:_fused_opts(g) return g.weight_decay, g.maximize end
function AdamW:_update_grad(p, grad, g) return grad end
function AdamW:_can_arm(g) return true end

-- State tensors: next to the parameter in the host arena when the parameter lives there (DESIGN
-- section 6; a later issue shards and shares them), else where the parameter lives.
function AdamW:_new_state(p)
  local sd
  if self.state_dtype == "bf16" then
    if p.device ~= "cpu" or p.dtype == torch.float64 then
      error((getmetatable(self).__name .. ": state_dtype = \"bf16\" is for host (CPU) float32/bfloat16 parameters, got a %s parameter on %s")
            :format(tostring(p.dtype), tostring(p.device)), 3)
    end
    sd = torch.bfloat16
  else
    sd = p.dtype == torch.float64 and torch.float64 or torch.float32
  end
  local offload = require("ramtorch.offload")
  local m, v
  if p.device == "cpu" and offload.is_arena_tensor(p) then
    m, v = offload.arena_zeros(p.shape, sd), offload.arena_zeros(p.shape, sd)
  else
    local o = { dtype = sd, device = p.device }
    m, v = torch.zeros(p.shape, o), torch.zeros(p.shape, o)
  end
  self._nparams = (self._nparams or 0) + 1
  return { step = 0, exp_avg = m, exp_avg_sq = v, seed = self.seed * 1048576 + self._nparams }
end

-- Overlap (Optimizer.last_backward): arm p's update on the engine's host worker.
function AdamW:_arm(h, p, g, st)
  if p.device ~= "cpu" or (p.dtype ~= torch.float32 and p.dtype ~= torch.bfloat16) then return false end
  if not self:_can_arm(g) then return false end
  local wd, maximize = self:_fused_opts(g)
  check(C.rt_host_optim_arm_adamw(h, st.exp_avg.p, st.exp_avg_sq.p, fill_hparams(g, st.step + 1, st.seed, wd, maximize),
                                  st.expected_grads))
  return true
end

function AdamW:_armed_done(p, st) st.step = st.step + 1 end

-- One rt_adamw_step_multi call for a batch (parameters of one device and step count, one param
-- group). The C side checks every entry before it writes any, and groups the tensors by dtype
-- combination itself; b.g keeps negated/contiguous gradient copies alive through the call.
local function run_batch(b, g, wd)
  local n = #b.p
  local P, G = ffi.new("rt_tensor *[?]", n), ffi.new("rt_tensor *[?]", n)
  local Mv, V = ffi.new("rt_tensor *[?]", n), ffi.new("rt_tensor *[?]", n)
  for i = 1, n do
    local st = b.st[i]
    P[i - 1], G[i - 1], Mv[i - 1], V[i - 1] = b.p[i].p, b.g[i].p, st.exp_avg.p, st.exp_avg_sq.p
  end
  check(C.rt_adamw_step_multi(n, P, G, Mv, V, g.lr, g.betas[1], g.betas[2], g.eps, wd,
                              b.step))
  for i = 1, n do b.st[i].step = b.step end
end

function AdamW:step(closure)
  local loss = self:_closure_loss(closure)
  local delay = self._delay
  if delay then self:_delay_wait(2) end
  local done = delay and {} or self:_finish_overlap()
  local delayed = {} -- delay mode: streamed host parameters, updated on the update thread
  local offload
  for _, g in ipairs(self.param_groups) do
    local batches, order, pending = {}, {}, {}
    local wd, maximize = self:_fused_opts(g)
    for _, p in ipairs(g.params) do
      local grad = p.grad
      if grad ~= nil and not done[p] then
        local st = self.state[p]
        if st == nil then
          st = self:_new_state(p)
          self.state[p] = st
        elseif st.exp_avg.device ~= p.device then
          self:_state_follows(st, p)
        end
        local pkey = tostring(p.p) -- the C tensor: it may be listed under two handles
        if pending[pkey] then
          -- listed twice in the group: its first update lands before the second (as before batching)
          for _, b in ipairs(order) do run_batch(b, g, wd) end
          batches, order, pending = {}, {}, {}
        end
        -- after the flush above: a parameter listed twice folds in its value after the first update
        grad = self:_update_grad(p, grad, g)
        local step = st.step + 1
        offload = offload or require("ramtorch.offload")
        local h = host_path(p, grad) and offload.existing_handle(p) or nil
        if delay and h ~= nil then
          delayed[#delayed + 1] = {
            p = p,
            add = function(d)
              return C.rt_delayed_update_add_adamw(d, h, grad.p, st.exp_avg.p, st.exp_avg_sq.p,
                                                   fill_hparams(g, step, st.seed, wd, maximize))
            end,
            commit = function() st.step = step end,
          }
        elseif host_path(p, grad) then
          check(C.rt_host_adamw_step(p.p, grad.p, st.exp_avg.p, st.exp_avg_sq.p, h,
                                     fill_hparams(g, step, st.seed, wd, maximize)))
          st.step = step
        else
          if st.exp_avg.dtype == torch.bfloat16 then
            error(getmetatable(self).__name .. ": bfloat16 state needs a host parameter (float32 or bfloat16) with a contiguous host gradient", 2)
          end
          if maximize then grad = torch.no_grad(function() return -grad end) end
          if not grad:is_contiguous() then grad = grad:contiguous() end
          local key = tostring(p.device) .. "#" .. step
          local b = batches[key]
          if b == nil then
            b = { step = step, p = {}, g = {}, st = {} }
            batches[key] = b
            order[#order + 1] = b
          end
          local k = #b.p + 1
          b.p[k], b.g[k], b.st[k] = p, grad, st
          pending[pkey] = true
        end
      end
    end
    for _, b in ipairs(order) do run_batch(b, g, wd) end
  end
  if delay then self:_delay_launch(delayed, 2) end
  self:_learn_counts()
  return loss
end

return M
