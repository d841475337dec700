-- ramtorch/nn/initializers.lua: nn.init, parameter initialisation in place without autograd, with
-- PyTorch's formulas (torch/nn/init.py): fans, gains, kaiming_* and xavier_*. Draws come from the
-- global counter-based generator (torch.manual_seed).
local torch = require("ramtorch")

local M = {}

local function expect_tensor(t, what)
  if not torch.is_tensor(t) then
    error(("nn.init.%s: expected a Tensor, got %s"):format(what, type(t)), 3)
  end
end

-- fan_in, fan_out of a weight (out, in, *receptive): fan_in = in * receptive, fan_out = out * receptive.
function M.calculate_fan_in_and_fan_out(t)
  local s = t.shape
  if #s < 2 then
    error(("nn.init: fan in and fan out can not be computed for a tensor with fewer than 2 dimensions (got %d)"):format(#s), 3)
  end
  local receptive = 1
  for i = 3, #s do receptive = receptive * s[i] end
  return s[2] * receptive, s[1] * receptive
end

-- calculate_gain(nonlinearity, param) as PyTorch.
function M.calculate_gain(nonlinearity, param)
  local linear = { linear = true, conv1d = true, conv2d = true, conv3d = true, conv_transpose1d = true,
                   conv_transpose2d = true, conv_transpose3d = true, sigmoid = true }
  if linear[nonlinearity] then return 1 end
  if nonlinearity == "tanh" then return 5 / 3 end
  if nonlinearity == "relu" then return math.sqrt(2) end
  if nonlinearity == "leaky_relu" then
    local slope = param == nil and 0.01 or param
    if type(slope) ~= "number" then error(("calculate_gain: negative_slope %s is not a valid number"):format(tostring(param)), 2) end
    return math.sqrt(2 / (1 + slope * slope))
  end
  if nonlinearity == "selu" then return 3 / 4 end
  error(("calculate_gain: unsupported nonlinearity %s"):format(tostring(nonlinearity)), 2)
end

function M.uniform_(t, a, b)
  expect_tensor(t, "uniform_")
  return t:uniform_(a or 0, b or 1)
end

function M.normal_(t, mean, std)
  expect_tensor(t, "normal_")
  return t:normal_(mean or 0, std or 1)
end

function M.constant_(t, v)
  expect_tensor(t, "constant_")
  return t:fill_(v)
end
function M.zeros_(t)
  expect_tensor(t, "zeros_")
  return t:fill_(0)
end
function M.ones_(t)
  expect_tensor(t, "ones_")
  return t:fill_(1)
end

-- kaiming_uniform_(t, a=0, mode="fan_in", nonlinearity="leaky_relu"), or (t, {a=, mode=, nonlinearity=}).
-- bound = gain * sqrt(3 / fan); with a = sqrt(5) (nn.Linear's default) bound = 1 / sqrt(fan_in).
local function kaiming_args(t, a, mode, nonlinearity, what)
  expect_tensor(t, what)
  if type(a) == "table" then a, mode, nonlinearity = a.a, a.mode, a.nonlinearity end
  a, mode, nonlinearity = a or 0, mode or "fan_in", nonlinearity or "leaky_relu"
  local fan_in, fan_out = M.calculate_fan_in_and_fan_out(t)
  local fan
  if mode == "fan_in" then fan = fan_in
  elseif mode == "fan_out" then fan = fan_out
  else error(("nn.init.%s: mode %s not supported, please use fan_in or fan_out"):format(what, tostring(mode)), 3) end
  return M.calculate_gain(nonlinearity, a) / math.sqrt(fan), fan
end

function M.kaiming_uniform_(t, a, mode, nonlinearity)
  local std, fan = kaiming_args(t, a, mode, nonlinearity, "kaiming_uniform_")
  if fan == 0 then return t end -- PyTorch warns and leaves the tensor as is
  local bound = math.sqrt(3) * std
  return t:uniform_(-bound, bound)
end

function M.kaiming_normal_(t, a, mode, nonlinearity)
  local std, fan = kaiming_args(t, a, mode, nonlinearity, "kaiming_normal_")
  if fan == 0 then return t end
  return t:normal_(0, std)
end

-- xavier_uniform_(t, gain=1): U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)).
function M.xavier_uniform_(t, gain)
  expect_tensor(t, "xavier_uniform_")
  if type(gain) == "table" then gain = gain.gain end
  local fan_in, fan_out = M.calculate_fan_in_and_fan_out(t)
  local a = (gain or 1) * math.sqrt(6 / (fan_in + fan_out))
  return t:uniform_(-a, a)
end

function M.xavier_normal_(t, gain)
  expect_tensor(t, "xavier_normal_")
  if type(gain) == "table" then gain = gain.gain end
  local fan_in, fan_out = M.calculate_fan_in_and_fan_out(t)
  return t:normal_(0, (gain or 1) * math.sqrt(2 / (fan_in + fan_out)))
end

return M
