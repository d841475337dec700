-- tests/gpu/cuda_optim_spec.lua: the multi-tensor AdamW kernel (kernels/cuda/optim_multi.cu) against
-- the per-tensor one (optim.cu): one rt_adamw_step_multi call must give exactly the bits of n
-- rt_adamw_step calls (params and both states) over several steps, for every dtype combination
-- (typed kernels and the run-time-dtype ones), awkward sizes (0, 1, 3, 5, chunk boundaries), views
-- at element offsets (unaligned: scalar path; aligned: vector path), more tensors than one launch
-- holds (300 > 80, dtypes interleaved) and one 5M-element tensor; and AdamW's batching of device
-- parameters. A CPU tensor among device ones fails naming its index, writing nothing. Label gpu:
-- FAILS without a CUDA device.
local torch = require("ramtorch")
local optim = require("ramtorch.optim")
local rffi = require("ramtorch.ffi")

local C, ffi, check = rffi.C, rffi.ffi, rffi.check
local f32, bf16, f16, f64 = torch.float32, torch.bfloat16, torch.float16, torch.float64

local function bytes(t)
  t = t:to("cpu"):contiguous()
  return ffi.string(ffi.cast("const char *", t:data_ptr()), t:numel() * t:element_size())
end

-- a 1-d CUDA tensor of n elements of dtype dt at element offset off (a narrow of a bigger one)
local function dev(n, dt, off, positive)
  local t = torch.randn({ n + (off or 0) })
  if positive then t = t:abs() end
  t = t:to(dt):to("cuda")
  if off then t = t:narrow(0, off, n) end
  return t
end

local function entry(n, pd, gd, sd, off)
  return { n = n, gd = gd, p = dev(n, pd, off), m = dev(n, sd, off), v = dev(n, sd, off, true), off = off }
end

local function ptrs(list, field)
  local a = ffi.new("rt_tensor *[?]", #list)
  for i, e in ipairs(list) do a[i - 1] = e[field].p end
  return a
end

local H = { lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1 }

-- run `steps` steps on list (multi) and on clones of it (single), comparing every tensor's bits
local function compare(list, steps, h)
  h = h or H
  local ref = {}
  for i, e in ipairs(list) do ref[i] = { p = e.p:clone(), m = e.m:clone(), v = e.v:clone() } end
  for step = 1, steps do
    for i, e in ipairs(list) do
      e.g = dev(e.n, e.gd, e.off)
      ref[i].g = e.g
    end
    check(C.rt_adamw_step_multi(#list, ptrs(list, "p"), ptrs(list, "g"), ptrs(list, "m"), ptrs(list, "v"),
                                h.lr, h.b1, h.b2, h.eps, h.wd, step))
    for _, r in ipairs(ref) do
      check(C.rt_adamw_step(r.p.p, r.g.p, r.m.p, r.v.p, h.lr, h.b1, h.b2, h.eps, h.wd, step))
    end
    for i, e in ipairs(list) do
      local what = ("step %d tensor %d (%d elements, %s param)"):format(step, i - 1, e.n, tostring(e.p.dtype))
      assert.are.equal(bytes(ref[i].p), bytes(e.p), what .. ": param")
      assert.are.equal(bytes(ref[i].m), bytes(e.m), what .. ": exp_avg")
      assert.are.equal(bytes(ref[i].v), bytes(e.v), what .. ": exp_avg_sq")
    end
  end
end

-- param, grad, state dtypes: the typed kernels first, then the run-time-dtype ones
local COMBOS = {
  { f32, f32, f32 }, { bf16, bf16, f32 }, { bf16, f32, f32 }, { f16, f16, f32 }, { f16, f32, f32 },
  { f32, bf16, f32 }, { f32, f32, f64 }, { bf16, bf16, f64 }, { f64, f64, f64 }, { f64, f32, f64 },
}
local SIZES = { 0, 1, 3, 4, 5, 8, 13, 1000, 8191, 8192, 8193, 20001 }
local OFFSETS = { false, 1, 2, 4, 8 }

describe("CUDA rt_adamw_step_multi", function()
  it("equals rt_adamw_step bit for bit for every dtype combination, size and offset", function()
    torch.manual_seed(1)
    local list = {}
    -- interleaved so that each launch's table gathers its tensors from all over the list
    for si, n in ipairs(SIZES) do
      for ci, c in ipairs(COMBOS) do
        local off = OFFSETS[(si + ci) % #OFFSETS + 1]
        list[#list + 1] = entry(n, c[1], c[2], c[3], off or nil)
      end
    end
    compare(list, 3)
    compare(list, 2, { lr = 3e-3, b1 = 0.3, b2 = 0.95, eps = 1e-6, wd = 0 }) -- other lerp branch, no decay
  end)

  it("takes more tensors than one launch holds (300, f32 and bf16 interleaved)", function()
    torch.manual_seed(2)
    local list = {}
    for i = 1, 300 do
      local n = 1 + (i * 7919) % 3000
      local off = (i % 7 == 0) and 1 or nil
      if i % 2 == 0 then
        list[i] = entry(n, f32, f32, f32, off)
      else
        list[i] = entry(n, bf16, bf16, f32, off)
      end
    end
    compare(list, 3)
  end)

  it("updates one 5M-element tensor (f32, bf16) like the per-tensor kernel", function()
    torch.manual_seed(3)
    compare({ entry(5000000, f32, f32, f32) }, 2)
    compare({ entry(5000000, bf16, bf16, f32) }, 2)
    compare({ entry(5000001, f32, f32, f32, 1) }, 1)
  end)

  it("names the index of a tensor on another device and writes nothing", function()
    torch.manual_seed(4)
    local list = { entry(10, f32, f32, f32), entry(20, f32, f32, f32), entry(30, f32, f32, f32) }
    list[1].g, list[2].g = dev(10, f32), dev(20, f32)
    list[3] = { p = torch.randn({ 30 }), g = torch.randn({ 30 }), m = torch.zeros({ 30 }), v = torch.zeros({ 30 }) }
    local before = {}
    for i, e in ipairs(list) do before[i] = bytes(e.p) .. bytes(e.m) .. bytes(e.v) end
    local ok, err = pcall(check, C.rt_adamw_step_multi(3, ptrs(list, "p"), ptrs(list, "g"), ptrs(list, "m"),
                                                       ptrs(list, "v"), 1e-2, 0.9, 0.999, 1e-8, 0, 1))
    assert.is_false(ok)
    assert.truthy(tostring(err):find("adamw_step_multi: tensor 2: param is on device -1 but tensor 0's param is on device 0", 1, true),
                  tostring(err))
    for i, e in ipairs(list) do assert.are.equal(before[i], bytes(e.p) .. bytes(e.m) .. bytes(e.v), "tensor " .. (i - 1)) end
  end)

  it("AdamW on device parameters matches per-parameter rt_adamw_step bit for bit", function()
    for _, maximize in ipairs({ false, true }) do
      torch.manual_seed(5)
      local shapes = { { 64, 33 }, { 33 }, { 7 }, { 1 }, { 300, 129 } }
      local dtypes = { f32, f32, bf16, f32, bf16 }
      local params, ref = {}, {}
      for i, s in ipairs(shapes) do
        local v = torch.randn(s):to(dtypes[i]):to("cuda")
        params[i] = v:clone():requires_grad_(true)
        ref[i] = { p = v:clone(), m = torch.zeros(s, { device = "cuda" }), v = torch.zeros(s, { device = "cuda" }) }
      end
      local opt = optim.AdamW(params, { lr = 1e-2, weight_decay = 0.05, maximize = maximize })
      for step = 1, 3 do
        for i, s in ipairs(shapes) do
          local g = torch.randn(s):to(dtypes[i]):to("cuda")
          params[i].grad = g
          local gg = maximize and -g or g
          local r = ref[i]
          check(C.rt_adamw_step(r.p.p, gg.p, r.m.p, r.v.p, 1e-2, 0.9, 0.999, 1e-8, 0.05, step))
        end
        opt:step()
      end
      for i = 1, #shapes do
        local st = opt.state[params[i]]
        assert.are.equal(bytes(ref[i].p), bytes(params[i]:detach()), "param " .. i)
        assert.are.equal(bytes(ref[i].m), bytes(st.exp_avg), "exp_avg " .. i)
        assert.are.equal(bytes(ref[i].v), bytes(st.exp_avg_sq), "exp_avg_sq " .. i)
      end
    end
  end)
end)
