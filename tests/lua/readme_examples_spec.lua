-- readme_examples_spec.lua: the RamTorch README examples in Lua (scripts/examples/ramtorch_readme.lua,
-- shown in README.md) must keep running: the script asserts its own results.
describe("RamTorch README examples", function()
  it("run and produce the expected shapes and outputs", function()
    local ok, err = pcall(dofile, "scripts/examples/ramtorch_readme.lua")
    assert(ok, tostring(err))
  end)
end)
