-- train_gpt.lua: the second job. A character-level GPT (ramtorch.models.gpt) trained on the fortune
-- cookies of Debian's `fortunes` package (/usr/share/games/fortunes), with a progress bar, validation
-- loss, checkpoints that resume bit for bit (torch.save_checkpoint / load_checkpoint), and text
-- generated at the end. The last line printed carries val_loss and its value.
--
--   ramtorch-lua scripts/train_gpt.lua [--steps 300] [--batch-size 16] [--block-size 64] [--n-layer 2]
--                                      [--n-embd 64] [--n-head 4] [--lr 3e-3] [--out out/gpt]
--                                      [--resume] [--device cpu] [--help]
--
-- --resume continues from <out>/checkpoint.safetensors up to --steps (the same flags as the first
-- run; the data order comes from the generator, whose state the checkpoint holds).
local torch = require("ramtorch")
local optim = require("ramtorch.optim")
local flags = require("ramtorch.flags")
local Progress = require("ramtorch.progress")
local gpt = require("ramtorch.models.gpt")
local core = require("ramtorch.core")
local ffi = require("ffi")
local C = torch.C

local ok, opts, rest = pcall(flags.parse, arg or {}, {
  { "steps", 300, "optimizer steps in total (a resumed run continues up to this)", int = true },
  { "batch-size", 16, "sequences per step", int = true },
  { "block-size", 64, "context length in characters", int = true },
  { "n-layer", 2, "transformer blocks", int = true },
  { "n-embd", 64, "model width", int = true },
  { "n-head", 4, "attention heads", int = true },
  { "dropout", 0.0, "dropout probability" },
  { "rotary", false, "rotary position embeddings instead of learned positions" },
  { "lr", 3e-3, "peak AdamW learning rate (linear warmup, cosine decay)" },
  { "warmup", 20, "warmup steps", int = true },
  { "weight-decay", 0.1, "AdamW weight decay" },
  { "eval-every", 100, "steps between validation losses", int = true },
  { "eval-batches", 8, "batches per validation loss", int = true },
  { "ckpt-every", 100, "steps between checkpoints (and one at the end)", int = true },
  { "out", "out/gpt", "folder for checkpoint.safetensors and model.safetensors" },
  { "resume", false, "continue from <out>/checkpoint.safetensors" },
  { "stop-at", 0, "stop after this step with a checkpoint (0: never), to interrupt a run on purpose", int = true },
  { "device", "cpu", "where the model runs (cpu, cuda, cuda:N)" },
  { "data", "/usr/share/games/fortunes", "folder of fortune files (strfile format, '%' lines separate)" },
  { "generate", 400, "characters to generate at the end", int = true },
  { "temperature", 0.8, "sampling temperature" },
  { "top-k", 20, "sample among the k most likely characters", int = true },
  { "seed", 1337, "random seed", int = true },
  { "threads", 1, "CPU threads (0: the runtime's default; the small default model runs best on one)", int = true },
}, "usage: ramtorch-lua scripts/train_gpt.lua [options]\n\nTrains a character-level GPT on fortune cookies.")
if ok and #rest > 0 then ok, opts = false, ("unexpected argument '%s' (options start with --; see --help)"):format(rest[1]) end
if not ok then
  io.stderr:write("train_gpt: ", tostring(opts), "\n")
  os.exit(2)
end
if opts.steps < 1 or opts.batch_size < 1 or opts.block_size < 2 or opts.lr <= 0 then
  io.stderr:write("train_gpt: --steps and --batch-size must be >= 1, --block-size >= 2, --lr > 0\n")
  os.exit(2)
end
-- checked here, not after the whole training run (generate) or never (a nan validation loss)
if opts.eval_every < 1 or opts.eval_batches < 1 or opts.ckpt_every < 1 or opts.warmup < 0 or opts.stop_at < 0
   or opts.generate < 0 or opts.top_k < 1 or opts.temperature < 0 or opts.seed < 0 or opts.threads < 0
   or opts.weight_decay < 0 then
  io.stderr:write("train_gpt: --eval-every, --eval-batches, --ckpt-every and --top-k must be >= 1, --warmup, "
                  .. "--stop-at, --generate, --temperature, --seed, --threads and --weight-decay >= 0\n")
  os.exit(2)
end
-- a user mistake found later (model config, device, checkpoint, --out) ends with its message, no traceback
local function clean(msg) return (tostring(msg):gsub("^[^:\n]*%.lua:%d+: ", "")) end
local function fail(msg)
  io.stderr:write("train_gpt: ", clean(msg), "\n")
  os.exit(1)
end
if opts.threads > 0 then torch.set_num_threads(opts.threads) end
torch.manual_seed(opts.seed)
local device = opts.device

-- ---- data: every fortune file, fortunes separated by blank lines ----------------------------------------
local function list_files(dir)
  local p = io.popen(("ls -1 '%s' 2>/dev/null"):format(dir))
  local files = {}
  for name in p:lines() do
    if not name:match("%.dat$") and not name:match("%.u8$") and name ~= "ascii-art" then
      files[#files + 1] = dir .. "/" .. name
    end
  end
  p:close()
  return files
end

local files = list_files(opts.data)
local parts = {}
for _, path in ipairs(files) do
  local f = io.open(path, "rb")
  if f then
    local s = f:read("*a")
    f:close()
    if s and #s > 0 and not s:find("\0", 1, true) then
      parts[#parts + 1] = (s:gsub("\r", ""):gsub("\n%%\n", "\n\n"))
    end
  end
end
if #parts == 0 then
  io.stderr:write(("train_gpt: no fortune files in %s (install them: apt-get install fortunes)\n"):format(opts.data))
  os.exit(1)
end
local text = table.concat(parts, "\n")
local n_val = #text - math.floor(#text * 0.9)
if n_val - opts.block_size - 1 < 1 then
  fail(("--block-size %d is too long for the %d characters of validation text"):format(opts.block_size, n_val))
end

-- the vocabulary: the sorted set of bytes that occur
local seen, itos, stoi = {}, {}, {}
for i = 1, #text do seen[text:byte(i)] = true end
for b = 0, 255 do
  if seen[b] then
    itos[#itos + 1] = string.char(b)
    stoi[b] = #itos - 1
  end
end
local V = #itos

local n = #text
local buf = ffi.new("int64_t[?]", n)
for i = 1, n do buf[i - 1] = stoi[text:byte(i)] end
local shape = ffi.new("int64_t[1]", n)
local all = core.result(C.rt_from_host(1, shape, core.int64.code, -1, buf, core.int64.code, core.box))
buf = nil
local n_train = math.floor(n * 0.9)
local train_data, val_data = all:narrow(0, 0, n_train), all:narrow(0, n_train, n - n_train)
local T, B = opts.block_size, opts.batch_size
local offsets = torch.arange(T, { dtype = torch.int64 }):view(1, T)

-- a batch of B windows at generator-drawn starts: x (B, T) and y = x shifted by one
local function get_batch(d)
  local starts = torch.randint(0, d:numel() - T - 1, { B, 1 })
  local idx = (starts + offsets):view(-1)
  local x = d:index_select(0, idx):view(B, T)
  local y = d:index_select(0, idx + 1):view(B, T)
  return x:to(device), y:to(device)
end

-- ---- model, optimizer, schedule ---------------------------------------------------------------------------
local mok, model = pcall(gpt.GPT, { vocab_size = V, block_size = T, n_layer = opts.n_layer, n_head = opts.n_head,
                                   n_embd = opts.n_embd, dropout = opts.dropout, rotary = opts.rotary })
if not mok then fail(model) end
local dok, derr = pcall(model.to, model, device)
if not dok then fail(derr) end
local optimizer = optim.AdamW(model:parameters(), { lr = opts.lr, weight_decay = opts.weight_decay,
                                                   betas = { 0.9, 0.99 } })
local warm = math.max(1, math.min(opts.warmup, opts.steps - 1))
local lr_sched = optim.lr_scheduler
local scheduler = lr_sched.SequentialLR(optimizer, {
  lr_sched.LinearLR(optimizer, { start_factor = 0.05, end_factor = 1, total_iters = warm }),
  lr_sched.CosineAnnealingLR(optimizer, math.max(1, opts.steps - warm), opts.lr * 0.1),
}, { warm })

local mkdir_rc = os.execute(("mkdir -p '%s' 2>/dev/null"):format(opts.out:gsub("'", "'\\''")))
if mkdir_rc ~= 0 and mkdir_rc ~= true then fail(("--out: cannot create the folder %s"):format(opts.out)) end
local ckpt_path = opts.out .. "/checkpoint.safetensors"
local step = 0
local loss_ema
if opts.resume then
  local f = io.open(ckpt_path, "rb")
  if not f then
    io.stderr:write(("train_gpt: --resume: no checkpoint at %s\n"):format(ckpt_path))
    os.exit(1)
  end
  f:close()
  local lok, info = pcall(torch.load_checkpoint, ckpt_path, { model = model, optimizer = optimizer, scheduler = scheduler })
  if not lok then fail(("--resume: %s (resume with the flags of the first run)"):format(clean(info))) end
  -- the same model shapes with another --data would silently map characters wrongly
  if info.extra.vocab ~= nil and info.extra.vocab ~= table.concat(itos) then
    fail(("--resume: %s was trained on another vocabulary (another --data)"):format(ckpt_path))
  end
  step = info.step or 0
  loss_ema = info.extra.loss_ema -- the shown loss continues as if the run had not stopped
  -- the loaded schedule was made for the first run's --steps: a longer (or shorter) run stretches
  -- the cosine part to end at the new total, from the learning rate it has now (without this the
  -- cosine would swing back up past its old end)
  local first_total = info.extra.total_steps
  if first_total ~= nil and first_total ~= opts.steps and step < opts.steps then
    local cosine, milestone = scheduler._schedulers[2], scheduler._milestones[1]
    cosine.T_max = math.max(1, opts.steps - milestone)
    io.stderr:write(("train_gpt: --steps %d differs from the first run's %d: the cosine schedule now ends at step %d\n")
      :format(opts.steps, first_total, math.max(opts.steps, milestone + 1)))
  end
  print(("train_gpt: resumed from %s at step %d"):format(ckpt_path, step))
end

print(("train_gpt: %d characters from %d files, vocabulary %d, train %d / val %d; GPT %d layers, width %d, %d heads, "
       .. "context %d (%d parameters), device %s, %d threads")
  :format(n, #parts, V, n_train, n - n_train, opts.n_layer, opts.n_embd, opts.n_head, T, model:num_parameters(),
          device, torch.get_num_threads()))

local function estimate_val()
  model:eval()
  local total = 0
  -- validation batches come from their own generator state so training draws stay the same
  local saved = torch.get_rng_state()
  torch.manual_seed(opts.seed + 1)
  torch.no_grad(function()
    for _ = 1, opts.eval_batches do
      local x, y = get_batch(val_data)
      local _, loss = model(x, y)
      total = total + loss:item()
    end
  end)
  torch.set_rng_state(saved)
  model:train()
  return total / opts.eval_batches
end

-- Ctrl-C / SIGTERM arrive as this error (ramtorch-lua raises it at the next hook point)
local function interrupted(err) return tostring(err):find("interrupted by SIG", 1, true) ~= nil end
local ckpt_step = opts.resume and step or nil -- the step the checkpoint file holds
local function save_ckpt(again)
  local sok, serr = pcall(torch.save_checkpoint, ckpt_path, { model = model, optimizer = optimizer, scheduler = scheduler, step = step,
                                     data_position = step * B,
                                     extra = { vocab = table.concat(itos), loss_ema = loss_ema, total_steps = opts.steps } })
  if not sok and interrupted(serr) and not again then
    -- interrupted around the (atomic) write: the file holds this step or the previous one; save
    -- again (a second signal ends the process, the old file intact) so the message below is exact
    save_ckpt(true)
    error(serr, 0)
  end
  if not sok then fail(serr) end
  ckpt_step = step
end

-- ---- training ------------------------------------------------------------------------------------------------
model:train()
local bar = Progress.new({ total = opts.steps, desc = "train", every = math.max(1, math.floor(opts.steps / 10)),
                          initial = step })
local val_loss
local tok, terr = pcall(function()
while step < opts.steps do
  local x, y = get_batch(train_data)
  local _, loss = model(x, y)
  optimizer:zero_grad()
  loss:backward()
  torch.nn.utils.clip_grad_norm_(model:parameters(), 1.0)
  optimizer:step()
  scheduler:step()
  step = step + 1
  local l = loss:item()
  loss_ema = loss_ema and (0.9 * loss_ema + 0.1 * l) or l
  local values = { loss = loss_ema, lr = optimizer.param_groups[1].lr }
  if step % opts.eval_every == 0 or step == opts.steps then
    val_loss = estimate_val()
    values.val = val_loss
  end
  bar:update(step, B * T, values)
  if step % opts.ckpt_every == 0 or step == opts.steps or step == opts.stop_at then save_ckpt() end
  if step == opts.stop_at then break end
end
end)
if not tok then
  if interrupted(terr) then
    io.stderr:write(("\ntrain_gpt: %s at step %d; %s\n"):format(clean(terr), step, ckpt_step
      and ("%s holds step %d (continue with --resume)"):format(ckpt_path, ckpt_step)
      or "no checkpoint was written yet"))
  end
  error(terr, 0) -- ramtorch-lua prints it and ends by the signal (status 130 / 143)
end
local seconds = bar:close()
val_loss = val_loss or estimate_val()
-- the vocabulary as byte values ("10,32,33,..."): some fortune files are Latin-1, not UTF-8
local vocab_bytes = {}
for i, ch in ipairs(itos) do vocab_bytes[i] = tostring(ch:byte()) end
local wok, werr = pcall(torch.save, model:state_dict(), opts.out .. "/model.safetensors",
                        { vocab_bytes = table.concat(vocab_bytes, ",") })
if not wok then fail(werr) end
print(("train_gpt: %d steps in %.1f s; checkpoint %s"):format(step, seconds, ckpt_path))

-- ---- generation ------------------------------------------------------------------------------------------------
if opts.generate > 0 then
  local start = torch.tensor({ { stoi[("\n"):byte()] or 0 } }, { dtype = torch.int64 }):to(device)
  local out = model:generate(start, opts.generate, { temperature = opts.temperature, top_k = opts.top_k })
  local chars = {}
  for i, id in ipairs(out:reshape(-1):to("cpu"):totable()) do if i > 1 then chars[#chars + 1] = itos[id + 1] end end
  print("---- generated ----")
  print(table.concat(chars))
  print("-------------------")
end
print(("val_loss %.4f"):format(val_loss))
