--- lark.sparse.rules: the default rules of lark.sparse.Masking, as plain functions.
--
-- Masking calls four rules, each a function of one context table `ctx`; a recipe replaces any of
-- them on a Masking instance (`m.rules.grow = function(ctx) ... end`) and may call the defaults
-- below from its own rule. Every ctx also has `masking` (the Masking object), `step` (optimizer
-- steps taken) and `generator` (the Masking's lark.Generator: draw with {generator = ctx.generator}
-- so runs repeat and resume exactly).
--
--   init(ctx) -> {name -> density | bool mask}
--       ctx.layers: array of {name, weight, shape (plain list), numel}; ctx.density (overall target),
--       ctx.mode ("uniform" | "ERK" | "snip" | "resume"). A number is a layer density, drawn as i.i.d.
--       Bernoulli (as the official code does); a bool tensor is taken as the mask itself.
--   density_schedule(ctx) -> prune rate
--       ctx.prune_rate (initial p0), ctx.final_prune_rate (0.005), ctx.total_steps, ctx.decay. Called
--       after every optimizer step; the value at an update step is the rate that update uses.
--   prune(ctx) -> bool mask (new tensor; ctx.mask is not to be changed in place)
--       per masked tensor: ctx.name, ctx.weight, ctx.mask (current), ctx.prune_rate, ctx.n_remove (how
--       many active weights to drop: ceil(p * nnz), or this tensor's share of the global choice).
--   grow(ctx) -> bool mask (new tensor)
--       per masked tensor after every tensor was pruned: ctx.name, ctx.weight, ctx.mask (pruned),
--       ctx.old_mask (before pruning), ctx.n_grow (how many were removed), ctx.growth (the mode
--       name), ctx.exact (exact_growth), ctx.grad (the dense gradient of the last backward, or nil),
--       ctx.optimizer_state (the optimizer's state for this parameter, or nil).
local lark = require "lark"

local R = {}

-- ---- helpers ----------------------------------------------------------------------------------------

--- R.numel(t): the number of elements of a tensor.
function R.numel(t) return t:numel() end

--- R.count(mask): number of true entries of a bool tensor, as a Lua integer.
function R.count(mask) return math.tointeger(mask:sum():item()) end

--- R.select_top(scores, k, shape): a bool tensor of `shape` that is true at the k largest entries of
-- the flat float tensor `scores` (ties broken by topk's order). k <= 0 gives all false.
function R.select_top(scores, k, shape)
  local n = scores:numel()
  local dev = scores:device()
  local flat = lark.zeros({n}, {dtype = scores:dtype(), device = dev})
  if k > 0 then
    k = math.min(k, n)
    local _, idx = scores:topk(k)
    flat:scatter_add_(1, idx, lark.ones({k}, {dtype = scores:dtype(), device = dev}))
  end
  return flat:gt(0):view(shape)
end

--- R.score_inactive(mask, values): a flat score tensor that is `values` (same shape as mask, float)
-- where mask is false and -1 where it is true, so that the top entries are inactive positions.
function R.score_inactive(mask, values)
  return values:masked_fill(mask, -1):reshape(-1)
end

-- ---- init ------------------------------------------------------------------------------------------

--- R.uniform_densities(layers, density): every layer at `density`.
function R.uniform_densities(layers, density)
  local d = {}
  for _, l in ipairs(layers) do d[l.name] = density end
  return d
end

--- R.erk_densities(layers, density [, power = 1]): Erdos-Renyi-Kernel densities, the official
-- iteration: raw_l = (sum of shape_l / prod of shape_l)^power, epsilon = rhs / sum(raw_l * n_l) over
-- non-dense layers with rhs = sum(density * n_l) over them minus sum((1 - density) * n_l) over the
-- dense ones; while the largest epsilon * raw_l exceeds 1, the layer(s) with the largest raw_l are
-- made dense and epsilon is solved again. Returns {name -> density}, epsilon and the dense set.
function R.erk_densities(layers, density, power)
  power = power or 1
  local dense = {}
  local eps, raw
  while true do
    local divisor, rhs = 0, 0
    raw = {}
    for _, l in ipairs(layers) do
      local n = l.numel
      if dense[l.name] then
        rhs = rhs - n * (1 - density)
      else
        rhs = rhs + n * density
        local s = 0
        for _, v in ipairs(l.shape) do s = s + v end
        raw[l.name] = (s / n) ^ power
        divisor = divisor + raw[l.name] * n
      end
    end
    if divisor == 0 then error("Masking: ERK: every layer became dense (density too high?)", 3) end
    eps = rhs / divisor
    local max_raw = -math.huge
    for _, r in pairs(raw) do max_raw = math.max(max_raw, r) end
    if max_raw * eps > 1 then
      for name, r in pairs(raw) do
        if r == max_raw then dense[name] = true end
      end
    else
      break
    end
  end
  local d = {}
  for _, l in ipairs(layers) do d[l.name] = dense[l.name] and 1.0 or eps * raw[l.name] end
  return d, eps, dense
end

--- R.snip_densities(ctx): SNIP layer ratios as the official code takes them: one batch through the
-- model, score = |w * dL/dw| for every masked tensor, scores normalised by their total, threshold =
-- the k-th largest with k = floor(density * total); a layer's sparsity is the fraction of its
-- scores <= threshold and its density 1 - that (MODELS.md 2.3: only the ratio is used, the mask is
-- then a Bernoulli draw). The loss is masking.opts.snip_loss(model) when given, otherwise cross
-- entropy of model(x) against y for masking.opts.snip_batch = {x, y}. The model's gradients and
-- buffers (BN statistics) are restored afterwards, as the official deep copy leaves them.
function R.snip_densities(ctx)
  local m = ctx.masking
  local model, opts = m.model, m.opts
  if not opts.snip_loss and not (type(opts.snip_batch) == "table" and opts.snip_batch[1] and opts.snip_batch[2]) then
    error("Masking: init = 'snip' needs snip_batch = {x, y} (one training batch) or snip_loss = function(model) -> loss", 4)
  end
  local saved_grads, saved_bufs = {}, {}
  for _, p in ipairs(m._all_params) do
    saved_grads[p] = p.grad or false
    p.grad = nil
  end
  if model.named_buffers then
    for name, b in model:named_buffers() do saved_bufs[name] = {b, b:clone()} end
  end
  local loss
  do
    local g <close> = lark.enable_grad()
    if opts.snip_loss then
      loss = opts.snip_loss(model)
    else
      loss = lark.cross_entropy(model(opts.snip_batch[1]), opts.snip_batch[2], "mean", 0)
    end
    loss:backward()
  end
  local scores = {}
  for i, l in ipairs(ctx.layers) do
    local grad = l.weight.grad
    if not grad then error("Masking: snip: '" .. l.name .. "' got no gradient from the SNIP loss", 4) end
    scores[i] = (l.weight:detach() * grad):abs():reshape(-1)
  end
  for _, p in ipairs(m._all_params) do p.grad = saved_grads[p] or nil end
  do
    local g <close> = lark.no_grad()
    for _, e in pairs(saved_bufs) do e[1]:copy_(e[2]) end
  end
  local all = lark.cat(scores, 1)
  local norm = all:sum()
  all = all / norm
  local k = math.floor(all:numel() * ctx.density)
  local d = {}
  if k < 1 then
    for _, l in ipairs(ctx.layers) do d[l.name] = 0 end
    return d
  end
  local top = all:topk(k)
  local thr = top:narrow(1, k, 1):item()
  for i, l in ipairs(ctx.layers) do
    local below = R.count((scores[i] / norm):le(thr))
    d[l.name] = 1 - below / l.numel
  end
  return d
end

--- R.init(ctx): the default init rule: densities by ctx.mode ("uniform", "ERK" or "snip").
function R.init(ctx)
  if ctx.mode == "uniform" then return R.uniform_densities(ctx.layers, ctx.density) end
  if ctx.mode == "ERK" then return (R.erk_densities(ctx.layers, ctx.density)) end
  if ctx.mode == "snip" then return R.snip_densities(ctx) end
  if ctx.mode == "resume" then
    -- official: a sparse checkpoint is resumed with mask = (weight ~= 0)
    local d = {}
    for _, l in ipairs(ctx.layers) do d[l.name] = l.weight:detach():ne(0) end
    return d
  end
  error("Masking: init must be 'uniform', 'ERK', 'snip' or 'resume' (or set m.rules.init), got " .. tostring(ctx.mode), 3)
end

-- ---- prune-rate schedule ------------------------------------------------------------------------

--- R.density_schedule(ctx): the prune rate after ctx.step optimizer steps. decay "cosine" is the
-- official CosineDecay (torch CosineAnnealingLR with eta_min = final_prune_rate):
-- p(t) = pf + (p0 - pf) * (1 + cos(pi * t / T)) / 2, t clamped to T; "constant" keeps p0.
function R.density_schedule(ctx)
  if ctx.decay == "constant" then return ctx.prune_rate end
  if ctx.decay ~= "cosine" then
    error("Masking: decay must be 'cosine' or 'constant' (or set m.rules.density_schedule), got " .. tostring(ctx.decay), 3)
  end
  local T = ctx.total_steps
  if type(T) ~= "number" or T <= 0 then
    error("Masking: decay = 'cosine' needs total_steps (the number of optimizer steps of the run), got " .. tostring(T), 3)
  end
  local t = math.min(ctx.step, T)
  local pf = ctx.final_prune_rate
  return pf + (ctx.prune_rate - pf) * (1 + math.cos(math.pi * t / T)) / 2
end

-- ---- prune ----------------------------------------------------------------------------------------

--- R.magnitude_prune(ctx): drops the ctx.n_remove active weights of smallest |w| (inactive positions
-- never count). With n_remove == 0 it returns mask and (w ~= 0), as the official code does.
function R.magnitude_prune(ctx)
  local w, mask, r = ctx.weight:detach(), ctx.mask, ctx.n_remove
  if r <= 0 then return mask:logical_and(w:ne(0)) end
  -- the official code sorts |w| over the whole tensor (inactive entries are 0, so first) and clears
  -- the n0 + r smallest; scoring inactive entries below every |w| makes that exact when an active
  -- weight is also 0
  local score = w:abs():masked_fill(mask:logical_not(), -1):reshape(-1)
  local removed = R.select_top(score:neg(), R.numel(mask) - R.count(mask) + r, mask:size())
  return mask:logical_and(removed:logical_not())
end
R.prune = R.magnitude_prune

-- ---- grow -----------------------------------------------------------------------------------------

--- R.random_growth(ctx): each inactive position is switched on with probability n_grow / n_zero
-- (the official rule: the density holds in expectation; a just-pruned weight can come back). With
-- ctx.exact exactly n_grow inactive positions, chosen uniformly.
function R.random_growth(ctx)
  local mask, k = ctx.mask, ctx.n_grow
  local n_zero = R.numel(mask) - R.count(mask)
  if n_zero == 0 or k <= 0 then return mask end
  local r = lark.rand(mask:size(), {generator = ctx.generator}):to(mask:device())
  if ctx.exact then return mask:logical_or(R.select_top(R.score_inactive(mask, r), k, mask:size())) end
  local grown = mask:logical_or(r:lt(k / n_zero))
  if R.count(grown) == 0 then return mask end
  return grown
end

--- R.gradient_growth(ctx): the n_grow inactive positions of largest |grad| (the dense gradient).
function R.gradient_growth(ctx)
  local grad = ctx.grad
  if not grad then
    error(string.format("Masking: gradient growth needs the gradient of '%s' (call m:after_backward() after backward, "
      .. "or keep dense gradients)", ctx.name), 3)
  end
  return ctx.mask:logical_or(R.select_top(R.score_inactive(ctx.mask, grad:abs()), ctx.n_grow, ctx.mask:size()))
end

--- R.momentum_of(name, state): the official momentum score: exp_avg / (sqrt(exp_avg_sq) + 1e-8) for
-- Adam(W) state, the momentum_buffer for SGD; nil when the state has neither.
function R.momentum_of(state)
  if not state then return nil end
  if state.exp_avg and state.exp_avg_sq then return state.exp_avg / (state.exp_avg_sq:sqrt() + 1e-8) end
  return state.momentum_buffer
end

--- R.momentum_growth(ctx): the n_grow inactive positions of largest |momentum| (R.momentum_of).
function R.momentum_growth(ctx)
  local mom = R.momentum_of(ctx.optimizer_state)
  if not mom then
    error(string.format("Masking: momentum growth needs optimizer state (exp_avg/exp_avg_sq or momentum_buffer) for "
      .. "'%s': pass optimizer = opt, and use SGD with momentum > 0 or AdamW", ctx.name), 3)
  end
  return ctx.mask:logical_or(R.select_top(R.score_inactive(ctx.mask, mom:abs()), ctx.n_grow, ctx.mask:size()))
end

R.growth = {random = R.random_growth, gradient = R.gradient_growth, momentum = R.momentum_growth}

--- R.grow(ctx): the default grow rule: the growth mode named by ctx.growth.
function R.grow(ctx)
  local f = R.growth[ctx.growth]
  if not f then
    error("Masking: growth must be 'random', 'gradient' or 'momentum' (or set m.rules.grow), got " .. tostring(ctx.growth), 3)
  end
  return f(ctx)
end

return R
