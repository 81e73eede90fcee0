--- lark.data: data sets, batch loaders with background prefetch, and batch transforms.
--
--   local data = require "lark.data"      -- or lark.data
--   local train = data.fashion_mnist{train = true}            -- TensorDataset, 60000 x (1, 28, 28) uint8
--   local loader = data.DataLoader(train, {batch_size = 128, shuffle = true, seed = 1,
--                                          normalize = {train.mean, train.std}, hflip = 0.5})
--   for x, y in loader:iter() do ... end                       -- x float32 (128, 1, 28, 28), y int64
--
-- Readers (C, core/io/):
--   data.read_idx(path [, max_records])   an IDX file, plain or .gz -> uint8 tensor of its shape
--   data.read_digits_csv(path)            sklearn digits.csv(.gz) -> images float32 (N, 8, 8) in
--                                         0..1, labels int64 1..10
-- Data sets: data.fashion_mnist{...}, data.mnist{...}, data.digits{...} (see datasets.lua for where
-- they are looked for; examples/get_data.sh installs them), data.data_dir().
-- Datasets: data.TensorDataset(images [, labels]), data.Subset(ds, indices),
--   data.random_split(ds, lengths [, seed]); the protocol is #ds, ds:get(i) -> input, target and
--   ds[i] -> {input, target} (dataset.lua).
-- Loading: data.DataLoader(ds, opts) (loader.lua), data.transforms (transforms.lua).
-- data.permutation(n, seed, epoch): the 1-based order a shuffled DataLoader uses in that epoch.
local D = require("lark.core")._data
local dataset = require "lark.data.dataset"
local datasets = require "lark.data.datasets"

local data = {}

data.read_idx = D.read_idx
data.read_digits_csv = D.read_digits_csv
data.permutation = D.permutation

data.TensorDataset = dataset.TensorDataset
data.Subset = dataset.Subset
data.random_split = dataset.random_split
data.dataset_class = dataset.class

data.data_dir = datasets.data_dir
data.fashion_mnist = datasets.fashion_mnist
data.mnist = datasets.mnist
data.digits = datasets.digits

data.DataLoader = require "lark.data.loader"
data.transforms = require "lark.data.transforms"

return data
