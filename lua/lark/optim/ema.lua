--- lark.optim.ModelEma: an exponential moving average of a model's weights (timm's ModelEmaV2).
--
--   local ema = lark.optim.ModelEma(model, {decay = 0.9999})
--   for it = 1, n do ...; opt:step(); ema:update(model) end
--   ema:copy_to(eval_model)        -- evaluate with the averaged weights
--
-- The EMA holds its own copy of every parameter (named_parameters()) and buffer (named_buffers(),
-- when the model has it), by name. update() sets ema = decay * ema + (1 - decay) * value for float
-- tensors, as one fused C lerp over the whole list (lark.lerp_list_ with weight 1 - decay), and
-- copies integer buffers (num_batches_tracked) as they are.
local core = require "lark.core"
local autograd = require "lark.autograd"

local ModelEma = {}
ModelEma.__index = ModelEma
ModelEma.__name = "lark.optim.ModelEma"

local function has_method(x, name)
  if type(x) ~= "table" and type(x) ~= "userdata" then return false end
  local ok, f = pcall(function() return x[name] end)
  return ok and type(f) == "function"
end

-- The model's tensors by name (parameters then buffers), and their names in order.
local function named_state(model, what)
  if not has_method(model, "named_parameters") then
    error(string.format("%s: expected a model with named_parameters(), got %s", what, type(model)), 3)
  end
  local names, by_name = {}, {}
  local function add(name, t)
    if by_name[name] then error(string.format("%s: the model has two tensors named '%s'", what, name), 4) end
    names[#names + 1], by_name[name] = name, t
  end
  for name, p in model:named_parameters() do add(name, p) end
  if has_method(model, "named_buffers") then
    for name, b in model:named_buffers() do add(name, b) end
  end
  return names, by_name
end

local function shape_str(t)
  local s, parts = t:size(), {}
  for i = 1, #s do parts[i] = tostring(s[i]) end
  return "[" .. table.concat(parts, ",") .. "]"
end

local function check_decay(what, d)
  if type(d) ~= "number" or not (d >= 0 and d <= 1) then
    error(string.format("%s: decay is %s (expected a number in [0, 1])", what, tostring(d)), 3)
  end
end

--- lark.optim.ModelEma(model, {decay = 0.9999}): copies the model's parameters and buffers now.
-- Fields: decay (may be changed), names (in the model's order), tensors (name -> EMA tensor).
local function new(model, opts)
  local what = "ModelEma"
  opts = opts or {}
  if type(opts) ~= "table" then error(what .. ": options must be a table, got " .. type(opts), 2) end
  for k in pairs(opts) do
    if k ~= "decay" then error(string.format("%s: unknown option '%s' (expected decay)", what, tostring(k)), 2) end
  end
  local decay = opts.decay == nil and 0.9999 or opts.decay
  check_decay(what, decay)
  local names, by_name = named_state(model, what)
  local self = setmetatable({decay = decay, names = names, tensors = {}, _list = {}}, ModelEma)
  for i, name in ipairs(names) do
    local c = by_name[name]:detach():clone()
    self.tensors[name], self._list[i] = c, c
  end
  return self
end

--- ema:update(model [, decay]): ema = decay * ema + (1 - decay) * model for every float tensor,
-- integer buffers copied; the model must have the same names and shapes.
function ModelEma:update(model, decay)
  local what = "ModelEma:update"
  decay = decay == nil and self.decay or decay
  check_decay(what, decay)
  local _, by_name = named_state(model, what)
  local src = {}
  for i, name in ipairs(self.names) do
    local t = by_name[name]
    if not t then error(string.format("%s: the model has no parameter or buffer '%s'", what, name), 2) end
    src[i] = t
  end
  core.lerp_list_(self._list, src, 1 - decay, self.names)
end

--- ema:state_dict(): name -> tensor (the EMA's own tensors, not copies), parameters and buffers.
function ModelEma:state_dict()
  local sd = {}
  for name, t in pairs(self.tensors) do sd[name] = t end
  return sd
end

-- Checks that sd (name -> tensor) covers exactly the EMA's names with the same shapes.
local function check_sd(self, sd, what)
  if type(sd) ~= "table" then error(string.format("%s: expected a table name -> tensor, got %s", what, type(sd)), 3) end
  for name, v in pairs(sd) do
    local mine = self.tensors[name]
    if not mine then error(string.format("%s: unknown name '%s' (not a parameter or buffer of the model)", what, tostring(name)), 3) end
    if not core.is_tensor(v) then error(string.format("%s: '%s' is a %s (expected a Tensor)", what, name, type(v)), 3) end
    if v:size() ~= mine:size() then
      error(string.format("%s: '%s' has shape %s, expected %s", what, name, shape_str(v), shape_str(mine)), 3)
    end
  end
  for _, name in ipairs(self.names) do
    if sd[name] == nil then error(string.format("%s: '%s' is missing", what, name), 3) end
  end
end

--- ema:load_state_dict(sd): copies sd (name -> tensor, e.g. from state_dict() or a checkpoint)
-- into the EMA; every name must be there, with the same shape.
function ModelEma:load_state_dict(sd)
  check_sd(self, sd, "ModelEma:load_state_dict")
  for name, t in pairs(self.tensors) do t:copy_(sd[name]) end
end

--- ema:copy_to(model): writes the averaged weights into the model's parameters and buffers.
function ModelEma:copy_to(model)
  local what = "ModelEma:copy_to"
  local _, by_name = named_state(model, what)
  check_sd(self, by_name, what)
  local guard <close> = autograd.no_grad()
  for name, t in pairs(self.tensors) do by_name[name]:copy_(t) end
end

return setmetatable(ModelEma, {__call = function(_, ...) return new(...) end})
