-- ramtorch/optim/lr_scheduler_more.lua: the rest of PyTorch's LR schedulers (torch/optim/
-- lr_scheduler.py), with its formulas, last_epoch semantics and state dicts: PolynomialLR,
-- CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR and ReduceLROnPlateau. Not used directly:
-- ramtorch.optim.lr_scheduler calls this module with its table (for LRScheduler) and exports the
-- classes it returns.
--
-- PyTorch's arguments come positionally after the optimizer, or as one options table there, or
-- positionally followed by an options table for the rest:
--   PolynomialLR(opt, 10, 2.0)  PolynomialLR(opt, {total_iters = 10, power = 2.0})
--   OneCycleLR(opt, 0.1, {total_steps = 100})  CyclicLR(opt, {base_lr = 1e-3, max_lr = 1e-2})
-- Unknown option names raise, as PyTorch raises on an unexpected keyword argument.

return function(base)
  local LRScheduler = base.LRScheduler
  local M = {}

  -- A table of options (string keys, or empty) rather than a per-group array of values.
  local function is_kwargs(v)
    if type(v) ~= "table" then return false end
    if next(v) == nil then return true end
    for k in pairs(v) do
      if type(k) ~= "number" then return true end
    end
    return false
  end

  -- args: the arguments after the optimizer. names: PyTorch's positional order. Returns a table of
  -- options (copies of what was given; unknown names raise at `level` above the caller).
  local function parse_args(sname, names, level, ...)
    local args = { ... }
    local n = select("#", ...)
    while n > 0 and args[n] == nil do n = n - 1 end -- trailing nils: not given
    local opts = {}
    local allowed = {}
    for _, k in ipairs(names) do allowed[k] = true end
    for i = 1, n do
      local v = args[i]
      if is_kwargs(v) then
        if i ~= n then
          error(("%s: an options table must be the last argument (got it at position %d of %d after the optimizer)")
                :format(sname, i, n), level + 1)
        end
        for k, x in pairs(v) do
          if not allowed[k] then error(("%s: unexpected option '%s'"):format(sname, tostring(k)), level + 1) end
          if opts[k] ~= nil then
            error(("%s: got option '%s' both positionally and in the options table"):format(sname, k), level + 1)
          end
          opts[k] = x
        end
      else
        if i > #names then
          error(("%s: takes at most %d arguments after the optimizer, got %d"):format(sname, #names, n), level + 1)
        end
        opts[names[i]] = v
      end
    end
    return opts
  end

  local function expect_optimizer(opt, sname, level)
    if type(opt) ~= "table" or type(opt.param_groups) ~= "table" then
      error(("%s: expected an optimizer (a table with param_groups), got %s"):format(sname, type(opt)), level + 1)
    end
  end

  local function expect_number(sname, what, v, level)
    if type(v) ~= "number" or v ~= v then
      error(("%s: %s must be a number, got %s"):format(sname, what, v == nil and "nil" or tostring(v)), level + 1)
    end
  end

  local function is_int(v) return type(v) == "number" and v == math.floor(v) and v > -math.huge and v < math.huge end

  -- PyTorch's _format_param: one value for every group, or an array of one per group.
  local function per_group(sname, name, optimizer, v, level)
    local n = #optimizer.param_groups
    local out = {}
    if type(v) == "table" then
      if #v ~= n then
        error(("%s: %s must have the same length as optimizer.param_groups. %s has %d values, param_groups has %d.")
              :format(sname, name, name, #v, n), level + 1)
      end
      for i = 1, n do
        expect_number(sname, ("%s[%d]"):format(name, i), v[i], level + 1)
        out[i] = v[i]
      end
    else
      expect_number(sname, name, v, level + 1)
      for i = 1, n do out[i] = v end
    end
    return out
  end

  local group_lrs = base._group_lrs

  -- cycle_momentum: beta1 of Adam-like optimizers (those whose defaults hold betas), else momentum.
  local function check_momentum_support(sname, optimizer, level)
    local d = optimizer.defaults or {}
    if d.momentum == nil and d.betas == nil then
      error(sname .. ": optimizer must support momentum or beta1 with `cycle_momentum` option enabled", level + 1)
    end
    return d.betas ~= nil
  end

  local function set_momentum(g, use_beta1, m)
    if use_beta1 then
      local b = { m }
      for i = 2, #g.betas do b[i] = g.betas[i] end
      g.betas = b
    else
      g.momentum = m
    end
  end

  -- ---- PolynomialLR ----------------------------------------------------------------------------------

  -- lr = base_lr * (1 - min(total_iters, epoch) / total_iters) ^ power (0 from total_iters on).
  local PolynomialLR = LRScheduler:extend("PolynomialLR")
  M.PolynomialLR = PolynomialLR

  function PolynomialLR:__init(optimizer, ...)
    local o = parse_args("PolynomialLR", { "total_iters", "power", "last_epoch" }, 3, ...)
    local total_iters = o.total_iters == nil and 5 or o.total_iters
    local power = o.power == nil and 1.0 or o.power
    if type(total_iters) ~= "number" or not (total_iters > 0) then
      error(("PolynomialLR: total_iters must be a positive number, got %s"):format(tostring(total_iters)), 3)
    end
    expect_number("PolynomialLR", "power", power,3)
    self.total_iters, self.power = total_iters, power
    LRScheduler.__init(self, optimizer, o.last_epoch)
  end

  function PolynomialLR:get_lr()
    local e, n = self.last_epoch, self.total_iters
    if self._is_initial or e == 0 or e > n then return group_lrs(self) end
    local f = ((1.0 - e / n) / (1.0 - (e - 1) / n)) ^ self.power
    local out = {}
    for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr * f end
    return out
  end

  function PolynomialLR:_get_closed_form_lr()
    local out = {}
    local n = self.total_iters
    for i, b in ipairs(self.base_lrs) do
      out[i] = b * (1.0 - math.min(n, self.last_epoch) / n) ^ self.power
    end
    return out
  end

  -- ---- CosineAnnealingWarmRestarts ---------------------------------------------------------------------

  -- SGDR: lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2, restarting every
  -- T_i epochs (T_i = T_0 * T_mult^k). step(epoch) takes fractional epochs (epoch + i / iters).
  local CosineAnnealingWarmRestarts = LRScheduler:extend("CosineAnnealingWarmRestarts")
  M.CosineAnnealingWarmRestarts = CosineAnnealingWarmRestarts

  function CosineAnnealingWarmRestarts:__init(optimizer, ...)
    local sname = "CosineAnnealingWarmRestarts"
    local o = parse_args(sname, { "T_0", "T_mult", "eta_min", "last_epoch" }, 3, ...)
    local T_0, T_mult, eta_min = o.T_0, o.T_mult == nil and 1 or o.T_mult, o.eta_min == nil and 0.0 or o.eta_min
    if not is_int(T_0) or T_0 <= 0 then
      error(("%s: Expected positive integer T_0, but got %s"):format(sname, tostring(T_0)), 3)
    end
    if not is_int(T_mult) or T_mult < 1 then
      error(("%s: Expected integer T_mult >= 1, but got %s"):format(sname, tostring(T_mult)), 3)
    end
    if type(eta_min) ~= "number" then
      error(("%s: Expected float or int eta_min, but got %s of type %s"):format(sname, tostring(eta_min), type(eta_min)), 3)
    end
    self.T_0, self.T_i, self.T_mult, self.eta_min = T_0, T_0, T_mult, eta_min
    self.T_cur = o.last_epoch == nil and -1 or o.last_epoch
    LRScheduler.__init(self, optimizer, o.last_epoch)
  end

  function CosineAnnealingWarmRestarts:get_lr()
    local out = {}
    local c = (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
    for i, b in ipairs(self.base_lrs) do out[i] = self.eta_min + (b - self.eta_min) * c end
    return out
  end

  function CosineAnnealingWarmRestarts:step(epoch)
    if epoch ~= nil and (type(epoch) ~= "number" or epoch ~= epoch) then
      error(("CosineAnnealingWarmRestarts.step: expected a number epoch (or nothing), got %s"):format(type(epoch)), 2)
    end
    self._step_count = (self._step_count or 0) + 1
    if epoch == nil and self.last_epoch < 0 then epoch = 0 end
    if epoch == nil then
      epoch = self.last_epoch + 1
      self.T_cur = self.T_cur + 1
      if self.T_cur >= self.T_i then
        self.T_cur = self.T_cur - self.T_i
        self.T_i = self.T_i * self.T_mult
      end
    else
      if epoch < 0 then
        error(("CosineAnnealingWarmRestarts.step: Expected non-negative epoch, but got %s"):format(tostring(epoch)), 2)
      end
      if epoch >= self.T_0 then
        if self.T_mult == 1 then
          self.T_cur = epoch % self.T_0
        else
          -- Python's math.log(x, base) is log(x) / log(base); int() truncates (x >= 1 here)
          local m = self.T_mult
          local n = math.floor(math.log(epoch / self.T_0 * (m - 1) + 1) / math.log(m))
          self.T_cur = epoch - self.T_0 * (m ^ n - 1) / (m - 1)
          self.T_i = self.T_0 * m ^ n
        end
      else
        self.T_i = self.T_0
        self.T_cur = epoch
      end
    end
    self.last_epoch = math.floor(epoch)
    local values = self:get_lr()
    for i, g in ipairs(self.optimizer.param_groups) do
      if values[i] ~= nil then g.lr = values[i] end
    end
    self._last_lr = group_lrs(self)
  end

  -- ---- CyclicLR ----------------------------------------------------------------------------------------

  -- Cyclical learning rates (Smith): lr goes from base_lr to max_lr over step_size_up steps and back
  -- over step_size_down, the amplitude scaled per mode (triangular: 1, triangular2: halved each
  -- cycle, exp_range: gamma^iteration) or by scale_fn(x) with scale_mode "cycle" | "iterations".
  -- With cycle_momentum the momentum (beta1 for Adam-like optimizers) cycles inversely between
  -- max_momentum and base_momentum. Step it after every batch.
  local CyclicLR = LRScheduler:extend("CyclicLR")
  M.CyclicLR = CyclicLR

  local CYCLIC_ARGS = { "base_lr", "max_lr", "step_size_up", "step_size_down", "mode", "gamma", "scale_fn",
                        "scale_mode", "cycle_momentum", "base_momentum", "max_momentum", "last_epoch" }

  function CyclicLR:__init(optimizer, ...)
    local sname = "CyclicLR"
    local o = parse_args(sname, CYCLIC_ARGS, 3, ...)
    expect_optimizer(optimizer, sname,3)
    local last_epoch = o.last_epoch == nil and -1 or o.last_epoch
    if o.base_lr == nil then error("CyclicLR: missing base_lr", 3) end
    if o.max_lr == nil then error("CyclicLR: missing max_lr", 3) end
    local base_lrs = per_group(sname, "base_lr", optimizer, o.base_lr,3)
    if last_epoch == -1 then
      for i, g in ipairs(optimizer.param_groups) do g.lr = base_lrs[i] end
    end
    self.max_lrs = per_group(sname, "max_lr", optimizer, o.max_lr,3)
    local up = o.step_size_up == nil and 2000 or o.step_size_up
    local down = o.step_size_down == nil and up or o.step_size_down
    if type(up) ~= "number" or not (up > 0) then
      error(("CyclicLR: step_size_up must be a positive number, got %s"):format(tostring(up)), 3)
    end
    if type(down) ~= "number" or not (down >= 0) then
      error(("CyclicLR: step_size_down must be a non-negative number, got %s"):format(tostring(down)), 3)
    end
    self.total_size = up + down
    self.step_ratio = up / self.total_size
    local mode = o.mode == nil and "triangular" or o.mode
    local fn = o.scale_fn
    if fn ~= nil and type(fn) ~= "function" then
      error(("CyclicLR: scale_fn must be a function, got %s"):format(type(fn)), 3)
    end
    if fn == nil and mode ~= "triangular" and mode ~= "triangular2" and mode ~= "exp_range" then
      error(("CyclicLR: mode is invalid and scale_fn is None (mode %s; expected triangular, triangular2 or exp_range)")
            :format(tostring(mode)), 3)
    end
    self.mode = mode
    self.gamma = o.gamma == nil and 1.0 or o.gamma
    expect_number(sname, "gamma", self.gamma,3)
    if fn ~= nil then
      self._scale_fn_custom = fn
      self.scale_mode = o.scale_mode == nil and "cycle" or o.scale_mode
      if self.scale_mode ~= "cycle" and self.scale_mode ~= "iterations" then
        error(("CyclicLR: scale_mode must be \"cycle\" or \"iterations\", got %s"):format(tostring(self.scale_mode)), 3)
      end
    else
      self.scale_mode = mode == "exp_range" and "iterations" or "cycle"
    end
    self.cycle_momentum = o.cycle_momentum ~= false
    if self.cycle_momentum then
      self.use_beta1 = check_momentum_support(sname, optimizer,3)
      self.base_momentums = per_group(sname, "base_momentum", optimizer, o.base_momentum == nil and 0.8 or o.base_momentum,3)
      self.max_momentums = per_group(sname, "max_momentum", optimizer, o.max_momentum == nil and 0.9 or o.max_momentum,3)
      if last_epoch == -1 then
        for i, g in ipairs(optimizer.param_groups) do
          set_momentum(g, self.use_beta1, self.max_momentums[i])
          g.max_momentum, g.base_momentum = self.max_momentums[i], self.base_momentums[i]
        end
      end
    end
    LRScheduler.__init(self, optimizer, last_epoch)
    self.base_lrs = base_lrs
  end

  function CyclicLR:scale_fn(x)
    if self._scale_fn_custom then return self._scale_fn_custom(x) end
    if self.mode == "triangular" then return 1.0 end
    if self.mode == "triangular2" then return 1 / (2.0 ^ (x - 1)) end
    return self.gamma ^ x
  end

  function CyclicLR:get_lr()
    local e = self.last_epoch
    local cycle = math.floor(1 + e / self.total_size)
    local x = 1.0 + e / self.total_size - cycle
    local sf
    if x <= self.step_ratio then sf = x / self.step_ratio else sf = (x - 1) / (self.step_ratio - 1) end
    local scale = self:scale_fn(self.scale_mode == "cycle" and cycle or e)
    local lrs = {}
    for i, b in ipairs(self.base_lrs) do lrs[i] = b + (self.max_lrs[i] - b) * sf * scale end
    if self.cycle_momentum then
      for i, g in ipairs(self.optimizer.param_groups) do
        local bm, mm = self.base_momentums[i], self.max_momentums[i]
        if bm ~= nil then set_momentum(g, self.use_beta1, mm - (mm - bm) * sf * scale) end
      end
    end
    return lrs
  end

  -- ---- OneCycleLR --------------------------------------------------------------------------------------

  -- The 1cycle policy (Smith & Topin): lr anneals from max_lr / div_factor up to max_lr over
  -- pct_start of total_steps, then down to initial_lr / final_div_factor (three_phase: back to
  -- initial_lr first, then down); momentum (beta1 for Adam-like optimizers) the other way between
  -- max_momentum and base_momentum. Step it after every batch, total_steps times at most.
  local OneCycleLR = LRScheduler:extend("OneCycleLR")
  M.OneCycleLR = OneCycleLR

  local ONECYCLE_ARGS = { "max_lr", "total_steps", "epochs", "steps_per_epoch", "pct_start", "anneal_strategy",
                          "cycle_momentum", "base_momentum", "max_momentum", "div_factor", "final_div_factor",
                          "three_phase", "last_epoch" }

  function OneCycleLR:__init(optimizer, ...)
    local sname = "OneCycleLR"
    local o = parse_args(sname, ONECYCLE_ARGS, 3, ...)
    expect_optimizer(optimizer, sname,3)
    self.optimizer = optimizer
    local last_epoch = o.last_epoch == nil and -1 or o.last_epoch
    if o.total_steps ~= nil then
      if not is_int(o.total_steps) or o.total_steps <= 0 then
        error(("OneCycleLR: Expected positive integer total_steps, but got %s"):format(tostring(o.total_steps)), 3)
      end
      self.total_steps = o.total_steps
    elseif o.epochs ~= nil and o.steps_per_epoch ~= nil then
      if not is_int(o.epochs) or o.epochs <= 0 then
        error(("OneCycleLR: Expected positive integer epochs, but got %s"):format(tostring(o.epochs)), 3)
      end
      if not is_int(o.steps_per_epoch) or o.steps_per_epoch <= 0 then
        error(("OneCycleLR: Expected positive integer steps_per_epoch, but got %s"):format(tostring(o.steps_per_epoch)), 3)
      end
      self.total_steps = o.epochs * o.steps_per_epoch
    else
      error("OneCycleLR: You must define either total_steps OR (epochs AND steps_per_epoch)", 3)
    end
    local pct = o.pct_start == nil and 0.3 or o.pct_start
    if type(pct) ~= "number" or not (pct >= 0 and pct <= 1) then
      error(("OneCycleLR: Expected float between 0 and 1 pct_start, but got %s"):format(tostring(pct)), 3)
    end
    local n = self.total_steps
    if o.three_phase then
      self._schedule_phases = {
        { end_step = pct * n - 1, start_lr = "initial_lr", end_lr = "max_lr",
          start_momentum = "max_momentum", end_momentum = "base_momentum" },
        { end_step = 2 * pct * n - 2, start_lr = "max_lr", end_lr = "initial_lr",
          start_momentum = "base_momentum", end_momentum = "max_momentum" },
        { end_step = n - 1, start_lr = "initial_lr", end_lr = "min_lr",
          start_momentum = "max_momentum", end_momentum = "max_momentum" },
      }
    else
      self._schedule_phases = {
        { end_step = pct * n - 1, start_lr = "initial_lr", end_lr = "max_lr",
          start_momentum = "max_momentum", end_momentum = "base_momentum" },
        { end_step = n - 1, start_lr = "max_lr", end_lr = "min_lr",
          start_momentum = "base_momentum", end_momentum = "max_momentum" },
      }
    end
    local strategy = o.anneal_strategy == nil and "cos" or o.anneal_strategy
    if strategy ~= "cos" and strategy ~= "linear" then
      error(("OneCycleLR: anneal_strategy must be one of 'cos' or 'linear', instead got %s"):format(tostring(strategy)), 3)
    end
    self._anneal_func_type = strategy
    if o.max_lr == nil then error("OneCycleLR: missing max_lr", 3) end
    local max_lrs = per_group(sname, "max_lr", optimizer, o.max_lr,3)
    local div = o.div_factor == nil and 25.0 or o.div_factor
    local final_div = o.final_div_factor == nil and 1e4 or o.final_div_factor
    expect_number(sname, "div_factor", div,3)
    expect_number(sname, "final_div_factor", final_div,3)
    if last_epoch == -1 then
      for i, g in ipairs(optimizer.param_groups) do
        g.initial_lr = max_lrs[i] / div
        g.max_lr = max_lrs[i]
        g.min_lr = g.initial_lr / final_div
      end
    end
    self.cycle_momentum = o.cycle_momentum ~= false
    if self.cycle_momentum then
      self.use_beta1 = check_momentum_support(sname, optimizer,3)
      local maxm = per_group(sname, "max_momentum", optimizer, o.max_momentum == nil and 0.95 or o.max_momentum,3)
      local basem = per_group(sname, "base_momentum", optimizer, o.base_momentum == nil and 0.85 or o.base_momentum,3)
      if last_epoch == -1 then
        for i, g in ipairs(optimizer.param_groups) do
          set_momentum(g, self.use_beta1, maxm[i])
          g.max_momentum, g.base_momentum = maxm[i], basem[i]
        end
      end
    end
    LRScheduler.__init(self, optimizer, last_epoch)
  end

  function OneCycleLR:_anneal(start, stop, pct)
    if self._anneal_func_type == "cos" then
      return stop + (start - stop) / 2.0 * (math.cos(math.pi * pct) + 1)
    end
    return (stop - start) * pct + start
  end

  function OneCycleLR:get_lr()
    local step_num = self.last_epoch
    if step_num > self.total_steps then
      error(("OneCycleLR: Tried to step %d times. The specified number of total steps is %d")
            :format(step_num, self.total_steps), 0)
    end
    local lrs = {}
    local phases = self._schedule_phases
    for gi, g in ipairs(self.optimizer.param_groups) do
      local start_step = 0.0
      local lr, mom
      for i, ph in ipairs(phases) do
        local end_step = ph.end_step
        if step_num <= end_step or i == #phases then
          local pct = (step_num - start_step) / (end_step - start_step)
          lr = self:_anneal(g[ph.start_lr], g[ph.end_lr], pct)
          if self.cycle_momentum then mom = self:_anneal(g[ph.start_momentum], g[ph.end_momentum], pct) end
          break
        end
        start_step = end_step
      end
      lrs[gi] = lr
      if self.cycle_momentum then set_momentum(g, self.use_beta1, mom) end
    end
    return lrs
  end

  -- Past total_steps PyTorch raises a ValueError: so does step(), naming the scheduler's method.
  function OneCycleLR:step(epoch)
    local last, count = self.last_epoch, self._step_count
    local ok, err = pcall(LRScheduler.step, self, epoch)
    if not ok then
      self.last_epoch, self._step_count = last, count -- the failed step did not happen
      error("OneCycleLR.step: " .. tostring(err):gsub("^OneCycleLR: ", ""), 2)
    end
  end

  -- ---- ReduceLROnPlateau -------------------------------------------------------------------------------

  -- Multiply every group's lr by factor when the metric given to step(metric) has not improved by
  -- threshold (rel: relative, abs: absolute) for more than patience epochs; then wait cooldown
  -- epochs before counting again. lr never goes below min_lr (a number or one per group), and a
  -- change smaller than eps is not made.
  local ReduceLROnPlateau = LRScheduler:extend("ReduceLROnPlateau")
  M.ReduceLROnPlateau = ReduceLROnPlateau

  local PLATEAU_ARGS = { "mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps" }

  local function init_is_better(self, level)
    if self.mode ~= "min" and self.mode ~= "max" then
      error(("ReduceLROnPlateau: mode %s is unknown! (expected \"min\" or \"max\")"):format(tostring(self.mode)), level + 1)
    end
    if self.threshold_mode ~= "rel" and self.threshold_mode ~= "abs" then
      error(("ReduceLROnPlateau: threshold mode %s is unknown! (expected \"rel\" or \"abs\")")
            :format(tostring(self.threshold_mode)), level + 1)
    end
    self.mode_worse = self.mode == "min" and math.huge or -math.huge
  end

  function ReduceLROnPlateau:__init(optimizer, ...)
    local sname = "ReduceLROnPlateau"
    local o = parse_args(sname, PLATEAU_ARGS, 3, ...)
    expect_optimizer(optimizer, sname,3)
    local factor = o.factor == nil and 0.1 or o.factor
    expect_number(sname, "factor", factor,3)
    if factor >= 1.0 then error("ReduceLROnPlateau: Factor should be < 1.0.", 3) end
    self.factor = factor
    self.optimizer = optimizer
    local min_lr = o.min_lr == nil and 0 or o.min_lr
    local n = #optimizer.param_groups
    if type(min_lr) == "table" then
      if #min_lr ~= n then
        error(("ReduceLROnPlateau: expected %d min_lrs, got %d"):format(n, #min_lr), 3)
      end
      self.default_min_lr = false -- per group (PyTorch's None; nil would drop out of state dicts)
      self.min_lrs = {}
      for i = 1, n do
        expect_number(sname, ("min_lr[%d]"):format(i), min_lr[i],3)
        self.min_lrs[i] = min_lr[i]
      end
    else
      expect_number(sname, "min_lr", min_lr,3)
      self.default_min_lr = min_lr
      self.min_lrs = {}
      for i = 1, n do self.min_lrs[i] = min_lr end
    end
    self.patience = o.patience == nil and 10 or o.patience
    self.cooldown = o.cooldown == nil and 0 or o.cooldown
    self.threshold = o.threshold == nil and 1e-4 or o.threshold
    self.eps = o.eps == nil and 1e-8 or o.eps
    expect_number(sname, "patience", self.patience,3)
    expect_number(sname, "cooldown", self.cooldown,3)
    expect_number(sname, "threshold", self.threshold,3)
    expect_number(sname, "eps", self.eps,3)
    self.cooldown_counter = 0
    self.mode = o.mode == nil and "min" or o.mode
    self.threshold_mode = o.threshold_mode == nil and "rel" or o.threshold_mode
    self.last_epoch = 0
    self._last_lr = group_lrs(self)
    init_is_better(self, 3)
    self.best = self.mode_worse
    self.num_bad_epochs = 0
  end

  function ReduceLROnPlateau:is_better(a, best)
    local t = self.threshold
    if self.mode == "min" then
      if self.threshold_mode == "rel" then return a < best * (1.0 - t) end
      return a < best - t
    end
    if self.threshold_mode == "rel" then return a > best * (t + 1.0) end
    return a > best + t
  end

  function ReduceLROnPlateau:get_lr()
    error("ReduceLROnPlateau: get_lr is not defined (the lr depends on the metrics given to step; use get_last_lr)", 2)
  end

  function ReduceLROnPlateau:_reduce_lr()
    local groups = self.optimizer.param_groups
    if #groups ~= #self.min_lrs then
      if self.default_min_lr == false then
        error(("ReduceLROnPlateau.step: The number of param groups in the `optimizer` (%d) differs from when `ReduceLROnPlateau` was initialized (%d), usually due to a new param group being added to the optimizer. Please modify the `min_lrs` field to match the length of the `optimizer` param groups.")
              :format(#groups, #self.min_lrs), 3)
      end
      self.min_lrs = {}
      for i = 1, #groups do self.min_lrs[i] = self.default_min_lr end
    end
    for i, g in ipairs(groups) do
      local old = g.lr
      local new = math.max(old * self.factor, self.min_lrs[i])
      if old - new > self.eps then g.lr = new end
    end
  end

  -- step(metric): metric is a number or a one-element Tensor.
  function ReduceLROnPlateau:step(metrics, epoch)
    local current = metrics
    if type(metrics) == "cdata" then
      local ok, v = pcall(function() return metrics:item() end)
      if not ok then
        error("ReduceLROnPlateau.step: expected a number or a one-element Tensor (the metric), got a Tensor that is not one: "
              .. tostring(v), 2)
      end
      current = v
    end
    if type(current) ~= "number" then
      error(("ReduceLROnPlateau.step: expected a number or a one-element Tensor (the metric), got %s"):format(type(metrics)), 2)
    end
    if epoch ~= nil and type(epoch) ~= "number" then
      error(("ReduceLROnPlateau.step: expected a number epoch (or nothing), got %s"):format(type(epoch)), 2)
    end
    if epoch == nil then epoch = self.last_epoch + 1 end
    self.last_epoch = epoch
    if self:is_better(current, self.best) then
      self.best = current
      self.num_bad_epochs = 0
    else
      self.num_bad_epochs = self.num_bad_epochs + 1
    end
    if self.cooldown_counter > 0 then
      self.cooldown_counter = self.cooldown_counter - 1
      self.num_bad_epochs = 0 -- bad epochs in cooldown are ignored
    end
    if self.num_bad_epochs > self.patience then
      self:_reduce_lr()
      self.cooldown_counter = self.cooldown
      self.num_bad_epochs = 0
    end
    self._last_lr = group_lrs(self)
  end

  function ReduceLROnPlateau:in_cooldown() return self.cooldown_counter > 0 end

  function ReduceLROnPlateau:load_state_dict(sd)
    LRScheduler.load_state_dict(self, sd)
    init_is_better(self, 2)
  end

  return M
end
