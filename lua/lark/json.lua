--- lark.json: JSON for metrics logs and model configurations (RFC 8259), small and strict.
--
--   local json = require "lark.json"
--   json.encode{epoch = 1, loss = 0.25, tags = {"a", "b"}}   --> {"epoch":1,"loss":0.25,"tags":["a","b"]}
--   json.decode('{"a": [1, 2.5, null, true]}')               --> {a = {1, 2.5, json.null, true}}
--
-- Tables with keys 1..n (or empty) encode as arrays, others as objects with their keys sorted, so
-- the output is the same from run to run. Integers stay integers; other numbers are written with
-- 17 significant digits (exact round trip); NaN and infinities, which JSON cannot hold, are an
-- error, as are cycles and keys that are not strings or numbers. json.null stands for null.
local json = {}

json.null = setmetatable({}, {__tostring = function() return "null" end})

local escapes = {['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
  ["\t"] = "\\t"}

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return escapes[c] or string.format("\\u%04x", c:byte()) end) .. '"'
end

local function is_array(t)
  local n = #t
  local count = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
    count = count + 1
  end
  return count == n
end

local function encode_value(v, out, seen, path)
  local ty = type(v)
  if v == json.null or v == nil then
    out[#out + 1] = "null"
  elseif ty == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif ty == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      error(string.format("json.encode: %s is %s, which JSON cannot represent", path, tostring(v)), 0)
    end
    if math.type(v) == "integer" then
      out[#out + 1] = string.format("%d", v)
    else
      local s = string.format("%.17g", v)
      if tonumber(string.format("%.15g", v)) == v then s = string.format("%.15g", v) end
      if not s:find("[%.eEn]") then s = s .. ".0" end
      out[#out + 1] = s
    end
  elseif ty == "string" then
    out[#out + 1] = encode_string(v)
  elseif ty == "table" then
    if seen[v] then error("json.encode: " .. path .. " contains itself (a cycle)", 0) end
    seen[v] = true
    if is_array(v) then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        encode_value(v[i], out, seen, path .. "[" .. i .. "]")
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" and type(k) ~= "number" then
          error(string.format("json.encode: %s has a key of type %s (keys must be strings)", path, type(k)), 0)
        end
        keys[#keys + 1] = tostring(k)
      end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = encode_string(k)
        out[#out + 1] = ":"
        local val = v[k]
        if val == nil then val = v[tonumber(k)] end
        encode_value(val, out, seen, path .. "." .. k)
      end
      out[#out + 1] = "}"
    end
    seen[v] = nil
  else
    error(string.format("json.encode: %s is a %s, which JSON cannot represent", path, ty), 0)
  end
end

--- json.encode(value): the JSON text of value (one line).
function json.encode(v)
  local out = {}
  encode_value(v, out, {}, "value")
  return table.concat(out)
end

-- ---- decoding ----------------------------------------------------------------------------------------

local function decode_error(s, i, what)
  local line, col = 1, 1
  for k = 1, i - 1 do
    if s:sub(k, k) == "\n" then line, col = line + 1, 1 else col = col + 1 end
  end
  error(string.format("json.decode: %s at line %d, column %d", what, line, col), 0)
end

local function skip(s, i) return s:find("[^ \t\r\n]", i) or #s + 1 end

local decode_value

local function decode_string(s, i)
  local out, j = {}, i + 1
  while true do
    local c = s:sub(j, j)
    if c == "" then decode_error(s, i, "unterminated string") end
    if c == '"' then return table.concat(out), j + 1 end
    if c == "\\" then
      local e = s:sub(j + 1, j + 1)
      local simple = {['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t"}
      if simple[e] then
        out[#out + 1] = simple[e]
        j = j + 2
      elseif e == "u" then
        local hex = s:sub(j + 2, j + 5)
        if not hex:match("^%x%x%x%x$") then decode_error(s, j, "bad \\u escape") end
        local cp = tonumber(hex, 16)
        j = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF and s:sub(j, j + 1) == "\\u" then
          local lo = tonumber(s:sub(j + 2, j + 5), 16)
          if lo and lo >= 0xDC00 and lo <= 0xDFFF then
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
            j = j + 6
          end
        end
        out[#out + 1] = utf8.char(cp)
      else
        decode_error(s, j, "bad escape \\" .. e)
      end
    elseif c:byte() < 32 then
      decode_error(s, j, "control character in a string")
    else
      out[#out + 1] = c
      j = j + 1
    end
  end
end

function decode_value(s, i, depth)
  if depth > 500 then decode_error(s, i, "nesting too deep") end
  i = skip(s, i)
  local c = s:sub(i, i)
  if c == "{" then
    local obj = {}
    i = skip(s, i + 1)
    if s:sub(i, i) == "}" then return obj, i + 1 end
    while true do
      if s:sub(i, i) ~= '"' then decode_error(s, i, "expected a string key") end
      local k
      k, i = decode_string(s, i)
      i = skip(s, i)
      if s:sub(i, i) ~= ":" then decode_error(s, i, "expected ':'") end
      obj[k], i = decode_value(s, i + 1, depth + 1)
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == "}" then return obj, i + 1 end
      if d ~= "," then decode_error(s, i, "expected ',' or '}'") end
      i = skip(s, i + 1)
    end
  elseif c == "[" then
    local arr, n = {}, 0
    i = skip(s, i + 1)
    if s:sub(i, i) == "]" then return arr, i + 1 end
    while true do
      n = n + 1
      arr[n], i = decode_value(s, i, depth + 1)
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == "]" then return arr, i + 1 end
      if d ~= "," then decode_error(s, i, "expected ',' or ']'") end
      i = i + 1
    end
  elseif c == '"' then
    return decode_string(s, i)
  elseif s:sub(i, i + 3) == "true" then
    return true, i + 4
  elseif s:sub(i, i + 4) == "false" then
    return false, i + 5
  elseif s:sub(i, i + 3) == "null" then
    return json.null, i + 4
  else
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if not num or num == "" or num == "-" then decode_error(s, i, "unexpected character '" .. c .. "'") end
    local v = math.tointeger(tonumber(num)) and not num:find("[%.eE]") and math.tointeger(tonumber(num)) or tonumber(num)
    if v == nil then decode_error(s, i, "bad number '" .. num .. "'") end
    return v, i + #num
  end
end

--- json.decode(text): the Lua value of a JSON text (null as json.null); errors name the line and
-- column of the first problem.
function json.decode(s)
  if type(s) ~= "string" then error("json.decode: expected a string, got " .. type(s), 2) end
  local v, i = decode_value(s, 1, 0)
  i = skip(s, i)
  if i <= #s then decode_error(s, i, "trailing characters") end
  return v
end

return json
