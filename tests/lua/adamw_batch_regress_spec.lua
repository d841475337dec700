-- adamw_batch_regress_spec.lua: AdamW's batching of non-host parameters into rt_adamw_step_multi
-- (lua/ramtorch/optim/adamw.lua). A group may list one C tensor under two handles (the optimizer's
-- state is per handle); batching them into one call was refused as overlapping memory, where the
-- per-parameter path updated the tensor twice, in turn.
local torch = require("ramtorch")
local core = require("ramtorch.core")
local C = require("ramtorch.ffi").C

local f64 = { dtype = torch.float64 }

describe("AdamW batching", function()
  it("updates a tensor listed under two handles twice, in turn, like the per-parameter path", function()
    torch.manual_seed(5)
    local w = torch.randn({ 5 }, f64):requires_grad_(true)
    local g = torch.randn({ 5 }, f64)
    -- reference: two one-step updates with fresh state each (what two handles amount to)
    local r = w:detach():clone():requires_grad_(true)
    for _ = 1, 2 do
      r.grad = g:clone()
      torch.optim.AdamW({ r }, { lr = 0.1 }):step()
    end
    C.rt_tensor_retain(w.p)
    local alias = core.own(w.p) -- a second handle of the same C tensor
    assert.is_false(rawequal(w, alias))
    w.grad = g:clone()
    local opt = torch.optim.AdamW({ w, alias }, { lr = 0.1 })
    opt:step()
    assert.are.equal(0, (w:detach() - r:detach()):abs():max():item())
    assert.are.equal(1, opt.state[w].step)
    assert.are.equal(1, opt.state[alias].step)
  end)
end)
