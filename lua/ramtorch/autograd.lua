-- ramtorch/autograd.lua: driving the C backward engine from Lua, grad-mode scopes, and custom functions
-- (torch.autograd.Function). The engine hands control back at nodes whose backward is Lua (DESIGN
-- section 2: C never calls into Lua), so this loop runs those backwards and supplies their gradients.
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local ffi, C = rffi.ffi, rffi.C

local box, own, raise, check = core.box, core.own, core.raise, core.check
local is_tensor = tensor.is_tensor

local M = {}

-- ---- custom functions -----------------------------------------------------------------------------

local contexts = {}   -- custom node id -> { fn = Function table, ctx = ctx, n = number of inputs }
local next_id = 0
local freed_ids = ffi.new("int64_t[256]")

local function collect_freed()
  while true do
    local n = C.rt_custom_take_freed(freed_ids, 256)
    for i = 0, n - 1 do contexts[tonumber(freed_ids[i])] = nil end
    if n < 256 then return end
  end
end

local task_box = ffi.new("rt_autograd_task*[1]")
local id_box = ffi.new("int64_t[1]")

-- Results of rt_autograd_run besides 0 (done) and errors (ramtorch.h).
local RUN_CUSTOM, RUN_RETRY_OOM = C.RT_AUTOGRAD_CUSTOM, C.RT_AUTOGRAD_RETRY_OOM

-- DESIGN section 2's out-of-memory rule inside the C engine: when a node's backward (or adding up a
-- gradient) runs out of memory, the engine keeps the node as it was and returns RUN_RETRY_OOM; the
-- collection that core.oom runs before every retry frees what dead handles hold, and the engine
-- retries that step once (a second failure is the error). Off only for tests (set_oom_retry).
local oom_retry = true

-- the values returned, with their count (trailing nils included; LuaJIT has no table.pack)
local function pack(...) return { n = select("#", ...), ... } end

local function drive(task, retain_graph)
  while true do
    local rc = C.rt_autograd_run(task, id_box, box)
    if rc == 0 then return end
    if rc == RUN_RETRY_OOM and oom_retry then
      core.collect_for_oom()
    elseif rc ~= RUN_CUSTOM then -- an error (or RUN_RETRY_OOM with the retry off: the OOM error)
      error(ffi.string(C.rt_last_error()), 0)
    else
      local entry = contexts[tonumber(id_box[0])]
      local g = own(box[0])
      if not entry then error("backward: the context of a custom function was lost (freed graph?)", 3) end
      local grads = pack(entry.fn.backward(entry.ctx, g))
      -- PyTorch raises on a wrong number of gradients; Lua drops trailing nils, so only a missing one
      -- for an input that requires grad (that input would silently get none) or an extra non-nil one
      local nret = grads.n
      local bad = false
      for i = entry.n + 1, nret do bad = bad or (grads[i] ~= nil and grads[i] ~= false) end
      for i = nret + 1, entry.n do bad = bad or entry.needs[i] end
      if bad then
        error(("backward of a custom Function returned %d gradient(s) for %d input(s) (one per forward "
               .. "argument; nil for those that need none)"):format(nret, entry.n), 3)
      end
      -- without retain_graph the saved tensors are freed with the graph, as in PyTorch
      if not retain_graph then entry.ctx._freed = true end
      for i = 1, entry.n do
        local gi = grads[i]
        if gi ~= nil and gi ~= false then
          if not is_tensor(gi) then
            error(("backward of a custom Function returned %s for input %d (expected a Tensor or nil)"):format(type(gi), i), 3)
          end
          check(C.rt_autograd_supply(task, i - 1, gi.p))
        end
      end
    end
  end
end

-- Turn the backward engine's garbage-collection retry on out-of-memory off (false) or on; returns the
-- previous setting. For tests that show the retry is what makes a backward under memory pressure work.
function M.set_oom_retry(flag)
  local prev = oom_retry
  oom_retry = flag and true or false
  return prev
end

function M.run_backward(t, grad, retain_graph)
  tensor.expect_tensor(t, "backward", 3)
  -- the seed gradient (ones like the root) is allocated here: the same rule as every call site
  local gp, keep = grad and grad.p or nil, retain_graph and 1 or 0
  local rc = C.rt_autograd_begin(t.p, gp, keep, task_box)
  if oom_retry and core.oom(rc) == false then rc = C.rt_autograd_begin(t.p, gp, keep, task_box) end
  check(rc)
  local task = task_box[0]
  local ok, err = pcall(drive, task, retain_graph)
  C.rt_autograd_task_free(task)
  -- the graph is freed: casts the autocast cache holds from it cannot serve another backward
  if not retain_graph then
    local ac = package.loaded["ramtorch.autocast"]
    if ac then ac.on_graph_freed() end
  end
  -- gradients of offloaded parameters land on the host asynchronously (runtime/offload.c): wait for
  -- them here, so that .grad is complete when backward returns
  C.rt_offload_synchronize()
  collect_freed()
  if not ok then error(err, 0) end
end

-- Function{forward = function(ctx, ...) ... end, backward = function(ctx, grad) ... end}
-- Call as F:apply(x, y) or F(x, y). forward runs without recording; backward returns one gradient
-- per forward argument (nil for arguments that are not tensors or need none).
-- ctx.saved_tensors checks, as PyTorch does, that no saved tensor was changed in place since it was
-- saved (the storage version) and that a backward without retain_graph has not freed them.
local Ctx = {}
function Ctx.__index(ctx, k)
  if k ~= "saved_tensors" then return Ctx[k] end
  local saved = rawget(ctx, "_saved")
  if saved == nil then return {} end
  if rawget(ctx, "_freed") then
    error("saved_tensors: trying to backward through a custom Function a second time; its saved tensors were "
          .. "freed (pass retain_graph=true to the first backward)", 2)
  end
  local versions = rawget(ctx, "_versions")
  for i = 1, table.maxn(saved) do
    local t = saved[i]
    if is_tensor(t) and C.rt_tensor_version(t.p) ~= versions[i] then
      error(("saved_tensors: a tensor saved by a custom Function was modified in place after it was saved "
             .. "(saved tensor %d: version %d, expected %d)"):format(i, C.rt_tensor_version(t.p), versions[i]), 2)
    end
  end
  return saved
end
function Ctx:save_for_backward(...)
  local saved, versions = { ... }, {}
  for i = 1, select("#", ...) do
    local t = saved[i]
    if is_tensor(t) then versions[i] = C.rt_tensor_version(t.p) end
  end
  rawset(self, "_saved", saved)
  rawset(self, "_versions", versions)
end
function Ctx:mark_non_differentiable() end

local Function = {}
Function.__index = Function
M.Function = Function

local function apply(F, ...)
  collect_freed()
  local ctx = setmetatable({}, Ctx)
  local prev = C.rt_set_grad_enabled(0)
  local ok, out = pcall(F.forward, ctx, ...)
  C.rt_set_grad_enabled(prev)
  if not ok then error(out, 0) end -- the message already says where
  if not is_tensor(out) then error("forward of a custom Function must return one Tensor", 2) end
  local n = select("#", ...)
  local inputs = ffi.new("rt_tensor*[?]", math.max(n, 1))
  local needs = {}
  for i = 1, n do
    local a = select(i, ...)
    inputs[i - 1] = is_tensor(a) and a.p or nil
    needs[i] = is_tensor(a) and a.requires_grad
  end
  -- the output gets its own header so attaching a node never touches a tensor forward returned as is
  out = out:detach()
  next_id = next_id + 1
  contexts[next_id] = { fn = F, ctx = ctx, n = n, needs = needs }
  check(C.rt_custom_attach(out.p, n, inputs, next_id))
  if out.grad_fn == nil then contexts[next_id] = nil end
  return out
end

setmetatable(Function, {
  __call = function(_, def)
    if type(def) ~= "table" or type(def.forward) ~= "function" or type(def.backward) ~= "function" then
      error("autograd.Function: expected a table with forward(ctx, ...) and backward(ctx, grad) functions", 2)
    end
    def.apply = apply
    return setmetatable(def, { __call = function(F, ...) return apply(F, ...) end })
  end,
})

-- ---- grad mode ----------------------------------------------------------------------------------------

local function scoped(enabled, fn, ...)
  if type(fn) ~= "function" then
    error(("%s: expected a function to run, got %s"):format(enabled == 0 and "no_grad" or "enable_grad",
                                                         tensor.describe(fn)), 3)
  end
  local prev = C.rt_set_grad_enabled(enabled)
  local r = { pcall(fn, ...) }
  C.rt_set_grad_enabled(prev)
  if not r[1] then error(r[2], 0) end -- re-raise unchanged (it already names its position)
  return unpack(r, 2, table.maxn(r))
end

-- torch.no_grad(function() ... end) runs the function without recording; returns its results.
function M.no_grad(fn, ...) return scoped(0, fn, ...) end
function M.enable_grad(fn, ...) return scoped(1, fn, ...) end
function M.is_grad_enabled() return C.rt_grad_enabled() ~= 0 end
function M.set_grad_enabled(flag) return C.rt_set_grad_enabled(flag and 1 or 0) ~= 0 end

-- torch.autograd.backward(tensors, grads)
function M.backward(t, grad, retain_graph) return M.run_backward(t, grad, retain_graph) end

M.live_custom_contexts = function()
  collect_freed()
  local n = 0
  for _ in pairs(contexts) do n = n + 1 end
  return n
end

-- torch.autograd.graph (save_on_cpu): lua/ramtorch/autograd_graph.lua
M.graph = require("ramtorch.autograd_graph")

return M
