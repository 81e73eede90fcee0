--- lark.data.DataLoader: mini-batches of a dataset, shuffled by seed, made ahead in C.
--
--   local loader = lark.data.DataLoader(ds, {batch_size = 64, shuffle = true, seed = 1,
--     normalize = {ds.mean, ds.std}, random_crop = {padding = 2}, hflip = 0.5})
--   for epoch = 1, 10 do
--     for x, y in loader:iter() do ... end      -- x float32 (B, 1, 28, 28), y int64 (B)
--   end
--
-- Options:
--   batch_size (1), shuffle (false), drop_last (false): as in PyTorch.
--   seed: the order of epoch e is a permutation seeded from (seed, e), and batch b's random
--     transforms draw from a generator seeded from (seed, e, b): the same seed gives the same
--     batches, whatever the prefetch and the thread timing. Default: drawn from lark's global
--     generator (so lark.manual_seed fixes it too).
--   prefetch (2): batches a background C thread makes ahead (0: made on demand, in the caller).
--   Declarative transforms, applied in C in this order: scale (uint8 becomes float32 times 1/255 by
--     default), random_crop = {size = , padding = } (or a padding), hflip = p, normalize = {mean, std},
--     then mixup = alpha or cutmix = alpha (both: one per batch, even odds) with num_classes (default
--     ds.num_classes), which turn y into soft targets (B, num_classes) float32.
--   pin_memory (false): each batch's x and y are made in pinned (page-locked) host memory, as with
--     PyTorch's DataLoader(pin_memory=True): on the C path the prefetch thread allocates them there
--     and fills them in place (no extra copy), on the Lua path the stacked batch is copied there once.
--     Moving a pinned batch to a GPU is one DMA from those pages. Without a GPU it is ordinary memory
--     and x:is_pinned() is false: the same script runs on a CPU-only machine.
--   device ("cpu"): "cuda" or "cuda:N" hands out batches already on that GPU (copied there on the
--     caller's thread; the host batch is freed at once). Use it with pin_memory = true, so that the
--     copy comes straight from pinned memory. With no usable GPU the loader refuses to start.
--   transform = function(x, y) return x, y end: runs after those (and after the move to `device`), on
--     the caller's thread (for example lark.data.transforms.compose{...}).
--
-- Datasets with ds:tensors() (TensorDataset, its Subsets, the built-in data sets) are batched in C:
-- a gather of the shuffled rows fused with the conversion and the transforms, on the prefetch
-- thread. Other datasets are gathered in Lua (ds:get(i) or ds[i]), stacked, then given the same C
-- transforms synchronously, so the two paths yield the same batches for the same data.
--
-- loader:iter() starts the next epoch (1, 2, ...; loader:set_epoch(e) picks the next one) and
-- returns the iterator of a generic for; leaving the loop early stops the background thread. #loader
-- is the number of batches per epoch.
local lark = require "lark"
local D = require("lark.core")._data

local DataLoader = {}
DataLoader.__index = DataLoader

local transform_keys = {"scale", "normalize", "random_crop", "hflip", "mixup", "cutmix", "num_classes"}
local known = {batch_size = true, shuffle = true, seed = true, drop_last = true, prefetch = true, transform = true,
               pin_memory = true, device = true}
for _, k in ipairs(transform_keys) do known[k] = true end

local function is_int(v) return math.type(v) == "integer" end

-- The device option: "cpu", or a GPU this process can use ("cuda", "cuda:N"); else an error saying why.
local function check_device(device)
  if device == nil or device == "cpu" then return "cpu" end
  local index = type(device) == "string" and (device == "cuda" and "0" or device:match("^cuda:(%d+)$"))
  if not index then
    error(string.format("DataLoader: device must be cpu, cuda or cuda:N, got '%s'", tostring(device)), 3)
  end
  if not lark.cuda.is_available() then
    error(string.format("DataLoader: device %s: no CUDA device is available (lark.cuda.is_available() is false)",
      device), 3)
  end
  local n = lark.cuda.device_count()
  if tonumber(index) >= n then
    error(string.format("DataLoader: device %s: no such CUDA device (%d found: cuda:0 .. cuda:%d)", device, n,
      n - 1), 3)
  end
  return device
end

-- A host batch tensor moved to device; the host copy is freed now rather than at the next
-- collection (pinned pages are a scarce resource, and nobody else holds this batch).
local function move(t, device)
  if t == nil or device == "cpu" then return t end
  local d = t:to(device)
  if d ~= t then t:free() end
  return d
end

--- DataLoader(ds, opts): see the top of this file.
local function new(ds, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("DataLoader: expected an options table, got " .. type(opts), 2) end
  for k in pairs(opts) do
    if not known[k] then error(string.format("DataLoader: unknown option '%s'", tostring(k)), 2) end
  end
  if type(ds) ~= "table" and type(ds) ~= "userdata" then error("DataLoader: expected a dataset, got " .. type(ds), 2) end
  local bs = opts.batch_size or 1
  if not is_int(bs) or bs < 1 then error("DataLoader: batch_size must be an integer >= 1, got " .. tostring(bs), 2) end
  local prefetch = opts.prefetch == nil and 2 or opts.prefetch
  if not is_int(prefetch) or prefetch < 0 then error("DataLoader: prefetch must be an integer >= 0, got " .. tostring(prefetch), 2) end
  if opts.transform ~= nil and type(opts.transform) ~= "function" and not (getmetatable(opts.transform) or {}).__call then
    error("DataLoader: transform must be a function(x, y) returning x, y", 2)
  end
  if opts.pin_memory ~= nil and type(opts.pin_memory) ~= "boolean" then
    error("DataLoader: pin_memory must be a boolean, got " .. tostring(opts.pin_memory), 2)
  end
  local device = check_device(opts.device)
  local seed = opts.seed
  if seed == nil then seed = lark.randint(0, 1 << 62, {1}):item() end
  if not is_int(seed) then error("DataLoader: seed must be an integer, got " .. tostring(seed), 2) end
  local copts = {}
  for _, k in ipairs(transform_keys) do copts[k] = opts[k] end
  if (copts.mixup or copts.cutmix) and copts.num_classes == nil then copts.num_classes = ds.num_classes end
  local self = setmetatable({
    dataset = ds, batch_size = bs, shuffle = opts.shuffle and true or false, drop_last = opts.drop_last and true or false,
    seed = seed, prefetch = prefetch, transform = opts.transform, epoch = 0, _copts = copts,
    pin_memory = opts.pin_memory or false, device = device,
  }, DataLoader)
  local images, labels, rows
  if type(ds) == "table" and type(ds.tensors) == "function" then images, labels, rows = ds:tensors() end
  if images then
    local c = {batch_size = bs, shuffle = self.shuffle, drop_last = self.drop_last, seed = seed, prefetch = prefetch,
               pin_memory = self.pin_memory}
    for k, v in pairs(copts) do c[k] = v end
    self._c = D.Loader(images, labels, rows, c)
    self._n = self._c:num_samples()
  else
    self._n = #ds
    -- check the options that do not depend on the sample shape now, as the C path does, rather
    -- than at the first batch (a dummy sample with as many channels as normalize has means)
    local norm, nch = copts.normalize, 1
    if type(norm) == "table" then
      local m = norm.mean or norm[1]
      if type(m) == "table" then nch = math.max(#m, 1) end
    end
    D.transform(lark.zeros(1, nch, 4, 4), (copts.mixup or copts.cutmix) and lark.ones(1, {dtype = "int64"}) or nil,
      {normalize = norm, scale = copts.scale, hflip = copts.hflip, mixup = copts.mixup, cutmix = copts.cutmix,
       num_classes = copts.num_classes})
  end
  return self
end

--- #loader: batches per epoch.
function DataLoader:__len()
  local n, b = self._n, self.batch_size
  if self.drop_last then return n // b end
  return (n + b - 1) // b
end

--- loader:set_epoch(e): the next iter() runs epoch e (its order and random transforms).
function DataLoader:set_epoch(e)
  if not is_int(e) or e < 0 then error("set_epoch: expected an integer >= 0, got " .. tostring(e), 2) end
  self._next_epoch = e
end

-- A sample of a Lua dataset as (input, target).
local function fetch(ds, i)
  if ds.get then return ds:get(i) end
  local pair = ds[i]
  if type(pair) ~= "table" then error(string.format("DataLoader: ds[%d] gave a %s, expected {input, target}", i, type(pair)), 0) end
  return pair[1], pair[2]
end

-- Stacks a list of samples: tensors along a new dim 1, numbers into an int64 (integers) or float32 tensor.
local function collate(list, what)
  local first = list[1]
  if first == nil then return nil end
  if lark.is_tensor(first) then return lark.stack(list, 1) end
  if type(first) == "number" then
    local ints = true
    for _, v in ipairs(list) do
      if math.type(v) ~= "integer" then ints = false end
    end
    return lark.tensor(list, {dtype = ints and "int64" or "float32"})
  end
  error(string.format("DataLoader: cannot batch %s of type %s (expected tensors or numbers)", what, type(first)), 0)
end

local convertible = {uint8 = true, float32 = true, float64 = true}

-- The Lua path: batch b (1-based) of the epoch from order (a list of 1-based positions).
function DataLoader:_lua_batch(order, b)
  local first = (b - 1) * self.batch_size + 1
  local last = math.min(first + self.batch_size - 1, self._n)
  local xs, ys = {}, {}
  for k = first, last do
    local x, y = fetch(self.dataset, order[k])
    xs[#xs + 1], ys[#ys + 1] = x, y
  end
  local x, y = collate(xs, "inputs"), (#ys > 0) and collate(ys, "targets") or nil
  if lark.is_tensor(x) and convertible[x:dtype()] then
    local g = lark.Generator(D.stream_seed(self.seed, self.epoch, b))
    x, y = D.transform(x, y, self._copts, g)
  end
  if self.pin_memory then
    -- a copy into pinned pages; the ordinary one is dropped now (nobody else holds it)
    local px, py = lark.is_tensor(x) and x:pin_memory() or x, lark.is_tensor(y) and y:pin_memory() or y
    if px ~= x then x:free() end
    if py ~= y then y:free() end
    x, y = px, py
  end
  return x, y
end

--- loader:iter(): the iterator over the next epoch's batches: `for x, y in loader:iter() do`.
function DataLoader:iter()
  self.epoch = self._next_epoch or (self.epoch + 1)
  self._next_epoch = nil
  local user, device = self.transform, self.device
  if self._c then
    local c = self._c
    c:start(self.epoch)
    local closer = setmetatable({}, {__close = function() c:stop() end})
    return function()
      local x, y = c:next()
      if x == nil then return nil end
      x, y = move(x, device), move(y, device)
      if user then x, y = user(x, y) end
      return x, y
    end, nil, nil, closer
  end
  local order
  if self.shuffle then
    order = D.permutation(self._n, self.seed, self.epoch):table()
  else
    order = {}
    for i = 1, self._n do order[i] = i end
  end
  local nb, b = #self, 0
  return function()
    b = b + 1
    if b > nb then return nil end
    local x, y = self:_lua_batch(order, b)
    x, y = move(x, device), move(y, device)
    if user then x, y = user(x, y) end
    return x, y
  end
end

DataLoader.__name = "lark.data.DataLoader"
function DataLoader:__tostring()
  return string.format("lark.data.DataLoader(%d samples, batch_size=%d, %d batches%s%s, prefetch=%d%s%s, %s path)",
    self._n, self.batch_size, #self, self.shuffle and ", shuffle" or "", self.drop_last and ", drop_last" or "",
    self.prefetch, self.pin_memory and ", pin_memory" or "", self.device ~= "cpu" and ", device=" .. self.device or "",
    self._c and "C" or "Lua")
end

return new
