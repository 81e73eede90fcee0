--- lark.sparse: SLaK's dynamic sparsity (prune and grow), with every rule a replaceable Lua function.
--
--   local Masking = require("lark.sparse").Masking
--   local m = Masking(model, {density = 0.6, init = "snip", snip_batch = {x, y}, prune_rate = 0.3,
--                             growth = "random", update_frequency = 100, total_steps = T, optimizer = opt})
--   for each batch: loss:backward(); m:after_backward(); opt:step(); m:step()
--   -- or with recipes/train.lua:  train.run(s, m:hooks())
--
-- What the official code does (../shared/reference/MODELS.md 2.3, SLaK's sparse_core.py), and how it
-- maps here:
--   * which = "all": one mask for every 2-D and 4-D parameter (convs, Linear weights, head);
--     "large_kernels": only the large depth-wise kernels (names with large_kernel.LoRA1 / LoRA2 /
--     lkb_origin / lkb_reparam); or a function(name, p) -> bool, or an array of names.
--   * init: layer densities from rules.init (uniform, ERK with its iterative dense-layer fix, SNIP
--     ratios; "resume" takes mask = (w ~= 0) as the official resume mode, or pass masks =); each mask is then an i.i.d. Bernoulli draw, rand < density_l (as the official code draws
--     with torch.rand; see draw_masks below). A tensor whose realised density is >= 0.99 is dropped
--     from the mask set and stays dense (dense_threshold; false keeps every mask).
--   * m:step() after each optimizer step: masks applied (w <- w * mask; an SGD momentum_buffer is
--     masked too, AdamW moments are not), prune rate scheduled, steps += 1, and every
--     update_frequency steps prune (magnitude, ceil(p * nnz) per tensor or, with global_prune, the
--     globally smallest) then grow (random in expectation, or exact; gradient; momentum), then the
--     masks applied again: positions that were inactive before the update start at exactly 0. A
--     weight pruned and regrown in the same update keeps its value (official: the mask is applied
--     only after growing).
--   * gradients: the official run never masks them (dense_gradients = true). With dense_gradients =
--     false, m:after_backward() zeroes the gradients at inactive positions; for gradient growth it
--     first keeps a copy of the dense gradient on the step before an update.
--   * EMA: m:ema_update(ema, model) is the official masked EMA: for masked tensors
--     ema <- mask * (d * ema + (1 - d) * w) + newly_active * d * w (newly_active: mask true, ema 0),
--     so pruned positions are 0 in the EMA and newly grown ones start from the live weight.
--
-- Fields: masks (name -> bool tensor; the same table for the whole run), names (masked names in
-- model order), rules (see lark.sparse.rules), steps, prune_rate, target_densities (the init rule's
-- densities, before any tensor was dropped as dense), opts.
local lark = require "lark"
local R = require "lark.sparse.rules"

local M = {rules = R}

local Masking = {}
Masking.__index = Masking
Masking.__name = "lark.sparse.Masking"
M.Masking = Masking

local defaults = {
  density = 0.6, init = "snip", prune_rate = 0.3, final_prune_rate = 0.005, growth = "random",
  update_frequency = 100, total_steps = false, decay = "cosine", which = "all", global_prune = false,
  exact_growth = false, reset_optimizer_state = false, dense_gradients = "auto", optimizer = false, seed = false,
  dense_threshold = 0.99, snip_batch = false, snip_loss = false, keep_dense_grad = false, verbose = false,
  masks = false,
}

local LARGE_KERNEL_PATTERNS = {"large_kernel%.LoRA1%.", "large_kernel%.LoRA2%.", "large_kernel%.lkb_origin%.",
  "large_kernel%.lkb_reparam%."}

local function is_large_kernel(name)
  if not name:match("weight$") then return false end
  for _, pat in ipairs(LARGE_KERNEL_PATTERNS) do
    if name:find(pat) then return true end
  end
  return false
end

local function shape_list(t)
  local s, out = t:size(), {}
  for i = 1, #s do out[i] = s[i] end
  return out
end

local function shape_str(t) return "[" .. table.concat(shape_list(t), ",") .. "]" end

local function check_opts(opts)
  if opts ~= nil and type(opts) ~= "table" then error("Masking: options must be a table, got " .. type(opts), 3) end
  local o = {}
  for k, v in pairs(defaults) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if defaults[k] == nil then
      local known = {}
      for key in pairs(defaults) do known[#known + 1] = key end
      table.sort(known)
      error(string.format("Masking: unknown option '%s' (expected one of %s)", tostring(k), table.concat(known, ", ")), 3)
    end
    o[k] = v
  end
  local function num(key, lo, hi, what)
    local v = o[key]
    if type(v) ~= "number" or v ~= v or v < lo or v > hi then
      error(string.format("Masking: %s is %s (expected %s)", key, tostring(v), what), 4)
    end
  end
  num("density", 0, 1, "a number in [0, 1]")
  num("prune_rate", 0, 1, "a number in [0, 1]")
  num("final_prune_rate", 0, 1, "a number in [0, 1]")
  if math.type(o.update_frequency) ~= "integer" or o.update_frequency < 1 then
    error("Masking: update_frequency is " .. tostring(o.update_frequency) .. " (expected an integer >= 1)", 3)
  end
  if o.total_steps ~= false and (type(o.total_steps) ~= "number" or o.total_steps <= 0) then
    error("Masking: total_steps is " .. tostring(o.total_steps) .. " (expected the number of optimizer steps, > 0)", 3)
  end
  if o.dense_gradients == "auto" then o.dense_gradients = o.growth == "gradient" end
  for _, k in ipairs{"global_prune", "exact_growth", "reset_optimizer_state", "dense_gradients", "keep_dense_grad"} do
    if type(o[k]) ~= "boolean" then error(string.format("Masking: %s must be a boolean, got %s", k, type(o[k])), 3) end
  end
  if o.seed ~= false and math.type(o.seed) ~= "integer" then
    error("Masking: seed must be an integer, got " .. tostring(o.seed), 3)
  end
  return o
end

-- The masked (name, parameter) pairs of the model, in its order.
local function select_params(model, which)
  local names, params, all = {}, {}, {}
  for name, p in model:named_parameters() do
    all[#all + 1] = p
    local take
    if which == "all" then
      take = p:dim() == 2 or p:dim() == 4
    elseif which == "large_kernels" then
      take = p:dim() >= 2 and is_large_kernel(name)
    elseif type(which) == "function" then
      take = which(name, p) and true or false
    elseif type(which) == "table" then
      take = false
      for _, n in ipairs(which) do
        if n == name then take = true end
      end
    else
      error("Masking: which must be 'all', 'large_kernels', a function(name, p) or an array of names, got "
        .. tostring(which), 3)
    end
    if take then names[#names + 1], params[name] = name, p end
  end
  if type(which) == "table" then
    for _, n in ipairs(which) do
      if not params[n] then error(string.format("Masking: which names '%s', which is not a parameter of the model", tostring(n)), 3) end
    end
  end
  if #names == 0 then error("Masking: no parameter to mask (which = " .. tostring(which) .. ")", 3) end
  return names, params, all
end

-- A seed for the draws of the update at `step`: a function of (seed, step), so a resumed run draws
-- what the uninterrupted one would have drawn.
local function mix(seed, step) return seed * 6364136223846793005 + step * 1442695040888963407 + 1 end

--- Masking(model, opts): builds the masks now (drawing them and multiplying the weights in).
-- opts (defaults): density = 0.6, init = "snip" ("uniform" | "ERK" | "snip"; snip needs snip_batch =
-- {x, y} or snip_loss = function(model) -> loss), prune_rate = 0.3, final_prune_rate = 0.005,
-- growth = "random" ("gradient" | "momentum"), update_frequency = 100, total_steps (needed by decay
-- "cosine"; the train hooks fill it in), decay = "cosine" | "constant", which = "all", global_prune =
-- false, exact_growth = false, reset_optimizer_state = false, dense_gradients (default: growth ==
-- "gradient"), optimizer (for momentum growth, resets and SGD momentum masking), seed (default
-- lark.initial_seed()), dense_threshold = 0.99 (false: keep every mask), keep_dense_grad = false (keep a
-- dense gradient copy for a custom grow rule), verbose = false, masks (name -> tensor, e.g. s.masks of a
-- resumed train.build: taken as they are instead of drawing; init = "resume" instead takes w ~= 0).
-- Drawing masks zeroes weights: when resuming, pass masks = (or init = "resume") rather than drawing.
function M.new(model, opts)
  if type(model) ~= "table" or type(model.named_parameters) ~= "function" then
    error("Masking: expected a model with named_parameters(), got " .. type(model), 2)
  end
  local o = check_opts(opts)
  local names, params, all = select_params(model, o.which)
  local self = setmetatable({model = model, opts = o, names = names, params = params, _all_params = all,
    masks = {}, _inv = {}, steps = 0, prune_rate = o.prune_rate, total_steps = o.total_steps or nil,
    optimizer = o.optimizer or nil, seed = o.seed or lark.initial_seed(), history = {}}, Masking)
  -- each instance owns its rules table, so replacing one never touches another Masking
  self.rules = {init = R.init, prune = R.prune, grow = R.grow, density_schedule = R.density_schedule}
  self.generator = lark.Generator(self.seed)
  if o.masks then
    -- resuming: the masks come from a checkpoint, nothing is drawn
    self:load_masks(o.masks)
    self.target_densities = {}
    for _, name in ipairs(self.names) do self.target_densities[name] = R.count(self.masks[name]) / self.masks[name]:numel() end
  else
    self:init()
  end
  return self
end

setmetatable(Masking, {__call = function(_, ...) return M.new(...) end})
setmetatable(M, {__call = function(_, ...) return M.new(...) end})

-- The module owning parameter `name` ("a.b.weight" -> the module named "a.b") and the key.
local function owner(self, name)
  if not self._modules then
    self._modules = {}
    if type(self.model.named_modules) == "function" then
      for n, mod in self.model:named_modules() do self._modules[n] = mod end
    end
  end
  local path, key = name:match("^(.*)%.([^.]+)$")
  if not path then return self.model, name end
  return self._modules[path], key
end

-- Installs the mask of `name` and returns it: on its weight's device (a rule may build it anywhere;
-- apply(), after_backward() and the masked conv need mask and weight on one device).
local function set_mask(self, name, mask)
  local p = self.params[name]
  if p and mask:device() ~= p:device() then mask = mask:to(p:device()) end
  self.masks[name] = mask
  self._inv[name] = mask:logical_not()
  -- a depth-wise Conv2d holding the mask runs the masked kernel (lark.dwconv2d_masked; on the CPU it
  -- skips the inactive taps); its weight gradient is dense when the rules need dense gradients
  local mod, key = owner(self, name)
  if key == "weight" and type(mod) == "table" and rawget(mod, "groups") ~= nil then
    rawset(mod, "weight_mask", mask)
    rawset(mod, "weight_mask_dense_grad", self.opts.dense_gradients or self.opts.growth == "gradient"
      or self.opts.keep_dense_grad)
  end
  return mask
end

--- m:init(): (re)draws every mask from rules.init and applies it. Called by the constructor.
function Masking:init()
  local layers = {}
  for _, name in ipairs(self.names) do
    local p = self.params[name]
    layers[#layers + 1] = {name = name, weight = p, shape = shape_list(p), numel = p:numel()}
  end
  local ctx = {masking = self, layers = layers, density = self.opts.density, mode = self.opts.init, step = self.steps,
    generator = self.generator}
  local got = self.rules.init(ctx)
  if type(got) ~= "table" then error("Masking: rules.init must return a table name -> density or bool mask", 2) end
  self.target_densities = {}
  for k in pairs(self.masks) do self.masks[k], self._inv[k] = nil, nil end
  local keep = {}
  for _, l in ipairs(layers) do
    local v = got[l.name]
    local mask
    if type(v) == "number" then
      self.target_densities[l.name] = v
      -- the official draw: (torch.rand(shape) < density), one uniform per entry
      mask = lark.rand(l.shape, {generator = self.generator}):lt(v):to(l.weight:device())
    elseif lark.is_tensor(v) then
      if v:size() ~= l.weight:size() then
        error(string.format("Masking: rules.init gave '%s' a mask of shape %s, the parameter is %s", l.name,
          shape_str(v), shape_str(l.weight)), 2)
      end
      mask = (v:dtype() == "bool" and v:clone() or v:ne(0)):to(l.weight:device())
      self.target_densities[l.name] = R.count(mask) / l.numel
    else
      error(string.format("Masking: rules.init gave no density or mask for '%s'", l.name), 2)
    end
    local thr = self.opts.dense_threshold
    if thr and R.count(mask) / l.numel >= thr then
      -- official: a tensor that came out (nearly) dense is removed from the mask set and stays dense
      self.params[l.name] = nil
    else
      keep[#keep + 1] = l.name
      set_mask(self, l.name, mask)
    end
  end
  self.names = keep
  self:apply()
end

--- m:set_optimizer(opt): the optimizer whose state (keyed by parameter name) momentum growth reads,
-- reset_optimizer_state clears and whose SGD momentum buffers are masked.
function Masking:set_optimizer(opt) self.optimizer = opt end

local function opt_state(self, name)
  local opt = self.optimizer
  return opt and opt.state and opt.state[name] or nil
end

-- Masks follow their weights: after model:cuda() (the parameters keep their identity and move), each
-- mask is moved to its weight's device the next time the Masking works on it.
local function follow_devices(self)
  for _, name in ipairs(self.names) do
    local p, mask = self.params[name], self.masks[name]
    if p and mask and mask:device() ~= p:device() then set_mask(self, name, mask) end
  end
end

--- m:apply(): weights <- weights * mask (under no_grad), and SGD momentum buffers likewise (as the
-- official apply_mask; AdamW moments are left alone).
function Masking:apply()
  follow_devices(self)
  local g <close> = lark.no_grad()
  for _, name in ipairs(self.names) do
    local inv = self._inv[name]
    self.params[name]:masked_fill_(inv, 0)
    local st = opt_state(self, name)
    if st and st.momentum_buffer then st.momentum_buffer:masked_fill_(inv, 0) end
  end
end

--- m:is_update_step([step]): whether optimizer step number `step` (default: the next one) prunes
-- and grows.
function Masking:is_update_step(step)
  step = step or (self.steps + 1)
  return step % self.opts.update_frequency == 0
end

--- m:after_backward(): call between backward and the optimizer step. Unless dense_gradients, the
-- gradients of inactive weights are zeroed; before an update step with gradient growth (or
-- keep_dense_grad) a copy of each dense gradient is kept first for the grow rule.
function Masking:after_backward()
  follow_devices(self)
  local keep = (self.opts.growth == "gradient" or self.opts.keep_dense_grad) and self:is_update_step()
  if keep then self._dense_grads = {} end
  local g <close> = lark.no_grad()
  for _, name in ipairs(self.names) do
    local grad = self.params[name].grad
    if grad then
      if keep then self._dense_grads[name] = grad:clone() end
      if not self.opts.dense_gradients then grad:masked_fill_(self._inv[name], 0) end
    end
  end
end

local function schedule(self)
  return self.rules.density_schedule{masking = self, step = self.steps, prune_rate = self.opts.prune_rate,
    final_prune_rate = self.opts.final_prune_rate, total_steps = self.total_steps, decay = self.opts.decay,
    generator = self.generator}
end

--- m:step(): call after every optimizer step: applies the masks, advances the prune-rate schedule
-- and the step count, and on every update_frequency-th step prunes and grows (m:update()).
function Masking:step()
  self:apply()
  self.steps = self.steps + 1
  self.prune_rate = schedule(self)
  if self.steps % self.opts.update_frequency == 0 then self:update() end
  self._dense_grads = nil
end

-- How many active weights each tensor loses under global magnitude pruning: the ceil(p * total nnz)
-- smallest |w| over every masked tensor, counted per tensor.
local function global_counts(self, p)
  local scores, total_nnz = {}, 0
  for i, name in ipairs(self.names) do
    local w, mask = self.params[name]:detach(), self.masks[name]
    total_nnz = total_nnz + R.count(mask)
    scores[i] = w:abs():masked_fill(self._inv[name], math.huge):reshape(-1):to("cpu"):to("float64")
  end
  local r = math.ceil(p * total_nnz)
  local counts = {}
  if r == 0 then
    for _, name in ipairs(self.names) do counts[name] = 0 end
    return counts
  end
  local all = lark.cat(scores, 1)
  local picked = R.select_top(all:neg(), r, all:size())
  local off = 0
  for i, name in ipairs(self.names) do
    local n = scores[i]:numel()
    counts[name] = R.count(picked:narrow(1, off + 1, n))
    off = off + n
  end
  return counts
end

--- m:update(): one prune-and-grow round now (m:step() calls it every update_frequency steps): every
-- tensor is pruned by rules.prune, then every tensor grows by rules.grow as many as it lost, then the
-- masks are applied. Returns {name -> {removed =, grown =}}.
function Masking:update()
  local g <close> = lark.no_grad()
  -- the draws of this update depend only on (seed, step)
  self.generator:manual_seed(mix(self.seed, self.steps))
  local p = self.prune_rate
  local counts = self.opts.global_prune and global_counts(self, p) or nil
  local old, removed, report = {}, {}, {}
  for _, name in ipairs(self.names) do
    local mask = self.masks[name]
    local nnz = R.count(mask)
    local ctx = {masking = self, name = name, weight = self.params[name], mask = mask, prune_rate = p,
      n_remove = counts and counts[name] or math.ceil(p * nnz), step = self.steps, generator = self.generator}
    local new = self.rules.prune(ctx)
    if not (lark.is_tensor(new) and new:dtype() == "bool" and new:size() == mask:size()) then
      error(string.format("Masking: rules.prune must return a bool tensor of shape %s for '%s'", shape_str(mask), name), 2)
    end
    old[name] = mask
    removed[name] = nnz - R.count(new)
    set_mask(self, name, new)
  end
  local dense = self._dense_grads
  for _, name in ipairs(self.names) do
    local mask = self.masks[name]
    local w = self.params[name]
    local ctx = {masking = self, name = name, weight = w, mask = mask, old_mask = old[name], n_grow = removed[name],
      growth = self.opts.growth, exact = self.opts.exact_growth, step = self.steps, generator = self.generator,
      prune_rate = p,
      grad = dense and dense[name] or w.grad, optimizer_state = opt_state(self, name)}
    local new = self.rules.grow(ctx)
    if not (lark.is_tensor(new) and new:dtype() == "bool" and new:size() == mask:size()) then
      error(string.format("Masking: rules.grow must return a bool tensor of shape %s for '%s'", shape_str(mask), name), 2)
    end
    new = set_mask(self, name, new)
    local newly = new:logical_and(old[name]:logical_not())
    report[name] = {removed = removed[name], grown = R.count(new) - R.count(mask), newly_active = R.count(newly)}
    if self.opts.reset_optimizer_state then
      local st = opt_state(self, name)
      if st then
        for _, k in ipairs{"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"} do
          if lark.is_tensor(st[k]) then st[k]:masked_fill_(newly, 0) end
        end
      end
    end
    -- positions inactive before this update start at exactly 0 (apply() below keeps the rest as is)
    w:masked_fill_(newly, 0)
  end
  self:apply()
  self.history[#self.history + 1] = {step = self.steps, prune_rate = p, density = (self:density())}
  if self.opts.verbose then
    print(string.format("sparse: step %d  prune rate %.4f  density %.4f", self.steps, p, (self:density())))
  end
  return report
end

--- m:density(): the overall density of the masked tensors (active / total) and a table name ->
-- density of each.
function Masking:density()
  local on, total, per = 0, 0, {}
  for _, name in ipairs(self.names) do
    local mask = self.masks[name]
    local c, n = R.count(mask), mask:numel()
    on, total, per[name] = on + c, total + n, c / n
  end
  return total > 0 and on / total or 1, per
end

--- m:ema_update(ema, model [, decay]): the official masked EMA update of a lark.optim.ModelEma: a
-- plain EMA for every tensor, then for masked ones ema <- mask * (d * ema + (1 - d) * w) +
-- newly_active * d * w, newly_active = mask true where the EMA was 0 before this update.
function Masking:ema_update(ema, model, decay)
  decay = decay == nil and ema.decay or decay
  local old = {}
  for _, name in ipairs(self.names) do
    local e = ema.tensors[name]
    if not e then error(string.format("Masking:ema_update: the EMA has no tensor '%s'", name), 2) end
    old[name] = e:eq(0)
  end
  getmetatable(ema).update(ema, model, decay) -- the class method, even when the instance's is wrapped
  local g <close> = lark.no_grad()
  for _, name in ipairs(self.names) do
    local e, mask = ema.tensors[name], self.masks[name]
    e:masked_fill_(self._inv[name], 0)
    local newly = mask:logical_and(old[name])
    e:add_((self.params[name]:detach() * decay):masked_fill(newly:logical_not(), 0))
  end
end

-- ---- state --------------------------------------------------------------------------------------------

--- m:state_dict(): {masks = {name -> bool tensor (copies)}, step, prune_rate, total_steps, seed,
-- generator (the generator's state table), density (target)}.
function Masking:state_dict()
  local masks = {}
  for _, name in ipairs(self.names) do masks[name] = self.masks[name]:clone() end
  return {masks = masks, step = self.steps, prune_rate = self.prune_rate, total_steps = self.total_steps,
    seed = self.seed, generator = self.generator:get_state(), density = self.opts.density}
end

--- m:load_masks(masks): copies masks (name -> tensor; bool, or any dtype where nonzero means
-- active, e.g. read back from HDF5) in and applies them. Every masked name must be there with the
-- right shape; names the model does not have are errors; a name that is masked in the file but was
-- dropped as dense here becomes masked again.
function Masking:load_masks(masks)
  if type(masks) ~= "table" then error("Masking:load_masks: expected a table name -> mask tensor, got " .. type(masks), 2) end
  local by_name = {}
  for name, p in self.model:named_parameters() do by_name[name] = p end
  for name, t in pairs(masks) do
    local p = by_name[name]
    if not p then error(string.format("Masking:load_masks: '%s' is not a parameter of the model", tostring(name)), 2) end
    if not lark.is_tensor(t) then error(string.format("Masking:load_masks: '%s' is a %s (expected a tensor)", name, type(t)), 2) end
    if t:size() ~= p:size() then
      error(string.format("Masking:load_masks: '%s' has shape %s, the parameter %s", name, shape_str(t), shape_str(p)), 2)
    end
  end
  for _, name in ipairs(self.names) do
    if masks[name] == nil then error(string.format("Masking:load_masks: the mask of '%s' is missing", name), 2) end
  end
  local names = {}
  for name in self.model:named_parameters() do
    if masks[name] ~= nil then names[#names + 1] = name end
  end
  for k in pairs(self.masks) do self.masks[k], self._inv[k] = nil, nil end
  self.names = names
  for _, name in ipairs(names) do
    local t = masks[name]
    local mask = (t:dtype() == "bool" and t:clone() or t:ne(0)):to(by_name[name]:device())
    self.params[name] = by_name[name]
    set_mask(self, name, mask)
  end
  self:apply()
end

--- m:load_state_dict(sd): restores what state_dict() gave (masks, step, prune rate, schedule
-- length, seed and generator state) and applies the masks.
function Masking:load_state_dict(sd)
  if type(sd) ~= "table" or type(sd.masks) ~= "table" then
    error("Masking:load_state_dict: expected a table with masks (as state_dict() makes)", 2)
  end
  local step = lark.is_tensor(sd.step) and sd.step:item() or sd.step
  if math.type(step) ~= "integer" and not (type(step) == "number" and step == math.floor(step)) then
    error("Masking:load_state_dict: step is " .. tostring(sd.step) .. " (expected an integer)", 2)
  end
  self:load_masks(sd.masks)
  self.steps = math.tointeger(step)
  if sd.total_steps then self.total_steps = sd.total_steps end
  if sd.seed then self.seed = math.tointeger(sd.seed) end
  if sd.generator then self.generator:set_state(sd.generator) elseif sd.seed then self.generator:manual_seed(self.seed) end
  self.prune_rate = sd.prune_rate or schedule(self)
end

-- ---- hooks for recipes/train.lua --------------------------------------------------------------------------

--- m:hooks(): {on_start, after_backward, after_step, on_end} for train.run. on_start takes the
-- optimizer and total_steps (steps per epoch * epochs) from the run when not given, restores masks
-- and the step count on --resume (s.masks from the checkpoint), publishes s.masks = m.masks (saved
-- in checkpoints) and, when the run keeps an EMA, makes it the masked EMA updated after the masks
-- (the official order: optimizer step, masks, prune/grow, EMA).
function Masking:hooks()
  local pending
  return {
    on_start = function(s)
      if not self.optimizer then self.optimizer = s.optimizer end
      if not self.total_steps then self.total_steps = #s.train_loader * s.cfg.epochs end
      if s.resumed_from and s.masks then
        self:load_masks(s.masks)
        self.steps = s.step or 0
        self.prune_rate = schedule(self)
      end
      s.masks = self.masks
      if s.ema then
        -- train.run updates the EMA before after_step; defer it until the masks are final
        s.ema.update = function(_, model, decay) pending = {model, decay} end
      end
    end,
    after_backward = function() self:after_backward() end,
    after_step = function(s)
      self:step()
      s.masks = self.masks
      if pending then
        local model, decay = pending[1], pending[2]
        pending = nil
        self:ema_update(s.ema, model, decay)
      end
    end,
    on_end = function(s)
      if s.ema then s.ema.update = nil end
    end,
  }
end

return M
