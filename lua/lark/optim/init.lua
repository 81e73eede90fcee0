--- lark.optim: optimizers, learning-rate schedules, gradient clipping and weight averaging.
--
--   local optim = lark.optim
--   local opt = optim.AdamW(optim.param_groups(model, {weight_decay = 0.05}), {lr = 4e-3})
--   local sched = optim.lr_scheduler.cosine(opt, {warmup_steps = 500, total_steps = 30000})
--   local ema = optim.ModelEma(model, {decay = 0.9999})
--   for it = 1, 30000 do
--     opt:zero_grad()
--     loss_of(model, batch()):backward()
--     optim.clip_grad_norm(model, 5.0)
--     opt:step(); sched:step(); ema:update(model)
--   end
--
-- Updates are fused C kernels over each parameter group (core/ops/optim.c). State is keyed by
-- parameter name: opt:state_dict() / opt:load_state_dict() survive a change in parameter order.
local optimizer = require "lark.optim.optimizer"

local optim = {}

optim.Optimizer = optimizer.Optimizer
optim.SGD = require "lark.optim.sgd"
optim.AdamW = require "lark.optim.adamw"
optim.lr_scheduler = require "lark.optim.lr_scheduler"
optim.ModelEma = require "lark.optim.ema"
optim.clip_grad_norm = require "lark.optim.clip"
optim.clip_grad_norm_ = optim.clip_grad_norm

--- optim.default_no_decay(name, p): the usual rule for parameters without weight decay: 1-D (and
-- 0-d) tensors, i.e. norm weights, scales and biases, and anything named "*.bias".
function optim.default_no_decay(name, p)
  return p:dim() <= 1 or name:sub(-5) == ".bias" or name == "bias"
end

--- optim.param_groups(model [, {weight_decay =, no_decay = fn(name, p) -> bool}]): the standard
-- two groups for an optimizer: {params, names, weight_decay = opts.weight_decay (the optimizer's
-- default when nil), name = "decay"} and {..., weight_decay = 0, name = "no_decay"}, the latter
-- holding what no_decay picks (default: optim.default_no_decay). Parameters with requires_grad
-- false are left out, as in timm.
function optim.param_groups(model, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("param_groups: options must be a table, got " .. type(opts), 2) end
  for k in pairs(opts) do
    if k ~= "weight_decay" and k ~= "no_decay" then
      error(string.format("param_groups: unknown option '%s' (expected weight_decay or no_decay)", tostring(k)), 2)
    end
  end
  local rule = opts.no_decay or optim.default_no_decay
  if type(rule) ~= "function" then error("param_groups: no_decay must be a function (name, p) -> boolean", 2) end
  if opts.weight_decay ~= nil and type(opts.weight_decay) ~= "number" then
    error("param_groups: weight_decay must be a number, got " .. type(opts.weight_decay), 2)
  end
  local names, tensors = optimizer.named_tensors(model, "param_groups")
  local decay = {params = {}, names = {}, weight_decay = opts.weight_decay, name = "decay"}
  local no_decay = {params = {}, names = {}, weight_decay = 0, name = "no_decay"}
  for i, p in ipairs(tensors) do
    if p.requires_grad then
      local g = rule(names[i], p) and no_decay or decay
      g.params[#g.params + 1], g.names[#g.names + 1] = p, names[i]
    end
  end
  return {decay, no_decay}
end

return optim
