--- recipes/train.lua: the training loop, as a library for recipes and as a command line.
--
-- Command line (run from the repository root):
--   lark recipes/train.lua --model tiny_replk --data fashion-mnist --epochs 2 --batch-size 128 \
--        --lr 2e-3 --out runs/x
--   lark recipes/train.lua --help          lists every option
--
-- Library:
--   local train = require "recipes.train"
--   local result = train.run({model = "tiny_replk", data = "digits", epochs = 3}, {
--     after_step = function(s) ... end,    -- hooks, see below
--   })
--
-- Each epoch trains over the shuffled training set, then evaluates on the test set. On a terminal
-- a progress line is redrawn (batch, loss, accuracy, learning rate, images/s, ETA); elsewhere plain
-- lines are printed a few times per epoch. With --out DIR, DIR/metrics.jsonl gets one JSON object per
-- epoch and DIR/config.json the configuration. A fixed --seed makes a run repeat exactly (same
-- thread count): the data order, augmentations, dropout and initialisation all derive from it.
--
-- Checkpoints (lark.save, HDF5; see lua/lark/checkpoint.lua): with --out DIR, DIR/checkpoint.h5 is
-- rewritten atomically every --save-every N epochs (default 1; 0: never) and after the last epoch.
-- It holds the model, EMA, optimizer, scheduler, RNG state, epoch, step, best accuracy and this
-- configuration; the data order is a function of (seed, epoch), so the epoch is the loader's
-- position. --resume PATH continues from such a checkpoint at the next epoch, exactly as if the run
-- had not stopped; options not given on the command line are taken from the checkpoint's
-- configuration (so `--resume runs/x/checkpoint.h5` alone is enough), metrics.jsonl is appended to.
-- --export PATH writes an inference-only file at the end (model_state_dict, the EMA weights when
-- --ema is on, and the root attributes) that PyTorch loads with h5py; train.export(model, path) too.
--
-- Devices: --device cuda (or cuda:N) trains on a GPU: the model moves there before the optimizer
-- is built, the loaders make every batch in pinned host memory and copy it there (DataLoader's
-- pin_memory and device options; s.x and s.y in hooks are the device's tensors), losses and
-- accuracies come back as numbers, and checkpoints and exports are written from host copies, so a
-- file saved from a GPU run loads anywhere. The same seed draws the same initial weights (made on
-- the CPU, then moved) and the same random streams as on the CPU.
-- Without a usable GPU the run stops before anything starts: "--device cuda: no CUDA device is
-- available".
--
-- Hooks (all optional) receive the state table s = {cfg, model, optimizer, scheduler, ema,
-- criterion, train_loader, test_loader, epoch, step, batch, x, y, output, loss, log, masks}:
--   on_start(s), on_epoch_start(s), after_backward(s) (before the optimizer step: gradient surgery),
--   after_step(s) (after the optimizer, scheduler and EMA: re-apply masks, prune and grow...),
--   on_epoch_end(s, metrics) (before the epoch's checkpoint), on_end(s, result).
-- A hook may set s.stop = true to end the run after the current epoch. s.masks (name -> bool
-- tensor), when a recipe keeps them there, is saved in checkpoints and restored on --resume.
-- Models and data sets are looked up in train.models and train.datasets; recipes add their own.
-- `require "recipes.x"` from wherever this file is run: its checkout's root goes on the path
local root = debug.getinfo(1, "S").source:match("^@(.-)recipes/train%.lua$")
if root and root ~= "" then package.path = root .. "?.lua;" .. package.path end

local lark = require "lark"
local nn = require "lark.nn"
local optim = require "lark.optim"
local data = require "lark.data"
local json = require "lark.json"
local configs = require "recipes.configs"

local train = {}

-- ---- configuration ----------------------------------------------------------------------------------

--- train.defaults: every option, with its default; the command line accepts each as --name-with-dashes.
train.defaults = {
  model = "tiny_replk",     -- a key of train.models
  data = "fashion-mnist",   -- a key of train.datasets
  recipe = "",              -- a key of train.recipes (recipes/configs.lua): its options, under the ones given
  epochs = 2,
  batch_size = 128,
  lr = 2e-3,
  min_lr = 1e-5,
  warmup_epochs = 0.2,      -- linear warm-up, in epochs (fractions allowed), then cosine to min_lr
  weight_decay = 0.05,      -- AdamW, not on 1-D parameters and biases
  optimizer = "adamw",      -- adamw | sgd
  momentum = 0.9,           -- SGD
  label_smoothing = 0.0,
  drop_path = 0.0,
  clip_grad = 0.0,          -- max global gradient norm, 0: off
  ema = 0.0,                -- EMA decay (e.g. 0.999), 0: off
  seed = 0,
  threads = 0,              -- OpenMP threads, 0: leave as is
  train_limit = 0,          -- use only the first N training images (0: all)
  test_limit = 0,
  augment = true,           -- random crop (padding 2) and, where it makes sense, flips
  eval_batch_size = 500,
  out = "",                 -- output directory for metrics.jsonl, config.json and checkpoint.h5
  save_every = 1,           -- with --out: write <out>/checkpoint.h5 every N epochs and at the end (0: never)
  resume = "",              -- continue from this checkpoint (options not given come from it)
  export = "",              -- at the end, write an inference-only HDF5 file of the weights here
  log_every = 0,            -- plain-line progress every N batches (0: about 5 per epoch)
  device = "cpu",           -- cpu | cuda | cuda:N
  quiet = false,
  sparse = false,           -- SLaK's dynamic sparsity (lark.sparse): prune and grow during training
  density = 0.6,            -- with --sparse: the fraction of weights kept (0.6 = 40% sparse)
  sparse_init = "ERK",      -- uniform | ERK (layer densities)
  growth = "random",        -- random | gradient | momentum
  prune_rate = 0.3,         -- decayed by cosine to 0.005 over the run
  update_frequency = 100,   -- optimizer steps between prune-and-grow updates
  sparse_which = "all",     -- all (every 2-D and 4-D weight, as SLaK) | large_kernels
}

local descriptions = {
  model = "model name (" .. "see train.models)", data = "fashion-mnist | mnist | digits",
  out = "directory for metrics.jsonl, config.json and checkpoint.h5", train_limit = "use only the first N training images",
  save_every = "with --out: checkpoint every N epochs (0: never)", resume = "checkpoint to continue from",
  export = "inference-only weights file written at the end",
  recipe = "named recipe (train.recipes, recipes/configs.lua); other options override it",
  device = "cpu | cuda | cuda:N (a GPU: the model and every batch live there)",
}

local function usage()
  local keys = {}
  for k in pairs(train.defaults) do keys[#keys + 1] = k end
  table.sort(keys)
  local lines = {"usage: lark recipes/train.lua [--option value ...]", "options (default):"}
  for _, k in ipairs(keys) do
    lines[#lines + 1] = string.format("  --%-18s %-14s %s", k:gsub("_", "-"), tostring(train.defaults[k]),
      descriptions[k] or "")
  end
  return table.concat(lines, "\n")
end

--- train.parse_args(argv): a configuration table from command-line arguments (--key value,
-- --key=value, --flag / --no-flag for booleans), over train.defaults. Unknown options and values
-- of the wrong type are errors that say what was expected.
function train.parse_args(argv)
  local cfg = {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--help" or a == "-h" then
      print(usage())
      os.exit(0)
    end
    local key, val = a:match("^%-%-([%w%-_]+)=(.*)$")
    if not key then key = a:match("^%-%-([%w%-_]+)$") end
    if not key then error(string.format("train: unexpected argument '%s' (options look like --epochs 2)", a), 0) end
    key = key:gsub("%-", "_")
    local negated = false
    if train.defaults[key] == nil and key:sub(1, 3) == "no_" and type(train.defaults[key:sub(4)]) == "boolean" then
      key, negated = key:sub(4), true
    end
    local def = train.defaults[key]
    if def == nil then error(string.format("train: unknown option --%s (try --help)", key:gsub("_", "-")), 0) end
    if type(def) == "boolean" then
      if val then
        if val ~= "true" and val ~= "false" then error("train: --" .. key .. " takes true or false, got " .. val, 0) end
        cfg[key] = val == "true"
      else
        cfg[key] = not negated
      end
    else
      if not val then
        i = i + 1
        val = argv[i]
        if val == nil then error(string.format("train: --%s needs a value", key:gsub("_", "-")), 0) end
      end
      if type(def) == "number" then
        local n = tonumber(val)
        if not n then error(string.format("train: --%s takes a number, got '%s'", key:gsub("_", "-"), val), 0) end
        if math.type(def) == "integer" then
          n = math.tointeger(n)
          if not n then error(string.format("train: --%s takes an integer, got '%s'", key:gsub("_", "-"), val), 0) end
        end
        cfg[key] = n
      else
        cfg[key] = val
      end
    end
    i = i + 1
  end
  return cfg
end

local function with_defaults(cfg)
  local out = {}
  for k, v in pairs(train.defaults) do out[k] = v end
  if cfg and cfg.recipe and cfg.recipe ~= "" then -- the recipe's options, then the given ones over them
    for k, v in pairs(configs.options(cfg.recipe, train.recipes, train.defaults)) do out[k] = v end
  end
  for k, v in pairs(cfg or {}) do
    if train.defaults[k] == nil and k ~= "model_args" then
      error(string.format("train: unknown option '%s' (see train.defaults)", tostring(k)), 3)
    end
    out[k] = v
  end
  return out
end

-- ---- models and data ----------------------------------------------------------------------------------

--- train.models[name](cfg, info): a model for the data described by info = {channels, size,
-- num_classes}. Recipes add entries.
train.models = {}

train.models.tiny_replk = function(cfg, info)
  local R = require "recipes.replknet"
  -- two stages at 14x14 and 7x7 (stem stride 2 on 28x28), 13x13 kernels with a 5x5 branch
  return R.replknet{channels = {32, 64}, layers = {1, 1}, kernels = {13, 13}, small_kernel = 5,
    dw_ratio = 1, ffn_ratio = 4, in_channels = info.channels, num_classes = info.num_classes,
    drop_path = cfg.drop_path, stem_stride = info.size >= 16 and 2 or 4}
end

train.models.small_replk = function(cfg, info)
  local R = require "recipes.replknet"
  return R.replknet{channels = {48, 96}, layers = {2, 2}, kernels = {27, 13}, small_kernel = 5,
    dw_ratio = 1, ffn_ratio = 4, in_channels = info.channels, num_classes = info.num_classes,
    drop_path = cfg.drop_path, stem_stride = 2}
end

train.models.mlp = function(cfg, info)
  local d = info.channels * info.size * info.size
  return nn.Sequential(nn.Flatten(), nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, info.num_classes))
end

--- train.recipes: named recipes, tables of options (recipes/configs.lua; --recipe NAME); their models join train.models.
train.recipes = configs.recipes
for name, make in pairs(configs.models) do train.models[name] = train.models[name] or make end

--- train.datasets[name](cfg): train set, test set, info {channels, size, num_classes, flip}.
train.datasets = {}

local function limited(ds, n)
  if n and n > 0 and n < #ds then
    local idx = {}
    for i = 1, n do idx[i] = i end
    local sub = data.Subset(ds, idx)
    for _, k in ipairs{"name", "num_classes", "mean", "std", "classes"} do sub[k] = ds[k] end
    return sub
  end
  return ds
end

local function idx_data(fn, flip)
  return function(cfg)
    local tr = fn{train = true, max_records = cfg.train_limit > 0 and cfg.train_limit or nil}
    local te = fn{train = false, max_records = cfg.test_limit > 0 and cfg.test_limit or nil}
    return tr, te, {channels = 1, size = 28, num_classes = 10, flip = flip}
  end
end
train.datasets["fashion-mnist"] = idx_data(data.fashion_mnist, true)
train.datasets.mnist = idx_data(data.mnist, false)
train.datasets.digits = function(cfg)
  return limited(data.digits{train = true}, cfg.train_limit), limited(data.digits{train = false}, cfg.test_limit),
    {channels = 1, size = 8, num_classes = 10, flip = false}
end

-- ---- progress -----------------------------------------------------------------------------------------

local function fmt_time(s)
  s = math.max(0, math.floor(s + 0.5))
  if s >= 3600 then return string.format("%d:%02d:%02d", s // 3600, s % 3600 // 60, s % 60) end
  return string.format("%d:%02d", s // 60, s % 60)
end

local Progress = {}
Progress.__index = Progress

local function progress(cfg, total, epoch)
  local p = setmetatable({tty = lark.isatty(1) and not cfg.quiet, total = total, epoch = epoch, epochs = cfg.epochs,
    quiet = cfg.quiet, t0 = lark.clock(), every = cfg.log_every > 0 and cfg.log_every or math.max(1, total // 5)}, Progress)
  return p
end

function Progress:update(b, loss, acc, lr, images)
  if self.quiet then return end
  local dt = lark.clock() - self.t0
  local ips = images / math.max(dt, 1e-9)
  local eta = dt / b * (self.total - b)
  local line = string.format("epoch %d/%d  batch %d/%d  loss %.4f  acc %.2f%%  lr %.2e  %.0f img/s  ETA %s",
    self.epoch, self.epochs, b, self.total, loss, 100 * acc, lr, ips, fmt_time(eta))
  if self.tty then
    local width = 24
    local fill = math.floor(width * b / self.total)
    io.write("\r[" .. string.rep("=", fill) .. string.rep(" ", width - fill) .. "] " .. line .. "\27[K")
    io.flush()
  elseif b % self.every == 0 or b == self.total then
    print(line)
    io.stdout:flush() -- logs redirected to a file show progress as it happens
  end
end

function Progress:finish()
  if self.tty and not self.quiet then io.write("\n") end
end

-- ---- the loop -----------------------------------------------------------------------------------------

--- train.check_device(device): device itself when it names a device this process can use ("cpu",
-- "cuda", "cuda:N"), else an error saying why ("--device cuda: no CUDA device is available").
function train.check_device(device)
  if device == "cpu" then return device end
  local index = type(device) == "string" and (device == "cuda" and "0" or device:match("^cuda:(%d+)$"))
  if not index then
    error(string.format("train: --device must be cpu, cuda or cuda:N, got '%s'", tostring(device)), 0)
  end
  if not lark.cuda.is_available() then
    error(string.format("train: --device %s: no CUDA device is available (lark.cuda.is_available() is false)",
      device), 0)
  end
  local n = lark.cuda.device_count()
  if tonumber(index) >= n then
    error(string.format("train: --device %s: no such CUDA device (%d found: cuda:0 .. cuda:%d)", device, n, n - 1), 0)
  end
  return device
end

-- The device of a model's parameters ("cpu" for a model without any).
local function device_of(model)
  for _, p in model:named_parameters() do return p:device() end
  return "cpu"
end

-- A batch tensor on device (itself when it is already there).
local function on(device, t)
  if t == nil or t:device() == device then return t end
  return t:to(device)
end

local function accuracy_count(output, y)
  local pred = output:argmax(2)
  local target = y:dim() == 2 and y:argmax(2) or y
  return pred:eq(target):sum():item()
end

--- train.evaluate(model, loader, criterion [, device]): mean loss and accuracy over a loader, in
-- eval mode without gradients; batches are moved to device (default: where the model's parameters
-- are).
function train.evaluate(model, loader, criterion, device)
  device = device or device_of(model)
  local was = model.training
  model:eval()
  local loss_sum, correct, n = 0, 0, 0
  lark.no_grad(function()
    for x, y in loader:iter() do
      x, y = on(device, x), on(device, y)
      local out = model(x)
      local b = x:size(1)
      loss_sum = loss_sum + criterion(out, y):item() * b
      correct = correct + accuracy_count(out, y)
      n = n + b
    end
  end)()
  model:train(was)
  return loss_sum / math.max(n, 1), correct / math.max(n, 1)
end

local function call(hooks, name, ...)
  local f = hooks and hooks[name]
  if f then return f(...) end
end

--- train.build(cfg): the pieces of a run without running it: s = {cfg, model, optimizer,
-- scheduler, ema, criterion, train_loader, test_loader, info}.
function train.build(cfg)
  local resumed
  if cfg and cfg.resume and cfg.resume ~= "" then cfg, resumed = train.resume_config(cfg) end
  cfg = with_defaults(cfg)
  train.check_device(cfg.device) -- before any data is read
  if cfg.threads > 0 then lark.set_num_threads(cfg.threads) end
  lark.manual_seed(cfg.seed)
  local make_data = train.datasets[cfg.data]
  if not make_data then error("train: unknown data set '" .. tostring(cfg.data) .. "' (see train.datasets)", 2) end
  local make_model = train.models[cfg.model]
  if not make_model then error("train: unknown model '" .. tostring(cfg.model) .. "' (see train.models)", 2) end
  local tr, te, info = make_data(cfg)
  local aug = {}
  if cfg.augment and info.size >= 16 then
    aug.random_crop = {size = info.size, padding = 2}
    if info.flip then aug.hflip = 0.5 end
  end
  -- on a GPU the loaders make their batches in pinned memory and hand them out already there (one DMA
  -- per batch); on the CPU nothing changes
  local gpu = cfg.device ~= "cpu"
  local tl = data.DataLoader(tr, {batch_size = cfg.batch_size, shuffle = true, drop_last = true, seed = cfg.seed,
    normalize = {tr.mean, tr.std}, random_crop = aug.random_crop, hflip = aug.hflip, pin_memory = gpu,
    device = cfg.device})
  local el = data.DataLoader(te, {batch_size = cfg.eval_batch_size, shuffle = false, normalize = {tr.mean, tr.std},
    pin_memory = gpu, device = cfg.device})
  local model = make_model(cfg, info)
  if cfg.device ~= "cpu" then model:to(cfg.device) end
  local groups = optim.param_groups(model, {weight_decay = cfg.weight_decay})
  local opt
  if cfg.optimizer == "adamw" then
    opt = optim.AdamW(groups, {lr = cfg.lr})
  elseif cfg.optimizer == "sgd" then
    opt = optim.SGD(groups, {lr = cfg.lr, momentum = cfg.momentum})
  else
    error("train: optimizer must be adamw or sgd, got " .. tostring(cfg.optimizer), 2)
  end
  local steps_per_epoch = #tl
  local total = steps_per_epoch * cfg.epochs
  local sched = optim.lr_scheduler.cosine(opt, {warmup_steps = math.floor(cfg.warmup_epochs * steps_per_epoch + 0.5),
    total_steps = total, min_lr = cfg.min_lr})
  local ema = cfg.ema > 0 and optim.ModelEma(model, {decay = cfg.ema}) or nil
  local criterion = nn.CrossEntropyLoss({label_smoothing = cfg.label_smoothing})
  local s = {cfg = cfg, model = model, optimizer = opt, scheduler = sched, ema = ema, criterion = criterion,
    train_loader = tl, test_loader = el, info = info, epoch = 0, step = 0}
  if resumed then
    -- everything checked before anything is copied; the RNG continues where the saved run was
    local st = lark.load_into(resumed, {model = model, optimizer = opt, scheduler = sched, ema = ema, rng = true})
    s.epoch, s.step, s.start_epoch = st.epoch or 0, st.step or 0, (st.epoch or 0) + 1
    s.best_acc, s.masks, s.resumed_from = st.attrs.best_acc, st.masks, cfg.resume
  end
  return s
end

-- ---- checkpoints --------------------------------------------------------------------------------------

-- The configuration as stored in checkpoints: the options, plus the model's name under "arch" and
-- "reparameterized" (CHECKPOINTS.md's model_config).
local function stored_config(cfg)
  local c = {}
  for k, v in pairs(cfg) do c[k] = v end
  c.arch, c.reparameterized = cfg.model, false
  return c
end

--- train.resume_config(cfg): cfg over the configuration stored in the checkpoint cfg.resume (the
-- options cfg does not set come from the checkpoint), and the loaded checkpoint.
function train.resume_config(cfg)
  local st = lark.load(cfg.resume)
  local merged = {}
  if type(st.config) == "table" then
    for k, v in pairs(st.config) do
      if train.defaults[k] ~= nil or k == "model_args" then merged[k] = v end
    end
  end
  for k, v in pairs(cfg) do merged[k] = v end
  return merged, st
end

--- train.save_checkpoint(s, path): the whole training state of s (see the top of this file).
function train.save_checkpoint(s, path)
  lark.save(path, {model = s.model, ema = s.ema, masks = s.masks, optimizer = s.optimizer, scheduler = s.scheduler,
    rng = lark.get_rng_state(), epoch = s.epoch, step = s.step, config = stored_config(s.cfg),
    attrs = {best_acc = s.best_acc}})
end

--- train.export(model, path [, {ema =, config =}]): an inference-only file: model_state_dict (the
-- EMA's weights, in the model's key order, when ema is given) and the root attributes.
function train.export(model, path, opts)
  opts = opts or {}
  local sd, keys = model:state_dict()
  if opts.ema then
    local own = {}
    for _, k in ipairs(keys) do own[k] = opts.ema.tensors[k] or sd[k] end
    sd = lark.h5.ordered(keys, own)
  end
  lark.save(path, {model = sd, config = opts.config and stored_config(opts.config) or nil})
end

--- train.chain_hooks(a, b): hooks that run a's then b's (either may be nil).
function train.chain_hooks(a, b)
  if not a then return b end
  if not b then return a end
  local out = {}
  for _, t in ipairs{a, b} do
    for name, f in pairs(t) do
      local prev = out[name]
      out[name] = prev and function(...) prev(...); return f(...) end or f
    end
  end
  return out
end

--- train.run(cfg [, hooks]): trains and evaluates; returns {test_acc, test_loss, best_acc, history,
-- seconds, images_per_s}. cfg may also be the state from train.build (to change pieces first).
function train.run(cfg, hooks)
  local s = cfg.model and type(cfg.model) == "table" and cfg or train.build(cfg)
  cfg = s.cfg
  local log
  if cfg.out ~= "" then
    os.execute("mkdir -p '" .. cfg.out:gsub("'", "'\\''") .. "'")
    local f = assert(io.open(cfg.out .. "/config.json", "w"))
    f:write(json.encode(cfg), "\n")
    f:close()
    log = assert(io.open(cfg.out .. "/metrics.jsonl", s.start_epoch and "a" or "w"))
  end
  s.log = log
  local history, best = {}, s.best_acc or 0
  local first = s.start_epoch or 1
  if first > 1 then s.train_loader:set_epoch(first) end -- the data order of epoch e is a function of (seed, e)
  local t_start = lark.clock()
  local train_time, train_images = 0, 0
  if cfg.sparse then
    -- masks drawn now, or on --resume the saved ones (drawing would zero restored weights)
    local Masking = require("lark.sparse").Masking
    s.masking = Masking(s.model, {density = cfg.density, init = cfg.sparse_init, growth = cfg.growth,
      prune_rate = cfg.prune_rate, update_frequency = cfg.update_frequency, which = cfg.sparse_which,
      seed = cfg.seed, optimizer = s.optimizer, total_steps = #s.train_loader * cfg.epochs,
      masks = s.resumed_from and s.masks or nil})
    hooks = train.chain_hooks(s.masking:hooks(), hooks)
  end
  call(hooks, "on_start", s)
  for epoch = first, cfg.epochs do
    s.epoch = epoch
    s.model:train()
    call(hooks, "on_epoch_start", s)
    local bar = progress(cfg, #s.train_loader, epoch)
    local loss_sum, correct, seen = 0, 0, 0
    local t0 = lark.clock()
    local b = 0
    for x, y in s.train_loader:iter() do
      b = b + 1
      -- train.build's loaders hand out batches on cfg.device already; a loader put in s by a caller may not
      x, y = on(cfg.device, x), on(cfg.device, y)
      s.batch, s.x, s.y = b, x, y
      local out = s.model(x)
      local loss = s.criterion(out, y)
      s.output, s.loss = out, loss
      s.optimizer:zero_grad()
      loss:backward()
      call(hooks, "after_backward", s)
      if cfg.clip_grad > 0 then optim.clip_grad_norm(s.model:parameters(), cfg.clip_grad) end
      s.optimizer:step()
      s.scheduler:step()
      if s.ema then s.ema:update(s.model) end
      s.step = s.step + 1
      call(hooks, "after_step", s)
      local bs = x:size(1)
      local l = loss:item()
      if l ~= l then error(string.format("train: the loss became NaN at epoch %d, batch %d", epoch, b), 0) end
      loss_sum = loss_sum + l * bs
      correct = correct + accuracy_count(out:detach(), y)
      seen = seen + bs
      bar:update(b, loss_sum / seen, correct / seen, s.optimizer.param_groups[1].lr, seen)
    end
    bar:finish()
    local dt = lark.clock() - t0
    train_time, train_images = train_time + dt, train_images + seen
    local test_loss, test_acc
    if s.ema then
      -- evaluate the EMA weights (as the official recipes do), then put the trained ones back
      local saved = {}
      for name, t in pairs((s.model:state_dict())) do saved[name] = t:clone() end
      s.ema:copy_to(s.model)
      test_loss, test_acc = train.evaluate(s.model, s.test_loader, s.criterion, cfg.device)
      s.model:load_state_dict(saved)
    else
      test_loss, test_acc = train.evaluate(s.model, s.test_loader, s.criterion, cfg.device)
    end
    best = math.max(best, test_acc)
    s.best_acc = best
    local m = {epoch = epoch, step = s.step, train_loss = loss_sum / math.max(seen, 1),
      train_acc = correct / math.max(seen, 1), test_loss = test_loss, test_acc = test_acc,
      lr = s.optimizer.param_groups[1].lr, epoch_seconds = dt, images_per_s = seen / math.max(dt, 1e-9),
      elapsed = lark.clock() - t_start}
    if s.masking then m.density = (s.masking:density()) end
    history[#history + 1] = m
    if log then
      log:write(json.encode(m), "\n")
      log:flush()
    end
    if not cfg.quiet then
      print(string.format("epoch %d/%d  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  %.0f img/s  %s%s",
        epoch, cfg.epochs, m.train_loss, 100 * m.train_acc, test_loss, 100 * test_acc, m.images_per_s,
        fmt_time(m.elapsed), m.density and string.format("  density %.3f", m.density) or ""))
      io.stdout:flush()
    end
    call(hooks, "on_epoch_end", s, m)
    if cfg.out ~= "" and cfg.save_every > 0 and (epoch % cfg.save_every == 0 or epoch == cfg.epochs or s.stop) then
      train.save_checkpoint(s, cfg.out .. "/checkpoint.h5")
    end
    if s.stop then break end
  end
  if log then log:close() end
  if cfg.export ~= "" then train.export(s.model, cfg.export, {ema = s.ema, config = cfg}) end
  local last = history[#history] or {}
  local result = {test_acc = last.test_acc, test_loss = last.test_loss, best_acc = best, history = history,
    seconds = lark.clock() - t_start, images_per_s = train_images / math.max(train_time, 1e-9), state = s}
  call(hooks, "on_end", s, result)
  return result
end

-- Run as a script (lark recipes/train.lua ...), not when required.
if arg and arg[0] and arg[0]:match("recipes/train%.lua$") and not package.loaded["recipes.train"] then
  package.loaded["recipes.train"] = train
  local ok, err = pcall(function()
    local cfg = train.parse_args(arg)
    local r = train.run(cfg)
    print(string.format("done: test accuracy %.2f%% (best %.2f%%) in %s, %.0f images/s in training",
      100 * r.test_acc, 100 * r.best_acc, fmt_time(r.seconds), r.images_per_s))
  end)
  if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
end

return train
