-- optim_reference.lua (loaded by the optimizer specs, not a spec itself): AdamW and SGD re-implemented
-- from PyTorch's formulas in plain Lua doubles over flat arrays, the float64 references the fused C
-- kernels are checked against, plus a norm-wise relative error.
local M = {}

-- One AdamW step on flat arrays p, m, v (modified in place) with gradient g; t is the step count after
-- this update. opts: lr, beta1, beta2, eps, weight_decay.
function M.adamw_step(p, g, m, v, t, o)
  local bc1 = 1 - o.beta1 ^ t
  local bc2 = 1 - o.beta2 ^ t
  for i = 1, #p do
    p[i] = p[i] * (1 - o.lr * o.weight_decay)
    m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i]
    v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i]
    local mhat = m[i] / bc1
    local denom = math.sqrt(v[i]) / math.sqrt(bc2) + o.eps
    p[i] = p[i] - o.lr * mhat / denom
  end
end

-- One SGD step; buf is nil before the first step (returns the buffer to keep). opts: lr, momentum,
-- dampening, weight_decay, nesterov.
function M.sgd_step(p, g, buf, o)
  local first = buf == nil
  if o.momentum ~= 0 and first then buf = {} end
  for i = 1, #p do
    local d = g[i] + o.weight_decay * p[i]
    if o.momentum ~= 0 then
      if first then buf[i] = d else buf[i] = o.momentum * buf[i] + (1 - o.dampening) * d end
      if o.nesterov then d = d + o.momentum * buf[i] else d = buf[i] end
    end
    p[i] = p[i] - o.lr * d
  end
  return buf
end

-- max |a - b| / max |b| over flat arrays (or tensors, flattened).
function M.rel_err(a, b)
  local function flat(x)
    if type(x) == "table" then return x end
    return x:to("float64"):reshape(-1):totable()
  end
  a, b = flat(a), flat(b)
  assert(#a == #b, ("rel_err: sizes differ (%d vs %d)"):format(#a, #b))
  local num, den = 0, 0
  for i = 1, #a do
    num = math.max(num, math.abs(a[i] - b[i]))
    den = math.max(den, math.abs(b[i]))
  end
  if den == 0 then return num end
  return num / den
end

function M.copy(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  return c
end

function M.zeros(n)
  local c = {}
  for i = 1, n do c[i] = 0 end
  return c
end

return M
