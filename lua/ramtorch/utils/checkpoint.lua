-- ramtorch/utils/checkpoint.lua: activation checkpointing (torch.utils.checkpoint with
-- use_reentrant=True semantics). checkpoint(fn, ...) runs fn without recording a graph, keeping only
-- its inputs and the generator state; the backward re-runs fn from the same generator state (so
-- dropout draws the same masks) with recording on, and backpropagates the incoming gradient through
-- that fresh graph. Parameters fn uses are leaves of the recomputed graph, so their gradients
-- accumulate during that inner backward; gradients of the tensor arguments are returned to the outer
-- graph. Streamed layers fetch their weights again during the recompute, as the forward did.
--
--   local y = torch.utils.checkpoint(function(x) return block(x) end, x)
--
-- fn must return one Tensor. Non-tensor arguments are passed through unchanged.
local torch = require("ramtorch")
local autograd = require("ramtorch.autograd")
local autocast = require("ramtorch.autocast")

local M = {}

local Checkpoint = autograd.Function({
  forward = function(ctx, fn, ...)
    ctx.fn = fn
    ctx.rng = torch.get_rng_state()
    ctx.autocast = autocast.snapshot() -- the recompute casts as the forward did (amp.autocast)
    ctx.n = select("#", ...)
    ctx.args = { ... }
    return fn(...)
  end,
  backward = function(ctx, grad)
    local args = {}
    for i = 1, ctx.n do
      local a = ctx.args[i]
      if torch.is_tensor(a) then
        local d = a:detach()
        if a.requires_grad then d:requires_grad_(true) end
        args[i] = d
      else
        args[i] = a
      end
    end
    -- recompute from the forward's generator state, then put the current state back
    local now = torch.get_rng_state()
    torch.set_rng_state(ctx.rng)
    local ok, out = pcall(autocast.run_with, ctx.autocast, torch.enable_grad,
                          function() return ctx.fn(unpack(args, 1, ctx.n)) end)
    torch.set_rng_state(now)
    if not ok then error(out, 0) end
    if not torch.is_tensor(out) then error("checkpoint: fn must return one Tensor", 0) end
    if out.requires_grad then autograd.backward(out, grad) end
    local grads = { false }
    for i = 1, ctx.n do
      local a = args[i]
      grads[i + 1] = (torch.is_tensor(a) and a.requires_grad and a.grad) or false
    end
    ctx.args = nil
    return unpack(grads, 1, ctx.n + 1)
  end,
})

function M.checkpoint(fn, ...)
  if type(fn) ~= "function" and not (type(fn) == "table" and getmetatable(fn) and getmetatable(fn).__call) then
    error(("checkpoint: expected a function (or callable Module) as the first argument, got %s"):format(type(fn)), 2)
  end
  -- without grad mode there is nothing to save: call fn directly
  if not torch.is_grad_enabled() then return fn(...) end
  local out = Checkpoint(fn, ...)
  return out
end

return M
