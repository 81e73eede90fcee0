-- sparse_spec.lua: lark.sparse.Masking, SLaK's dynamic sparsity (MODELS.md 2.3). Initial densities of
-- each init mode against hand computations, the prune-and-grow invariants (density, which weights
-- go, regrown weights at 0, masks only change at update steps), gradients and optimizer state, the
-- masked EMA formula, state dicts, custom rules, and a short sparse training run on sklearn digits.
package.path = "./?.lua;" .. package.path
local nn = require "lark.nn"
local optim = require "lark.optim"
local sparse = require "lark.sparse"
local Masking = sparse.Masking
local R = sparse.rules

local function mlp(sizes)
  local layers = {}
  for i = 1, #sizes - 1 do
    layers[#layers + 1] = nn.Linear(sizes[i], sizes[i + 1])
    if i < #sizes - 1 then layers[#layers + 1] = nn.ReLU() end
  end
  return nn.Sequential(table.unpack(layers))
end

-- A small conv net with 4-D and 2-D weights: conv 3x3, depth-wise 7x7, head.
local ConvNet = nn.Module:extend("SparseSpecConvNet")
function ConvNet:__init()
  self.conv = nn.Conv2d(1, 8, 3, {padding = 1})
  self.dw = nn.Conv2d(8, 8, 7, {padding = 3, groups = 8, bias = false})
  self.head = nn.Linear(8, 4)
end
function ConvNet:forward(x)
  local y = self.dw(self.conv(x):relu()):relu()
  return self.head(y:mean({3, 4}))
end

local function count(mask) return math.tointeger(mask:sum():item()) end

-- One training step on random data: backward, after_backward, optimizer, m:step.
local function train_step(model, m, opt, x, y)
  local loss = lark.cross_entropy(model(x), y, "mean", 0)
  opt:zero_grad()
  loss:backward()
  m:after_backward()
  opt:step()
  m:step()
  return loss
end

local function batch(n, d, classes)
  return lark.randn(n, d), lark.randint(1, classes + 1, {n})
end

local function snapshot(m)
  local s = {}
  for name, mask in pairs(m.masks) do s[name] = mask:clone() end
  return s
end

local function same_masks(a, b)
  for name, mask in pairs(a) do
    if not mask:eq(b[name]):all():item() then return false end
  end
  return true
end

describe("lark.sparse.Masking", function()
  it("is reachable as require('lark.sparse') and lark.sparse", function()
    assert.are.equal(sparse, lark.sparse)
    assert.are.equal(Masking, lark.sparse.Masking)
  end)

  it("masks every 2-D and 4-D weight (which = 'all') and only the large kernels with 'large_kernels'", function()
    lark.manual_seed(0)
    local S = require "recipes.slak"
    local model = S.slak{dims = {8, 16}, depths = {1, 1}, kernel_size = {13, 9, 5}, width_factor = 1, in_channels = 1,
      num_classes = 10}
    local m = Masking(model, {density = 0.5, init = "uniform", total_steps = 10, dense_threshold = false})
    local want = {}
    for name, p in model:named_parameters() do
      if p:dim() == 2 or p:dim() == 4 then want[#want + 1] = name end
    end
    assert.are.same(want, m.names)
    for name, mask in pairs(m.masks) do assert.are.equal("bool", mask:dtype(), name) end
    local lk = Masking(model, {density = 0.5, init = "uniform", total_steps = 10, which = "large_kernels"})
    assert.is_true(#lk.names == 4) -- LoRA1 and LoRA2 of two blocks, not the 5x5 small_conv
    for _, name in ipairs(lk.names) do assert.truthy(name:find("large_kernel%.LoRA[12]%.conv%.weight$"), name) end
  end)

  it("draws uniform masks at the target density and multiplies them into the weights", function()
    lark.manual_seed(1)
    local model = mlp{64, 128, 128, 10}
    local m = Masking(model, {density = 0.4, init = "uniform", total_steps = 100, seed = 3})
    local overall, per = m:density()
    assert_near(overall, 0.4, 0.015)
    for name, d in pairs(per) do assert_near(d, 0.4, 0.05) end
    for _, name in ipairs(m.names) do
      local p = m.params[name]
      assert.are.equal(0, p:masked_select(m.masks[name]:logical_not()):abs():sum():item())
      assert.are.same(m.masks[name]:table(), p:ne(0):table()) -- randn weights are never exactly 0
    end
    -- the same seed draws the same masks
    local model2 = mlp{64, 128, 128, 10}
    local m2 = Masking(model2, {density = 0.4, init = "uniform", total_steps = 100, seed = 3})
    assert.is_true(same_masks(m.masks, m2.masks))
  end)

  it("gives ERK densities by the official formula, with the iterative dense-layer adjustment", function()
    local model = mlp{10, 20, 20, 5} -- weights [20,10], [20,20], [5,20]
    -- raw = (sum shape)/(prod shape) = 30/200, 40/400, 25/100; density 0.4: eps = 0.4*700 / 95
    local m = Masking(model, {density = 0.4, init = "ERK", total_steps = 100})
    local eps = 280 / 95
    assert_near(m.target_densities["0.weight"], eps * 0.15, 1e-12)
    assert_near(m.target_densities["2.weight"], eps * 0.1, 1e-12)
    assert_near(m.target_densities["4.weight"], eps * 0.25, 1e-12)
    -- density 0.7: eps = 490/95 makes layer 3 exceed 1, so it is dense and
    -- eps = (0.7*600 - 0.3*100) / (0.15*200 + 0.1*400) = 390/70
    local d, e, dense = R.erk_densities({{name = "a", shape = {20, 10}, numel = 200}, {name = "b", shape = {20, 20},
      numel = 400}, {name = "c", shape = {5, 20}, numel = 100}}, 0.7)
    assert_near(e, 390 / 70, 1e-12)
    assert.are.same({c = true}, dense)
    assert_near(d.a, 390 / 70 * 0.15, 1e-12)
    assert_near(d.b, 390 / 70 * 0.1, 1e-12)
    assert.are.equal(1.0, d.c)
    -- the expected number of non-zeros is density * total
    assert_near(d.a * 200 + d.b * 400 + d.c * 100, 0.7 * 700, 1e-9)
    -- the dense layer comes out with realised density 1 and is dropped from the mask set, as officially
    local m7 = Masking(mlp{10, 20, 20, 5}, {density = 0.7, init = "ERK", total_steps = 100})
    assert.is_nil(m7.masks["4.weight"])
    assert.are.same({"0.weight", "2.weight"}, m7.names)
  end)

  it("takes SNIP's per-layer ratios (fraction of scores above the global threshold) and draws Bernoulli masks", function()
    lark.manual_seed(2)
    local model = mlp{16, 32, 32, 4}
    local x, y = batch(32, 16, 4)
    -- reference: |w * grad| by autograd, then the thresholding by plain Lua sorting
    for _, p in ipairs(model:parameters()) do p.grad = nil end
    lark.cross_entropy(model(x), y, "mean", 0):backward()
    local names = {"0.weight", "2.weight", "4.weight"}
    local params = {}
    for name, p in model:named_parameters() do params[name] = p end
    local all, per, total = {}, {}, 0
    for _, name in ipairs(names) do
      local s = flat_numbers((params[name]:detach() * params[name].grad):abs():table())
      per[name] = s
      for _, v in ipairs(s) do all[#all + 1] = v; total = total + v end
    end
    for _, p in ipairs(model:parameters()) do p.grad = nil end
    table.sort(all, function(a, b) return a > b end)
    local k = math.floor(#all * 0.3)
    local thr = all[k]
    local want = {}
    for _, name in ipairs(names) do
      local below = 0
      for _, v in ipairs(per[name]) do if v <= thr then below = below + 1 end end
      want[name] = 1 - below / #per[name]
    end
    local m = Masking(model, {density = 0.3, init = "snip", snip_batch = {x, y}, total_steps = 100, dense_threshold = false})
    for _, name in ipairs(names) do assert_near(m.target_densities[name], want[name], 1.5 / #per[name]) end
    -- ratios differ between layers (it is not uniform), the total is about 0.3
    local expect_total = 0
    for _, name in ipairs(names) do expect_total = expect_total + want[name] * #per[name] end
    assert_near(expect_total / #all, 0.3, 0.01)
    assert_near((m:density()), 0.3, 0.05)
    -- gradients are left as they were (none)
    for _, p in ipairs(model:parameters()) do assert.is_nil(p.grad) end
    expect_error("snip_batch", Masking, mlp{4, 4}, {init = "snip", total_steps = 1})
  end)

  it("runs SNIP on a SLaK model in train mode and leaves its BN statistics and gradients as they were", function()
    lark.manual_seed(3)
    local S = require "recipes.slak"
    local model = S.slak{dims = {8, 16}, depths = {1, 1}, kernel_size = {13, 9, 5}, width_factor = 1, in_channels = 1,
      num_classes = 10}
    local before = {}
    for name, b in model:named_buffers() do before[name] = b:clone() end
    local x, y = lark.randn(4, 1, 32, 32), lark.randint(1, 11, {4})
    local m = Masking(model, {density = 0.6, init = "snip", snip_batch = {x, y}, total_steps = 10})
    for name, b in model:named_buffers() do assert.are.same(before[name]:table(), b:table(), name) end
    for _, p in ipairs(model:parameters()) do assert.is_nil(p.grad) end
    assert_near((m:density()), 0.6, 0.05)
  end)

  it("prunes the smallest-magnitude active weights and never counts inactive ones", function()
    local w = lark.tensor({{0.5, -0.1, 0.0, 2.0}, {-0.05, 0.3, 0.0, -0.7}})
    local mask = lark.tensor({{true, true, false, true}, {true, true, false, true}})
    local new = R.magnitude_prune{weight = w, mask = mask, n_remove = 2}
    assert.are.same({{true, false, false, true}, {false, true, false, true}}, new:table())
    -- an active weight that is exactly 0 goes first, an inactive one is never "removed" twice
    local w2 = lark.tensor({0.0, 0.0, 0.4, 0.2})
    local m2 = lark.tensor({false, true, true, true})
    assert.are.same({false, false, true, false}, R.magnitude_prune{weight = w2, mask = m2, n_remove = 2}:table())
  end)

  it("in an update removes ceil(p * nnz) smallest weights per tensor and regrows positions at 0", function()
    lark.manual_seed(4)
    local model = mlp{32, 64, 10}
    local m = Masking(model, {density = 0.5, init = "uniform", prune_rate = 0.3, decay = "constant",
      update_frequency = 1, exact_growth = true})
    local before = snapshot(m)
    local w_before = {}
    for _, name in ipairs(m.names) do w_before[name] = m.params[name]:clone() end
    -- capture the pruned masks through a wrapping rule
    local pruned = {}
    local prune = m.rules.prune
    m.rules.prune = function(ctx)
      local out = prune(ctx)
      pruned[ctx.name] = out
      assert.are.equal(math.ceil(0.3 * count(ctx.mask)), ctx.n_remove)
      return out
    end
    m:step()
    for _, name in ipairs(m.names) do
      local old, p, wb = before[name], m.params[name], w_before[name]
      local gone = old:logical_and(pruned[name]:logical_not())
      local kept = pruned[name]
      assert.are.equal(math.ceil(0.3 * count(old)), count(gone))
      -- every pruned |w| <= every surviving |w|
      local max_gone = wb:abs():masked_select(gone):max():item()
      local min_kept = wb:abs():masked_select(kept):min():item()
      assert.is_true(max_gone <= min_kept, name)
      -- exact growth: the same count back, and the new positions are exactly 0
      assert.are.equal(count(old), count(m.masks[name]))
      local newly = m.masks[name]:logical_and(old:logical_not())
      assert.is_true(count(newly) > 0)
      assert.are.equal(0, p:masked_select(newly):abs():sum():item())
      -- weights that stayed active kept their values
      local stayed = m.masks[name]:logical_and(old)
      assert.are.same(wb:masked_select(stayed):table(), p:masked_select(stayed):table())
    end
  end)

  it("prunes globally with global_prune: the smallest |w| over all masked tensors", function()
    lark.manual_seed(5)
    local model = mlp{16, 16, 16}
    local m = Masking(model, {density = 0.6, init = "uniform", prune_rate = 0.25, decay = "constant",
      update_frequency = 1, global_prune = true, exact_growth = true})
    do
      local g <close> = lark.no_grad()
      model[3].weight:mul_(10) -- the second layer's weights are much larger: it should lose (almost) nothing
    end
    local before = snapshot(m)
    local vals, total = {}, 0
    for _, name in ipairs(m.names) do
      total = total + count(m.masks[name])
      for _, v in ipairs(m.params[name]:abs():masked_select(m.masks[name]):table()) do vals[#vals + 1] = v end
    end
    table.sort(vals)
    local r = math.ceil(0.25 * total)
    local counts = {}
    m.rules.prune = function(ctx)
      counts[ctx.name] = ctx.n_remove
      return R.magnitude_prune(ctx)
    end
    m:step()
    assert.are.equal(r, counts["0.weight"] + counts["2.weight"])
    local thr = vals[r]
    local want = 0
    for _, v in ipairs(m.params["0.weight"]:abs():masked_select(before["0.weight"]):table()) do
      if v <= thr then want = want + 1 end
    end
    assert.are.equal(want, counts["0.weight"])
    assert.is_true(counts["0.weight"] > counts["2.weight"])
  end)

  for _, growth in ipairs{"random", "gradient", "momentum"} do
    it("keeps the density on target through many updates with " .. growth .. " growth", function()
      lark.manual_seed(6)
      local model = mlp{20, 48, 48, 5}
      local opt = optim.AdamW(model, {lr = 1e-2, weight_decay = 0.05})
      local m = Masking(model, {density = 0.4, init = "uniform", prune_rate = 0.5, growth = growth,
        update_frequency = 3, total_steps = 60, optimizer = opt, exact_growth = growth == "random",
        dense_gradients = growth ~= "random"})
      local nnz0 = {}
      for _, name in ipairs(m.names) do nnz0[name] = count(m.masks[name]) end
      local changed = 0
      for step = 1, 60 do
        local before = snapshot(m)
        local x, y = batch(16, 20, 5)
        train_step(model, m, opt, x, y)
        local same = same_masks(before, m.masks)
        if step % 3 ~= 0 then
          assert.is_true(same, "masks changed at step " .. step .. ", which is not an update step")
        elseif not same then
          changed = changed + 1
        end
        for _, name in ipairs(m.names) do assert.are.equal(nnz0[name], count(m.masks[name])) end
      end
      assert.is_true(changed >= 15, "masks changed at only " .. changed .. " of 20 update steps")
      assert.are.equal(20, #m.history)
      -- the prune rate decays by cosine to 0.005
      assert_near(m.history[#m.history].prune_rate, 0.005, 1e-12)
      assert_near(m.history[1].prune_rate, 0.005 + (0.5 - 0.005) * (1 + math.cos(math.pi * 3 / 60)) / 2, 1e-12)
    end)
  end

  it("keeps the density in expectation with the official (inexact) random growth", function()
    lark.manual_seed(7)
    local model = mlp{64, 128, 10}
    local opt = optim.SGD(model, {lr = 0.05, momentum = 0.9})
    local m = Masking(model, {density = 0.4, init = "uniform", prune_rate = 0.3, decay = "constant",
      update_frequency = 2, total_steps = 100, optimizer = opt})
    local d0 = m:density()
    local ds = {}
    for _ = 1, 40 do
      local x, y = batch(16, 64, 10)
      train_step(model, m, opt, x, y)
      ds[#ds + 1] = (m:density())
    end
    local mean = 0
    for _, d in ipairs(ds) do mean = mean + d end
    mean = mean / #ds
    assert_near(mean, d0, 0.02)
    assert_near(ds[#ds], d0, 0.03)
    assert.is_true(ds[#ds] ~= d0) -- not exact
  end)

  it("zeroes the gradients of inactive weights, unless dense gradients are kept", function()
    lark.manual_seed(8)
    local x, y = batch(8, 12, 3)
    for _, dense in ipairs{false, true} do
      local model = mlp{12, 24, 3}
      local m = Masking(model, {density = 0.3, init = "uniform", total_steps = 10, dense_gradients = dense})
      lark.cross_entropy(model(x), y, "mean", 0):backward()
      m:after_backward()
      for _, name in ipairs(m.names) do
        local g = m.params[name].grad:masked_select(m.masks[name]:logical_not()):abs():sum():item()
        if dense then assert.is_true(g > 0) else assert.are.equal(0, g) end
      end
    end
    -- gradient growth keeps a dense copy before an update step even when gradients are masked
    local model = mlp{12, 24, 3}
    local m = Masking(model, {density = 0.3, init = "uniform", total_steps = 10, growth = "gradient",
      dense_gradients = false, update_frequency = 1})
    assert.is_false(m.opts.dense_gradients)
    lark.cross_entropy(model(x), y, "mean", 0):backward()
    m:after_backward()
    local name = m.names[1]
    assert.is_true(m._dense_grads[name]:masked_select(m.masks[name]:logical_not()):abs():sum():item() > 0)
    assert.is_true(Masking(mlp{4, 4}, {init = "uniform", growth = "gradient", total_steps = 1}).opts.dense_gradients)
  end)

  it("grows where the dense gradient is largest with gradient growth", function()
    lark.manual_seed(9)
    local model = mlp{12, 24, 3}
    local m = Masking(model, {density = 0.3, init = "uniform", total_steps = 10, growth = "gradient", decay = "constant",
      update_frequency = 1})
    local x, y = batch(8, 12, 3)
    lark.cross_entropy(model(x), y, "mean", 0):backward()
    m:after_backward()
    local before = snapshot(m)
    local grads = {}
    for _, name in ipairs(m.names) do grads[name] = m.params[name].grad:clone() end
    local pruned = {}
    local prune = m.rules.prune
    m.rules.prune = function(ctx) pruned[ctx.name] = prune(ctx) return pruned[ctx.name] end
    m:step()
    for _, name in ipairs(m.names) do
      local grown = m.masks[name]:logical_and(pruned[name]:logical_not())
      local not_grown = pruned[name]:logical_not():logical_and(m.masks[name]:logical_not())
      local a = grads[name]:abs()
      assert.is_true(a:masked_select(grown):min():item() >= a:masked_select(not_grown):max():item())
      assert.are.equal(count(before[name]), count(m.masks[name]))
    end
  end)

  for _, which in ipairs{"SGD", "AdamW"} do
    it("keeps inactive weights exactly 0 with " .. which .. " (momentum and weight decay)", function()
      lark.manual_seed(10)
      local model = ConvNet()
      local opt = which == "SGD" and optim.SGD(model, {lr = 0.1, momentum = 0.9, weight_decay = 1e-3, nesterov = true})
        or optim.AdamW(model, {lr = 1e-2, weight_decay = 0.1})
      local m = Masking(model, {density = 0.4, init = "ERK", total_steps = 40, update_frequency = 5, optimizer = opt,
        growth = "momentum", reset_optimizer_state = true})
      for _ = 1, 25 do
        local x = lark.randn(4, 1, 8, 8)
        local y = lark.randint(1, 5, {4})
        train_step(model, m, opt, x, y)
        for _, name in ipairs(m.names) do
          local inv = m.masks[name]:logical_not()
          assert.are.equal(0, m.params[name]:masked_select(inv):abs():sum():item(), name)
          local buf = opt.state[name].momentum_buffer
          if buf then assert.are.equal(0, buf:masked_select(inv):abs():sum():item()) end
        end
      end
      assert.is_true(#m.history == 5)
    end)
  end

  it("resets the optimizer state of regrown positions with reset_optimizer_state", function()
    lark.manual_seed(11)
    local model = mlp{12, 24, 3}
    local opt = optim.AdamW(model, {lr = 1e-2})
    local m = Masking(model, {density = 0.3, init = "uniform", total_steps = 100, update_frequency = 4, optimizer = opt,
      reset_optimizer_state = true, dense_gradients = true})
    for _ = 1, 3 do train_step(model, m, opt, batch(8, 12, 3)) end
    local before = snapshot(m)
    train_step(model, m, opt, batch(8, 12, 3))
    for _, name in ipairs(m.names) do
      local newly = m.masks[name]:logical_and(before[name]:logical_not())
      assert.is_true(count(newly) > 0)
      assert.are.equal(0, opt.state[name].exp_avg:masked_select(newly):abs():sum():item())
      assert.are.equal(0, opt.state[name].exp_avg_sq:masked_select(newly):abs():sum():item())
      -- elsewhere the (dense-gradient) moments are non-zero
      assert.is_true(opt.state[name].exp_avg_sq:masked_select(before[name]):abs():sum():item() > 0)
    end
  end)

  it("updates an EMA with the official masked formula", function()
    lark.manual_seed(12)
    local model = mlp{6, 8, 3}
    local ema = optim.ModelEma(model, {decay = 0.9})
    local m = Masking(model, {density = 0.5, init = "uniform", total_steps = 10, dense_threshold = false})
    local name = "0.weight"
    local e = ema.tensors[name]
    do -- some EMA entries are 0 where the mask is on: those are "newly active"
      local g <close> = lark.no_grad()
      e:copy_(lark.randn(8, 6))
      e:narrow(1, 1, 2):zero_()
      model[1].weight:add_(lark.randn(8, 6)):masked_fill_(m.masks[name]:logical_not(), 0)
    end
    local e0, w, mask = flat_numbers(e:table()), flat_numbers(model[1].weight:detach():table()), flat(m.masks[name])
    local bias0, bias = flat_numbers(ema.tensors["0.bias"]:table()), flat_numbers(model[1].bias:detach():table())
    m:ema_update(ema, model)
    local got = flat_numbers(e:table())
    for i = 1, #got do
      local mk = mask[i] and 1 or 0
      local newly = (mask[i] and e0[i] == 0) and 1 or 0
      assert_near(got[i], mk * (0.9 * e0[i] + 0.1 * w[i]) + newly * 0.9 * w[i], 1e-6)
    end
    local gb = flat_numbers(ema.tensors["0.bias"]:table())
    for i = 1, #gb do assert_near(gb[i], 0.9 * bias0[i] + 0.1 * bias[i], 1e-6) end
  end)

  it("round-trips its state through state_dict / load_state_dict and continues identically", function()
    lark.manual_seed(13)
    local model = mlp{10, 20, 4}
    local m = Masking(model, {density = 0.4, init = "uniform", total_steps = 50, update_frequency = 2, seed = 99})
    local opt = optim.SGD(model, {lr = 0.05})
    for _ = 1, 5 do train_step(model, m, opt, batch(8, 10, 4)) end
    local sd = m:state_dict()
    assert.are.equal(5, sd.step)
    assert.are.equal(99, sd.seed)
    -- a second Masking on a copy of the model, loaded from the state dict
    -- (drawing masks zeroes weights, so the weights are loaded after the Masking, as from a checkpoint)
    local model2 = mlp{10, 20, 4}
    local m2 = Masking(model2, {density = 0.9, init = "uniform", total_steps = 7, update_frequency = 2, seed = 1})
    model2:load_state_dict(model:state_dict())
    m2:load_state_dict(sd)
    assert.are.equal(5, m2.steps)
    assert.are.equal(m.prune_rate, m2.prune_rate)
    assert.are.equal(50, m2.total_steps)
    assert.is_true(same_masks(m.masks, m2.masks))
    -- both continue the same way (the next update, at step 6, draws the same)
    m:step()
    m2:step()
    assert.is_true(same_masks(m.masks, m2.masks))
    -- masks read back as uint8 (as a file might give them) load too; wrong names or shapes are errors
    local u8 = {}
    for k, v in pairs(sd.masks) do u8[k] = v:to("uint8") end
    m2:load_masks(u8)
    assert.is_true(same_masks(sd.masks, m2.masks))
    expect_error("'nope' is not a parameter", m2.load_masks, m2, {nope = lark.ones(2):bool()})
    expect_error("has shape [3], the parameter [20,10]", m2.load_masks, m2, {["0.weight"] = lark.ones(3):bool()})
  end)

  it("calls custom rules a recipe sets", function()
    lark.manual_seed(14)
    local model = mlp{10, 20, 4}
    local calls = {init = 0, prune = 0, grow = 0, schedule = 0}
    local m = Masking(model, {density = 0.5, init = "uniform", total_steps = 20, update_frequency = 2})
    m.rules.init = function(ctx)
      calls.init = calls.init + 1
      local d = {}
      for _, l in ipairs(ctx.layers) do d[l.name] = 0.25 end
      return d
    end
    m.rules.density_schedule = function(ctx)
      calls.schedule = calls.schedule + 1
      return 0.1
    end
    m.rules.grow = function(ctx)
      calls.grow = calls.grow + 1
      assert.is_true(ctx.n_grow >= 1)
      assert.are.equal(0.1, ctx.prune_rate)
      -- grow the first n_grow inactive positions in flat order
      local flat = ctx.mask:reshape(-1):to("float32")
      local score = lark.linspace(1, 0, flat:numel()):masked_fill(flat:gt(0), -1)
      return ctx.mask:logical_or(R.select_top(score, ctx.n_grow, ctx.mask:size()))
    end
    m:init()
    assert.are.equal(1, calls.init)
    assert_near((m:density()), 0.25, 0.07)
    local opt = optim.SGD(model, {lr = 0.01})
    for _ = 1, 4 do train_step(model, m, opt, batch(4, 10, 4)) end
    assert.are.equal(4, calls.schedule)
    assert.are.equal(4, calls.grow) -- two updates x two tensors
    assert.are.equal(0.1, m.history[1].prune_rate)
  end)

  it("rejects bad options clearly", function()
    local model = mlp{4, 4}
    expect_error("unknown option 'densty'", Masking, model, {densty = 0.5})
    expect_error("density is 2 (expected a number in [0, 1])", Masking, model, {density = 2, init = "uniform"})
    expect_error("init must be 'uniform', 'ERK', 'snip' or 'resume'", Masking, model, {init = "magic"})
    expect_error("update_frequency is 0", Masking, model, {update_frequency = 0})
    expect_error("no parameter to mask", Masking, model, {which = "large_kernels", init = "uniform"})
    local m = Masking(model, {init = "uniform", density = 0.5, update_frequency = 1})
    expect_error("needs total_steps", m.step, m)
    local m2 = Masking(model, {init = "uniform", density = 0.5, update_frequency = 1, total_steps = 3, growth = "momentum"})
    expect_error("momentum growth needs optimizer state", m2.step, m2)
  end)

  describe("with recipes/train.lua", function()
    local train = require "recipes.train"
    local data = require "lark.data"
    if not pcall(data.digits, {train = true}) then
      pending("sklearn digits are not installed (bash examples/get_data.sh digits)")
      return
    end
    it("trains a sparse MLP on digits: density stays on target, accuracy far above chance", function()
      local s = train.build{model = "mlp", data = "digits", epochs = 4, batch_size = 32, lr = 5e-3, seed = 1,
        quiet = true, eval_batch_size = 500, ema = 0.99}
      local m = Masking(s.model, {density = 0.4, init = "ERK", prune_rate = 0.3, update_frequency = 20,
        exact_growth = true, seed = 1})
      local nnz0 = {}
      for _, name in ipairs(m.names) do nnz0[name] = count(m.masks[name]) end
      local d0 = m:density()
      local r = train.run(s, m:hooks())
      assert.are.equal(4 * (1500 // 32), m.steps)
      assert.are.equal(m.steps, m.total_steps)
      assert.are.equal(m.steps // 20, #m.history)
      assert.are.equal(d0, (m:density()))
      for _, name in ipairs(m.names) do
        assert.are.equal(nnz0[name], count(m.masks[name]))
        assert.are.equal(0, m.params[name]:masked_select(m.masks[name]:logical_not()):abs():sum():item())
        assert.are.equal(0, s.ema.tensors[name]:masked_select(m.masks[name]:logical_not()):abs():sum():item())
      end
      assert.are.equal(m.masks, s.masks)
      assert.is_true(r.test_acc > 0.8, string.format("test accuracy %.3f", r.test_acc))
    end)

    it("resumes from a train.lua checkpoint (masks saved there) exactly as the uninterrupted run", function()
      local out = os.tmpname()
      os.remove(out)
      local cfg = {model = "mlp", data = "digits", epochs = 2, batch_size = 64, lr = 5e-3, seed = 3, quiet = true,
        ema = 0.9, train_limit = 640, test_limit = 100}
      local opts = {density = 0.3, init = "uniform", prune_rate = 0.5, update_frequency = 4, seed = 5}
      local function run(c, stop_after_first)
        local s = train.build(c)
        local o = {}
        for k, v in pairs(opts) do o[k] = v end
        o.masks = s.masks -- nil unless resumed: then the saved masks are taken, nothing is drawn
        local m = Masking(s.model, o)
        local hooks = m:hooks()
        if stop_after_first then hooks.on_epoch_end = function(st) st.stop = true end end
        train.run(s, hooks)
        return m, s
      end
      local full = run(cfg)
      local c1 = {}
      for k, v in pairs(cfg) do c1[k] = v end
      c1.out = out
      run(c1, true)
      local resumed, s2 = run({resume = out .. "/checkpoint.h5", out = ""})
      assert.are.equal(full.steps, resumed.steps)
      assert.are.equal(full.prune_rate, resumed.prune_rate)
      assert.is_true(same_masks(full.masks, resumed.masks))
      for _, name in ipairs(full.names) do
        assert.are.same(full.params[name]:table(), resumed.params[name]:table())
      end
      assert.is_true(s2.ema ~= nil)
      os.execute("rm -rf '" .. out .. "'")
    end)
  end)
end)
