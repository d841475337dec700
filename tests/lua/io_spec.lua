-- io_spec.lua: torch.save / torch.load in the safetensors format: round trips of every dtype and
-- layout, metadata, reading the file PyTorch's safetensors wrote (every value compared exactly),
-- atomic saves that leave the previous file intact when they fail, and the errors of malformed
-- files and bad arguments.
local torch = require("ramtorch")
local tio = require("ramtorch.io")

local FIX = os.getenv("RAMTORCH_TEST_FIXTURES") or "tests/fixtures"
local CORPUS = FIX .. "/../fuzz/corpus"
local V = dofile(FIX .. "/safetensors_values.lua")

local tmpdir = os.tmpname()
os.remove(tmpdir)
assert(os.execute("mkdir -p " .. tmpdir) == 0)
local function tmp(name) return tmpdir .. "/" .. name end

local function read_all(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function write_all(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local util = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "support/spec_util.lua")
local ls = util.ls

local function flat(t)
  local v = t:reshape(-1):totable()
  if t:dim() == 0 then v = { t:item() } end
  return v
end

local function err_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  return tostring(err)
end

teardown(function() os.execute("rm -rf " .. tmpdir) end)

describe("torch.save / torch.load", function()
  it("round-trips every dtype, contiguous or not, with metadata", function()
    local sd = {}
    for _, dt in ipairs({ "float32", "bfloat16", "float16", "float64", "int64", "int32", "uint8", "bool" }) do
      local base = torch.arange(24):reshape(2, 3, 4)
      if dt == "bool" then base = torch.rand(2, 3, 4):gt(0.5) end
      local t = base:to(torch[dt])
      sd["c." .. dt] = t
      sd["t." .. dt] = t:transpose(0, 2) -- (4, 3, 2), not contiguous
      sd["n." .. dt] = t:narrow(2, 1, 2) -- a strided slice
      assert.is_false(sd["t." .. dt]:is_contiguous())
    end
    sd["scalar"] = torch.tensor(-7.25, { dtype = torch.float64 })
    sd["empty"] = torch.zeros(0, 5)
    local path = tmp("all.safetensors")
    torch.save(sd, path, { epoch = 3, name = "run 1", ok = true })
    local back, meta = torch.load(path)
    assert.are.same({ epoch = "3", name = "run 1", ok = "true" }, meta)
    local n = 0
    for name, t in pairs(sd) do
      n = n + 1
      local b = back[name]
      assert.is_not_nil(b, name)
      assert.are.equal(t.dtype, b.dtype)
      assert.are.same(t.shape, b.shape)
      assert.is_true(b:is_contiguous())
      assert.are.same(flat(t), flat(b), name)
    end
    local m = 0
    for _ in pairs(back) do m = m + 1 end
    assert.are.equal(n, m)
  end)

  it("reads the file PyTorch's safetensors wrote, every value exactly", function()
    local sd, meta = torch.load(FIX .. "/torch_written.safetensors")
    assert.are.same(V.metadata, meta)
    local count = 0
    for name, e in pairs(V.tensors) do
      count = count + 1
      local t = sd[name]
      assert.is_not_nil(t, name)
      assert.are.equal(torch[e[1]], t.dtype, name)
      assert.are.same(e[2], t.shape, name)
      local got = flat(t)
      assert.are.equal(#e[3], #got, name)
      for i = 1, #e[3] do
        local want = e[3][i]
        if type(want) == "boolean" then
          assert.are.equal(want, got[i], name)
        else
          assert.are.equal(want, got[i], ("%s[%d]"):format(name, i - 1)) -- exact, no tolerance
        end
      end
    end
    local n = 0
    for _ in pairs(sd) do n = n + 1 end
    assert.are.equal(count, n)
  end)

  it("reads back what it wrote for PyTorch (the committed ramtorch_written fixture) bit for bit", function()
    -- the same tensors written now from non-contiguous views give the same bytes
    local path = tmp("again.safetensors")
    local saved_arg, saved_print = _G.arg, _G.print
    _G.arg, _G.print = { [0] = FIX .. "/write_ramtorch_fixture.lua", path }, function() end
    local ok, err = pcall(dofile, FIX .. "/write_ramtorch_fixture.lua")
    _G.arg, _G.print = saved_arg, saved_print
    assert.is_true(ok, err)
    assert.are.equal(read_all(FIX .. "/ramtorch_written.safetensors"), read_all(path))
    local a = torch.load(FIX .. "/ramtorch_written.safetensors")
    local b = torch.load(FIX .. "/torch_written.safetensors")
    for name, t in pairs(b) do assert.are.same(flat(t), flat(a[name]), name) end
  end)

  it("lays files out like the reference writer (8-byte aligned header, sorted data)", function()
    local path = tmp("layout.safetensors")
    torch.save({ b = torch.ones(3, { dtype = torch.uint8 }), a = torch.ones(2, { dtype = torch.float64 }) }, path)
    local s = read_all(path)
    local n = 0
    for i = 8, 1, -1 do n = n * 256 + s:byte(i) end
    assert.are.equal(0, n % 8)
    assert.are.equal(8 + n + 16 + 3, #s)
    local header = s:sub(9, 8 + n)
    assert.matches('^{"a":{"dtype":"F64","shape":%[2%],"data_offsets":%[0,16%]},"b":{"dtype":"U8"', header)
  end)

  it("lazily reads single tensors with safe_open", function()
    local f = tio.safe_open(FIX .. "/torch_written.safetensors")
    local keys = f:keys()
    assert.are.equal("empty.f32", keys[1])
    assert.are.equal(10, #keys)
    assert.are.same({ 0, 1, 127, 128, 254, 255 }, flat(f:get_tensor("pixels.u8")))
    assert.matches('has no tensor named "nope"', err_of(f.get_tensor, f, "nope"))
    assert.are.equal("pt", f:metadata().format)
    f:close()
    assert.matches("is closed", err_of(f.keys, f))
  end)
end)

describe("atomic saves", function()
  it("leave the previous file intact when the value cannot be serialised", function()
    local path = tmp("keep.safetensors")
    torch.save({ w = torch.ones(4) }, path)
    local before = read_all(path)
    local entries = ls(tmpdir)
    assert.matches('save: state_dict%["x"%] must be a Tensor, got string',
                   err_of(torch.save, { w = torch.zeros(4), x = "not a tensor" }, path))
    assert.matches("save: state_dict keys must be strings, got a number key",
                   err_of(torch.save, { torch.zeros(1) }, path))
    assert.matches('metadata%["m"%] must be a string', err_of(torch.save, { w = torch.zeros(4) }, path, { m = {} }))
    assert.matches('"__metadata__" is reserved', err_of(torch.save, { __metadata__ = torch.zeros(1) }, path))
    assert.matches("not valid UTF%-8", err_of(torch.save, { ["bad\255"] = torch.zeros(1) }, path))
    assert.are.equal(before, read_all(path))
    assert.are.same(entries, ls(tmpdir)) -- no temporary file left behind
    assert.are.same({ 1, 1, 1, 1 }, torch.load(path).w:totable())
  end)

  it("leave the previous file intact when the folder is not writable", function()
    local dir = tmp("ro")
    os.execute("mkdir -p " .. dir)
    local path = dir .. "/model.safetensors"
    torch.save({ w = torch.full({ 2 }, 5) }, path)
    local before = read_all(path)
    os.execute("chmod 555 " .. dir)
    local ok, err = pcall(torch.save, { w = torch.zeros(2) }, path)
    os.execute("chmod 755 " .. dir)
    local probe = io.open(dir .. "/probe", "w") -- running as root ignores permissions: skip then
    if probe then probe:close() os.remove(dir .. "/probe") end
    if not ok then
      assert.matches("cannot create a temporary file in .*ro for .*model.safetensors: Permission denied", err)
      assert.are.equal(before, read_all(path))
    else
      -- root: the write went through atomically instead; the file is complete and valid
      assert.are.same({ 0, 0 }, torch.load(path).w:totable())
    end
    assert.are.same({ "model.safetensors" }, ls(dir))
  end)

  it("replace the file only once complete, keeping no temporary file", function()
    local path = tmp("replace.safetensors")
    torch.save({ w = torch.ones(2) }, path)
    torch.save({ v = torch.zeros(3, { dtype = torch.int32 }) }, path)
    local sd = torch.load(path)
    assert.is_nil(sd.w)
    assert.are.same({ 0, 0, 0 }, sd.v:totable())
    for _, name in ipairs(ls(tmpdir)) do assert.is_nil(name:match("%.tmp%-"), name) end
  end)

  it("refuse a directory as the target", function()
    assert.matches("is a directory", err_of(torch.save, { w = torch.ones(1) }, tmpdir))
  end)
end)

describe("malformed files", function()
  local cases = {
    { "bad_truncated_data", "out of range: the data buffer holds 13 bytes" },
    { "bad_json_trailing_comma", "bad JSON in the header: trailing comma at byte" },
    { "bad_offsets_overlap", 'tensor "b": data_offsets %[4, 12%] overlap tensor "a"' },
    { "bad_offsets_out_of_range", 'tensor "x": data_offsets %[0, 8%] out of range' },
    { "bad_offsets_gap", "not contiguous" },
    { "bad_unknown_dtype", 'tensor "x": unknown dtype "F128"' },
    { "bad_header_beyond_file", "header length 1000 goes beyond the end of the file" },
    { "bad_duplicate_name", 'tensor "x" given twice' },
    { "bad_byte_length_mismatch", "hold 20 bytes, but F32 of shape %[2, 3%] needs 24" },
    { "bad_strict_too_many_dims", "9 dimensions, at most 8 supported" },
    { "bad_short_file", "too short for the 8%-byte header length" },
  }
  for _, c in ipairs(cases) do
    it("reject " .. c[1] .. " with a message naming the file and the defect", function()
      local path = CORPUS .. "/" .. c[1] .. ".safetensors"
      local err = err_of(torch.load, path)
      assert.matches("load_safetensors: .*" .. c[1] .. "%.safetensors: ", err)
      assert.matches(c[2], err)
    end)
  end

  it("report a truncated copy of a valid file", function()
    local s = read_all(FIX .. "/torch_written.safetensors")
    local path = tmp("cut.safetensors")
    write_all(path, s:sub(1, #s - 10))
    assert.matches("cut%.safetensors: .*out of range", err_of(torch.load, path))
    write_all(path, s:sub(1, 50))
    assert.matches("cut%.safetensors: header length %d+ goes beyond the end of the file", err_of(torch.load, path))
  end)

  it("open every valid corpus file and reject every malformed one", function()
    local ok_n, bad_n = 0, 0
    for _, name in ipairs(ls(CORPUS)) do
      local ok, err = pcall(torch.load, CORPUS .. "/" .. name)
      if name:match("^ok_") then
        -- ok files may hold dtypes ramtorch cannot represent (I16): opening must still work
        if not ok then assert.matches("does not support", err, name) end
        local f = tio.safe_open(CORPUS .. "/" .. name)
        f:close()
        ok_n = ok_n + 1
      else
        assert.is_false(ok, name)
        assert.matches(name:gsub("%p", "%%%0"), err)
        bad_n = bad_n + 1
      end
    end
    assert.is_true(ok_n >= 10 and bad_n >= 40)
  end)

  it("give clear errors for missing files and bad arguments", function()
    assert.matches("cannot open .*nope%.safetensors: No such file or directory", err_of(torch.load, tmp("nope.safetensors")))
    assert.matches("load: expected a file path string, got nil", err_of(torch.load))
    assert.matches("save: expected a table of name %-> Tensor", err_of(torch.save, torch.ones(1), tmp("x")))
    assert.matches("save: expected a file path string", err_of(torch.save, {}, nil))
    assert.matches("tensor \"h\" has dtype I16, which ramtorch does not support",
                   err_of(torch.load, CORPUS .. "/ok_unsupported_dtype_i16.safetensors"))
  end)
end)
