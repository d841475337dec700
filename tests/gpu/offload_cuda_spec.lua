-- tests/gpu/offload_cuda_spec.lua: the offload engine (runtime/offload.c) on a CUDA device: a model of
-- streamed ramtorch.Linear layers (weights in pinned host memory, copied on the H2D stream, gradients
-- down on the D2H stream and widened / accumulated in f32 by the host worker, in pieces) gives the
-- same outputs and gradients as the same model of plain nn.Linear layers on the device, over two
-- micro-batches, for f32 and bf16, with gradients sent whole, in small pieces, and widened on the device.
-- Relative error below 1e-5 (f32; TF32 off) or 2e-2 (bf16). Label gpu: FAILS without a CUDA device.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local offload = require("ramtorch.offload")

local function rel_err(ref, got)
  ref = ref:to("cpu"):to(torch.float64)
  got = got:to("cpu"):to(torch.float64)
  assert.are.same(ref.shape, got.shape)
  local den = ref:abs():max():item()
  return (ref - got):abs():max():item() / math.max(den, 1e-6)
end

local pair = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "../lua/support/offload_pair.lua")
local function make_pair(dims, dtype) return pair.make_pair(dims, dtype, { seed = 7, device = "cuda" }) end

describe("offload engine on CUDA", function()
  for _, dt in ipairs({ torch.float32, torch.bfloat16 }) do
    for _, chunk in ipairs({ 0, 64 * 1024 }) do
      it(("matches plain Linear layers, %s, gradient pieces of %d bytes"):format(tostring(dt), chunk), function()
        local old = offload.set_grad_chunk_bytes(chunk)
        local sm, pm = make_pair({ 256, 512, 384, 128 }, dt)
        local tol = dt == torch.bfloat16 and 2e-2 or 1e-5
        for step = 1, 2 do -- the second step follows the learned schedule (prefetch, turnaround)
          sm:zero_grad()
          pm:zero_grad()
          for _ = 1, 2 do -- two micro-batches: the second accumulates on the host
            local x = torch.randn({ 64, 256 }, { dtype = dt, device = "cuda" })
            local ys, yp = sm(x), pm(x)
            assert.is_true(rel_err(yp, ys) < tol, "output, step " .. step)
            ys:float():square():mean():backward()
            yp:float():square():mean():backward()
          end
          local sp, pp = sm:parameters(), pm:parameters()
          for i = 1, #sp do
            assert.is_false(sp[i].grad.is_cuda) -- the host gradient
            local e = rel_err(pp[i].grad, sp[i].grad)
            assert.is_true(e < tol, ("param %d grad rel err %g (step %d)"):format(i, e, step))
          end
        end
        offload.set_grad_chunk_bytes(old)
      end)
    end
  end

  -- residency by migration (runtime/offload_migrate.c): with a budget that holds every weight, the
  -- layers move to the GPU after the schedule is learned; AdamW's state made on the host in the first
  -- step follows its parameter; then nothing crosses the bus and training matches plain layers
  for _, dt in ipairs({ torch.float32, torch.bfloat16 }) do
    it(("moves resident layers to the GPU for good and trains like plain layers, %s"):format(tostring(dt)), function()
      local optim = require("ramtorch.optim")
      collectgarbage("collect")
      collectgarbage("collect")
      offload.reset_schedule("cuda")
      local sm, pm = make_pair({ 256, 512, 384, 128 }, dt)
      local total = 0
      for _, p in ipairs(sm:parameters()) do total = total + p:numel() * p.dtype.itemsize end
      offload.set_memory_budget(total + 4096, "cuda")
      local so, po = optim.AdamW(sm:parameters(), { lr = 1e-3 }), optim.AdamW(pm:parameters(), { lr = 1e-3 })
      local tol = dt == torch.bfloat16 and 3e-2 or 1e-5
      for step = 1, 4 do
        offload.reset_stats("cuda")
        local x = torch.randn({ 64, 256 }, { dtype = dt, device = "cuda" })
        local ys, yp = sm(x), pm(x)
        assert.is_true(rel_err(yp, ys) < tol, "output, step " .. step)
        ys:float():square():mean():backward()
        yp:float():square():mean():backward()
        so:step()
        po:step()
        so:zero_grad()
        po:zero_grad()
        if step >= 3 then
          local st = offload.stats("cuda")
          assert.are.equal(0, st.h2d_bytes, "step " .. step)
          assert.are.equal(0, st.d2h_bytes, "step " .. step)
          assert.are.equal(total, st.migrated_bytes)
        end
      end
      local sp, pp = sm:parameters(), pm:parameters()
      for i = 1, #sp do
        assert.is_true(offload.is_migrated(sp[i]))
        assert.is_true(sp[i].is_cuda)
        assert.is_true(so.state[sp[i]].exp_avg.is_cuda)
        local e = rel_err(pp[i], sp[i])
        assert.is_true(e < tol, ("param %d rel err %g after 4 AdamW steps"):format(i, e))
      end
      -- back to the host (model:to("cpu")), then a step streamed again: the state follows back
      offload.set_memory_budget(0, "cuda")
      sm:to("cpu")
      sm:to("cuda")
      for i = 1, #sp do
        assert.is_false(sp[i].is_cuda)
        assert.is_true(offload.is_arena_tensor(sp[i]))
      end
      local x = torch.randn({ 64, 256 }, { dtype = dt, device = "cuda" })
      sm(x):float():square():mean():backward()
      pm(x):float():square():mean():backward()
      so:step()
      po:step()
      for i = 1, #sp do
        assert.is_false(so.state[sp[i]].exp_avg.is_cuda)
        local e = rel_err(pp[i], sp[i])
        assert.is_true(e < tol, ("param %d rel err %g after a streamed step"):format(i, e))
      end
    end)
  end
end)
