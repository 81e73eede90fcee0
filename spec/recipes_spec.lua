-- recipes_spec.lua: recipes/configs.lua and `--recipe NAME` in recipes/train.lua. The published
-- ImageNet-1K recipes (RepLKNet-31B, SLaK-T) carry MODELS.md's numbers (sections 1.4, 2.3, 2.4; the
-- numbers are written out here, and, when ../shared/reference/MODELS.md is readable, each is also
-- found in its text); they are refused with the reason; a recipe's options sit between
-- train.defaults and the options given; the Fashion-MNIST variants run (a few hundred images).
package.path = "./?.lua;" .. package.path
local train = require "recipes.train"
local configs = require "recipes.configs"
local data = require "lark.data"
local json = require "lark.json"

local SPEC_DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
local ROOT = SPEC_DIR:match("^(.*)/spec$") or "."
local LARK = os.getenv("LARK_BIN") or "build/bin/lark"

local function read_file(p)
  local f = io.open(p, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- The text between two headings of MODELS.md.
local function section(text, from, to)
  local a = text:find(from, 1, true)
  local b = a and text:find(to, a + 1, true)
  return a and text:sub(a, b and b - 1 or -1)
end

local R31B = configs.recipes.replknet31b_in1k
local SLAKT = configs.recipes.slak_t_in1k

describe("recipes/configs.lua", function()
  it("RepLKNet-31B on ImageNet-1K has MODELS.md 1.2/1.4's hyper-parameters", function()
    local r, x = R31B, R31B.imagenet
    assert.are.same({false, "replknet31b", "imagenet-1k"}, {r.runnable, r.model, r.data})
    assert.are.same({300, 2048, "adamw", 4e-3, 1e-6, 10, 0.05, 0.5, 0.9999, 0.1, 0},
      {r.epochs, r.batch_size, r.optimizer, r.lr, r.min_lr, r.warmup_epochs, r.weight_decay, r.drop_path, r.ema,
       r.label_smoothing, r.clip_grad})
    assert.are.equal(r.batch_size, x.per_gpu_batch * x.gpus * x.update_freq) -- 64 x 8 x 4
    assert.are.same({64, 8, 4}, {x.per_gpu_batch, x.gpus, x.update_freq})
    assert.are.same({0.9, 0.999}, x.betas)
    assert.are.same({1e-8, "cosine", "iteration", 0, 224}, {x.eps, x.schedule, x.schedule_unit, x.warmup_start_lr,
      x.input_size})
    assert.are.same({0.8, 1.0, 1.0, 0.5, "batch"}, {x.mixup, x.cutmix, x.mixup_prob, x.mixup_switch_prob, x.mixup_mode})
    assert.are.same({"rand-m9-mstd0.5-inc1", 0.4, 0.25, "pixel", 1, "bicubic"},
      {x.randaugment, x.color_jitter, x.reprob, x.remode, x.recount, x.interpolation})
    assert.is_nil(x.layer_decay)
    assert.is_true(x.ema_evaluated)
    assert.are.same({channels = {128, 256, 512, 1024}, layers = {2, 2, 18, 2}, kernels = {31, 29, 27, 13},
      small_kernel = 5, dw_ratio = 1, ffn_ratio = 4, num_classes = 1000}, x.model_args)
    assert.are.same({0.485, 0.456, 0.406}, x.mean)
    assert.are.equal(83.5, x.reported_top1)
  end)

  it("SLaK-T on ImageNet-1K has MODELS.md 2.2-2.4's hyper-parameters and sparse settings", function()
    local r, x = SLAKT, SLAKT.imagenet
    assert.are.same({false, "slak_t", "imagenet-1k"}, {r.runnable, r.model, r.data})
    assert.are.same({300, 4096, "adamw", 4e-3, 1e-6, 20, 0.05, 0.1, 0.9999, 0.1, 0},
      {r.epochs, r.batch_size, r.optimizer, r.lr, r.min_lr, r.warmup_epochs, r.weight_decay, r.drop_path, r.ema,
       r.label_smoothing, r.clip_grad})
    assert.are.equal(r.batch_size, x.per_gpu_batch * x.gpus * x.update_freq) -- 4 x 128 x 8
    assert.are.same({128, 4, 8}, {x.per_gpu_batch, x.gpus, x.update_freq})
    assert.are.same({0.9, 0.999}, x.betas)
    assert.are.same({1e-8, "cosine", "iteration", 224, false}, {x.eps, x.schedule, x.schedule_unit, x.input_size, x.amp})
    assert.are.same({0.8, 1.0, 1.0, 0.5, "batch"}, {x.mixup, x.cutmix, x.mixup_prob, x.mixup_switch_prob, x.mixup_mode})
    assert.are.same({"rand-m9-mstd0.5-inc1", 0.4, 0.25, "pixel", "bicubic"},
      {x.randaugment, x.color_jitter, x.reprob, x.remode, x.interpolation})
    assert.is_nil(x.layer_decay)
    local m = x.model_args
    assert.are.same({{96, 192, 384, 768}, {3, 3, 9, 3}, {51, 49, 47, 13, 5}, 1.3, true, true, 1e-6, 1.0},
      {m.dims, m.depths, m.kernel_size, m.width_factor, m.decom, m.bn, m.layer_scale_init_value, m.head_init_scale})
    -- int(d x 1.3) = 124, 249, 499, 998 (MODELS.md 2.1)
    local w = {}
    for i, d in ipairs(m.dims) do w[i] = math.floor(d * m.width_factor) end
    assert.are.same({124, 249, 499, 998}, w)
    local sp = x.sparse
    assert.are.same({0.4, "snip", "magnitude", "random", "none", 2000, 0.5, false},
      {sp.sparsity, sp.sparse_init, sp.prune, sp.growth, sp.redistribution, sp.update_frequency, sp.prune_rate,
       sp.only_large_kernel})
    assert.are.equal(82.5, x.reported_top1)
  end)

  it("finds each of those numbers in MODELS.md's own text", function()
    local text = read_file(ROOT .. "/../shared/reference/MODELS.md")
    if not text then return pending("../shared/reference/MODELS.md is not readable from " .. ROOT) end
    local s14 = section(text, "### 1.4 Training recipe", "Other README recipes")
    local s12 = section(text, "### 1.2 Configurations", "### 1.3")
    local s23 = section(text, "### 2.3 Dynamic sparsity", "### 2.4")
    local s24 = section(text, "### 2.4 Training recipe", "## 3.")
    assert.truthy(s14 and s12 and s23 and s24, "MODELS.md's sections 1.2, 1.4, 2.3, 2.4 were not found")
    local function has(sec, what, phrase)
      assert.truthy(sec:find(phrase, 1, true), string.format("MODELS.md %s does not say %q", what, phrase))
    end
    for _, p in ipairs{"300 epochs", "lr 4e-3", "per-GPU batch 64 × 8 GPUs × `update_freq` 4 = **2048**",
      "betas default 0.9/0.999, eps 1e-8", "weight decay 0.05", "`min_lr` 1e-6", "**warmup 10 epochs**",
      "drop path 0.5", "decay 0.9999", "input 224", "label smoothing 0.1",
      "mixup α 0.8, CutMix α 1.0, mixup prob 1.0, switch prob 0.5, per batch", "`rand-m9-mstd0.5-inc1`",
      "color jitter 0.4", "random erasing p 0.25 (pixel mode, 1 count)", "bicubic", "no gradient clipping",
      "no layer-wise lr decay"} do
      has(s14, "1.4", p)
    end
    for _, p in ipairs{"[2,2,18,2]", "[128,256,512,1024]", "[31,29,27,13]", "83.5 (1K,224)"} do has(s12, "1.2", p) end
    for _, p in ipairs{"300 epochs", "lr 4e-3", "**effective batch 4096**", "4 GPUs × 128 × update_freq 8",
      "weight decay 0.05", "1e-6 after **20 warmup epochs**", "layer-scale init 1e-6", "head init scale 1.0",
      "drop path 0.1 / 0.4 / 0.5", "decay 0.9999", "input 224", "label smoothing 0.1",
      "mixup 0.8, CutMix 1.0 (prob 1.0, switch\n0.5, per batch)", "`rand-m9-mstd0.5-inc1`", "color jitter 0.4",
      "random erasing 0.25 (pixel)", "bicubic", "no grad clipping", "no layer decay", "fp32"} do
      has(s24, "2.4", p)
    end
    for _, p in ipairs{"`--sparse --sparsity 0.4`", "`--sparse_init snip`", "`--prune magnitude`", "`--growth random`",
      "`--redistribution none`", "SLaK-T `-u 2000 --prune_rate 0.5`", "--kernel_size 51 49 47 13 5"} do
      has(s23, "2.3", p)
    end
  end)

  it("names models that train.models knows, and keeps the metadata out of the options", function()
    for name, r in pairs(train.recipes) do
      assert.is_function(train.models[r.model], string.format("recipe %s: model %s", name, tostring(r.model)))
      assert.is_string(r.description, name)
      if r.runnable ~= false then
        local opts = configs.options(name, train.recipes, train.defaults)
        for k in pairs(opts) do assert.is_not_nil(train.defaults[k], name .. ": " .. k) end
        assert.is_nil(opts.description)
      end
    end
    assert.is_true(train.recipes.replknet_tiny_fmnist.runnable)
    assert.is_true(train.recipes.slak_tiny_fmnist.runnable)
  end)

  it("refuses the ImageNet recipes and unknown ones, saying why", function()
    local err = expect_error("recipe 'replknet31b_in1k'", train.build, {recipe = "replknet31b_in1k"})
    assert.truthy(err:find("not runnable here", 1, true) and err:find("ImageNet", 1, true), err)
    expect_error("not runnable here", train.build, {recipe = "slak_t_in1k"})
    err = expect_error("unknown recipe 'nope'", train.build, {recipe = "nope"})
    assert.truthy(err:find("replknet_tiny_fmnist", 1, true), err)
    train.recipes._bad = {model = "mlp", runnable = true, learning_rate = 1}
    err = expect_error("sets 'learning_rate', which is not a train option", train.build, {recipe = "_bad"})
    train.recipes._bad = nil
  end)

  it("puts the recipe between train.defaults and the options given (command line included)", function()
    assert.are.same({recipe = "x", lr = 0.5}, train.parse_args{"--recipe", "x", "--lr", "0.5"})
    if not pcall(data.digits, {train = true}) then return pending("sklearn digits are not installed") end
    train.recipes._test = {description = "test", runnable = true, model = "mlp", data = "digits", lr = 0.125,
      epochs = 5, batch_size = 16}
    local ok, s = pcall(train.build, {recipe = "_test", lr = 0.5, quiet = true})
    train.recipes._test = nil
    assert.is_true(ok, tostring(s))
    local c = s.cfg
    assert.are.same({"_test", "mlp", "digits", 0.5, 5, 16, train.defaults.weight_decay},
      {c.recipe, c.model, c.data, c.lr, c.epochs, c.batch_size, c.weight_decay})
  end)
end)

describe("--recipe on Fashion-MNIST", function()
  local have = pcall(data.fashion_mnist, {train = false, max_records = 1})
  if not have then
    it("runs the tiny recipes", function()
      pending("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    end)
    return
  end

  it("replknet_tiny_fmnist trains on a few hundred images (library call)", function()
    local r = train.run{recipe = "replknet_tiny_fmnist", train_limit = 384, test_limit = 200, epochs = 1, seed = 3,
      quiet = true}
    local c = r.state.cfg
    assert.are.same({"tiny_replk", "fashion-mnist", 3e-3, 0.1, 1, 384}, {c.model, c.data, c.lr, c.label_smoothing,
      c.epochs, c.train_limit})
    assert.are.equal(1, #r.history)
    local h = r.history[1]
    assert.is_true(h.train_loss == h.train_loss and h.train_loss > 0 and h.train_loss < 5, tostring(h.train_loss))
    assert.is_true(r.test_acc >= 0 and r.test_acc <= 1)
  end)

  it("slak_tiny_fmnist trains on a few hundred images too", function()
    local ok = pcall(require, "recipes.slak")
    if not ok then return pending("recipes/slak.lua is not there yet") end
    local r = train.run{recipe = "slak_tiny_fmnist", train_limit = 256, test_limit = 200, epochs = 1, quiet = true}
    assert.are.equal("slak_tiny", r.state.cfg.model)
    assert.are.same({41, 83}, r.state.model.dims)
    assert.is_true(r.history[1].train_loss == r.history[1].train_loss)
  end)

  it("slak_tiny_fmnist runs sparse with lark.sparse's hooks, as recipes/configs.lua shows", function()
    local ok, sparse = pcall(require, "lark.sparse")
    if not ok then return pending("lark.sparse is not there yet") end
    local s = train.build{recipe = "slak_tiny_fmnist", train_limit = 256, test_limit = 100, epochs = 1, quiet = true}
    local m = sparse.Masking(s.model, {density = 0.6, init = "uniform"})
    local r = train.run(s, m:hooks())
    local nnz, total = 0, 0
    for _, mask in pairs(m.masks) do
      nnz, total = nnz + mask:sum():item(), total + mask:numel()
    end
    assert.is_true(total > 0)
    assert.is_true(math.abs(nnz / total - 0.6) < 0.02, string.format("density %.3f", nnz / total))
    assert.is_true(r.history[1].train_loss == r.history[1].train_loss)
  end)

  it("`lark recipes/train.lua --recipe replknet_tiny_fmnist` runs from the command line, options overriding", function()
    local f = io.open(LARK, "rb")
    if not f then return pending("no lark executable at " .. LARK .. " (set LARK_BIN)") end
    f:close()
    local out = os.tmpname()
    os.remove(out)
    local cmd = string.format("%s %s/recipes/train.lua --recipe replknet_tiny_fmnist --train-limit 256 --test-limit 100 "
      .. "--epochs 1 --lr 0.001 --quiet --out %s --save-every 0 2>&1", LARK, ROOT, out)
    local p = io.popen(cmd)
    local text = p:read("a")
    local ok = p:close()
    assert.is_true(ok, text)
    assert.truthy(text:find("done: test accuracy", 1, true), text)
    local cfg = json.decode(read_file(out .. "/config.json"))
    assert.are.same({"replknet_tiny_fmnist", "tiny_replk", 0.001, 0.1, 1}, {cfg.recipe, cfg.model, cfg.lr,
      cfg.label_smoothing, cfg.epochs})
    os.execute("rm -rf '" .. out .. "'")
  end)
end)
