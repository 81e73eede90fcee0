-- examples/fashion_mnist.lua: a small large-kernel ConvNet (RepLK blocks with 13x13 depth-wise
-- kernels and their 5x5 re-parameterisable branch) trained on the full Fashion-MNIST.
--
--   bash examples/get_data.sh fashion                       # once: the data set (Debian package)
--   build/bin/lark examples/fashion_mnist.lua               # 60000 images, 5 epochs: about 91% test accuracy
--   build/bin/lark examples/fashion_mnist.lua --quick       # the quick-start demo: about a minute
--   build/bin/lark examples/fashion_mnist.lua --epochs 6 --out runs/fmnist   # any recipes/train.lua option
--
-- The model is recipes/replknet.lua's RepLKNet with channels {32, 64}, one (RepLK, ConvFFN) pair per
-- stage and a stride-2 stem for 28x28 inputs (stages at 14x14 and 7x7); the loop is
-- recipes/train.lua (AdamW, cosine schedule with warm-up, random crop and flip). After training the
-- large kernels are re-parameterised (two branches and two BNs folded into one 13x13 kernel) and the
-- test accuracy is measured again: it does not change.
package.path = "./?.lua;" .. package.path
local lark = require "lark"
local train = require "recipes.train"

local quick = false
local rest = {}
for _, a in ipairs(arg) do
  if a == "--quick" then quick = true else rest[#rest + 1] = a end
end

local cfg = {model = "tiny_replk", data = "fashion-mnist", epochs = 5, batch_size = 128, lr = 3e-3,
  warmup_epochs = 0.3, weight_decay = 0.05, seed = 0, threads = 2}
if quick then
  -- half the training set for one epoch: the whole pipeline, end to end, in under a minute
  cfg.epochs, cfg.train_limit, cfg.test_limit = 1, 30000, 2000
end
for k, v in pairs(train.parse_args(rest)) do cfg[k] = v end

print(string.format("lark: training tiny_replk on Fashion-MNIST (%s training images, %d epoch%s, %d threads)",
  cfg.train_limit and cfg.train_limit > 0 and tostring(cfg.train_limit) or "60000", cfg.epochs,
  cfg.epochs == 1 and "" or "s", cfg.threads))
local r = train.run(cfg)
local s = r.state
print(string.format("test accuracy %.2f%% after %d epoch%s; %.0f images/s in training; %.0f s in all",
  100 * r.test_acc, cfg.epochs, cfg.epochs == 1 and "" or "s", r.images_per_s, r.seconds))

-- deployment: fold each large kernel's BN and 5x5 branch into one 13x13 kernel
s.model:reparameterize()
local _, acc = train.evaluate(s.model, s.test_loader, s.criterion)
print(string.format("after re-parameterisation (one 13x13 kernel per block): test accuracy %.2f%%", 100 * acc))
