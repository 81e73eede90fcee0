-- train_gpu_spec.lua: recipes/train.lua with --device cuda: the tiny RepLKNet and SLaK recipes
-- (recipes/configs.lua) trained for a few steps on the GPU and on the CPU from the same seed give
-- close losses and close parameters; a checkpoint written by a GPU run loads and evaluates on the
-- CPU; SLaK's sparse training (lark.sparse's masks, prune and grow) runs on the GPU; and a device
-- that cannot be used is refused before anything starts.
--
-- The data is a seeded stand-in for Fashion-MNIST (28x28 grey images, 10 classes, labels that the
-- brightness gives away), so the spec needs no download. The parity runs use SGD: its update is
-- linear in the gradient, so the CPU's and the GPU's parameters stay as close as their gradients
-- (float32 sums in another order); AdamW's normalised step would turn the rounding noise of
-- gradients that are zero in exact arithmetic into steps of the learning rate's size. Without a
-- CUDA device the GPU blocks are pending with a message saying so.
package.path = "./?.lua;" .. package.path
local train = require "recipes.train"
local data = require "lark.data"

local has_cuda = lark.cuda.is_available()

train.datasets["synthetic-28"] = function(cfg)
  local gen = lark.Generator(99)
  local function make(n)
    local labels = lark.randint(1, 11, {n}, {dtype = "int64", generator = gen})
    local x = lark.rand({n, 1, 28, 28}, {generator = gen}) * 120 + labels:view(n, 1, 1, 1):float() * 12
    local ds = data.TensorDataset(x:to("uint8"), labels)
    ds.mean, ds.std, ds.num_classes = 0.35, 0.15, 10
    return ds
  end
  return make(96), make(48), {channels = 1, size = 28, num_classes = 10, flip = true}
end

-- a few steps (96 images, batches of 16) of a recipe on device, with the loss of every step
local function run(recipe, device, extra)
  local losses = {}
  local cfg = {recipe = recipe, data = "synthetic-28", epochs = 1, batch_size = 16, eval_batch_size = 24, seed = 3,
    quiet = true, device = device, optimizer = "sgd", lr = 0.05, momentum = 0.9, warmup_epochs = 0}
  for k, v in pairs(extra or {}) do cfg[k] = v end
  local r = train.run(cfg, {after_step = function(s) losses[#losses + 1] = s.loss:item() end})
  return r, losses
end

local function params_of(model)
  local out = {}
  for name, p in model:named_parameters() do out[name] = p end
  return out
end

describe("recipes/train.lua --device", function()
  it("refuses a device it cannot use, before reading any data", function()
    expect_error("--device must be cpu, cuda or cuda:N, got 'gpu'", train.build, {model = "mlp", data = "synthetic-28",
      device = "gpu"})
    if has_cuda then
      expect_error("no such CUDA device", train.build, {model = "mlp", data = "synthetic-28", device = "cuda:99"})
    else
      expect_error("--device cuda: no CUDA device is available", train.build, {model = "mlp", data = "synthetic-28",
        device = "cuda"})
      expect_error("--device cuda:1: no CUDA device is available", train.build, {model = "mlp", device = "cuda:1"})
    end
  end)
end)

gpu_describe("training on the GPU", function()
  for _, recipe in ipairs{"replknet_tiny_fmnist", "slak_tiny_fmnist"} do
    it(recipe .. ": steps on the GPU follow the CPU's from the same seed", function()
      local rc, lc = run(recipe, "cpu")
      local rg, lg = run(recipe, "cuda")
      assert.are.equal(6, #lc)
      assert.are.equal(#lc, #lg)
      for i = 1, #lc do
        assert.is_true(math.abs(lg[i] - lc[i]) <= 1e-3 * (1 + math.abs(lc[i])),
          string.format("%s step %d: loss %.7g on the GPU, %.7g on the CPU", recipe, i, lg[i], lc[i]))
      end
      local pc, pg = params_of(rc.state.model), params_of(rg.state.model)
      local n = 0
      for name, p in pairs(pc) do
        n = n + 1
        local q = pg[name]
        assert.is_not_nil(q, name)
        assert.are.equal("cuda:0", q:device(), name)
        local ok, err = pcall(assert_near, q:cpu(), p, 2e-4)
        if not ok then error(recipe .. " parameter " .. name .. ": " .. tostring(err)) end
      end
      assert.is_true(n > 10, recipe .. " has parameters")
      assert.is_true(math.abs(rg.test_loss - rc.test_loss) <= 1e-3 * (1 + rc.test_loss),
        string.format("test loss %.7g on the GPU, %.7g on the CPU", rg.test_loss, rc.test_loss))
      assert.is_true(math.abs(rg.test_acc - rc.test_acc) <= 2 / 48 + 1e-9,
        string.format("test accuracy %.4f on the GPU, %.4f on the CPU", rg.test_acc, rc.test_acc))
    end)
  end

  it("writes checkpoints from the GPU that load and evaluate on the CPU, and trains AdamW", function()
    local out = os.tmpname()
    os.remove(out)
    local r = run("replknet_tiny_fmnist", "cuda", {optimizer = "adamw", lr = 3e-3, out = out, ema = 0.9,
      export = out .. "/export.h5"})
    assert.is_true(r.test_loss == r.test_loss, "a finite test loss")
    -- resumed on the CPU at the end of the run: the model's weights are the GPU's
    local s = train.build{resume = out .. "/checkpoint.h5", device = "cpu"}
    for name, p in pairs(params_of(s.model)) do
      assert.are.equal("cpu", p:device(), name)
      assert_near(p, params_of(r.state.model)[name]:cpu(), 0)
    end
    local sd = lark.load(out .. "/export.h5")
    assert.is_not_nil(sd.model, "the export holds the model's weights")
    os.execute("rm -rf '" .. out .. "'")
  end)

  it("trains SLaK sparse on the GPU: masks kept, density on target", function()
    local r = run("slak_tiny_fmnist", "cuda", {sparse = true, density = 0.5, sparse_init = "uniform",
      update_frequency = 2})
    local m = r.state.masking
    local params = params_of(r.state.model)
    for _, name in ipairs(m.names) do
      local p = params[name]
      assert.are.equal("cuda:0", p:device(), name)
      assert.are.equal(0, (p:detach() * m.masks[name]:logical_not():to(p:dtype())):abs():sum():item(), name)
    end
    assert.is_true(math.abs(r.history[1].density - 0.5) < 0.05, "density " .. r.history[1].density)
  end)
end)
