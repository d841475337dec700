-- ramtorch/data/datasets.lua: ready-made datasets. FashionMNIST reads the gzip'd idx files that
-- Debian's dataset-fashion-mnist package installs under /usr/share/datasets/fashion-mnist (root
-- overridable, or through $RAMTORCH_FASHION_MNIST), through the C reader rt_read_idx (zlib).
--
--   local train = data.datasets.FashionMNIST(nil, {train = true})     -- 60000 samples
--   local test = data.datasets.FashionMNIST("/path/to/dir", {train = false, flatten = true})
--
-- Sample i is { image, label }: image float32 in [0, 1] of shape (1, 28, 28) (or (784) with
-- flatten = true), label an integer (a Lua number; batches hold it as int64), like torchvision's
-- FashionMNIST with ToTensor(). Options transform / target_transform apply per sample (and then
-- batches are built sample by sample, as they must be).
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local torch = require("ramtorch")
local data = require("ramtorch.data")
local C = rffi.C

local M = {}

M.DEFAULT_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
local INSTALL_HINT = "install the data with `apt-get install dataset-fashion-mnist`, or pass the folder "
  .. "that holds the idx files as root"

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- Read one idx file (gzip'd, or the same name without .gz); errors name the file and the package.
local function read_idx(what, dir, name, level)
  local path = dir .. "/" .. name .. ".gz"
  if not exists(path) and exists(dir .. "/" .. name) then path = dir .. "/" .. name end
  local rc = C.rt_read_idx(path, core.box)
  if rc ~= 0 then
    local msg = rffi.ffi.string(C.rt_last_error())
    error(("%s: cannot read %s: %s (%s)"):format(what, path, msg, INSTALL_HINT), level + 1)
  end
  return core.own(core.box[0]), path
end
M._read_idx = read_idx

local FashionMNIST = data.TensorDataset:extend("FashionMNIST")
M.FashionMNIST = FashionMNIST

FashionMNIST.classes = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot" }

function FashionMNIST:__init(root, opts)
  if type(root) == "table" and opts == nil then root, opts = nil, root end
  opts = opts or {}
  if root ~= nil and type(root) ~= "string" then
    error(("FashionMNIST: expected root to be a folder path string, got %s"):format(type(root)), 3)
  end
  root = root or os.getenv("RAMTORCH_FASHION_MNIST") or M.DEFAULT_FASHION_MNIST
  root = root:gsub("/+$", "")
  local train = opts.train == nil and true or opts.train
  local prefix = train and "train" or "t10k"
  local images, ipath = read_idx("FashionMNIST", root, prefix .. "-images-idx3-ubyte", 3)
  local labels, lpath = read_idx("FashionMNIST", root, prefix .. "-labels-idx1-ubyte", 3)
  local ish, lsh = images.shape, labels.shape
  if #ish ~= 3 or ish[2] ~= 28 or ish[3] ~= 28 or images.dtype ~= torch.uint8 then
    error(("FashionMNIST: %s holds %s images of shape [%s], expected uint8 (N, 28, 28) (%s)")
          :format(ipath, tostring(images.dtype), table.concat(ish, ", "), INSTALL_HINT), 3)
  end
  if #lsh ~= 1 or lsh[1] ~= ish[1] then
    error(("FashionMNIST: %s holds %d labels for %d images in %s (%s)")
          :format(lpath, lsh[1] or -1, ish[1], ipath, INSTALL_HINT), 3)
  end
  self.root, self.train = root, train
  self.flatten = opts.flatten or false
  self.transform, self.target_transform = opts.transform, opts.target_transform
  self.data = images                   -- uint8 (N, 28, 28), as torchvision's .data
  self.targets = labels:to(torch.int64) -- int64 (N)
  -- images become float32 / 255 inside the C gather (ToTensor's x.float().div(255))
  self.convert = { { torch.float32, 255 } }
  data.TensorDataset.__init(self, self.data, self.targets)
end

function FashionMNIST:_finish_sample(s)
  local img = self.flatten and s[1]:view(784) or s[1]:view(1, 28, 28)
  local label = s[2]:item()
  if self.transform then img = self.transform(img) end
  if self.target_transform then label = self.target_transform(label) end
  return { img, label }
end

function FashionMNIST:_finish_batch(b)
  local n = b[1]:size(0)
  return { self.flatten and b[1]:view(n, 784) or b[1]:view(n, 1, 28, 28), b[2] }
end

function FashionMNIST:supports_gather()
  return self.transform == nil and self.target_transform == nil
end

FashionMNIST.__tostring = function(self)
  return ("FashionMNIST(%s, %d samples, root=%s)"):format(self.train and "train" or "test", self.n, self.root)
end

return M
