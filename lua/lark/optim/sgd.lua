--- lark.optim.SGD: stochastic gradient descent with momentum, as torch.optim.SGD.
--
--   local opt = lark.optim.SGD(model, {lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 1e-4})
--
-- Per step and parameter (PyTorch's rule; weight decay is added to the gradient):
--   d = g + weight_decay * p
--   buf = d on the first step, then buf = momentum * buf + (1 - dampening) * d   (momentum > 0)
--   d = nesterov and d + momentum * buf or buf
--   p = p - lr * d
-- One fused C call (lark.sgd_step_) updates each parameter group; state: momentum_buffer.
local core = require "lark.core"
local optimizer = require "lark.optim.optimizer"

local SGD = setmetatable({}, {__index = optimizer.Optimizer})
SGD.__index = SGD
SGD.__name = "lark.optim.SGD"
SGD.type = "SGD"

local defaults = {momentum = 0, dampening = 0, nesterov = false, weight_decay = 0, maximize = false}

local function num(what, group, key, ok, expect, level)
  local v = group[key]
  if type(v) ~= "number" or not ok(v) then
    error(string.format("%s: %s is %s (expected %s)", what, key, tostring(v), expect), level)
  end
end

function SGD:_check_group(g, level)
  level = (level or 2) + 1
  local w = self.what
  num(w, g, "lr", function(v) return v >= 0 end, "a number >= 0", level)
  num(w, g, "momentum", function(v) return v >= 0 end, "a number >= 0", level)
  num(w, g, "dampening", function(v) return v == v and v > -math.huge and v < math.huge end, "a finite number", level)
  num(w, g, "weight_decay", function(v) return v >= 0 end, "a number >= 0", level)
  if type(g.nesterov) ~= "boolean" then error(w .. ": nesterov must be a boolean, got " .. type(g.nesterov), level) end
  if type(g.maximize) ~= "boolean" then error(w .. ": maximize must be a boolean, got " .. type(g.maximize), level) end
  if g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
    error(string.format("%s: nesterov needs momentum > 0 and dampening == 0 (got momentum %s, dampening %s)", w,
      tostring(g.momentum), tostring(g.dampening)), level)
  end
end

function SGD:_update(group, ps, gs, names)
  local state = self.state
  local bufs
  if group.momentum ~= 0 then
    bufs = {}
    for i = 1, #names do
      local st = state[names[i]]
      bufs[i] = st and st.momentum_buffer or false
    end
  end
  core.sgd_step_(ps, gs, bufs, group, names)
  if bufs then
    for i = 1, #names do
      local st = state[names[i]]
      if not st then
        st = {}
        state[names[i]] = st
      end
      st.momentum_buffer = bufs[i]
    end
  end
end

--- lark.optim.SGD(params, {lr =, momentum = 0, dampening = 0, nesterov = false, weight_decay = 0,
-- maximize = false}): params is a model, a tensor, an array of tensors or an array of groups (see
-- lark.optim.Optimizer). lr is required.
local function new(params, opts)
  local self = setmetatable({}, SGD)
  return optimizer.Optimizer.init(self, "SGD", params, defaults, opts, {lr = true})
end

return setmetatable(SGD, {__index = optimizer.Optimizer, __call = function(_, ...) return new(...) end})
