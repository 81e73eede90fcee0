--- lark.data.transforms: batch transforms as Lua functions f(x, y) -> x, y.
--
-- Each constructor returns a function over a batch x (B, ...) and its targets y. They run the same
-- C kernels as DataLoader's declarative options (core/io/transform.c), so
--   DataLoader(ds, {normalize = {mean, std}, random_crop = {padding = 4}, hflip = 0.5})
-- and transform = T.compose{T.random_crop{padding = 4}, T.hflip(0.5), T.normalize(mean, std)}
-- do the same work (the declarative form runs on the loader's background thread, and draws its
-- random numbers from a per-batch seed; these draw from the generator they are given, or lark's
-- global one). A uint8 batch is first scaled to float32 in 0..1; a float batch is kept as is.
--
-- Images are (B, C, H, W) or (B, H, W); the crop and flip act on the last two dims. mixup and
-- cutmix need hard labels (int64, 1-based) and give soft targets (B, num_classes) float32 whose rows
-- sum to 1, which F.cross_entropy accepts.
local lark = require "lark"
local D = require("lark.core")._data

local T = {}

-- A transform from declarative options; gen: a lark.Generator or nil (the global generator).
local function from_options(opts, gen)
  return function(x, y) return D.transform(x, y, opts, gen) end
end
T.from_options = from_options

local function list_or_number(v, what)
  if type(v) == "number" then return v end
  if type(v) == "table" then return v end
  if lark.is_tensor(v) then return v:double():reshape(-1):table() end
  error(string.format("normalize: %s must be a number, a list of numbers or a tensor, got %s", what, type(v)), 3)
end

--- T.normalize(mean, std): (x - mean[c]) / std[c] per channel (mean, std: numbers or lists of one
-- per channel).
function T.normalize(mean, std)
  return from_options({normalize = {mean = list_or_number(mean, "mean"), std = list_or_number(std, "std")}})
end

--- T.to_float([scale]): x as float32 times scale (default: 1/255 for uint8, 1 otherwise).
function T.to_float(scale) return from_options({scale = scale}) end

--- T.random_crop{size = , padding = , generator = } (or T.random_crop(size, padding [, gen])): a
-- random size x size window of each image padded with `padding` zeros (size defaults to the image's).
function T.random_crop(size, padding, gen)
  if type(size) == "table" then size, padding, gen = size.size, size.padding, size.generator end
  return from_options({random_crop = {size = size or 0, padding = padding or 0}}, gen)
end

--- T.hflip([p [, gen]]): mirror each image left-right with probability p (default 0.5).
function T.hflip(p, gen)
  if type(p) == "table" then p, gen = p.p, p.generator end
  return from_options({hflip = p or 0.5}, gen)
end

--- T.mixup(alpha, num_classes [, gen]): x = lam x + (1 - lam) x[perm] with lam ~ Beta(alpha, alpha)
-- and a random pairing perm; y becomes lam onehot(y) + (1 - lam) onehot(y[perm]).
function T.mixup(alpha, num_classes, gen)
  if type(alpha) == "table" then alpha, num_classes, gen = alpha.alpha, alpha.num_classes, alpha.generator end
  return from_options({mixup = alpha, num_classes = num_classes}, gen)
end

--- T.cutmix(alpha, num_classes [, gen]): pastes a box of each image's partner (box area 1 - lam of
-- the image, lam ~ Beta(alpha, alpha)); the targets mix by the pasted area.
function T.cutmix(alpha, num_classes, gen)
  if type(alpha) == "table" then alpha, num_classes, gen = alpha.alpha, alpha.num_classes, alpha.generator end
  return from_options({cutmix = alpha, num_classes = num_classes}, gen)
end

--- T.compose{f1, f2, ...}: applies f1, then f2, ... to (x, y).
function T.compose(fns)
  for k, f in ipairs(fns) do
    if type(f) ~= "function" and not (getmetatable(f) or {}).__call then
      error(string.format("compose: element %d is a %s, expected a function(x, y)", k, type(f)), 2)
    end
  end
  return function(x, y)
    for _, f in ipairs(fns) do x, y = f(x, y) end
    return x, y
  end
end

return T
