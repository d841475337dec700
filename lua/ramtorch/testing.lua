-- ramtorch/testing.lua: helpers for tests: gradcheck (analytical gradients against central finite
-- differences in float64, as torch.autograd.gradcheck and torch/nn's Jacobian tests do) and
-- assert_close (elementwise tolerance with a report of the worst element).
local torch = require("ramtorch")

local M = {}

-- Compare a and b (tensors or nested tables of numbers) elementwise: |a - b| <= atol + rtol * |b|.
-- Returns true, or false and a message naming the worst element.
function M.close(a, b, rtol, atol)
  rtol, atol = rtol or 1e-5, atol or 1e-8
  local ta = torch.is_tensor(a) and a:to(torch.float64):reshape(-1):totable() or a
  local tb = torch.is_tensor(b) and b:to(torch.float64):reshape(-1):totable() or b
  if type(ta) == "number" then ta = { ta } end
  if type(tb) == "number" then tb = { tb } end
  if #ta ~= #tb then return false, ("element counts differ: %d vs %d"):format(#ta, #tb) end
  local worst, wi, wa, wb = -1, 0, 0, 0
  for i = 1, #ta do
    local x, y = ta[i], tb[i]
    local bad
    if x ~= x or y ~= y then bad = not (x ~= x and y ~= y) and math.huge or 0
    else bad = math.abs(x - y) - (atol + rtol * math.abs(y)) end
    if bad > worst then worst, wi, wa, wb = bad, i, x, y end
  end
  if worst > 0 then
    return false, ("element %d: got %.10g, expected %.10g (rtol %g, atol %g)"):format(wi, wa, wb, rtol, atol)
  end
  return true
end

function M.assert_close(a, b, rtol, atol, what)
  local ok, msg = M.close(a, b, rtol, atol)
  if not ok then error((what and (what .. ": ") or "") .. msg, 2) end
end

-- assert_error_has(fn, ...): fn() must raise an error whose message contains every given plain-text
-- fragment; raises naming the message and the missing fragment otherwise
function M.assert_error_has(fn, ...)
  local ok, err = pcall(fn)
  if ok then error("assert_error_has: expected an error, the call returned normally", 2) end
  err = tostring(err)
  for _, frag in ipairs({ ... }) do
    if not err:find(frag, 1, true) then
      error(("assert_error_has: error %q does not contain %q"):format(err, frag), 2)
    end
  end
end

-- gradcheck(fn, inputs, opts): fn(inputs...) returns a tensor; inputs are float64 tensors (those with
-- requires_grad are checked). The scalar checked is sum(fn(...) * w) for a fixed random w, so every
-- output element's gradient path is exercised. Raises with the input, element and both values on a
-- mismatch; returns true otherwise.
function M.gradcheck(fn, inputs, opts)
  opts = opts or {}
  local eps, atol, rtol = opts.eps or 1e-6, opts.atol or 1e-5, opts.rtol or 1e-3
  for i, x in ipairs(inputs) do
    if torch.is_tensor(x) and x.requires_grad and x.dtype ~= torch.float64 then
      error(("gradcheck: input %d is %s; use float64 inputs"):format(i, tostring(x.dtype)), 2)
    end
  end
  local out = fn(unpack(inputs))
  local w = torch.randn(out.shape, { dtype = out.dtype })
  local function objective()
    return torch.no_grad(function() return (fn(unpack(inputs)) * w):sum():item() end)
  end
  for _, x in ipairs(inputs) do
    if torch.is_tensor(x) and x.requires_grad then x.grad = nil end
  end
  local loss = (out * w):sum()
  loss:backward()
  for i, x in ipairs(inputs) do
    if torch.is_tensor(x) and x.requires_grad then
      local g = x.grad
      if g == nil then error(("gradcheck: input %d received no gradient"):format(i), 2) end
      local analytic = g:reshape(-1):totable()
      local flat = x:detach()
      if not flat:is_contiguous() then error("gradcheck: inputs must be contiguous", 2) end
      flat = flat:view(-1)
      for j = 1, #flat do
        local orig = flat[j]:item()
        flat[j] = orig + eps
        local fp = objective()
        flat[j] = orig - eps
        local fm = objective()
        flat[j] = orig
        local numeric = (fp - fm) / (2 * eps)
        local a = analytic[j]
        if math.abs(a - numeric) > atol + rtol * math.abs(numeric) then
          error(("gradcheck: input %d element %d: analytical %.10g vs numerical %.10g"):format(i, j, a, numeric), 2)
        end
      end
    end
  end
  return true
end

return M
