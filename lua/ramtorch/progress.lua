-- ramtorch/progress.lua: a terminal progress bar for training loops: step/total, a bar, named values
-- (loss, ...), samples per second and ETA, redrawn in place on a terminal and printed every N steps
-- (or at the end) when the output is a file or a pipe, so logs stay readable.
local M = {}
M.__index = M

local ffi = require("ffi")
pcall(ffi.cdef, "int isatty(int fd);")
local function stdout_is_tty()
  local ok, r = pcall(function() return ffi.C.isatty(1) end)
  return ok and r == 1
end

local function now()
  return require("ramtorch.timer").now()
end

local function fmt_time(s)
  if s ~= s or s == math.huge then return "--:--" end
  s = math.floor(s + 0.5)
  local h, m = math.floor(s / 3600), math.floor(s / 60) % 60
  if h > 0 then return ("%d:%02d:%02d"):format(h, m, s % 60) end
  return ("%02d:%02d"):format(m, s % 60)
end
M.format_time = fmt_time

-- Progress.new{total = steps, desc = "epoch 1", width = 24, every = 50 (non-tty print interval),
-- initial = the step a resumed run starts at (the ETA counts only the steps run since)}
function M.new(opts)
  local self = setmetatable({}, M)
  self.total = opts.total
  self.desc = opts.desc or ""
  self.width = opts.width or 24
  self.tty = opts.tty
  if self.tty == nil then self.tty = stdout_is_tty() end
  self.every = opts.every or math.max(1, math.floor((opts.total or 100) / 10))
  self.start = now()
  self.samples = 0
  self.initial = opts.initial or 0
  self.step = self.initial
  self.last_draw = -1
  self.out = opts.out or io.stdout
  return self
end

-- update(step, samples_in_this_step, {loss = 0.31, ...})
function M:update(step, nsamples, values)
  self.step = step
  self.samples = self.samples + (nsamples or 0)
  self.values = values or self.values
  local t = now()
  if self.tty then
    if t - self.last_draw >= 0.1 or step == self.total then
      self.last_draw = t
      self.out:write("\r", self:line(), "\27[K")
      self.out:flush()
    end
  elseif step % self.every == 0 or step == self.total then
    self.out:write(self:line(), "\n")
    self.out:flush()
  end
end

function M:line()
  local elapsed = now() - self.start
  local frac = self.total and self.total > 0 and math.min(self.step / self.total, 1) or 0
  local filled = math.floor(frac * self.width + 0.5)
  local bar = string.rep("#", filled) .. string.rep(".", self.width - filled)
  local rate = elapsed > 0 and self.samples / elapsed or 0
  local done = self.step - self.initial
  local eta = (self.total and done > 0) and elapsed * (self.total - self.step) / done or math.huge
  local parts = {}
  if self.values then
    local keys = {}
    for k in pairs(self.values) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = self.values[k]
      parts[#parts + 1] = type(v) == "number" and ("%s %.4f"):format(k, v) or (k .. " " .. tostring(v))
    end
  end
  return ("%s [%s] %d/%d %s | %.0f samples/s | %s<%s"):format(self.desc, bar, self.step, self.total or 0,
    table.concat(parts, " "), rate, fmt_time(elapsed), fmt_time(eta))
end

function M:close()
  if self.tty then self.out:write("\n") end
  self.out:flush()
  return now() - self.start
end

return M
