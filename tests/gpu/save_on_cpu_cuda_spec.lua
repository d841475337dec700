-- tests/gpu/save_on_cpu_cuda_spec.lua: torch.autograd.graph.save_on_cpu (runtime/autograd_saved_offload.c)
-- on a CUDA device: saved activations go to pinned host memory by D2H copies on a side stream and come
-- back by H2D copies on the compute stream. Gradients are bit-identical with and without the mode (an MLP
-- with nn.Linear, ReLU, GELU, LayerNorm, softmax and cross_entropy; streamed ramtorch.Linear layers; f32
-- and bf16), retain_graph, in-place detection, and the point of it all: peak device memory of a deep
-- model grows far less with depth. Label gpu: FAILS without a CUDA device.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local F = require("ramtorch.functional")
local graph = torch.autograd.graph

local function same(a, b)
  assert.are.same(a.shape, b.shape)
  local d = (a:to("cpu"):to(torch.float64) - b:to("cpu"):to(torch.float64)):abs():max():item()
  assert.are.equal(0, d)
end

local function mlp(dtype, streamed)
  torch.manual_seed(3)
  local L = streamed and torch.Linear or nn.Linear
  local m = nn.Sequential({ L(512, 1024, { dtype = dtype }), nn.ReLU(), L(1024, 1024, { dtype = dtype }), nn.GELU(),
                            nn.LayerNorm(1024, { dtype = dtype }), L(1024, 10, { dtype = dtype }) })
  m:to("cuda")
  return m
end

local function run(model, x, y, wrap)
  model:zero_grad()
  for _, p in ipairs(model:parameters()) do p.grad = nil end
  local loss = wrap(function()
    local logits = model(x)
    local p = F.softmax(logits, -1)
    return F.cross_entropy(logits, y) + (p * p):sum() * 0.1
  end)
  loss:backward()
  local grads = {}
  for i, p in ipairs(model:parameters()) do grads[i] = p.grad:to("cpu") end
  return loss, grads
end

local function plain(fn) return fn() end
local function on_cpu(fn) return graph.save_on_cpu(fn, { pin_memory = true }) end

describe("save_on_cpu on cuda", function()
  setup(function() torch.cuda.set_allow_tf32(false) end)
  after_each(function() graph.save_on_cpu_synchronize() end)

  for _, streamed in ipairs({ false, true }) do
    for _, dtype in ipairs({ torch.float32, torch.bfloat16 }) do
      it(("gives bit-identical gradients (%s, %s)"):format(streamed and "ramtorch.Linear" or "nn.Linear",
                                                          tostring(dtype)), function()
        local model = mlp(dtype, streamed)
        torch.manual_seed(5)
        local x = torch.randn(256, 512, { dtype = dtype, device = "cuda" })
        local y = torch.randint(0, 10, { 256 }, { device = "cuda" })
        local l0, g0 = run(model, x, y, plain)
        local s0 = graph.save_on_cpu_stats()
        local l1, g1 = run(model, x, y, on_cpu)
        local s1 = graph.save_on_cpu_stats()
        same(l0, l1)
        for i = 1, #g0 do same(g0[i], g1[i]) end
        assert.is_true(s1.packed - s0.packed >= 3)
        assert.is_true(s1.shared - s0.shared >= 1)
        assert.are.equal(0, s1.fallbacks - s0.fallbacks)
      end)
    end
  end

  it("unpacks by H2D after the copies are done, and allows retain_graph", function()
    local x = torch.randn(1024, 1024, { device = "cuda", requires_grad = true })
    local l = graph.save_on_cpu(function() return (x * 1):exp():tanh():sum() end)
    graph.save_on_cpu_synchronize()
    local s0 = graph.save_on_cpu_stats()
    l:backward(nil, true)
    assert.is_true(graph.save_on_cpu_stats().unpacked - s0.unpacked >= 2)
    local g1 = x.grad:to("cpu")
    l:backward()
    same(g1 * 2, x.grad)
  end)

  it("raises when a saved tensor is modified in place before its copy was released", function()
    local x = torch.randn(1024, 1024, { device = "cuda", requires_grad = true })
    local y = graph.save_on_cpu(function() return (x * 2):relu() end)
    torch.no_grad(function() y:detach():add_(1) end)
    local ok, err = pcall(function() y:sum():backward() end)
    assert.is_false(ok)
    assert.matches("modified in place after it was saved", err)
  end)

  it("keeps peak memory nearly flat with depth", function()
    local function peak(layers, offload)
      torch.manual_seed(1)
      local mods = {}
      for i = 1, layers do
        mods[#mods + 1] = nn.Linear(1024, 1024)
        mods[#mods + 1] = nn.ReLU()
      end
      local model = nn.Sequential(mods)
      model:to("cuda")
      local x = torch.randn(4096, 1024, { device = "cuda" })
      model(x):sum():backward() -- the parameter gradients exist before the measurement (they grow with depth either way)
      collectgarbage("collect")
      collectgarbage("collect")
      torch.cuda.synchronize()
      torch.cuda.reset_peak_memory_stats()
      local base = torch.cuda.max_memory_allocated()
      -- layer by layer with a full collection after each: dead intermediates (held by Lua handles
      -- until the GC runs, whose pacing scales with the live parameter bytes) do not blur the peak
      local function forward()
        local h = x
        for _, m in ipairs(mods) do
          h = m(h)
          collectgarbage("collect")
        end
        return h:sum()
      end
      local loss = (offload and on_cpu or plain)(forward)
      loss:backward()
      torch.cuda.synchronize()
      local p = torch.cuda.max_memory_allocated() - base
      local g = model:parameters()[1].grad:to("cpu")
      loss, model, x, mods = nil, nil, nil, nil
      collectgarbage("collect")
      collectgarbage("collect")
      return p, g
    end
    local p4, g4 = peak(4, false)
    local p16, g16 = peak(16, false)
    local q4, h4 = peak(4, true)
    local q16, h16 = peak(16, true)
    same(g4, h4)
    same(g16, h16)
    print(("peak growth 4 -> 16 layers: %.1f MiB without, %.1f MiB with save_on_cpu")
      :format((p16 - p4) / 2 ^ 20, (q16 - q4) / 2 ^ 20))
    assert.is_true(p16 - p4 > 0)
    assert.is_true(q16 - q4 < 0.25 * (p16 - p4))
  end)
end)
