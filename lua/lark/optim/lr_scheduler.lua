--- lark.optim.lr_scheduler: learning-rate schedules stepped once per iteration.
--
--   local sched = lark.optim.lr_scheduler.cosine(opt, {warmup_steps = 500, total_steps = 30000, min_lr = 1e-6})
--   for it = 1, 30000 do ...; opt:step(); sched:step() end
--
-- A scheduler remembers each group's starting lr (`group.initial_lr`, set when the first scheduler
-- is made, as in PyTorch) and sets `group.lr = schedule(step, initial_lr)`; `step` counts the
-- sched:step() calls made so far, so the lr at construction is schedule(0, base). The pure
-- schedule functions (step, base_lr, opts) -> lr are exposed for recipes that want a table or a plot:
--
--   cosine_lr(step, base_lr, {warmup_steps = 0, total_steps =, min_lr = 0, warmup_start_lr = 0})
--       step < warmup: linear from warmup_start_lr to base_lr;
--       after: min_lr + (base_lr - min_lr) * (1 + cos(pi * progress)) / 2, progress =
--       (step - warmup_steps) / (total_steps - warmup_steps) clamped to [0, 1].
--   step_lr(step, base_lr, {step_size =, gamma = 0.1})    base_lr * gamma ^ floor(step / step_size)
--   constant_lr(step, base_lr, {warmup_steps = 0, warmup_start_lr = 0})   base_lr after a linear warm-up
--
-- min_lr and warmup_start_lr are absolute lrs, shared by every group.
local S = {}

local function check_opts(what, o, known)
  o = o or {}
  if type(o) ~= "table" then error(string.format("%s: options must be a table, got %s", what, type(o)), 3) end
  for k in pairs(o) do
    if not known[k] then
      local names = {}
      for n in pairs(known) do names[#names + 1] = n end
      table.sort(names)
      error(string.format("%s: unknown option '%s' (expected one of %s)", what, tostring(k), table.concat(names, ", ")), 3)
    end
  end
  return o
end

local function need_number(what, o, key, ok, expect, default)
  local v = o[key]
  if v == nil then v = default end
  if type(v) ~= "number" or not ok(v) then
    error(string.format("%s: %s is %s (expected %s)", what, key, tostring(v), expect), 3)
  end
  return v
end

local function nonneg(v) return v >= 0 end
local function nonneg_int(v) return v >= 0 and v == math.floor(v) end
local function pos_int(v) return v >= 1 and v == math.floor(v) end

local function warmup(step, base_lr, warmup_steps, start_lr)
  return start_lr + (base_lr - start_lr) * step / warmup_steps
end

--- S.cosine_lr(step, base_lr, opts): linear warm-up, then a half cosine down to min_lr at
-- total_steps (and min_lr after it).
function S.cosine_lr(step, base_lr, o)
  if type(o) ~= "table" or type(o.total_steps) ~= "number" then
    error("lr_scheduler.cosine_lr: expected options with total_steps", 2)
  end
  local ws = o.warmup_steps or 0
  if step < ws then return warmup(step, base_lr, ws, o.warmup_start_lr or 0) end
  local min_lr = o.min_lr or 0
  local span = o.total_steps - ws
  local progress = span > 0 and (step - ws) / span or 1
  if progress > 1 then progress = 1 end
  return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
end

--- S.step_lr(step, base_lr, opts): base_lr * gamma ^ floor(step / step_size).
function S.step_lr(step, base_lr, o)
  if type(o) ~= "table" or type(o.step_size) ~= "number" then
    error("lr_scheduler.step_lr: expected options with step_size", 2)
  end
  return base_lr * (o.gamma or 0.1) ^ (step // o.step_size)
end

--- S.constant_lr(step, base_lr, opts): base_lr, after an optional linear warm-up.
function S.constant_lr(step, base_lr, o)
  local ws = o and o.warmup_steps or 0
  if step < ws then return warmup(step, base_lr, ws, o.warmup_start_lr or 0) end
  return base_lr
end

-- ---- scheduler objects --------------------------------------------------------------------------

local Scheduler = {}
Scheduler.__index = Scheduler
S.Scheduler = Scheduler

local function new(kind, opt, fn, o)
  if type(opt) ~= "table" or type(opt.param_groups) ~= "table" then
    error(string.format("lr_scheduler.%s: expected an optimizer (with param_groups), got %s", kind, type(opt)), 3)
  end
  local self = setmetatable({kind = kind, optimizer = opt, fn = fn, options = o, last_step = 0, base_lrs = {}}, Scheduler)
  for i, g in ipairs(opt.param_groups) do
    if g.initial_lr == nil then g.initial_lr = g.lr end
    self.base_lrs[i] = g.initial_lr
  end
  self:_apply()
  return self
end

function Scheduler:_apply()
  for i, g in ipairs(self.optimizer.param_groups) do
    local base = self.base_lrs[i]
    if base == nil then -- a group added after the scheduler was made
      if g.initial_lr == nil then g.initial_lr = g.lr end
      base = g.initial_lr
      self.base_lrs[i] = base
    end
    g.lr = self.fn(self.last_step, base, self.options)
  end
end

--- sched:step(): advances one iteration and sets every group's lr.
function Scheduler:step()
  self.last_step = self.last_step + 1
  self:_apply()
end

--- sched:get_lr(): the current lr of each group (an array), as get_last_lr() in PyTorch.
function Scheduler:get_lr()
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr end
  return out
end
Scheduler.get_last_lr = Scheduler.get_lr

--- sched:state_dict(): {kind =, last_step =, base_lrs =, options =} (plain numbers).
function Scheduler:state_dict()
  local opts = {}
  for k, v in pairs(self.options or {}) do opts[k] = v end
  return {kind = self.kind, last_step = self.last_step, base_lrs = table.move(self.base_lrs, 1, #self.base_lrs, 1, {}),
          options = opts}
end

--- sched:load_state_dict(sd): resumes at sd.last_step with sd's base lrs, and sets the lrs.
function Scheduler:load_state_dict(sd)
  if type(sd) ~= "table" or type(sd.last_step) ~= "number" then
    error("lr_scheduler:load_state_dict: expected a table with last_step, as state_dict() makes", 2)
  end
  if sd.kind ~= nil and sd.kind ~= self.kind then
    error(string.format("lr_scheduler:load_state_dict: the state dict is for a %s schedule, this one is %s",
      tostring(sd.kind), self.kind), 2)
  end
  if sd.base_lrs and #sd.base_lrs ~= #self.optimizer.param_groups then
    error(string.format("lr_scheduler:load_state_dict: %d base lrs for %d parameter groups", #sd.base_lrs,
      #self.optimizer.param_groups), 2)
  end
  self.last_step = math.tointeger(sd.last_step) or sd.last_step
  if sd.base_lrs then
    for i, v in ipairs(sd.base_lrs) do
      self.base_lrs[i] = v
      self.optimizer.param_groups[i].initial_lr = v
    end
  end
  if sd.options and self.kind ~= "lambda" then
    local o = {}
    for k, v in pairs(sd.options) do o[k] = v end
    self.options = o
  end
  self:_apply()
end

--- lr_scheduler.cosine(opt, {warmup_steps = 0, total_steps =, min_lr = 0, warmup_start_lr = 0}).
function S.cosine(opt, o)
  local what = "lr_scheduler.cosine"
  o = check_opts(what, o, {warmup_steps = true, total_steps = true, min_lr = true, warmup_start_lr = true})
  local ws = need_number(what, o, "warmup_steps", nonneg_int, "an integer >= 0", 0)
  need_number(what, o, "total_steps", pos_int, "an integer >= 1", nil)
  need_number(what, o, "min_lr", nonneg, "a number >= 0", 0)
  need_number(what, o, "warmup_start_lr", nonneg, "a number >= 0", 0)
  if ws > o.total_steps then
    error(string.format("%s: warmup_steps (%d) is more than total_steps (%d)", what, ws, o.total_steps), 2)
  end
  return new("cosine", opt, S.cosine_lr, o)
end

--- lr_scheduler.step(opt, {step_size =, gamma = 0.1}): lr times gamma every step_size iterations.
function S.step(opt, o)
  local what = "lr_scheduler.step"
  o = check_opts(what, o, {step_size = true, gamma = true})
  need_number(what, o, "step_size", pos_int, "an integer >= 1", nil)
  need_number(what, o, "gamma", nonneg, "a number >= 0", 0.1)
  return new("step", opt, S.step_lr, o)
end

--- lr_scheduler.constant(opt [, {warmup_steps = 0, warmup_start_lr = 0}]): the groups' lr, after
-- an optional linear warm-up.
function S.constant(opt, o)
  local what = "lr_scheduler.constant"
  o = check_opts(what, o, {warmup_steps = true, warmup_start_lr = true})
  need_number(what, o, "warmup_steps", nonneg_int, "an integer >= 0", 0)
  need_number(what, o, "warmup_start_lr", nonneg, "a number >= 0", 0)
  return new("constant", opt, S.constant_lr, o)
end

--- lr_scheduler.lambda(opt, fn): any schedule, fn(step, base_lr) -> lr (LambdaLR, with the lr
-- itself returned rather than a factor).
function S.lambda(opt, fn)
  if type(fn) ~= "function" then
    error("lr_scheduler.lambda: expected a function (step, base_lr) -> lr, got " .. type(fn), 2)
  end
  return new("lambda", opt, function(step, base) return fn(step, base) end, nil)
end

return S
