-- train_mnist.lua: the main job. Trains an MLP built from ramtorch.Linear (parameters kept in host
-- memory, as RamTorch does) on Fashion-MNIST with AdamW, showing a progress bar per epoch and the
-- test accuracy after each epoch; at the end it saves the weights (safetensors) and the loss/accuracy
-- curves (SVG). The last line printed carries test_accuracy and its value.
--
--   ramtorch-lua scripts/train_mnist.lua [--epochs 5] [--batch-size 128] [--lr 1e-3] [--device cpu]
--                                        [--out out/mnist] [--help]
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local F = require("ramtorch.functional")
local optim = require("ramtorch.optim")
local data = require("ramtorch.data")
local flags = require("ramtorch.flags")
local Progress = require("ramtorch.progress")
local plot = require("ramtorch.plot")
local timer = require("ramtorch.timer")

local ok, opts, rest = pcall(flags.parse, arg or {}, {
  { "epochs", 5, "number of passes over the training set", int = true },
  { "batch-size", 128, "samples per optimizer step", int = true },
  { "lr", 1e-3, "AdamW learning rate" },
  { "weight-decay", 1e-2, "AdamW decoupled weight decay" },
  { "hidden", 512, "width of the hidden layers", int = true },
  { "device", "cpu", "where activations and compute live (cpu, cuda, cuda:N)" },
  { "data", "/usr/share/datasets/fashion-mnist", "folder with the idx .gz files" },
  { "out", "out/mnist", "folder for model.safetensors and curves.svg" },
  { "seed", 0, "random seed (weights and shuffling)", int = true },
  { "threads", 0, "CPU threads (0: the runtime's default)", int = true },
  { "limit", 0, "use only this many training samples (0: all), for quick checks", int = true },
  { "layers", "ramtorch", "ramtorch (ramtorch.Linear, weights in host RAM) or nn (nn.Linear, weights on --device)" },
}, "usage: ramtorch-lua scripts/train_mnist.lua [options]\n\nTrains an MLP on Fashion-MNIST.")
if ok and #rest > 0 then ok, opts = false, ("unexpected argument '%s' (options start with --; see --help)"):format(rest[1]) end
if not ok then
  io.stderr:write("train_mnist: ", tostring(opts), "\n")
  os.exit(2)
end
if opts.epochs < 1 or opts.batch_size < 1 or opts.lr <= 0 then
  io.stderr:write("train_mnist: --epochs and --batch-size must be >= 1 and --lr > 0\n")
  os.exit(2)
end
-- checked here rather than as a traceback (or a silently useless model: --hidden 0) later
if opts.hidden < 1 or opts.weight_decay < 0 or opts.seed < 0 or opts.threads < 0 or opts.limit < 0 then
  io.stderr:write("train_mnist: --hidden must be >= 1, --weight-decay, --seed, --threads and --limit >= 0\n")
  os.exit(2)
end

torch.manual_seed(opts.seed)
if opts.threads > 0 then torch.set_num_threads(opts.threads) end
local device = opts.device

-- ---- data ---------------------------------------------------------------------------------------------
-- a user mistake (no dataset, a bad --device) ends with its message, no traceback
local function fail(msg)
  io.stderr:write("train_mnist: ", (tostring(msg):gsub("^[^:\n]*%.lua:%d+: ", "")), "\n")
  os.exit(1)
end
-- the output folder is made (and must be writable) now, not after the whole training run
local out_probe = opts.out .. "/.train_mnist_write_test"
os.execute(("mkdir -p '%s' 2>/dev/null"):format(opts.out:gsub("'", "'\\''")))
local probe = io.open(out_probe, "wb")
if not probe then fail(("--out: cannot create or write to the folder %s"):format(opts.out)) end
probe:close()
os.remove(out_probe)
local dok, train_set = pcall(data.datasets.FashionMNIST, opts.data, { train = true, flatten = true })
if not dok then fail(train_set) end
local test_set = data.datasets.FashionMNIST(opts.data, { train = false, flatten = true })
if opts.limit > 0 then
  local n = math.min(opts.limit, train_set:len())
  train_set = data.TensorDataset(train_set.data:narrow(0, 0, n), train_set.targets:narrow(0, 0, n))
  train_set._finish_batch = function(_, b) return { b[1]:to(torch.float32):div(255):view(b[1]:size(0), 784), b[2] } end
end
local train_loader = data.DataLoader(train_set, { batch_size = opts.batch_size, shuffle = true, generator = opts.seed })
local test_loader = data.DataLoader(test_set, { batch_size = 1000 })

-- Fashion-MNIST pixel statistics: standardising the inputs speeds up training noticeably.
local MEAN, STD = 0.2860, 0.3530
local function prepare(x) return ((x - MEAN) / STD):to(device) end

-- ---- model: every Linear is a ramtorch.Linear (weights in host RAM) -----------------------------------
local h2 = math.max(1, math.floor(opts.hidden / 2))
if opts.layers ~= "ramtorch" and opts.layers ~= "nn" then
  io.stderr:write(("train_mnist: --layers must be ramtorch or nn, got %s\n"):format(tostring(opts.layers)))
  os.exit(2)
end
-- --layers nn keeps the weights on the compute device (plain nn.Linear): a GPU run that does not need
-- ramtorch.Linear's host-resident weights streamed by the offload engine
local Linear = opts.layers == "nn" and nn.Linear or torch.Linear
local model = nn.Sequential(
  Linear(784, opts.hidden),
  nn.ReLU(),
  Linear(opts.hidden, h2),
  nn.ReLU(),
  Linear(h2, 10)
)
local mok, merr = pcall(model.to, model, device)
if not mok then fail(merr) end
-- an unusable --device (no GPU) is found now, not at the first batch (ramtorch.Linear keeps its
-- weights in host RAM, so model:to(device) alone does not touch the device)
local vok, verr = pcall(function() return torch.zeros(1):to(device) end)
if not vok then fail(verr) end
local nparams = 0
for _, p in ipairs(model:parameters()) do nparams = nparams + p:numel() end
print(("train_mnist: %d training / %d test samples, MLP 784-%d-%d-10 (%d parameters), device %s, %d threads")
  :format(train_set:len(), test_set:len(), opts.hidden, h2, nparams, device,
          torch.get_num_threads()))

local optimizer = optim.AdamW(model:parameters(), { lr = opts.lr, weight_decay = opts.weight_decay })
local scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, opts.epochs)

local function evaluate()
  model:eval()
  local correct, total, loss_sum = 0, 0, 0
  torch.no_grad(function()
    for x, y in test_loader:iter() do
      local logits = model(prepare(x))
      y = y:to(device)
      loss_sum = loss_sum + F.cross_entropy(logits, y, { reduction = "sum" }):item()
      correct = correct + (logits:argmax(1):eq(y)):sum():item()
      total = total + y:size(0)
    end
  end)
  model:train()
  return correct / total, loss_sum / total
end

-- ---- training ----------------------------------------------------------------------------------------------
local history = { step = {}, loss = {}, epoch = {}, test_acc = {}, test_loss = {} }
local steps_per_epoch = math.ceil(train_set:len() / opts.batch_size)
local global_step, t0 = 0, timer.now()
local test_acc = 0
for epoch = 1, opts.epochs do
  local bar = Progress.new({ total = steps_per_epoch, desc = ("epoch %d/%d"):format(epoch, opts.epochs) })
  local step, running = 0, nil
  for x, y in train_loader:iter() do
    local logits = model(prepare(x))
    local loss = F.cross_entropy(logits, y:to(device))
    model:zero_grad()
    loss:backward()
    optimizer:step()
    step, global_step = step + 1, global_step + 1
    local l = loss:item()
    running = running and 0.95 * running + 0.05 * l or l
    if global_step % 10 == 0 then
      history.step[#history.step + 1] = global_step / steps_per_epoch
      history.loss[#history.loss + 1] = running
    end
    bar:update(step, x:size(0), { loss = running })
  end
  -- the epoch's last running loss, so short runs still have a curve
  history.step[#history.step + 1] = global_step / steps_per_epoch
  history.loss[#history.loss + 1] = running or 0
  local secs = bar:close()
  scheduler:step()
  local acc, tloss = evaluate()
  test_acc = acc
  history.epoch[#history.epoch + 1] = epoch
  history.test_acc[#history.test_acc + 1] = acc
  history.test_loss[#history.test_loss + 1] = tloss
  print(("epoch %d: train loss %.4f, test loss %.4f, test accuracy %.4f, %.1f s (%.0f samples/s)")
    :format(epoch, running or 0, tloss, acc, secs, train_set:len() / secs))
end
local total_time = timer.now() - t0

-- ---- outputs -----------------------------------------------------------------------------------------------
local weights = opts.out .. "/model.safetensors"
local sok, serr = pcall(torch.save, model:state_dict(), weights,
                        { source = "scripts/train_mnist.lua", test_accuracy = ("%.4f"):format(test_acc) })
if not sok then fail(serr) end
local curves = opts.out .. "/curves.svg"
local pok, perr = pcall(plot.write_svg, curves, {
  { title = "training loss (running mean)", xlabel = "epoch", ylabel = "cross-entropy",
    series = { { name = "train", x = history.step, y = history.loss } } },
  { title = "test", xlabel = "epoch", ylabel = "accuracy",
    series = { { name = "test accuracy", x = history.epoch, y = history.test_acc } } },
})
if not pok then fail(perr) end
print(("saved %s and %s"):format(weights, curves))
print(("done: %d epochs in %.1f s, test_accuracy %.4f"):format(opts.epochs, total_time, test_acc))
