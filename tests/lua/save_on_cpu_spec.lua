-- save_on_cpu_spec.lua: torch.autograd.graph.save_on_cpu (runtime/autograd_saved_offload.c) on the CPU
-- backend: saved tensors packed to host copies (plain synchronous copies, and through the CPU copy
-- streams of "CPU mode" with a delayed copy thread) give bit-identical gradients for an MLP and for
-- streamed ramtorch.Linear layers, f32 and bf16; sharing, retain_graph, in-place detection, snapshot
-- semantics, nesting, errors inside fn and bad arguments.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local F = require("ramtorch.functional")
local offload = require("ramtorch.offload")
local graph = torch.autograd.graph

local function same(a, b)
  assert.are.same(a.shape, b.shape)
  local d = (a:to(torch.float64) - b:to(torch.float64)):abs():max():item()
  assert.are.equal(0, d)
end

local function mlp(dtype, streamed)
  torch.manual_seed(3)
  local L = streamed and torch.Linear or nn.Linear
  return nn.Sequential({ L(256, 512, { dtype = dtype }), nn.ReLU(), L(512, 512, { dtype = dtype }), nn.GELU(),
                         nn.LayerNorm(512, { dtype = dtype }), L(512, 10, { dtype = dtype }) })
end

-- loss and parameter gradients of one forward + backward, the forward run by wrap(fn)
local function run(model, x, y, wrap)
  for _, p in ipairs(model:parameters()) do p.grad = nil end
  local loss = wrap(function()
    local logits = model(x)
    local p = F.softmax(logits, -1)
    return F.cross_entropy(logits, y) + (p * p):sum() * 0.1
  end)
  loss:backward()
  local grads = {}
  for i, p in ipairs(model:parameters()) do grads[i] = p.grad:clone() end
  return loss, grads
end

local function plain(fn) return fn() end
local function on_cpu(fn) return graph.save_on_cpu(fn, { pin_memory = true }) end

local function check_identical(dtype, streamed)
  local model = mlp(dtype, streamed)
  torch.manual_seed(5)
  local x = torch.randn(128, 256, { dtype = dtype })
  local y = torch.randint(0, 10, { 128 })
  local l0, g0 = run(model, x, y, plain)
  local before = graph.save_on_cpu_stats()
  local l1, g1 = run(model, x, y, on_cpu)
  local after = graph.save_on_cpu_stats()
  same(l0, l1)
  for i = 1, #g0 do same(g0[i], g1[i]) end
  assert.is_true(after.packed - before.packed >= 3, "activations were packed")
  assert.is_true(after.shared - before.shared >= 1, "a tensor saved twice was packed once")
  graph.save_on_cpu_synchronize()
  assert.are.equal(0, graph.save_on_cpu_stats().live) -- freed with the graph
end

describe("save_on_cpu", function()
  after_each(function()
    graph.save_on_cpu_synchronize()
    assert.is_false(graph.is_save_on_cpu_enabled())
  end)

  for _, dtype in ipairs({ torch.float32, torch.bfloat16 }) do
    it("gives bit-identical gradients for an MLP (" .. tostring(dtype) .. ")", function()
      check_identical(dtype, false)
    end)
  end

  describe("in CPU mode (copy streams)", function()
    setup(function()
      offload.enable_cpu_streams(true)
      offload.set_copy_delay_us(200) -- a reader that does not wait for a copy sees stale bytes
    end)
    teardown(function()
      offload.set_copy_delay_us(0)
      offload.enable_cpu_streams(false)
    end)
    for _, dtype in ipairs({ torch.float32, torch.bfloat16 }) do
      it("gives bit-identical gradients for ramtorch.Linear layers (" .. tostring(dtype) .. ")", function()
        check_identical(dtype, true)
      end)
      it("gives bit-identical gradients for an MLP through the copy streams (" .. tostring(dtype) .. ")", function()
        check_identical(dtype, false)
      end)
    end
    it("unpacks through H2D copies once the copies are done", function()
      local x = torch.randn(256, 256, { requires_grad = true })
      local ref = ((x * 1):exp() * 2):sum()
      ref:backward()
      local g0 = x.grad:clone()
      x.grad = nil
      local l = graph.save_on_cpu(function() return ((x * 1):exp() * 2):sum() end) -- exp saves x * 1
      graph.save_on_cpu_synchronize()
      local s0 = graph.save_on_cpu_stats()
      assert.are.equal(0, s0.pending)
      l:backward()
      assert.are.equal(1, graph.save_on_cpu_stats().unpacked - s0.unpacked)
      same(g0, x.grad)
    end)
  end)

  it("allows a second backward with retain_graph", function()
    local x = torch.randn(256, 256, { requires_grad = true })
    local l = graph.save_on_cpu(function() return (x * 1):exp():tanh():sum() end)
    l:backward(nil, true)
    local g1 = x.grad:clone()
    l:backward()
    same(g1 * 2, x.grad)
    assert.has_error(function() l:backward() end)
  end)

  it("raises when a saved tensor is modified in place before its copy was released", function()
    local x = torch.randn(256, 256, { requires_grad = true })
    local y = graph.save_on_cpu(function() return (x * 2):relu() end) -- relu saves its output
    torch.no_grad(function() y:detach():add_(1) end)
    local ok, err = pcall(function() y:sum():backward() end)
    assert.is_false(ok)
    assert.matches("modified in place after it was saved", err)
  end)

  it("keeps the value as saved once the copy was released (snapshot)", function()
    local x = torch.randn(256, 256, { requires_grad = true })
    local y = (x * 2):relu()
    y:sum():backward()
    local g0 = x.grad:clone()
    x.grad = nil
    local y2 = graph.save_on_cpu(function() return (x * 2):relu() end) -- saves its output
    graph.save_on_cpu_synchronize() -- the record now holds only its host copy
    torch.no_grad(function() y2:detach():fill_(0) end)
    y2:sum():backward()
    same(g0, x.grad)
  end)

  it("does not pack tensors under 64 KiB nor parameters", function()
    local w = torch.randn(256, 256, { requires_grad = true })
    local s0 = graph.save_on_cpu_stats()
    graph.save_on_cpu(function() return torch.randn(16, 16, { requires_grad = true }):exp():sum() + (w * 1):exp():sum() end)
    local s1 = graph.save_on_cpu_stats()
    assert.are.equal(1, s1.packed - s0.packed) -- w * 1, not w (a parameter) nor the small one
  end)

  it("nests and restores the mode, also when fn raises", function()
    assert.is_false(graph.is_save_on_cpu_enabled())
    local inner_state
    local a, b = graph.save_on_cpu(function()
      graph.save_on_cpu(function() inner_state = graph.is_save_on_cpu_enabled() end)
      assert.is_true(graph.is_save_on_cpu_enabled())
      return 1, 2
    end)
    assert.are.equal(1, a)
    assert.are.equal(2, b)
    assert.is_true(inner_state)
    assert.is_false(graph.is_save_on_cpu_enabled())
    local ok, err = pcall(graph.save_on_cpu, function() error("boom") end)
    assert.is_false(ok)
    assert.matches("boom", err)
    assert.is_false(graph.is_save_on_cpu_enabled())
    -- inside set_save_on_cpu(true) an erroring region restores "on"
    assert.is_false(graph.set_save_on_cpu(true))
    pcall(graph.save_on_cpu, function() error("x") end)
    assert.is_true(graph.is_save_on_cpu_enabled())
    assert.is_true(graph.set_save_on_cpu(false))
  end)

  it("rejects bad arguments with clear messages", function()
    assert.has_error(function() graph.save_on_cpu(42) end,
                     "autograd.graph.save_on_cpu: expected a function to run, got number")
    assert.has_error(function() graph.save_on_cpu(function() end, 3) end,
                     "autograd.graph.save_on_cpu: expected an options table {pin_memory=}, got number")
    assert.has_error(function() graph.save_on_cpu(function() end, { pin = true }) end,
                     "autograd.graph.save_on_cpu: unknown option 'pin' (expected pin_memory, device_type)")
    assert.has_error(function() graph.save_on_cpu(function() end, { pin_memory = 1 }) end,
                     "autograd.graph.save_on_cpu: pin_memory must be a boolean, got number")
    assert.has_error(function() graph.set_save_on_cpu("yes") end,
                     "autograd.graph.set_save_on_cpu: expected a boolean, got string")
  end)
end)
