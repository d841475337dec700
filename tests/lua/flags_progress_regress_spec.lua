-- flags_progress_regress_spec.lua: review regressions of the scripts' helpers. flags.parse: numbers
-- that are not finite (nan, inf) are refused, integer flags ({..., int = true}) refuse 1.5, a flag
-- followed by another option has no value (the old code took "--resume" as the --out folder),
-- --no-flag=value is refused (the old code set the flag to the value, ignoring the "no-").
-- Progress: a bar started at a resumed step (initial=) estimates the ETA from the steps done since
-- then (the old ETA divided the time since the resume by the fraction of the whole run). plot.write_svg
-- reports a failed write (the old code ignored write's result and said nothing).
local flags = require("ramtorch.flags")
local Progress = require("ramtorch.progress")

local SPEC = {
  { "steps", 300, "steps", int = true },
  { "lr", 3e-3, "learning rate" },
  { "out", "out/x", "folder" },
  { "resume", false, "resume" },
}

local function perr(argv)
  local ok, err = pcall(flags.parse, argv, SPEC)
  assert.is_false(ok)
  return err
end

describe("flags.parse (review regressions)", function()
  it("refuses nan and inf for number flags", function()
    assert.matches("option %-%-lr expects a number, got 'nan'", perr({ "--lr", "nan" }))
    assert.matches("option %-%-steps expects", perr({ "--steps=inf" }))
    assert.matches("option %-%-lr expects a number, got '%-inf'", perr({ "--lr=-inf" }))
  end)

  it("integer flags refuse fractions and keep integers", function()
    assert.matches("option %-%-steps expects an integer, got '1.5'", perr({ "--steps", "1.5" }))
    local o = flags.parse({ "--steps", "12", "--lr", "0.5" }, SPEC)
    assert.equal(12, o.steps)
    assert.equal(0.5, o.lr)
  end)

  it("a flag followed by another option has no value", function()
    assert.matches("option %-%-out needs a value", perr({ "--out", "--resume" }))
    assert.matches("option %-%-steps needs a value", perr({ "--steps", "--resume" }))
    -- negative numbers and '=' values are still values
    assert.equal(-2, flags.parse({ "--lr", "-2" }, SPEC).lr)
    assert.equal("--odd", flags.parse({ "--out=--odd" }, SPEC).out)
  end)

  it("--no-flag takes no value", function()
    assert.matches("option %-%-no%-resume takes no value", perr({ "--no-resume=true" }))
    assert.is_false(flags.parse({ "--resume", "--no-resume" }, SPEC).resume)
  end)
end)

describe("Progress (review regressions)", function()
  it("the ETA of a bar started at a resumed step counts only the steps run since", function()
    local sink = { write = function() end, flush = function() end }
    local bar = Progress.new({ total = 100, initial = 90, tty = false, out = sink })
    bar.start = bar.start - 10 -- 10 s for the 5 steps 90 -> 95
    bar.step = 95
    -- 5 steps left at 2 s a step: 10 s (the old ETA: 10 * 0.05 / 0.95, about 1 s)
    assert.matches("<00:10$", bar:line())
  end)
end)

describe("plot.write_svg (review regressions)", function()
  it("reports a failed write and leaves no file behind", function()
    local plot = require("ramtorch.plot")
    local path = os.tmpname()
    os.remove(path)
    -- a file whose write fails as on a full disk
    local real_open = io.open
    io.open = function(p, mode)
      if mode == "w" then
        return { write = function() return nil, "No space left on device" end, close = function() return true end }
      end
      return real_open(p, mode)
    end
    local ok, err = pcall(plot.write_svg, path, {
      { title = "t", series = { { name = "a", x = { 1, 2 }, y = { 1, 2 } } } } })
    io.open = real_open
    assert.is_false(ok)
    assert.matches("plot: cannot write .*No space left on device", err)
    assert.is_nil(io.open(path, "rb"))
    -- a normal write still works and replaces the file
    plot.write_svg(path, { { title = "t", series = { { name = "a", x = { 1, 2 }, y = { 1, 2 } } } } })
    local f = assert(io.open(path, "rb"))
    assert.matches("^<svg", f:read("*a"))
    f:close()
    assert.is_nil(io.open(path .. ".tmp", "rb"))
    os.remove(path)
  end)
end)
