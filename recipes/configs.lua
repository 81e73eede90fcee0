--- recipes/configs.lua: training recipes as data. The published ImageNet-1K recipes of RepLKNet-31B
-- and SLaK-T, every hyper-parameter of ../shared/reference/MODELS.md sections 1.4 and 2.4 (and SLaK's
-- sparse settings of 2.3), kept for reference and marked not runnable here (there is no ImageNet on
-- this machine); and small variants that run here on Fashion-MNIST in a couple of minutes per epoch.
--
--   lark recipes/train.lua --recipe replknet_tiny_fmnist                  # the recipe as it is
--   lark recipes/train.lua --recipe slak_tiny_fmnist --epochs 1 --out runs/s   # options override it
--   local train = require "recipes.train"
--   train.run{recipe = "replknet_tiny_fmnist", train_limit = 1000}
--   train.recipes.mine = {model = "tiny_replk", lr = 1e-3, runnable = true}   -- add your own
--
-- A recipe is a table of recipes/train.lua options (model, data, epochs, batch_size, lr, ...) plus
-- metadata that train.lua does not read as options: `description`, `runnable` (false: train refuses
-- it, saying `why_not`), `source`, and, for the ImageNet recipes, the hyper-parameters train.lua has
-- no option for (mixup, RandAugment, per-GPU batch, sparsity...). Command-line options override the
-- recipe's; train.defaults fill in the rest.
--
-- Also here: model builders for the recipes (`models`), which train.lua adds to train.models.
local C = {}

-- Keys of a recipe that are not train options.
C.META = {description = true, runnable = true, why_not = true, source = true, imagenet = true}

local NO_IMAGENET = "needs ImageNet-1K (1,281,167 training images, 224x224 RGB), which cannot be installed here "
  .. "(../shared/reference/DATA.md: no RGB natural-image data set is available offline); it is kept as the reference "
  .. "for the small variants and for a machine that has the data (add train.datasets['imagenet-1k'] there)"

C.recipes = {}

-- ---- the published ImageNet-1K recipes --------------------------------------------------------------

--- replknet31b_in1k: RepLKNet-31B trained from scratch on ImageNet-1K at 224 (README command, main.py
-- defaults; MODELS.md 1.4). 83.5 % top-1 reported.
C.recipes.replknet31b_in1k = {
  description = "RepLKNet-31B, ImageNet-1K from scratch, 224x224, 300 epochs (83.5% top-1 in the README)",
  source = "../shared/reference/MODELS.md 1.4 (RepLKNet-pytorch README command + main.py defaults)",
  runnable = false,
  why_not = NO_IMAGENET,
  -- as train.lua options
  model = "replknet31b",
  data = "imagenet-1k",
  epochs = 300,
  batch_size = 2048,        -- effective: 64 per GPU x 8 GPUs x update_freq 4
  optimizer = "adamw",
  lr = 4e-3,
  min_lr = 1e-6,            -- cosine, per iteration
  warmup_epochs = 10,       -- linear from 0 (the README overrides main.py's 20)
  weight_decay = 0.05,      -- not on 1-D parameters and biases
  drop_path = 0.5,
  ema = 0.9999,             -- timm ModelEma of every state-dict tensor, each optimizer step; EMA evaluated
  label_smoothing = 0.1,
  clip_grad = 0,            -- none
  -- what train.lua has no option for
  imagenet = {
    per_gpu_batch = 64, gpus = 8, update_freq = 4,
    betas = {0.9, 0.999}, eps = 1e-8,
    schedule = "cosine", schedule_unit = "iteration", warmup_start_lr = 0,
    weight_decay_exclude = "1-D parameters and biases",
    ema_evaluated = true,
    input_size = 224,
    mixup = 0.8, cutmix = 1.0, mixup_prob = 1.0, mixup_switch_prob = 0.5, mixup_mode = "batch",
    randaugment = "rand-m9-mstd0.5-inc1", color_jitter = 0.4,
    reprob = 0.25, remode = "pixel", recount = 1,
    interpolation = "bicubic",
    layer_decay = nil,      -- none
    mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225},  -- ImageNet statistics (XL: 0.5 / 0.5)
    eval_crop = "resize the shorter side to int(224 / 0.875), centre crop 224",
    model_args = {channels = {128, 256, 512, 1024}, layers = {2, 2, 18, 2}, kernels = {31, 29, 27, 13},
                  small_kernel = 5, dw_ratio = 1, ffn_ratio = 4, num_classes = 1000},
    reported_top1 = 83.5,
  },
}

--- slak_t_in1k: SLaK-T on ImageNet-1K at 224, 300 epochs, dynamic sparsity 40 % (README command,
-- main.py defaults; MODELS.md 2.3, 2.4). 82.5 % top-1 reported.
C.recipes.slak_t_in1k = {
  description = "SLaK-T, ImageNet-1K from scratch, 224x224, 300 epochs, 40% dynamic sparsity (82.5% top-1 in the README)",
  source = "../shared/reference/MODELS.md 2.3, 2.4 (SLaK README command + main.py defaults)",
  runnable = false,
  why_not = NO_IMAGENET,
  model = "slak_t",
  data = "imagenet-1k",
  epochs = 300,
  batch_size = 4096,        -- effective: 4 GPUs x 128 x update_freq 8
  optimizer = "adamw",
  lr = 4e-3,
  min_lr = 1e-6,
  warmup_epochs = 20,       -- main.py's default; the README does not override it
  weight_decay = 0.05,      -- constant; not on 1-D parameters and biases
  drop_path = 0.1,
  ema = 0.9999,
  label_smoothing = 0.1,
  clip_grad = 0,
  imagenet = {
    per_gpu_batch = 128, gpus = 4, update_freq = 8,
    betas = {0.9, 0.999}, eps = 1e-8,
    schedule = "cosine", schedule_unit = "iteration", warmup_start_lr = 0,
    weight_decay_exclude = "1-D parameters and biases",
    ema_evaluated = true,
    input_size = 224,
    mixup = 0.8, cutmix = 1.0, mixup_prob = 1.0, mixup_switch_prob = 0.5, mixup_mode = "batch",
    randaugment = "rand-m9-mstd0.5-inc1", color_jitter = 0.4,
    reprob = 0.25, remode = "pixel", recount = 1,
    interpolation = "bicubic",
    layer_decay = nil,
    amp = false,            -- fp32 (with AMP the official engine never steps the masks)
    mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225},
    eval_crop = "resize the shorter side to int(224 / 0.875), centre crop 224",
    model_args = {dims = {96, 192, 384, 768}, depths = {3, 3, 9, 3}, kernel_size = {51, 49, 47, 13, 5},
                  width_factor = 1.3, decom = true, bn = true, layer_scale_init_value = 1e-6, head_init_scale = 1.0,
                  num_classes = 1000},
    sparse = {
      sparsity = 0.4,               -- density 0.6 over every 2-D/4-D weight
      sparse_init = "snip",         -- SNIP gives per-layer ratios; masks are Bernoulli draws
      prune = "magnitude", growth = "random", redistribution = "none",
      update_frequency = 2000,      -- optimizer steps between prune-and-grow (SLaK-S/B: 100)
      prune_rate = 0.5,             -- cosine-decayed to 0.005 over training (SLaK-S/B: 0.3)
      only_large_kernel = false,
    },
    reported_top1 = 82.5,
  },
}

-- ---- small variants that run here -----------------------------------------------------------------------
-- Fashion-MNIST (60,000 28x28 grey images; apt-get install dataset-fashion-mnist). The published
-- recipes scaled down: AdamW, cosine with warm-up, weight decay 0.05 off 1-D parameters, label
-- smoothing 0.1; a shorter warm-up and a larger lr for a few epochs at batch 128; no drop path or EMA
-- (too few steps for either to help); random crop and flip instead of RandAugment (train.lua has no
-- mixup/cutmix options yet). The models have about 0.1 M parameters; an epoch takes one to two
-- minutes on 2 cores.

--- replknet_tiny_fmnist: train.models.tiny_replk, a RepLKNet with channels {32, 64}, one (RepLK,
-- ConvFFN) pair per stage, 13x13 kernels with a 5x5 re-parameterisable branch and a stride-2 stem
-- (stages at 14x14 and 7x7); about 91 % test accuracy after the 4 epochs.
C.recipes.replknet_tiny_fmnist = {
  description = "tiny RepLKNet (channels 32, 64; 13x13 kernels + 5x5 branch) on Fashion-MNIST",
  source = "replknet31b_in1k scaled down",
  runnable = true,
  model = "tiny_replk",
  data = "fashion-mnist",
  epochs = 4,
  batch_size = 128,
  optimizer = "adamw",
  lr = 3e-3,
  min_lr = 1e-5,
  warmup_epochs = 0.3,
  weight_decay = 0.05,
  drop_path = 0.0,
  ema = 0.0,
  label_smoothing = 0.1,
  clip_grad = 0,
  augment = true,
}

--- slak_tiny_fmnist: SLaK with dims {32, 64} x 1.3 = {41, 83}, one block per stage, decomposed
-- 13x13 and 9x9 kernels (K x 5 + 5 x K + 5 x 5), stem 4x4 stride 4 (stages at 7x7 and 3x3). Dense:
-- train.lua has no sparsity options (a recipe is options only); for SLaK's prune and grow, add
-- lark.sparse's hooks: local s = train.build{recipe = "slak_tiny_fmnist"}
-- train.run(s, require("lark.sparse").Masking(s.model, {density = 0.6, init = "uniform"}):hooks())
-- (init = "snip", the official one, also needs snip_batch = {x, y}: one training batch).
C.recipes.slak_tiny_fmnist = {
  description = "tiny SLaK (dims 32, 64 x 1.3; kernels 13, 9 decomposed with N = 5), dense, on Fashion-MNIST",
  source = "slak_t_in1k scaled down (without sparsity)",
  runnable = true,
  model = "slak_tiny",
  data = "fashion-mnist",
  epochs = 4,
  batch_size = 128,
  optimizer = "adamw",
  lr = 3e-3,
  min_lr = 1e-5,
  warmup_epochs = 0.3,
  weight_decay = 0.05,
  drop_path = 0.0,
  ema = 0.0,
  label_smoothing = 0.1,
  clip_grad = 0,
  augment = true,
}

-- ---- model builders ---------------------------------------------------------------------------------------
-- train.models[name](cfg, info): info = {channels, size, num_classes} of the data set.

C.models = {}

C.models.slak_tiny = function(cfg, info)
  return require("recipes.slak").slak{dims = {32, 64}, depths = {1, 1}, kernel_size = {13, 9, 5}, width_factor = 1.3,
    in_channels = info.channels, num_classes = info.num_classes, drop_path = cfg.drop_path}
end

C.models.replknet31b = function(cfg, info)
  return require("recipes.replknet").replknet31b{in_channels = info.channels, num_classes = info.num_classes,
    drop_path = cfg.drop_path}
end

C.models.slak_t = function(cfg, info)
  return require("recipes.slak").slak_t{in_channels = info.channels, num_classes = info.num_classes,
    drop_path = cfg.drop_path}
end

-- ---- applying a recipe ------------------------------------------------------------------------------------

--- C.options(name, recipes, known): the train options of recipe `name` in `recipes` (its metadata
-- left out). Errors name what is wrong: an unknown recipe (listing the known ones), a recipe that is
-- not runnable here (and why), an option `known` (train.defaults) does not have.
function C.options(name, recipes, known)
  local r = recipes[name]
  if type(r) ~= "table" then
    local names = {}
    for k in pairs(recipes) do names[#names + 1] = k end
    table.sort(names)
    error(string.format("train: unknown recipe '%s' (known: %s)", tostring(name), table.concat(names, ", ")), 0)
  end
  if r.runnable == false then
    error(string.format("train: recipe '%s' (%s) is not runnable here: %s", name, r.description or name,
      r.why_not or "it says runnable = false"), 0)
  end
  local out = {}
  for k, v in pairs(r) do
    if not C.META[k] then
      if known[k] == nil and k ~= "model_args" then
        error(string.format("train: recipe '%s' sets '%s', which is not a train option (see train.defaults)", name,
          tostring(k)), 0)
      end
      if k == "recipe" then error(string.format("train: recipe '%s' cannot name another recipe", name), 0) end
      out[k] = v
    end
  end
  return out
end

return C
