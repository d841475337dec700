-- ramtorch/plot.lua: line charts written as SVG (no dependency), for training curves. One chart per
-- call, several named series, axes with tick labels, a legend; optionally two charts side by side.
local M = {}

local function nice_ticks(lo, hi, n)
  if hi <= lo then hi = lo + 1 end
  local span = hi - lo
  local step = 10 ^ math.floor(math.log10(span / n))
  for _, m in ipairs({ 1, 2, 5, 10 }) do
    if span / (step * m) <= n then step = step * m break end
  end
  local ticks = {}
  local t = math.ceil(lo / step) * step
  while t <= hi + step * 1e-9 do
    ticks[#ticks + 1] = t
    t = t + step
  end
  return ticks
end

local function esc(s) return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;")) end

local colors = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b" }

-- chart{title=, xlabel=, ylabel=, series={{name=, x={...}, y={...}}, ...}} -> svg group string of
-- size w x h placed at (ox, oy)
local function chart(c, ox, oy, w, h)
  local ml, mr, mt, mb = 60, 20, 30, 45
  local xs, ys = {}, {}
  for _, s in ipairs(c.series) do
    for i = 1, #s.y do
      xs[#xs + 1] = s.x and s.x[i] or i
      ys[#ys + 1] = s.y[i]
    end
  end
  if #ys == 0 then -- nothing recorded (a very short run): an empty frame with the title
    xs, ys = { 0, 1 }, { 0, 1 }
  end
  local xmin, xmax = math.min(unpack(xs)), math.max(unpack(xs))
  local ymin, ymax = math.min(unpack(ys)), math.max(unpack(ys))
  if c.ymin then ymin = c.ymin end
  if c.ymax then ymax = c.ymax end
  if ymax <= ymin then ymax = ymin + 1 end
  if xmax <= xmin then xmax = xmin + 1 end
  local pw, ph = w - ml - mr, h - mt - mb
  local function px(x) return ox + ml + (x - xmin) / (xmax - xmin) * pw end
  local function py(y) return oy + mt + ph - (y - ymin) / (ymax - ymin) * ph end
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(('<text x="%.1f" y="%.1f" font-size="14" text-anchor="middle">%s</text>'):format(ox + ml + pw / 2, oy + 18, esc(c.title or "")))
  add(('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#444"/>'):format(ox + ml, oy + mt, pw, ph))
  for _, t in ipairs(nice_ticks(ymin, ymax, 5)) do
    add(('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>'):format(ox + ml, py(t), ox + ml + pw, py(t)))
    add(('<text x="%.1f" y="%.1f" font-size="11" text-anchor="end">%s</text>'):format(ox + ml - 5, py(t) + 4, ("%g"):format(t)))
  end
  for _, t in ipairs(nice_ticks(xmin, xmax, 6)) do
    add(('<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>'):format(px(t), oy + mt + ph + 16, ("%g"):format(t)))
  end
  add(('<text x="%.1f" y="%.1f" font-size="12" text-anchor="middle">%s</text>'):format(ox + ml + pw / 2, oy + h - 8, esc(c.xlabel or "")))
  add(('<text x="%.1f" y="%.1f" font-size="12" text-anchor="middle" transform="rotate(-90 %.1f %.1f)">%s</text>'):format(
    ox + 14, oy + mt + ph / 2, ox + 14, oy + mt + ph / 2, esc(c.ylabel or "")))
  for k, s in ipairs(c.series) do
    local pts = {}
    for i = 1, #s.y do pts[#pts + 1] = ("%.1f,%.1f"):format(px(s.x and s.x[i] or i), py(s.y[i])) end
    local col = colors[(k - 1) % #colors + 1]
    add(('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>'):format(col, table.concat(pts, " ")))
    if #s.y <= 30 then
      for i = 1, #s.y do
        add(('<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>'):format(px(s.x and s.x[i] or i), py(s.y[i]), col))
      end
    end
    add(('<text x="%.1f" y="%.1f" font-size="11" fill="%s">%s</text>'):format(ox + ml + 8, oy + mt + 14 * k, col, esc(s.name or "")))
  end
  return table.concat(out, "\n")
end

-- write_svg(path, {chart1, chart2, ...}) lays the charts out side by side (each 480 x 320).
function M.write_svg(path, charts)
  local w, h = 480, 320
  local parts = { ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">'):format(w * #charts, h),
                  ('<rect width="%d" height="%d" fill="white"/>'):format(w * #charts, h) }
  for i, c in ipairs(charts) do parts[#parts + 1] = chart(c, (i - 1) * w, 0, w, h) end
  parts[#parts + 1] = "</svg>\n"
  -- a temporary file renamed over path: a failed write (disk full) leaves no truncated SVG behind
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "w")
  local ok = f ~= nil
  if ok then
    ok, err = f:write(table.concat(parts, "\n"))
    local cok, cerr = f:close()
    if ok and not cok then ok, err = false, cerr end
    if ok then ok, err = os.rename(tmp, path) end
    if not ok then os.remove(tmp) end
  end
  if not ok then error(("plot: cannot write %s: %s"):format(path, tostring(err)), 2) end
end

return M
