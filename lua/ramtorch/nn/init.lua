-- ramtorch/nn: neural-network modules (torch.nn in Lua). `local nn = require("ramtorch.nn")` gives the
-- Module base class, containers, layers, activations, losses, nn.init, nn.utils and nn.functional.
-- See nn/module.lua for how to subclass Module.
local module = require("ramtorch.nn.module")

local nn = {
  Module = module.Module,
  Parameter = module.Parameter,
  is_parameter = module.is_parameter,
  is_module = module.is_module,
  init = require("ramtorch.nn.initializers"),
  utils = require("ramtorch.nn.utils"),
}

for _, name in ipairs({ "containers", "linear", "activation", "normalization", "sparse", "dropout", "loss", "rmsnorm",
                          "transformer", "activation_more", "batchnorm" }) do
  for k, v in pairs(require("ramtorch.nn." .. name)) do nn[k] = v end
end

-- nn.functional (ramtorch.functional) loads on first use, so the module classes load without it.
return setmetatable(nn, {
  __index = function(t, k)
    if k == "functional" or k == "F" then
      local f = require("ramtorch.functional")
      rawset(t, "functional", f)
      rawset(t, "F", f)
      return f
    end
    return nil
  end,
})
