-- examples/slak_sparse_fmnist.lua: a tiny SLaK (13x13 and 9x9 kernels decomposed into K x 5 + 5 x K +
-- 5 x 5) on Fashion-MNIST, trained dense and then 40% sparse with SLaK's prune and grow (lark.sparse:
-- ERK densities, magnitude pruning, random growth, the prune rate decayed by cosine), same seed and
-- schedule; prints both accuracies and times.
--
--   bash examples/get_data.sh fashion
--   build/bin/lark examples/slak_sparse_fmnist.lua                       # 2 epochs each, full data
--   build/bin/lark examples/slak_sparse_fmnist.lua --epochs 1 --train-limit 10000   # any train.lua option
--
-- The masked depth-wise convolutions go through lark.dwconv2d_masked, which skips masked-out taps
-- where that beats the dense kernel (examples/bench/sparse_dwconv.lua: large kernels, or small ones
-- at low density); these small kernels at density 0.6 mostly stay on the dense kernels, so this
-- compares accuracy more than speed.
package.path = "./?.lua;" .. package.path
local train = require "recipes.train"

local base = {recipe = "slak_tiny_fmnist", epochs = 2, seed = 0, threads = 2}
for k, v in pairs(train.parse_args(arg)) do base[k] = v end

local results = {}
for _, sparse in ipairs{false, true} do
  local cfg = {}
  for k, v in pairs(base) do cfg[k] = v end
  cfg.sparse, cfg.density = sparse, 0.6
  print(sparse and "== 40% sparse (density 0.6, ERK, prune and grow every 100 steps) ==" or "== dense ==")
  local r = train.run(cfg)
  local density = r.history[#r.history].density
  results[#results + 1] = {sparse and "sparse" or "dense", r.test_acc, r.seconds, density}
end
print()
print(string.format("%-8s %10s %10s %10s", "run", "test acc", "seconds", "density"))
for _, r in ipairs(results) do
  print(string.format("%-8s %9.2f%% %10.1f %10s", r[1], 100 * r[2], r[3], r[4] and string.format("%.3f", r[4]) or "1"))
end
