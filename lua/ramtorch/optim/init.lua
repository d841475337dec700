-- ramtorch/optim: optimizers (torch.optim in Lua): Optimizer, SGD, Adam, AdamW, and lr_scheduler.
local optimizer = require("ramtorch.optim.optimizer")

return {
  Optimizer = optimizer.Optimizer,
  SGD = require("ramtorch.optim.sgd").SGD,
  AdamW = require("ramtorch.optim.adamw").AdamW,
  Adam = require("ramtorch.optim.adam").Adam,
  lr_scheduler = require("ramtorch.optim.lr_scheduler"),
}
