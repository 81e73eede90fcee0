--- lark.optim.Optimizer: what SGD and AdamW share, as torch.optim.Optimizer.
--
-- An optimizer holds `param_groups`, an array of groups; each group is a table with `params` (an
-- array of tensors), `names` (their names, the same length) and the hyper-parameters (lr,
-- weight_decay, ...), which may be changed between steps (`opt.param_groups[1].lr = 0.01`).
-- Per-parameter state lives in `opt.state[name]` and is keyed by the parameter's NAME, not its
-- position, so a checkpoint survives a change in parameter order.
--
-- `params` given to a constructor is one of:
--   * a module-like object with `named_parameters()` (an iterator of name, tensor), e.g. a lark.nn model;
--   * a tensor, or an array of tensors (named "1", "2", ...);
--   * an array of groups `{ {params = <module or tensors>, names = {...} (optional), lr = ..., ...}, ... }`
--     whose unset options take the optimizer's defaults.
-- Only lark.core and lark.autograd at load time: lark/init.lua requires this module.
local core = require "lark.core"
local autograd = require "lark.autograd"

local M = {}

local Optimizer = {}
Optimizer.__index = Optimizer
M.Optimizer = Optimizer

local is_tensor = core.is_tensor

local function has_named_parameters(x)
  if type(x) ~= "table" and type(x) ~= "userdata" then return false end
  local ok, f = pcall(function() return x.named_parameters end)
  return ok and type(f) == "function"
end

--- named_tensors(x, what, first_index): the names and tensors of `x`, which is a module-like
-- object (named_parameters()), a tensor or an array of tensors; unnamed tensors are named by their
-- position counted from first_index ("1", "2", ...). `what` prefixes the error messages.
function M.named_tensors(x, what, first_index, names)
  first_index = first_index or 1
  local ns, ts = {}, {}
  if has_named_parameters(x) then
    for name, p in x:named_parameters() do
      ns[#ns + 1], ts[#ts + 1] = name, p
    end
    return ns, ts
  end
  if is_tensor(x) then x = {x} end
  if type(x) ~= "table" then
    error(string.format("%s: expected a model (with named_parameters()), a tensor or an array of tensors, got %s",
      what, type(x)), 3)
  end
  if names ~= nil and (type(names) ~= "table" or #names ~= #x) then
    error(string.format("%s: names must be an array of %d strings (one per tensor), got %s", what, #x,
      type(names) == "table" and (#names .. " entries") or type(names)), 3)
  end
  for i = 1, #x do
    if not is_tensor(x[i]) then
      error(string.format("%s: entry %d of the parameters is a %s (expected a Tensor)", what, i, type(x[i])), 3)
    end
    ts[i] = x[i]
    ns[i] = names and tostring(names[i]) or tostring(first_index + i - 1)
  end
  return ns, ts
end

local function is_group_list(params)
  return type(params) == "table" and not has_named_parameters(params) and type(params[1]) == "table"
    and not is_tensor(params[1]) and rawget(params[1], "params") ~= nil
end

--- Optimizer.init(self, what, params, defaults, opts): fills a new optimizer. `defaults` lists every
-- option with its default (nil for required ones, which `required` names); `opts` are the user's.
function Optimizer.init(self, what, params, defaults, opts, required)
  opts = opts or {}
  if type(opts) ~= "table" then error(string.format("%s: options must be a table, got %s", what, type(opts)), 3) end
  for k in pairs(opts) do
    if defaults[k] == nil and not (required and required[k]) then
      local known = {}
      for key in pairs(defaults) do known[#known + 1] = key end
      for key in pairs(required or {}) do known[#known + 1] = key end
      table.sort(known)
      error(string.format("%s: unknown option '%s' (expected one of %s)", what, tostring(k), table.concat(known, ", ")), 3)
    end
  end
  self.what = what
  self.defaults = {}
  for k, v in pairs(defaults) do self.defaults[k] = v end
  for k, v in pairs(opts) do self.defaults[k] = v end
  for k in pairs(required or {}) do
    if self.defaults[k] == nil then error(string.format("%s: option %s is required", what, k), 3) end
  end
  self.param_groups = {}
  self.state = {}
  self._name_of = setmetatable({}, {__mode = "k"}) -- tensor -> name, to catch duplicates
  self._by_name = {}                                 -- name -> {tensor, group}
  if params == nil then error(what .. ": expected parameters (a model, a tensor, an array of tensors or of groups), got nil", 3) end
  local groups
  if is_group_list(params) then groups = params else groups = {{params = params}} end
  local counter = 1
  for _, g in ipairs(groups) do
    counter = counter + self:_add_group(g, counter, 4)
  end
  if next(self._by_name) == nil then error(what .. ": got an empty parameter list", 3) end
  return self
end

-- Adds one group; returns how many tensors it held. `level` is the error level of the user's call.
function Optimizer:_add_group(g, first_index, level)
  local what = self.what
  if type(g) ~= "table" or g.params == nil then
    error(string.format("%s: a parameter group must be a table with a params field, got %s", what, type(g)), level)
  end
  local names, tensors = M.named_tensors(g.params, what, first_index, g.names)
  local group = {}
  for k, v in pairs(g) do
    if k ~= "params" and k ~= "names" then group[k] = type(v) == "table" and table.move(v, 1, #v, 1, {}) or v end
  end
  for k, v in pairs(self.defaults) do
    if group[k] == nil then group[k] = type(v) == "table" and table.move(v, 1, #v, 1, {}) or v end
  end
  self:_check_group(group, level + 1)
  for i, t in ipairs(tensors) do
    local name = names[i]
    if self._name_of[t] then
      error(string.format("%s: parameter '%s' appears more than once (also as '%s')", what, name, self._name_of[t]), level)
    end
    if self._by_name[name] then
      error(string.format("%s: two parameters are named '%s' (names must be unique)", what, name), level)
    end
    if not t:is_floating_point() then
      error(string.format("%s: parameter '%s' is %s (expected float32 or float64)", what, name, t:dtype()), level)
    end
    self._name_of[t] = name
    self._by_name[name] = {tensor = t, group = group}
  end
  group.params, group.names = tensors, names
  self.param_groups[#self.param_groups + 1] = group
  return #tensors
end

--- opt:add_param_group(group): adds a group {params = ..., names = ..., lr = ...} after
-- construction (for example unfrozen layers); unset options take the defaults.
function Optimizer:add_param_group(group)
  local n = 0
  for _ in pairs(self._by_name) do n = n + 1 end
  self:_add_group(group, n + 1, 3)
end

-- Subclasses check their hyper-parameters here (errors at `level`).
function Optimizer:_check_group(group, level) end

--- opt:zero_grad([set_to_none = true]): drops every parameter's gradient (p.grad = nil), or
-- zeroes it in place with set_to_none = false.
function Optimizer:zero_grad(set_to_none)
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      if set_to_none == false then
        local grad = p.grad
        if grad then grad:zero_() end
      else
        p.grad = nil
      end
    end
  end
end

--- opt:step([closure]): one update of every parameter that has a gradient (parameters whose
-- .grad is nil are skipped, their state untouched). A closure, when given, is called first (with
-- grad mode on) and its result returned: the loss, as in PyTorch.
function Optimizer:step(closure)
  local loss
  if closure then
    local guard <close> = autograd.enable_grad()
    loss = closure()
  end
  for _, group in ipairs(self.param_groups) do
    local ps, gs, ns, k = {}, {}, {}, 0
    local params, names = group.params, group.names
    for i = 1, #params do
      local p = params[i]
      local grad = p.grad
      if grad then
        k = k + 1
        ps[k], gs[k], ns[k] = p, grad, names[i]
      end
    end
    if k > 0 then self:_update(group, ps, gs, ns) end
  end
  return loss
end

-- ---- state dicts --------------------------------------------------------------------------------

local function copy_value(v)
  if type(v) == "table" and not is_tensor(v) then return table.move(v, 1, #v, 1, {}) end
  return v
end

--- opt:state_dict(): {type =, state = {[name] = {step =, exp_avg =, ...}}, param_groups = {{lr =,
-- ..., params = {names}}}}. State tensors are the optimizer's own (not copies), as in PyTorch;
-- load_state_dict copies them, so a saved dict can be loaded into another optimizer safely.
function Optimizer:state_dict()
  local state = {}
  for name, st in pairs(self.state) do
    local s = {}
    for k, v in pairs(st) do s[k] = v end
    state[name] = s
  end
  local groups = {}
  for i, g in ipairs(self.param_groups) do
    local sg = {}
    for k, v in pairs(g) do
      if k ~= "params" and k ~= "names" then sg[k] = copy_value(v) end
    end
    sg.params = table.move(g.names, 1, #g.names, 1, {})
    groups[i] = sg
  end
  return {type = self.type, state = state, param_groups = groups}
end

local function shape_str(t)
  local s, parts = t:size(), {}
  for i = 1, #s do parts[i] = tostring(s[i]) end
  return "[" .. table.concat(parts, ",") .. "]"
end

--- opt:load_state_dict(sd): restores hyper-parameters and per-parameter state from a dict made by
-- state_dict() (or read back from a checkpoint: a `step` may be a number or a 0-d tensor). The
-- groups must list the same parameter names; state for an unknown name, or a state tensor whose
-- shape differs from its parameter's, is an error, and nothing is changed then.
function Optimizer:load_state_dict(sd)
  local what = self.what .. ":load_state_dict"
  if type(sd) ~= "table" or type(sd.param_groups) ~= "table" then
    error(what .. ": expected a table with param_groups (and state), as state_dict() makes", 2)
  end
  if sd.type ~= nil and self.type ~= nil and sd.type ~= self.type then
    error(string.format("%s: the state dict is for %s, this optimizer is %s", what, tostring(sd.type), self.type), 2)
  end
  if #sd.param_groups ~= #self.param_groups then
    error(string.format("%s: the state dict has %d parameter groups, this optimizer %d", what, #sd.param_groups,
      #self.param_groups), 2)
  end
  for gi, sg in ipairs(sd.param_groups) do
    local g = self.param_groups[gi]
    local names = sg.params or {}
    local mine = {}
    for _, n in ipairs(g.names) do mine[n] = true end
    for _, n in ipairs(names) do
      if not mine[n] then
        error(string.format("%s: group %d of the state dict lists parameter '%s', which is not in this optimizer's group %d",
          what, gi, tostring(n), gi), 2)
      end
    end
    if #names ~= #g.names then
      error(string.format("%s: group %d of the state dict has %d parameters, this optimizer's group %d has %d", what, gi,
        #names, gi, #g.names), 2)
    end
  end
  -- check and copy every state entry before changing anything
  local new_state = {}
  for name, st in pairs(sd.state or {}) do
    local entry = self._by_name[name]
    if not entry then error(string.format("%s: state for unknown parameter '%s'", what, tostring(name)), 2) end
    local p = entry.tensor
    local s = {}
    for k, v in pairs(st) do
      if k == "step" then
        if is_tensor(v) then v = v:item() end
        if type(v) ~= "number" or v < 0 or v ~= math.floor(v) then
          error(string.format("%s: step of '%s' is %s (expected an integer >= 0)", what, name, tostring(v)), 2)
        end
        s[k] = math.tointeger(v)
      elseif is_tensor(v) then
        if v:size() ~= p:size() then
          error(string.format("%s: %s of '%s' has shape %s but the parameter has shape %s", what, k, name, shape_str(v),
            shape_str(p)), 2)
        end
        local c = core.empty(p:size(), {dtype = p:dtype(), device = p:device()})
        c:copy_(v)
        s[k] = c
      else
        s[k] = copy_value(v)
      end
    end
    new_state[name] = s
  end
  local new_groups = {}
  for gi, sg in ipairs(sd.param_groups) do
    local g = {}
    for k, v in pairs(self.param_groups[gi]) do g[k] = v end
    for k, v in pairs(sg) do
      if k ~= "params" and k ~= "names" then g[k] = copy_value(v) end
    end
    self:_check_group(g, 3)
    new_groups[gi] = g
  end
  for gi, g in ipairs(new_groups) do
    local mine = self.param_groups[gi]
    for k, v in pairs(g) do mine[k] = v end
  end
  self.state = new_state
end

return M
