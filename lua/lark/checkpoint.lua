--- lark.checkpoint: lark.save, lark.load and lark.load_into, HDF5 checkpoints laid out as
-- shared/reference/CHECKPOINTS.md says, so that PyTorch loads them with h5py in one line:
--
--   lark.save("runs/x/checkpoint.h5", {
--     model = model,              -- an nn.Module or a state dict (name -> tensor)
--     ema = ema,                  -- a lark.optim.ModelEma or a state dict
--     masks = masks,              -- name -> bool tensor (SLaK); mask_config = {...} goes along as JSON
--     optimizer = opt,            -- a lark.optim optimizer or its state_dict() (keyed by parameter name)
--     scheduler = sched,          -- anything with state_dict(), or a plain table
--     rng = lark.get_rng_state(), -- {seed =, offset =} (true: the current global state)
--     epoch = 3, step = 141,      -- root attributes epoch and global_step
--     config = cfg,               -- a table, stored as JSON in the root attribute model_config
--     attrs = {best_acc = 0.93},  -- more root attributes (strings, numbers, booleans)
--   } [, {compress = false}])     -- compress: deflate the float tensors too (masks always are)
--
--   local st = lark.load(path)    -- the same shape: st.model (name -> tensor, in file order),
--                                 -- st.ema, st.masks, st.optimizer (a state dict its optimizer
--                                 -- loads), st.scheduler, st.rng, st.epoch, st.step, st.config,
--                                 -- st.keys.model (the key order), st.attrs (all root attributes)
--   lark.load_into(path or st, {model = model, optimizer = opt, ema = ema, scheduler = sched,
--                               rng = true, strict = true})
--
-- File layout (format_version 1):
--   /                      attrs format = "lark-checkpoint", format_version = 1, producer,
--                          created_utc, tensor_layout = "pytorch", model_config (JSON), epoch,
--                          global_step (when given), and state.attrs
--   /model_state_dict      one dataset per key, named by the PyTorch key, in state_dict order
--   /ema_state_dict        the same for the EMA weights
--   /masks                 bool datasets (chunked + deflate), attr config (JSON) when given
--   /optimizer             attrs type, param_groups (JSON; "params" are parameter names);
--                          /optimizer/state/<param name>/<key>: tensors, and numbers (the step)
--                          as 0-d int64 / float64 datasets (floats tagged with attr kind = "number")
--   /scheduler             attrs type, state_dict (JSON)
--   /rng                   attrs generator = "philox4x32-10", seed, offset (int64)
--
-- Saves are atomic: the file is written as <path>.tmp.<pid> and renamed over path after an fsync,
-- so a crash or a kill at any moment leaves the previous checkpoint whole. lark.load_into checks
-- everything (keys, shapes, dtypes, optimizer groups, scheduler kind) before it changes anything.
local core = require "lark.core"
local h5 = require "lark.h5"

local M = {}
M.h5 = h5
M.FORMAT = "lark-checkpoint"
M.FORMAT_VERSION = 1

local is_tensor = core.is_tensor

local function json() return require "lark.json" end

local function has_method(x, name)
  if type(x) ~= "table" and type(x) ~= "userdata" then return false end
  local ok, f = pcall(function() return x[name] end)
  return ok and type(f) == "function"
end

local function shape_str(t)
  local s, parts = t:size(), {}
  for i = 1, #s do parts[i] = tostring(s[i]) end
  return "[" .. table.concat(parts, ",") .. "]"
end

-- ---- saving -----------------------------------------------------------------------------------------

local STATE_KEYS = {model = true, ema = true, masks = true, mask_config = true, optimizer = true, scheduler = true,
                    rng = true, epoch = true, step = true, config = true, attrs = true}

-- Orders keys: those in `first` (in its order), then the rest in h5.keys_of order.
local function order_like(sd, first)
  local keys, seen = {}, {}
  for _, k in ipairs(first or {}) do
    if sd[k] ~= nil and not seen[k] then keys[#keys + 1], seen[k] = k, true end
  end
  for _, k in ipairs(h5.keys_of(sd)) do
    if not seen[k] then keys[#keys + 1], seen[k] = k, true end
  end
  return keys
end

-- A state dict and its key order from a module, a ModelEma or a table name -> tensor; checked.
local function state_dict_of(x, what, model_keys)
  local sd, keys
  if has_method(x, "state_dict") then
    sd, keys = x:state_dict()
    if type(sd) ~= "table" then error(string.format("lark.save: %s:state_dict() gave a %s", what, type(sd)), 4) end
    if type(keys) ~= "table" then keys = order_like(sd, model_keys or (type(x.names) == "table" and x.names or nil)) end
  elseif type(x) == "table" then
    sd, keys = x, order_like(x, model_keys)
  else
    error(string.format("lark.save: %s must be a module, a state dict (name -> tensor) or an object with state_dict(), got %s",
      what, type(x)), 4)
  end
  for _, k in ipairs(keys) do
    if type(k) ~= "string" then
      error(string.format("lark.save: %s has a key of type %s (keys are names: strings)", what, type(k)), 4)
    end
    if k == "" or k:find("/", 1, true) then
      error(string.format("lark.save: %s: key '%s' cannot be a dataset name (empty, or contains '/')", what, k), 4)
    end
    if not is_tensor(sd[k]) then
      error(string.format("lark.save: %s: '%s' is a %s (expected a tensor)", what, k, type(sd[k])), 4)
    end
  end
  return sd, keys
end

local function encode(v, what)
  local ok, s = pcall(json().encode, v)
  if not ok then error(string.format("lark.save: %s cannot be stored as JSON: %s", what, tostring(s)), 4) end
  return s
end

-- The optimizer's state dict, checked: {type, state = {name -> {key -> tensor|number|boolean}},
-- param_groups = {{..., params = {names}}}}, plus the state names in parameter order.
local function optimizer_sd(x)
  local sd = has_method(x, "state_dict") and x:state_dict() or x
  if type(sd) ~= "table" or type(sd.param_groups) ~= "table" then
    error("lark.save: optimizer must be a lark.optim optimizer or its state_dict() (a table with param_groups)", 4)
  end
  local groups = {}
  for i, g in ipairs(sd.param_groups) do
    local c = {}
    for k, v in pairs(g) do
      if is_tensor(v) then error(string.format("lark.save: optimizer group %d: %s is a tensor (expected plain values)", i, k), 4) end
      c[k] = v
    end
    if type(c.params) ~= "table" then error(string.format("lark.save: optimizer group %d has no params (names)", i), 4) end
    for _, n in ipairs(c.params) do
      if type(n) ~= "string" then
        error(string.format("lark.save: optimizer group %d lists a parameter by %s (expected its name)", i, type(n)), 4)
      end
    end
    groups[i] = c
  end
  local order = {}
  for _, g in ipairs(groups) do
    for _, n in ipairs(g.params) do order[#order + 1] = n end
  end
  local state = sd.state or {}
  local names = order_like(state, order)
  for _, n in ipairs(names) do
    if type(n) ~= "string" or n == "" or n:find("/", 1, true) then
      error(string.format("lark.save: optimizer state for '%s': parameter names must be non-empty strings without '/'",
        tostring(n)), 4)
    end
    if type(state[n]) ~= "table" then
      error(string.format("lark.save: optimizer state for '%s' is a %s (expected a table)", n, type(state[n])), 4)
    end
    for k, v in pairs(state[n]) do
      local ty = type(v)
      if type(k) ~= "string" or not (is_tensor(v) or ty == "number" or ty == "boolean") then
        error(string.format("lark.save: optimizer state '%s' of '%s' is a %s (expected a tensor, number or boolean)",
          tostring(k), n, is_tensor(v) and "tensor" or ty), 4)
      end
    end
  end
  return {type = sd.type, state = state, param_groups = groups}, names
end

local function rng_of(r)
  if r == true then r = core.get_rng_state() end
  if type(r) ~= "table" or math.type(r.seed) ~= "integer" or math.type(r.offset) ~= "integer" then
    error("lark.save: rng must be lark.get_rng_state()'s {seed =, offset =} (integers) or true", 4)
  end
  return r
end

local function set_plain_attr(f, name, v, object, what)
  local ty = type(v)
  if ty ~= "string" and ty ~= "number" and ty ~= "boolean" then
    error(string.format("lark.save: %s '%s' is a %s (expected a string, number or boolean)", what, tostring(name), ty), 4)
  end
  f:set_attr(name, v, object)
end

--- lark.save(path, state [, {compress = false, locking = true}]): writes a checkpoint atomically
-- (see the top of this file for state's fields and the layout). Everything is checked before the
-- file is touched; on any error the previous file at path is left as it was.
function M.save(path, state, opts)
  if type(path) ~= "string" or path == "" then error("lark.save: expected a file path, got " .. type(path), 2) end
  if type(state) ~= "table" then error("lark.save: expected a state table {model =, optimizer =, ...}, got " .. type(state), 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("lark.save: options must be a table, got " .. type(opts), 2) end
  for k in pairs(opts) do
    if k ~= "compress" and k ~= "locking" then
      error(string.format("lark.save: unknown option '%s' (expected compress or locking)", tostring(k)), 2)
    end
  end
  for k in pairs(state) do
    if not STATE_KEYS[k] then
      local known = {}
      for n in pairs(STATE_KEYS) do known[#known + 1] = n end
      table.sort(known)
      error(string.format("lark.save: unknown state field '%s' (expected %s)", tostring(k), table.concat(known, ", ")), 2)
    end
  end
  for _, k in ipairs{"epoch", "step"} do
    if state[k] ~= nil and math.type(state[k]) ~= "integer" then
      error(string.format("lark.save: %s must be an integer, got %s", k, tostring(state[k])), 2)
    end
  end
  -- gather and check everything first
  local model_sd, model_keys, ema_sd, ema_keys, masks, mask_keys, osd, onames, sched
  if state.model ~= nil then model_sd, model_keys = state_dict_of(state.model, "model") end
  if state.ema ~= nil then ema_sd, ema_keys = state_dict_of(state.ema, "ema", model_keys) end
  if state.masks ~= nil then
    masks, mask_keys = state_dict_of(state.masks, "masks", model_keys)
    for _, k in ipairs(mask_keys) do
      if masks[k]:dtype() ~= "bool" then
        error(string.format("lark.save: masks: '%s' is %s (expected bool; convert with m:bool())", k, masks[k]:dtype()), 2)
      end
    end
  end
  local mask_config = state.mask_config ~= nil and encode(state.mask_config, "mask_config") or nil
  if state.optimizer ~= nil then osd, onames = optimizer_sd(state.optimizer) end
  local param_groups = osd and encode(osd.param_groups, "the optimizer's param_groups")
  if state.scheduler ~= nil then
    sched = has_method(state.scheduler, "state_dict") and state.scheduler:state_dict() or state.scheduler
    if type(sched) ~= "table" then error("lark.save: scheduler must have state_dict() or be a table, got " .. type(sched), 2) end
  end
  local sched_json = sched and encode(sched, "the scheduler's state")
  local rng = state.rng ~= nil and rng_of(state.rng) or nil
  local config = encode(state.config == nil and {} or state.config, "config")
  if state.attrs ~= nil and type(state.attrs) ~= "table" then error("lark.save: attrs must be a table, got " .. type(state.attrs), 2) end

  local wopts = opts.compress and {compress = true} or nil
  local f <close> = h5.open(path, "w", {atomic = true, locking = opts.locking})
  f:set_attr("format", M.FORMAT)
  f:set_attr("format_version", M.FORMAT_VERSION)
  f:set_attr("producer", "lark " .. (package.loaded.lark and package.loaded.lark._VERSION or "?"))
  f:set_attr("created_utc", os.date("!%Y-%m-%dT%H:%M:%SZ"))
  f:set_attr("tensor_layout", "pytorch")
  f:set_attr("model_config", config)
  if state.epoch ~= nil then f:set_attr("epoch", state.epoch) end
  if state.step ~= nil then f:set_attr("global_step", state.step) end
  for _, k in ipairs(state.attrs and h5.keys_of(state.attrs) or {}) do set_plain_attr(f, k, state.attrs[k], "/", "attrs") end
  if model_sd then f:write_group("model_state_dict", model_sd, model_keys, wopts) end
  if ema_sd then f:write_group("ema_state_dict", ema_sd, ema_keys, wopts) end
  if masks then
    f:write_group("masks", masks, mask_keys)
    if mask_config then f:set_attr("config", mask_config, "masks") end
  end
  if osd then
    f:create_group("optimizer/state")
    if osd.type ~= nil then f:set_attr("type", tostring(osd.type), "optimizer") end
    f:set_attr("param_groups", param_groups, "optimizer")
    for _, n in ipairs(onames) do
      local g = "optimizer/state/" .. n
      f:create_group(g)
      local st = osd.state[n]
      local keys = {}
      for k in pairs(st) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do
        local v = st[k]
        if is_tensor(v) then
          f:write(g .. "/" .. k, v, wopts)
        elseif type(v) == "number" then
          if math.type(v) == "integer" then
            f:write(g .. "/" .. k, core.tensor(v, {dtype = "int64"}))
          else
            f:write(g .. "/" .. k, core.tensor(v, {dtype = "float64"}))
            f:set_attr("kind", "number", g .. "/" .. k)
          end
        else
          f:set_attr(k, v, g)
        end
      end
    end
  end
  if sched then
    f:create_group("scheduler")
    if type(sched.kind) == "string" then f:set_attr("type", sched.kind, "scheduler") end
    f:set_attr("state_dict", sched_json, "scheduler")
  end
  if rng then
    f:create_group("rng")
    f:set_attr("generator", "philox4x32-10", "rng")
    f:set_attr("seed", rng.seed, "rng")
    f:set_attr("offset", rng.offset, "rng")
  end
  f:close() -- commits: flush, fsync, rename over path, fsync the directory
end

-- ---- loading ----------------------------------------------------------------------------------------

local function decode(s, what, path)
  if s == nil then return nil end
  if type(s) ~= "string" then error(string.format("lark.load: '%s': %s is a %s (expected a JSON string)", path, what, type(s)), 4) end
  local ok, v = pcall(json().decode, s)
  if not ok then error(string.format("lark.load: '%s': %s is not valid JSON: %s", path, what, tostring(v)), 4) end
  return v
end

--- lark.load(path [, {locking = true}]): reads a checkpoint written by lark.save (or
-- tools/pth2h5.py) into a table of the same shape as lark.save's state: model, ema, masks
-- (ordered tables name -> tensor), mask_config, optimizer ({type, state, param_groups}, as
-- optimizer:load_state_dict takes), scheduler, rng ({seed, offset}), epoch, step, config, plus
-- keys = {model =, ema =, masks =} (the file's key order), attrs (every root attribute),
-- format_version, producer, created_utc. Parts the file lacks are nil.
function M.load(path, opts)
  if type(path) ~= "string" then error("lark.load: expected a file path, got " .. type(path), 2) end
  opts = opts or {}
  local f <close> = h5.open(path, "r", {locking = opts.locking})
  local attrs = f:attrs("/")
  if attrs.format ~= nil and attrs.format ~= M.FORMAT then
    error(string.format("lark.load: '%s' is not a lark checkpoint (its format attribute is '%s', expected '%s')", path,
      tostring(attrs.format), M.FORMAT), 2)
  end
  if attrs.format == nil and not f:has("model_state_dict") then
    local keys = f:keys("/")
    error(string.format("lark.load: '%s' is not a lark checkpoint (no format attribute and no model_state_dict group; "
      .. "the file holds: %s)", path, #keys > 0 and table.concat(keys, ", ") or "nothing"), 2)
  end
  local version = attrs.format_version
  if version ~= nil and (math.type(version) ~= "integer" or version > M.FORMAT_VERSION) then
    error(string.format("lark.load: '%s' has format_version %s; this lark reads up to %d (a newer lark wrote it)", path,
      tostring(version), M.FORMAT_VERSION), 2)
  end
  local st = {attrs = attrs, keys = {}, format_version = version, producer = attrs.producer,
    created_utc = attrs.created_utc, epoch = attrs.epoch, step = attrs.global_step,
    config = decode(attrs.model_config, "model_config", path)}
  for field, group in pairs{model = "model_state_dict", ema = "ema_state_dict", masks = "masks"} do
    if f:has(group) then
      if f:kind(group) ~= "group" then error(string.format("lark.load: '%s': %s is not a group", path, group), 2) end
      st[field], st.keys[field] = f:read_group(group)
    end
  end
  if f:has("masks") then st.mask_config = decode(f:attr("config", "masks"), "masks.config", path) end
  if f:has("optimizer") then
    local o = {type = f:attr("type", "optimizer"), state = {},
      param_groups = decode(f:attr("param_groups", "optimizer"), "optimizer.param_groups", path)}
    if type(o.param_groups) ~= "table" then
      error(string.format("lark.load: '%s': the optimizer group has no param_groups attribute", path), 2)
    end
    if f:has("optimizer/state") then
      for _, n in ipairs(f:keys("optimizer/state")) do
        local g = "optimizer/state/" .. n
        local s = {}
        for _, k in ipairs(f:keys(g)) do
          local t = f:read(g .. "/" .. k)
          if t:dim() == 0 and (t:dtype() == "int64" or f:attr("kind", g .. "/" .. k) == "number") then
            s[k] = t:item() -- numbers were numbers (the step): give them back as numbers
            if t:dtype() == "int64" then s[k] = math.tointeger(s[k]) end
          else
            s[k] = t
          end
        end
        for k, v in pairs(f:attrs(g)) do s[k] = v end
        o.state[n] = s
      end
    end
    st.optimizer = o
  end
  if f:has("scheduler") then st.scheduler = decode(f:attr("state_dict", "scheduler"), "scheduler.state_dict", path) end
  if f:has("rng") then
    local seed, offset = f:attr("seed", "rng"), f:attr("offset", "rng")
    if math.type(seed) ~= "integer" or math.type(offset) ~= "integer" then
      error(string.format("lark.load: '%s': /rng lacks its integer seed and offset attributes", path), 2)
    end
    st.rng = {seed = seed, offset = offset}
  end
  f:close()
  return st
end

-- ---- restoring into live objects --------------------------------------------------------------------

local function quoted(list, max)
  local q = {}
  for i, k in ipairs(list) do
    if max and i > max then
      q[#q + 1] = string.format("and %d more", #list - max)
      break
    end
    q[#q + 1] = "'" .. tostring(k) .. "'"
  end
  return table.concat(q, ", ")
end

-- Problems loading sd into `own` (name -> tensor): missing/unexpected keys (strict), shapes, dtypes.
local function check_tensors(own, own_keys, sd, strict, what, problems)
  if type(sd) ~= "table" then
    problems[#problems + 1] = string.format("%s: the checkpoint has none", what)
    return
  end
  local missing, unexpected = {}, {}
  for _, k in ipairs(own_keys) do
    local v, t = sd[k], own[k]
    if v == nil then
      missing[#missing + 1] = k
    elseif not is_tensor(v) then
      problems[#problems + 1] = string.format("%s: '%s' is a %s, not a tensor", what, k, type(v))
    elseif v:size() ~= t:size() then
      problems[#problems + 1] = string.format("%s: '%s' has shape %s in the checkpoint, %s in the model", what, k,
        shape_str(v), shape_str(t))
    elseif v:dtype() ~= t:dtype() then
      problems[#problems + 1] = string.format("%s: '%s' is %s in the checkpoint, %s in the model", what, k, v:dtype(),
        t:dtype())
    end
  end
  for _, k in ipairs(h5.keys_of(sd)) do
    if own[k] == nil then unexpected[#unexpected + 1] = k end
  end
  if strict and #missing > 0 then
    problems[#problems + 1] = string.format("%s: missing key(s) %s", what, quoted(missing, 10))
  end
  if strict and #unexpected > 0 then
    problems[#problems + 1] = string.format("%s: unexpected key(s) %s", what, quoted(unexpected, 10))
  end
end

-- The live tensors of a model or ModelEma: name -> tensor and the names.
local function live_tensors(x, what)
  if type(x) == "table" and type(x.tensors) == "table" and type(x.names) == "table" then -- a ModelEma
    return x.tensors, x.names
  end
  if not has_method(x, "state_dict") then error(string.format("lark.load_into: %s must be a module (with state_dict())", what), 4) end
  local sd, keys = x:state_dict()
  return sd, keys or h5.keys_of(sd)
end

local function check_optimizer(opt, osd, problems)
  if type(osd) ~= "table" then
    problems[#problems + 1] = "optimizer: the checkpoint has none"
    return
  end
  if osd.type ~= nil and opt.type ~= nil and osd.type ~= opt.type then
    problems[#problems + 1] = string.format("optimizer: the checkpoint holds %s state, the optimizer is %s", osd.type, opt.type)
  end
  local groups = osd.param_groups or {}
  if #groups ~= #opt.param_groups then
    problems[#problems + 1] = string.format("optimizer: %d parameter group(s) in the checkpoint, %d in the optimizer",
      #groups, #opt.param_groups)
    return
  end
  for gi, g in ipairs(groups) do
    local mine, theirs = {}, {}
    for _, n in ipairs(opt.param_groups[gi].names) do mine[n] = true end
    local extra, lacking = {}, {}
    for _, n in ipairs(g.params or {}) do
      theirs[n] = true
      if not mine[n] then extra[#extra + 1] = n end
    end
    for _, n in ipairs(opt.param_groups[gi].names) do
      if not theirs[n] then lacking[#lacking + 1] = n end
    end
    if #extra > 0 or #lacking > 0 then
      problems[#problems + 1] = string.format("optimizer: group %d differs: %s%s%s", gi,
        #extra > 0 and ("the checkpoint has " .. quoted(extra, 5)) or "", (#extra > 0 and #lacking > 0) and "; " or "",
        #lacking > 0 and ("it lacks " .. quoted(lacking, 5)) or "")
    end
  end
  for name, s in pairs(osd.state or {}) do
    local entry = opt._by_name and opt._by_name[name]
    if not entry then
      problems[#problems + 1] = string.format("optimizer: state for unknown parameter '%s'", tostring(name))
    else
      local p = entry.tensor
      for k, v in pairs(s) do
        if is_tensor(v) and v:size() ~= p:size() then
          problems[#problems + 1] = string.format("optimizer: %s of '%s' has shape %s, the parameter %s", k, name,
            shape_str(v), shape_str(p))
        elseif is_tensor(v) and v:dtype() ~= p:dtype() then
          problems[#problems + 1] = string.format("optimizer: %s of '%s' is %s, the parameter %s", k, name, v:dtype(),
            p:dtype())
        end
      end
    end
  end
end

local INTO_KEYS = {model = true, ema = true, optimizer = true, scheduler = true, rng = true, strict = true, locking = true}

--- lark.load_into(path_or_state, {model =, ema =, optimizer =, scheduler =, rng = false, strict =
-- true}): restores a checkpoint into live objects: the model (its load_state_dict; strict: the
-- same keys), the EMA (a ModelEma or a module), the optimizer and the scheduler (their
-- load_state_dict), and with rng = true the global generator. Every part is checked first (keys,
-- shapes and dtypes, optimizer groups and state, scheduler kind); any problem raises one error
-- listing them all, and then nothing has been changed. Returns the loaded state (lark.load's table:
-- epoch, step, masks, config...).
function M.load_into(src, into)
  if type(into) ~= "table" then error("lark.load_into: expected a table {model =, optimizer =, ...}, got " .. type(into), 2) end
  for k in pairs(into) do
    if not INTO_KEYS[k] then
      error(string.format("lark.load_into: unknown field '%s' (expected model, ema, optimizer, scheduler, rng, strict)",
        tostring(k)), 2)
    end
  end
  local strict = into.strict ~= false
  local st
  if type(src) == "string" then
    local ok, r = pcall(M.load, src, {locking = into.locking})
    if not ok then error(r, 2) end
    st = r
  elseif type(src) == "table" then
    st = src
  else
    error("lark.load_into: expected a checkpoint path or lark.load's table, got " .. type(src), 2)
  end
  local where = type(src) == "string" and ("'" .. src .. "'") or "the checkpoint"
  local problems = {}
  if into.model ~= nil then
    local own, keys = live_tensors(into.model, "model")
    check_tensors(own, keys, st.model, strict, "model", problems)
  end
  if into.ema ~= nil then
    local own, keys = live_tensors(into.ema, "ema")
    -- a ModelEma needs every one of its tensors, whatever strict says
    check_tensors(own, keys, st.ema, strict or into.ema.tensors ~= nil, "ema", problems)
  end
  if into.optimizer ~= nil then check_optimizer(into.optimizer, st.optimizer, problems) end
  if into.scheduler ~= nil then
    local s = st.scheduler
    if type(s) ~= "table" then
      problems[#problems + 1] = "scheduler: the checkpoint has none"
    elseif s.kind ~= nil and into.scheduler.kind ~= nil and s.kind ~= into.scheduler.kind then
      problems[#problems + 1] = string.format("scheduler: the checkpoint holds a %s schedule, this one is %s", s.kind,
        into.scheduler.kind)
    end
  end
  if into.rng and type(st.rng) ~= "table" then problems[#problems + 1] = "rng: the checkpoint has no RNG state" end
  if #problems > 0 then
    error(string.format("lark.load_into: cannot load %s (nothing was changed):\n  %s", where,
      table.concat(problems, "\n  ")), 2)
  end
  -- everything checked: copy
  if into.model ~= nil then into.model:load_state_dict(st.model, {strict = strict}) end
  if into.ema ~= nil then
    if into.ema.tensors ~= nil then into.ema:load_state_dict(st.ema)
    else into.ema:load_state_dict(st.ema, {strict = strict}) end
  end
  if into.optimizer ~= nil then into.optimizer:load_state_dict(st.optimizer) end
  if into.scheduler ~= nil then into.scheduler:load_state_dict(st.scheduler) end
  if into.rng then core.set_rng_state(st.rng) end
  return st
end

return M
