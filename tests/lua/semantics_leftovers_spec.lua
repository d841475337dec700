-- semantics_leftovers_spec.lua: divergences from PyTorch 2.x fixed together, each case failing on the
-- code before its fix: nn.MultiheadAttention / TransformerEncoderLayer / TransformerDecoderLayer
-- default to batch_first=false and accept (seq, batch, feature) input; torch.full infers its dtype
-- from the fill value as torch.tensor does; int64 arange is exact beyond 2^53 and takes int64 cdata;
-- torch.tensor takes int64_t / uint64_t cdata elements exactly; replace_linear_with_ramtorch refuses
-- a rank beyond the CUDA device count.
local ffi = require("ffi")
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local helpers = require("ramtorch.helpers")
local testing = require("ramtorch.testing")
local assert_close = testing.assert_close

local f64 = torch.float64

local assert_error_has = testing.assert_error_has

-- exact equality of an int64 tensor's elements with a list of int64 cdata / numbers
local function assert_i64(t, want)
  assert.are.equal(torch.int64, t.dtype)
  local got = t:totable()
  assert.are.equal(#want, #got)
  for i = 1, #want do
    assert.is_true(ffi.new("int64_t", got[i]) == ffi.new("int64_t", want[i]),
                   ("element %d: got %s, expected %s"):format(i, tostring(got[i]), tostring(want[i])))
  end
end

local function copy_params(dst, src)
  dst:load_state_dict(src:state_dict())
  return dst
end

-- PyTorch's nn.MultiheadAttention(embed_dim, num_heads, ..., batch_first=False): query (L, N, E), key /
-- value (S, N, E), key_padding_mask (N, S), attn_output (L, N, E), attn_output_weights (N, L, S) averaged
-- over heads or (N, num_heads, L, S) (the weights are batch-first whatever batch_first says); unbatched
-- (L, E) input is the same for both settings. The encoder / decoder layers hand batch_first to their
-- attention modules.
describe("batch_first=false (PyTorch's default)", function()
  it("is the default, and printing shows the real value", function()
    assert.is_false(nn.MultiheadAttention(8, 2).batch_first)
    assert.is_true(nn.MultiheadAttention(8, 2, { batch_first = true }).batch_first)
    local enc = nn.TransformerEncoderLayer(8, 2, { dim_feedforward = 16 })
    assert.is_false(enc.self_attn.batch_first)
    local dec = nn.TransformerDecoderLayer(8, 2, { dim_feedforward = 16, batch_first = true })
    assert.is_true(dec.self_attn.batch_first)
    assert.is_true(dec.multihead_attn.batch_first)
    assert.is_truthy(tostring(nn.MultiheadAttention(8, 2)):find("batch_first=False", 1, true))
    assert.is_truthy(tostring(nn.MultiheadAttention(8, 2, { batch_first = true })):find("batch_first=True", 1, true))
    assert.is_truthy(tostring(enc):find("batch_first=False", 1, true))
    assert_error_has(function() nn.MultiheadAttention(8, 2, { batch_first = "yes" }) end,
                     "MultiheadAttention: expected a boolean batch_first, got yes")
  end)

  it("MultiheadAttention reads (seq, batch, feature), keeps key_padding_mask (batch, S)", function()
    torch.manual_seed(11)
    local sf = nn.MultiheadAttention(8, 2):double()
    local bf = copy_params(nn.MultiheadAttention(8, 2, { batch_first = true }):double(), sf)
    local B, T, S = 3, 4, 5
    local x, mem = torch.randn({ B, T, 8 }, { dtype = f64 }), torch.randn({ B, S, 8 }, { dtype = f64 })
    local kpm = torch.tensor({ { false, false, false, true, true }, { false, false, false, false, false },
                               { false, true, false, false, false } })
    local out_bf, w_bf = bf(x, mem, mem, { key_padding_mask = kpm })
    local out_sf, w_sf = sf(x:transpose(0, 1), mem:transpose(0, 1), mem:transpose(0, 1), { key_padding_mask = kpm })
    assert.are.same({ T, B, 8 }, out_sf.shape)
    assert.are.same({ B, T, S }, w_sf.shape)
    assert_close(out_sf, out_bf:transpose(0, 1), 1e-12, 1e-12)
    assert_close(w_sf, w_bf, 1e-12, 1e-12)
    local _, w_heads = sf(x:transpose(0, 1), mem:transpose(0, 1), mem:transpose(0, 1),
                          { key_padding_mask = kpm, average_attn_weights = false })
    assert.are.same({ B, 2, T, S }, w_heads.shape)
    -- a causal self-attention, and a (B*H, T, S) attn_mask
    local xs = x:transpose(0, 1)
    assert_close((sf(xs, xs, xs, { is_causal = true, need_weights = false })),
                 (bf(x, x, x, { is_causal = true, need_weights = false })):transpose(0, 1), 1e-12, 1e-12)
    local am = torch.randn({ B * 2, T, T }, { dtype = f64 })
    assert_close((sf(xs, xs, xs, { attn_mask = am })), (bf(x, x, x, { attn_mask = am })):transpose(0, 1), 1e-12, 1e-12)
    -- a key_padding_mask of (S, batch) is refused, as in PyTorch
    assert_error_has(function() sf(xs, xs, xs, { key_padding_mask = torch.zeros({ T, B }, { dtype = torch.bool }) }) end,
                     "key_padding_mask must be (batch, S) = (3, 4)")
  end)

  it("unbatched (T, E) input is the same for both settings; gradcheck in seq-first layout", function()
    torch.manual_seed(12)
    local sf = nn.MultiheadAttention(4, 2):double()
    local bf = copy_params(nn.MultiheadAttention(4, 2, { batch_first = true }):double(), sf)
    local x = torch.randn({ 3, 4 }, { dtype = f64 })
    local o1, w1 = sf(x)
    local o2, w2 = bf(x)
    assert.are.same({ 3, 4 }, o1.shape)
    assert.are.same({ 3, 3 }, w1.shape)
    assert_close(o1, o2, 0, 0)
    assert_close(w1, w2, 0, 0)
    assert.is_true(testing.gradcheck(function(a) return (sf(a, a, a, { need_weights = false, is_causal = true })) end,
                                     { torch.randn({ 3, 2, 4 }, { dtype = f64, requires_grad = true }) }))
  end)

  it("TransformerEncoderLayer / DecoderLayer take (seq, batch, feature) by default", function()
    torch.manual_seed(13)
    for _, nf in ipairs({ false, true }) do
      local opts = { dim_feedforward = 16, dropout = 0, norm_first = nf }
      local enc = nn.TransformerEncoderLayer(8, 2, opts)
      opts.batch_first = true
      local enc_bf = copy_params(nn.TransformerEncoderLayer(8, 2, opts), enc)
      local x = torch.randn({ 3, 5, 8 }) -- (B, T, E)
      local kpm = torch.tensor({ { false, false, false, true, true }, { false, false, false, false, false },
                                 { false, false, true, true, true } })
      local y = enc(x:transpose(0, 1), { src_key_padding_mask = kpm, is_causal = true })
      assert.are.same({ 5, 3, 8 }, y.shape)
      assert_close(y, enc_bf(x, { src_key_padding_mask = kpm, is_causal = true }):transpose(0, 1), 1e-6, 1e-6)

      opts.batch_first = nil
      local dec = nn.TransformerDecoderLayer(8, 2, opts)
      opts.batch_first = true
      local dec_bf = copy_params(nn.TransformerDecoderLayer(8, 2, opts), dec)
      local t, mem = torch.randn({ 3, 4, 8 }), torch.randn({ 3, 5, 8 })
      local d = dec(t:transpose(0, 1), mem:transpose(0, 1), { tgt_is_causal = true, memory_key_padding_mask = kpm })
      assert.are.same({ 4, 3, 8 }, d.shape)
      assert_close(d, dec_bf(t, mem, { tgt_is_causal = true, memory_key_padding_mask = kpm }):transpose(0, 1),
                   1e-6, 1e-6)
    end
  end)
end)

-- PyTorch: torch.full(size, fill_value) without a dtype infers it from fill_value (bool -> bool, int ->
-- int64, float -> the default dtype). Lua cannot tell 3 from 3.0, so full follows torch.tensor here:
-- an integral number within int64 gives int64, anything else (2.5, inf, nan, 2^63) the default dtype.
describe("torch.full dtype inference", function()
  it("infers bool, int64 or the default dtype as torch.tensor does", function()
    assert.are.equal(torch.int64, torch.full({ 2 }, 3).dtype)
    assert.are.equal(torch.tensor(3).dtype, torch.full({ 2 }, 3).dtype)
    assert.are.same({ 3, 3 }, torch.full({ 2 }, 3):totable())
    assert.are.equal(torch.int64, torch.full({ 2 }, -7).dtype)
    assert.are.equal(torch.get_default_dtype(), torch.full({ 2 }, 2.5).dtype)
    assert.are.equal(torch.get_default_dtype(), torch.full({ 2 }, math.huge).dtype)
    assert.are.equal(torch.get_default_dtype(), torch.full({ 2 }, 0 / 0).dtype)
    assert.are.equal(torch.get_default_dtype(), torch.full({ 2 }, 2 ^ 63).dtype)
    assert.are.equal(torch.bool, torch.full({ 2 }, true).dtype)
    assert.are.equal(torch.float32, torch.full({ 2 }, 3, { dtype = torch.float32 }).dtype)
    -- int64 cdata: int64, exact beyond 2^53
    assert_i64(torch.full({ 2 }, 9007199254740993LL), { 9007199254740993LL, 9007199254740993LL })
    assert.are.same({ 2, 3 }, torch.full({ 2, 3 }, 1LL).shape)
    assert_error_has(function() torch.full({ 2 }, 18446744073709551615ULL) end,
                     "full: uint64 fill value 18446744073709551615ULL is beyond the int64 range")
    -- the options table is not modified
    local o = {}
    torch.full({ 1 }, true, o)
    assert.is_nil(o.dtype)
  end)

  it("full_like keeps the input's dtype", function()
    assert.are.equal(torch.float32, torch.full_like(torch.zeros(2), 3).dtype)
    assert.are.equal(torch.float64, torch.full_like(torch.zeros(2, { dtype = f64 }), 1).dtype)
    assert.are.equal(torch.int64, torch.full_like(torch.zeros(2, { dtype = torch.int64 }), 1).dtype)
  end)
end)

-- PyTorch computes an integral arange in int64; start/end/step beyond 2^53 stay exact.
describe("torch.arange in int64", function()
  it("is exact beyond 2^53 for integral Lua numbers", function()
    local t = torch.arange(2 ^ 53, 2 ^ 53 + 4)
    assert_i64(t, { 9007199254740992LL, 9007199254740993LL, 9007199254740994LL, 9007199254740995LL })
    assert_i64(torch.arange(0, 10, 3), { 0, 3, 6, 9 })
    assert_i64(torch.arange(5, 0, -2), { 5, 3, 1 })
    assert_i64(torch.arange(3, { dtype = torch.int64 }), { 0, 1, 2 })
  end)

  it("takes int64 / uint64 cdata for start, end and step", function()
    assert_i64(torch.arange(9007199254740993LL, 9007199254740999LL, 2LL),
               { 9007199254740993LL, 9007199254740995LL, 9007199254740997LL })
    assert_i64(torch.arange(-9007199254740990LL, -9007199254740996LL, -2LL),
               { -9007199254740990LL, -9007199254740992LL, -9007199254740994LL })
    assert_i64(torch.arange(9223372036854775804LL, 9223372036854775807LL),
               { 9223372036854775804LL, 9223372036854775805LL, 9223372036854775806LL })
    assert_i64(torch.arange(3ULL), { 0, 1, 2 })
    assert_i64(torch.arange(9007199254740993LL, 2 ^ 53 + 4),
               { 9007199254740993LL, 9007199254740994LL, 9007199254740995LL })
    -- another dtype: converted from the exact int64 values
    assert.are.same({ 0, 1, 2 }, torch.arange(0LL, 3LL, { dtype = f64 }):totable())
    assert.are.equal(f64, torch.arange(0LL, 3LL, { dtype = f64 }).dtype)
    -- a non-integral bound makes it a float arange, as arange(0, 2.5) in PyTorch
    local fl = torch.arange(0LL, 2.5)
    assert.are.equal(torch.get_default_dtype(), fl.dtype)
    assert.are.same({ 0, 1, 2 }, fl:totable())
  end)

  it("reports bad arguments", function()
    assert_error_has(function() torch.arange(0LL, 10LL, 0LL) end, "arange: step 0 cannot go from 0 to 10")
    assert_error_has(function() torch.arange(10LL, 0LL, 1LL) end, "arange: step 1 cannot go from 10 to 0")
    assert_error_has(function() torch.arange(18446744073709551615ULL) end,
                     "arange: end 18446744073709551615ULL is beyond the int64 range")
    assert_error_has(function() torch.arange(-9223372036854775807LL - 1, 9223372036854775807LL) end,
                     "arange: too many elements")
    assert_error_has(function() torch.arange(ffi.new("int[1]")) end, "arange: expected a number for end")
  end)
end)

-- PyTorch's torch.tensor takes Python ints exactly as int64; LuaJIT's int64_t / uint64_t cdata are the
-- Lua spelling of integers beyond 2^53 (what totable and item give back for such values).
describe("torch.tensor with int64 cdata elements", function()
  it("takes int64_t / uint64_t cdata exactly", function()
    assert_i64(torch.tensor({ 9007199254740993LL }), { 9007199254740993LL })
    assert_i64(torch.tensor({ 1, 9007199254740993LL, true }), { 1, 9007199254740993LL, 1 })
    assert_i64(torch.tensor({ -9223372036854775807LL - 1, 9223372036854775807LL }),
               { -9223372036854775807LL - 1, 9223372036854775807LL })
    assert_i64(torch.tensor({ 5ULL, 9223372036854775807ULL }), { 5, 9223372036854775807LL })
    local s = torch.tensor(9007199254740993LL)
    assert.are.same({}, s.shape)
    assert.is_true(s:item() == 9007199254740993LL)
    local nested = torch.tensor({ { 9007199254740995LL, 2 }, { 3, 4LL } })
    assert.are.same({ 2, 2 }, nested.shape)
    assert.is_true(nested:totable()[1][1] == 9007199254740995LL)
    -- totable round-trips
    local big = torch.tensor({ 9007199254740993LL, -9007199254740995LL, 7 })
    assert_i64(torch.tensor(big:totable()), big:totable())
  end)

  it("follows the dtype inference and conversions of plain numbers", function()
    local mixed = torch.tensor({ 1.5, 2LL })
    assert.are.equal(torch.get_default_dtype(), mixed.dtype)
    assert.are.same({ 1.5, 2 }, mixed:totable())
    -- converted from the exact int64: 2^53 + 1 rounds to even (2^53), 2^53 + 3 to 2^53 + 4
    assert.are.same({ 2 ^ 53, 2 ^ 53 + 4 },
                    torch.tensor({ 9007199254740993LL, 9007199254740995LL }, { dtype = f64 }):totable())
    assert.are.same({ 255 }, torch.tensor({ 255LL }, { dtype = torch.uint8 }):totable())
  end)

  it("refuses uint64 beyond int64 and other cdata", function()
    assert_error_has(function() torch.tensor({ 1, 9223372036854775808ULL }) end,
                     "tensor: uint64 value 9223372036854775808ULL is beyond the int64 range")
    assert_error_has(function() torch.tensor(18446744073709551615ULL) end,
                     "tensor: uint64 value 18446744073709551615ULL is beyond the int64 range")
    assert_error_has(function() torch.tensor({ ffi.new("int[1]") }) end,
                     "tensor: expected numbers, booleans, int64 cdata or nested tables, got a cdata")
  end)
end)

-- RamTorch's helper sets each layer's compute device to cuda:<rank>; PyTorch refuses an ordinal beyond
-- torch.cuda.device_count() when the device is used. Here a rank beyond a known device count is refused
-- at once; without CUDA (device_count() == 0) the rank is only recorded, as RamTorch does.
describe("replace_linear_with_ramtorch rank", function()
  local cuda = torch.cuda
  local function with_devices(n, fn)
    local saved_count, saved_avail = cuda.device_count, cuda.is_available
    cuda.device_count = function() return n end
    cuda.is_available = function() return n > 0 end
    local ok, err = pcall(fn)
    cuda.device_count, cuda.is_available = saved_count, saved_avail
    if not ok then error(err, 0) end
  end

  it("refuses a rank beyond the device count, naming the rank and the count", function()
    with_devices(2, function()
      assert_error_has(function() helpers.replace_linear_with_ramtorch(nn.Linear(3, 2), 2) end,
                       "replace_linear_with_ramtorch: rank 2 is out of range: 2 CUDA devices (valid ranks 0 to 1)")
      assert_error_has(function() helpers.replace_linear_with_ramtorch(nn.Sequential({ nn.Linear(3, 2) }), 99) end,
                       "replace_linear_with_ramtorch: rank 99 is out of range: 2 CUDA devices")
      local m = helpers.replace_linear_with_ramtorch(nn.Linear(3, 2), 1)
      assert.are.equal("cuda:1", m.device)
    end)
    with_devices(1, function()
      assert_error_has(function() helpers.replace_linear_with_ramtorch(nn.Linear(3, 2), 1) end,
                       "rank 1 is out of range: 1 CUDA device (valid rank 0)")
    end)
    assert_error_has(function() helpers.replace_linear_with_ramtorch(nn.Linear(3, 2), 0.5) end,
                     "rank must be a non-negative integer, got 0.5")
  end)

  it("without CUDA records the rank as RamTorch does, and computes on the CPU", function()
    with_devices(0, function()
      local m = helpers.replace_linear_with_ramtorch(nn.Linear(3, 2), 99)
      assert.are.equal(99, m.rank)
      assert.are.equal("cuda:99", m.device)
      assert.are.same({ 4, 2 }, m(torch.randn(4, 3)).shape) -- a CPU input computes on the CPU
    end)
  end)
end)
