--- examples/sparse_custom_rule.lua: a custom growth rule for lark.sparse on a tiny SLaK.
--
--   build/bin/lark examples/sparse_custom_rule.lua
--
-- SLaK grows pruned weights back at random positions. Here the depth-wise large kernels grow
-- instead next to surviving taps: an inactive tap's score is the number of active taps in its 3x3
-- neighbourhood (in the kernel's own plane, per channel) plus a small random tie-break, and the
-- n_grow best-scored taps come back. Other tensors (Linear, stem) keep the default rule. The model
-- trains for a few steps on random data; the script prints the density and how clustered the large
-- kernels became (the mean number of active neighbours of an active tap), against a run with the
-- default random growth.
package.path = "./?.lua;" .. package.path
local lark = require "lark"
local optim = require "lark.optim"
local S = require "recipes.slak"
local sparse = require "lark.sparse"

local function size_of(t)
  local s, out = t:size(), {}
  for i = 1, #s do out[i] = s[i] end
  return out
end

-- Number of active taps in each tap's 3x3 neighbourhood (itself excluded), for a (C, 1, kh, kw) mask.
local function neighbours(mask)
  local f = mask:to("float32")
  local ones = lark.ones(1, 1, 3, 3)
  local s = size_of(f)
  local counts = lark.conv2d(f:view(s[1], 1, s[3], s[4]), ones, nil, {padding = 1})
  return counts:view(s[1], s[2], s[3], s[4]) - f
end

--- grow_next_to_survivors(ctx): the rule. ctx is what lark.sparse.Masking passes to rules.grow
-- (name, weight, mask after pruning, n_grow, generator, ...); returns the grown bool mask.
local function grow_next_to_survivors(ctx)
  local w = ctx.weight
  if w:dim() ~= 4 or w:size(2) ~= 1 or w:size(3) * w:size(4) < 9 then
    return sparse.rules.grow(ctx) -- not a depth-wise kernel: the default (random) growth
  end
  local score = neighbours(ctx.mask) + lark.rand(ctx.mask:size(), {generator = ctx.generator}) * 0.5
  score = sparse.rules.score_inactive(ctx.mask, score) -- active taps are never chosen again
  return ctx.mask:logical_or(sparse.rules.select_top(score, ctx.n_grow, ctx.mask:size()))
end

local function clustering(m)
  local sum, n = 0, 0
  for _, name in ipairs(m.names) do
    if name:find("large_kernel") then
      local mask = m.masks[name]
      sum = sum + neighbours(mask):masked_select(mask):sum():item()
      n = n + mask:sum():item()
    end
  end
  return sum / n
end

local function run(custom)
  lark.manual_seed(0)
  local model = S.slak{dims = {8, 16}, depths = {1, 1}, kernel_size = {13, 9, 5}, width_factor = 1,
    in_channels = 1, num_classes = 10}
  local opt = optim.AdamW(model, {lr = 2e-3})
  local m = sparse.Masking(model, {density = 0.4, init = "uniform", prune_rate = 0.3, update_frequency = 5,
    total_steps = 40, optimizer = opt, exact_growth = true, seed = 1})
  if custom then m.rules.grow = grow_next_to_survivors end
  local before = clustering(m)
  for _ = 1, 40 do
    local x, y = lark.randn(8, 1, 16, 16), lark.randint(1, 11, {8})
    local loss = lark.cross_entropy(model(x), y, "mean", 0)
    opt:zero_grad()
    loss:backward()
    m:after_backward()
    opt:step()
    m:step()
  end
  return m, before, clustering(m)
end

for _, custom in ipairs{false, true} do
  local m, before, after = run(custom)
  print(string.format("%-26s density %.4f  (%d updates)  active neighbours per active tap: %.2f -> %.2f",
    custom and "grow next to survivors:" or "random growth (default):", (m:density()), #m.history, before, after))
end
