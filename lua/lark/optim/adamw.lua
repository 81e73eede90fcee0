--- lark.optim.AdamW: Adam with decoupled weight decay, as torch.optim.AdamW.
--
--   local opt = lark.optim.AdamW(lark.optim.param_groups(model, {weight_decay = 0.05}), {lr = 4e-3})
--
-- Per step t (counted per parameter) and parameter (PyTorch's rule):
--   p = p * (1 - lr * weight_decay)
--   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
--   (amsgrad: vmax = max(vmax, v), used in place of v below)
--   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
-- One fused C call (lark.adamw_step_) updates each parameter group; state: step, exp_avg,
-- exp_avg_sq and, with amsgrad, max_exp_avg_sq.
local core = require "lark.core"
local optimizer = require "lark.optim.optimizer"

local AdamW = {}
AdamW.__index = AdamW
AdamW.__name = "lark.optim.AdamW"
AdamW.type = "AdamW"

local defaults = {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-2, amsgrad = false, maximize = false}

function AdamW:_check_group(g, level)
  level = (level or 2) + 1
  local w = self.what
  local function num(key, v, ok, expect)
    if type(v) ~= "number" or not ok(v) then
      error(string.format("%s: %s is %s (expected %s)", w, key, tostring(v), expect), level)
    end
  end
  num("lr", g.lr, function(v) return v >= 0 end, "a number >= 0")
  num("eps", g.eps, function(v) return v >= 0 end, "a number >= 0")
  num("weight_decay", g.weight_decay, function(v) return v >= 0 end, "a number >= 0")
  if type(g.betas) ~= "table" or #g.betas ~= 2 then
    error(string.format("%s: betas must be a table {beta1, beta2}, got %s", w, tostring(g.betas)), level)
  end
  num("betas[1]", g.betas[1], function(v) return v >= 0 and v < 1 end, "0 <= beta1 < 1")
  num("betas[2]", g.betas[2], function(v) return v >= 0 and v < 1 end, "0 <= beta2 < 1")
  if type(g.amsgrad) ~= "boolean" then error(w .. ": amsgrad must be a boolean, got " .. type(g.amsgrad), level) end
  if type(g.maximize) ~= "boolean" then error(w .. ": maximize must be a boolean, got " .. type(g.maximize), level) end
end

function AdamW:_update(group, ps, gs, names)
  local state = self.state
  local m, v, vmax, steps = {}, {}, group.amsgrad and {} or nil, {}
  for i = 1, #names do
    local st = state[names[i]]
    if st then
      m[i], v[i], steps[i] = st.exp_avg or false, st.exp_avg_sq or false, (st.step or 0) + 1
      if vmax then vmax[i] = st.max_exp_avg_sq or false end
    else
      m[i], v[i], steps[i] = false, false, 1
      if vmax then vmax[i] = false end
    end
  end
  core.adamw_step_(ps, gs, m, v, vmax, steps, group, names)
  -- only after the update succeeded: a failed step leaves the state as it was
  for i = 1, #names do
    local st = state[names[i]]
    if not st then
      st = {}
      state[names[i]] = st
    end
    st.step, st.exp_avg, st.exp_avg_sq = steps[i], m[i], v[i]
    if vmax then st.max_exp_avg_sq = vmax[i] end
  end
end

--- lark.optim.AdamW(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-2,
-- amsgrad = false, maximize = false}): params is a model, a tensor, an array of tensors or an
-- array of groups (see lark.optim.Optimizer).
local function new(params, opts)
  local self = setmetatable({}, AdamW)
  return optimizer.Optimizer.init(self, "AdamW", params, defaults, opts)
end

return setmetatable(AdamW, {__index = optimizer.Optimizer, __call = function(_, ...) return new(...) end})
