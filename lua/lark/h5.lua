--- lark.h5: HDF5 files of tensors, in the spirit of torch-hdf5.
--
--   local h5 = lark.h5
--   do
--     local f <close> = h5.open("weights.h5", "w")
--     f:write("model_state_dict/stem.0.conv.weight", w)       -- groups on the way are created
--     f:write("masks/stages.0.lk.weight", mask)                -- bool: chunked + shuffle + deflate
--     f:write("big", t, {compress = true})                     -- any dtype, deflate level 4 (level = n)
--     f:set_attr("format", "lark-checkpoint")                  -- strings, integers, numbers, booleans
--   end                                                        -- closed here (also by f:close(), __gc)
--   local f <close> = h5.open("weights.h5")                    -- "r" (default), "w" (truncate), "a" (update)
--   f:keys("model_state_dict")  --> {"stem.0.conv.weight"}     -- creation order (alphabetical if untracked)
--   f:read("model_state_dict/stem.0.conv.weight")              -- a float32 tensor
--   f:has("masks"), f:kind("masks") --> true, "group"           f:info(name) --> {dtype =, shape =}
--   f:attr("format") --> "lark-checkpoint"                      f:attr("x", "some/group"): on an object
--
-- Names are paths: only '/' separates, so PyTorch keys with dots are dataset names as they are.
-- dtypes: float32, float64, int64, uint8 and bool (h5py's enum) round-trip bit-exactly, 0-d and
-- empty tensors included; reading also takes float16/bfloat16 (as float32) and other integers (as
-- int64). Every failure is a Lua error naming the file and the problem; HDF5 prints nothing.
-- Files are pinned to the HDF5 1.8 format (libver v108), so any h5py or HDF5 >= 1.8 reads them.
--
-- `h5.open(path, "w", {atomic = true})` writes <path>.tmp.<pid> and f:close() commits it (fsync,
-- rename over path, fsync the directory); an error that leaves a `<close>` scope, f:abort() or the
-- collector discards it, so path always holds the previous complete file. lark.save uses this.
local core = require "lark.core"

local h5 = {}

local File = core._h5_file
h5.File = File

--- h5.open(path [, mode = "r" [, {atomic = false, locking = true}]]): a File. mode "r" reads,
-- "w" creates (truncating), "a" updates or creates. locking = false turns HDF5's file locks off
-- (for filesystems where flock fails).
function h5.open(path, mode, opts)
  if type(path) ~= "string" then error("h5.open: expected a file path (string), got " .. type(path), 2) end
  if mode ~= nil and type(mode) ~= "string" then error("h5.open: mode must be \"r\", \"w\" or \"a\", got " .. type(mode), 2) end
  if opts ~= nil and type(opts) ~= "table" then error("h5.open: options must be a table, got " .. type(opts), 2) end
  return core.h5_open(path, mode, opts)
end

-- ---- ordered tables ------------------------------------------------------------------------------
-- A state dict read from a file keeps the file's order: pairs() follows it and h5.keys_of gives it.

local order_of = setmetatable({}, {__mode = "k"})

local Ordered = {__name = "lark.h5.OrderedDict"}
Ordered.__pairs = function(t)
  local keys, i = order_of[t] or {}, 0
  local seen, extra = {}, {}
  for _, k in ipairs(keys) do seen[k] = true end
  for k in next, t do
    if not seen[k] then extra[#extra + 1] = k end
  end
  table.sort(extra, function(a, b) return tostring(a) < tostring(b) end)
  local all = table.move(extra, 1, #extra, #keys + 1, table.move(keys, 1, #keys, 1, {}))
  return function()
    repeat
      i = i + 1
      local k = all[i]
      if k == nil then return nil end
      local v = rawget(t, k)
      if v ~= nil then return k, v end
    until false
  end, t, nil
end

--- h5.ordered(keys [, map]): a table name -> value whose pairs() follows keys (values from map,
-- or set later).
function h5.ordered(keys, map)
  local t = setmetatable({}, Ordered)
  if map then
    for _, k in ipairs(keys) do t[k] = map[k] end
  end
  order_of[t] = table.move(keys, 1, #keys, 1, {})
  return t
end

--- h5.keys_of(t): the keys of t in order: an ordered table's own order, a table whose pairs()
-- has an order (lark.nn state dicts), else sorted.
function h5.keys_of(t)
  local keys = {}
  if order_of[t] then
    for k in pairs(t) do keys[#keys + 1] = k end
    return keys
  end
  local mt = getmetatable(t)
  for k in pairs(t) do keys[#keys + 1] = k end
  if not (mt and mt.__pairs) then table.sort(keys, function(a, b) return tostring(a) < tostring(b) end) end
  return keys
end

-- ---- whole groups -----------------------------------------------------------------------------------

--- f:read_group(group): every dataset of the group as an ordered table name -> tensor (file
-- order), and the list of names. Subgroups are skipped.
function File:read_group(group)
  local names, keys = self:keys(group), {}
  local t = {}
  for _, n in ipairs(names) do
    local full = group .. "/" .. n
    if self:kind(full) == "dataset" then
      keys[#keys + 1] = n
      t[n] = self:read(full)
    end
  end
  return h5.ordered(keys, t), keys
end

--- f:write_group(group, tensors [, keys [, write_opts]]): writes each tensor as group/name, in
-- the order of keys (default h5.keys_of(tensors)). The group is made even when empty.
function File:write_group(group, tensors, keys, opts)
  keys = keys or h5.keys_of(tensors)
  self:create_group(group)
  for _, k in ipairs(keys) do
    local t = tensors[k]
    if not core.is_tensor(t) then
      error(string.format("h5:write_group: '%s' in %s is a %s (expected a tensor)", tostring(k), group, type(t)), 2)
    end
    self:write(group .. "/" .. k, t, opts)
  end
end

--- f:attrs([object = "/"]): every attribute of an object as a table name -> value.
function File:attrs(object)
  local out = {}
  for _, n in ipairs(self:attr_names(object)) do out[n] = self:attr(n, object) end
  return out
end

-- ---- one-shot helpers -----------------------------------------------------------------------------

--- h5.read(path, name): one dataset of a file, as a tensor.
function h5.read(path, name)
  local f <close> = h5.open(path, "r")
  return f:read(name)
end

--- h5.write(path, name, t [, write_opts]): adds (or replaces) one dataset in a file, creating it.
function h5.write(path, name, t, opts)
  local f <close> = h5.open(path, "a")
  f:write(name, t, opts)
end

return h5
