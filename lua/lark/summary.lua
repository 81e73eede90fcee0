--- lark.summary: a table of a model's modules, output shapes, parameters and MACs, from one forward
-- pass, in the spirit of PyTorch's torchsummary / torchinfo.
--
--   local totals = lark.summary(model, {1, 3, 224, 224})
--   print(totals.params, totals.macs)        -- 79864168  15431012352 (RepLKNet-31B)
--
-- MACs are counted as ../shared/reference/MODELS.md defines them: every nn.Conv2d (depth-wise
-- included) adds output elements x Cin/groups x kh x kw, every nn.Linear output elements x
-- in_features; nothing else (norms, activations, pooling, additions). A module that computes
-- convolutions without calling Conv2d children (say a fused kernel) may define
-- `m:count_macs(input, output)`, whose value is added for each call. Counts cover the whole batch
-- of the input given.
local lark = require "lark"
local nn = require "lark.nn"

local isinstance = nn.is_instance

-- The MACs a module's own computation adds for one call (children count themselves).
local function own_macs(m, input, output)
  if not lark.is_tensor(output) then return 0 end
  if isinstance(m, nn.Conv2d) then
    local w = m.weight
    return output:numel() * w:size(2) * w:size(3) * w:size(4)
  end
  if isinstance(m, nn.Linear) then return output:numel() * m.in_features end
  local f = m.count_macs
  if type(f) == "function" then return f(m, input, output) or 0 end
  return 0
end

local function shape_str(v)
  if lark.is_tensor(v) then
    local s = v:size()
    local parts = {}
    for i = 1, #s do parts[i] = tostring(s[i]) end
    return "[" .. table.concat(parts, ", ") .. "]"
  end
  if type(v) == "table" then
    local parts = {}
    for i, t in ipairs(v) do parts[i] = shape_str(t) end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  return type(v)
end

local function commas(n)
  local s = string.format("%d", n)
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end

local function human(n)
  if n >= 1e9 then return string.format("%.3f G", n / 1e9) end
  if n >= 1e6 then return string.format("%.3f M", n / 1e6) end
  if n >= 1e3 then return string.format("%.3f K", n / 1e3) end
  return tostring(n)
end

local function make_input(input, opts)
  if lark.is_tensor(input) then return input end
  if type(input) ~= "table" or #input == 0 then
    error("summary: argument 2: expected an input shape such as {1, 3, 224, 224} or a tensor, got " ..
      (type(input) == "table" and "an empty table" or type(input)), 3)
  end
  for i, d in ipairs(input) do
    if math.type(d) ~= "integer" or d < 1 then
      error(string.format("summary: argument 2: size %d of the input shape must be a positive integer, got %s", i,
        tostring(d)), 3)
    end
  end
  return lark.randn(input, {dtype = opts.dtype or "float32", device = opts.device})
end

--- lark.summary(model, input [, opts]): runs model on input (a shape such as {1, 3, 224, 224}, filled
-- with randn, or a tensor) once in eval mode without gradients (every module's training flag and the
-- grad mode are put back afterwards, also on error), prints one row per module call in call order
-- (dotted module path, type, output shape, parameters of the module and its descendants, MACs of
-- the call including its descendants) and returns the totals:
--   {params =, trainable =, buffers = (elements of the buffers), macs =, output_shape = {...},
--    rows = {{path =, type =, depth =, shape =, params =, macs =}, ...}, output = (the output)}.
-- opts: dtype = "float32" and device (for a shape), depth = max depth of the rows printed (nil: all),
-- print = false for no table, out = a function(line) receiving the lines instead of print.
local function summary(model, input, opts)
  if not nn.is_module(model) then
    error("summary: argument 1: expected a lark.nn module, got " .. type(model), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then error("summary: argument 3: expected an options table", 2) end
  opts = opts or {}
  local x = make_input(input, opts)

  local paths, mods = {}, {}
  for name, m in model:named_modules() do
    paths[m] = name
    mods[#mods + 1] = m
  end
  local training, saved_forward = {}, {}
  for i, m in ipairs(mods) do
    training[i] = m.training
    saved_forward[i] = rawget(m, "forward")
  end

  local rows, stack = {}, {}
  local function wrap(m)
    local orig = m.forward
    rawset(m, "forward", function(self, ...)
      local row = {path = paths[self] ~= "" and paths[self] or "(" .. self.__name .. ")", type = self.__name,
                   depth = #stack, macs = 0}
      rows[#rows + 1] = row
      stack[#stack + 1] = row
      local out = table.pack(orig(self, ...))
      stack[#stack] = nil
      local y = out[1]
      row.shape = out.n > 1 and shape_str({table.unpack(out, 1, out.n)}) or shape_str(y)
      row.macs = row.macs + own_macs(self, ..., y)
      local parent = stack[#stack]
      if parent then parent.macs = parent.macs + row.macs end
      return table.unpack(out, 1, out.n)
    end)
  end

  local grad_guard <close> = lark.no_grad()
  local ok, result = pcall(function()
    for _, m in ipairs(mods) do wrap(m) end
    model:eval()
    return model(x)
  end)
  for i, m in ipairs(mods) do
    rawset(m, "forward", saved_forward[i])
    rawset(m, "training", training[i])
  end
  if not ok then error(result, 0) end

  -- parameters of each module's subtree, for the rows
  local sub_params = {}
  local function count(m)
    if sub_params[m] == nil then sub_params[m] = m:num_parameters() end
    return sub_params[m]
  end
  local by_path = {}
  for name, m in model:named_modules() do by_path[name ~= "" and name or "(" .. m.__name .. ")"] = m end
  for _, r in ipairs(rows) do r.params = count(by_path[r.path]) end

  local totals = {params = model:num_parameters(), trainable = model:num_parameters({trainable = true}), buffers = 0,
                  macs = rows[1] and rows[1].macs or 0, rows = rows, output = result}
  for _, b in ipairs(model:buffers()) do totals.buffers = totals.buffers + b:numel() end
  totals.output_shape = lark.is_tensor(result) and (function()
    local s, t = result:size(), {}
    for i = 1, #s do t[i] = s[i] end
    return t
  end)() or nil

  if opts.print ~= false then
    local emit = opts.out or print
    local shown = {}
    for _, r in ipairs(rows) do
      if r.depth > 0 and (opts.depth == nil or r.depth <= opts.depth) then shown[#shown + 1] = r end
    end
    local w = {#"Layer (path)", #"Type", #"Output shape", #"Params", #"MACs"}
    local cells = {}
    for i, r in ipairs(shown) do
      cells[i] = {r.path, r.type, r.shape, commas(r.params), r.macs > 0 and human(r.macs) or "--"}
      for j = 1, 5 do w[j] = math.max(w[j], #cells[i][j]) end
    end
    local function line(c)
      return string.format("%-" .. w[1] .. "s  %-" .. w[2] .. "s  %-" .. w[3] .. "s  %" .. w[4] .. "s  %" .. w[5] .. "s",
        c[1], c[2], c[3], c[4], c[5])
    end
    local header = line({"Layer (path)", "Type", "Output shape", "Params", "MACs"})
    local rule = string.rep("=", #header)
    emit(rule)
    emit(header)
    emit(rule)
    for _, c in ipairs(cells) do emit(line(c)) end
    emit(rule)
    emit(string.format("%s: input %s -> output %s", model.__name, shape_str(x), shape_str(result)))
    emit(string.format("Total params: %s (%s trainable)", commas(totals.params), commas(totals.trainable)))
    emit(string.format("Total MACs (Conv2d + Linear): %s (%s)", commas(totals.macs), human(totals.macs)))
    emit(rule)
  end
  return totals
end

return summary
