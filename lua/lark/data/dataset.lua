--- lark.data datasets: the protocol, TensorDataset, Subset and random_split.
--
-- The dataset protocol (what DataLoader reads):
--   #ds          the number of samples
--   ds:get(i)    sample i (1-based) as two values, input and target
--   ds[i]        the same sample as a pair {input, target} (an index expression gives one value)
-- A plain Lua table works too: give it __len and get (or __index returning {input, target}).
-- A dataset backed by tensors also has ds:tensors() -> images, labels, rows: DataLoader then makes
-- its batches in C, on a background thread (rows: the int64 1-based rows served, or nil for all).
local lark = require "lark"

local M = {}

--- M.class(methods): a metatable for a dataset class whose instances answer #ds, ds:get(i),
-- ds[i] (the pair {input, target}) and the methods in `methods`.
function M.class(methods)
  local mt = {}
  mt.__index = function(self, k)
    if math.type(k) == "integer" then return {self:get(k)} end
    return methods[k]
  end
  mt.__len = function(self) return self:size() end
  methods.__class = mt
  return mt
end

local function check_index(ds, i, what)
  if math.type(i) ~= "integer" then
    error(string.format("%s: index must be an integer, got %s", what, type(i) == "number" and tostring(i) or type(i)), 3)
  end
  local n = ds:size()
  if i < 1 or i > n then error(string.format("%s: index %d is out of range (1..%d)", what, i, n), 3) end
end

-- TensorDataset ----------------------------------------------------------------------------------

local TensorDataset = {}
local TensorDataset_mt = M.class(TensorDataset)

--- TensorDataset(images [, labels]): samples images[i] with targets labels[i] (a Lua integer for
-- 1-D integer labels, else the row as a tensor; nil without labels). Both share their first dim.
function M.TensorDataset(images, labels)
  if not lark.is_tensor(images) then
    error("TensorDataset: images must be a tensor (N, ...), got " .. type(images), 2)
  end
  if images:dim() < 1 then error("TensorDataset: images must have a sample dim first (N, ...), got a 0-d tensor", 2) end
  if labels ~= nil then
    if not lark.is_tensor(labels) then error("TensorDataset: labels must be a tensor (N, ...) or nil, got " .. type(labels), 2) end
    if labels:dim() < 1 or labels:size(1) ~= images:size(1) then
      error(string.format("TensorDataset: %d images but labels of size %s", images:size(1), tostring(labels:size())), 2)
    end
  end
  return setmetatable({images = images, labels = labels}, TensorDataset_mt)
end

function TensorDataset:size() return self.images:size(1) end

function TensorDataset:get(i)
  check_index(self, i, "TensorDataset")
  local x = self.images:select(1, i)
  local y = self.labels
  if y == nil then return x, nil end
  if y:dim() == 1 then
    local v = y:select(1, i):item()
    if not y:is_floating_point() then v = math.tointeger(v) or v end
    return x, v
  end
  return x, y:select(1, i)
end

--- ds:tensors(): images, labels, rows (nil: every row), for DataLoader's C path.
function TensorDataset:tensors() return self.images, self.labels, nil end

-- Subset -----------------------------------------------------------------------------------------

local Subset = {}
local Subset_mt = M.class(Subset)

--- Subset(ds, indices): the samples of ds at indices (a list of 1-based integers or an int64
-- tensor). A subset of a tensor-backed dataset is tensor-backed too; ds's name, classes,
-- num_classes, mean and std carry over.
function M.Subset(ds, indices)
  local list
  if lark.is_tensor(indices) then
    list = indices:long():table()
  elseif type(indices) == "table" then
    list = indices
  else
    error("Subset: indices must be a list of integers or an int64 tensor, got " .. type(indices), 2)
  end
  local n = #ds
  for k, i in ipairs(list) do
    if math.type(i) ~= "integer" or i < 1 or i > n then
      error(string.format("Subset: index %d is %s, expected an integer in 1..%d", k, tostring(i), n), 2)
    end
  end
  local sub = {dataset = ds, indices = list}
  if type(ds) == "table" then -- what describes the data carries over (num_classes for mixup, mean for normalize)
    for _, k in ipairs{"name", "classes", "num_classes", "mean", "std"} do sub[k] = ds[k] end
  end
  return setmetatable(sub, Subset_mt)
end

function Subset:size() return #self.indices end

function Subset:get(i)
  check_index(self, i, "Subset")
  local ds, j = self.dataset, self.indices[i]
  if ds.get then return ds:get(j) end
  local pair = ds[j]
  return pair[1], pair[2]
end

function Subset:tensors()
  local ds = self.dataset
  if type(ds) ~= "table" or not ds.tensors then return nil end
  local images, labels, rows = ds:tensors()
  if images == nil then return nil end
  local mine = #self.indices == 0 and lark.zeros(0, {dtype = "int64"}) or lark.tensor(self.indices, {dtype = "int64"})
  if rows then mine = rows:index_select(1, mine) end
  return images, labels, mine
end

--- random_split(ds, lengths [, seed]): disjoint Subsets of ds of the given lengths (integers that
-- sum to #ds, or fractions that sum to 1; the remainder goes to the first ones), shuffled by the
-- seeded permutation DataLoader uses (seed 0 by default).
function M.random_split(ds, lengths, seed)
  local n = #ds
  if type(lengths) ~= "table" or #lengths == 0 then error("random_split: lengths must be a non-empty list", 2) end
  local sizes, total = {}, 0
  local fractions = false
  for _, l in ipairs(lengths) do
    if math.type(l) == "float" then fractions = true end
  end
  if fractions then
    local s = 0
    for k, f in ipairs(lengths) do
      sizes[k] = math.floor(n * f)
      s = s + f
      total = total + sizes[k]
    end
    if math.abs(s - 1) > 1e-9 then error(string.format("random_split: fractions sum to %g, expected 1", s), 2) end
    local k = 1
    while total < n do -- the remainder, one each, round-robin (as PyTorch does)
      sizes[k] = sizes[k] + 1
      total = total + 1
      k = k % #sizes + 1
    end
  else
    for k, l in ipairs(lengths) do
      if math.type(l) ~= "integer" or l < 0 then error(string.format("random_split: length %d is %s, expected an integer >= 0", k, tostring(l)), 2) end
      sizes[k] = l
      total = total + l
    end
    if total ~= n then error(string.format("random_split: lengths sum to %d, the dataset has %d samples", total, n), 2) end
  end
  local perm = require("lark.core")._data.permutation(n, seed or 0, 0):table()
  local out, at = {}, 0
  for k, sz in ipairs(sizes) do
    out[k] = M.Subset(ds, table.move(perm, at + 1, at + sz, 1, {}))
    at = at + sz
  end
  return out
end

return M
