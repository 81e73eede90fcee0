-- fuzz_spec.lua: random API calls with random arguments. Whatever comes in, only Lua errors may
-- come out: a crash, an abort or a sanitizer report ends the process and fails the run. The
-- sequence is seeded, so a failure replays; set LARK_FUZZ_SEED and LARK_FUZZ_ITERS to explore.

local seed = tonumber(os.getenv("LARK_FUZZ_SEED") or "20261122")
local iters = tonumber(os.getenv("LARK_FUZZ_ITERS") or "20000")

-- Functions that change global state in ways that would slow the rest of the run down.
local skip = {set_num_threads = true, memcpy_bandwidth = true, manual_seed = false}

local dtypes = {"float32", "float64", "int64", "uint8", "bool"}

local function small_shape(rng)
  local n = rng(0, 3)
  local s = {}
  for i = 1, n do s[i] = rng(0, 4) end
  return s
end

local function make_tensor(rng)
  local shape = small_shape(rng)
  local t = lark.zeros(shape, {dtype = dtypes[rng(1, #dtypes)]})
  if t:numel() > 0 then
    -- a few non-zero values, and sometimes a non-contiguous view
    t:fill_(rng(-3, 3))
    if t:dim() >= 2 and rng(1, 3) == 1 then t = t:transpose(1, 2) end
    if t:dim() >= 1 and rng(1, 4) == 1 then t = t:narrow(1, 1, math.max(0, t:size(1) - 1)) end
  end
  return t
end

local function random_value(rng, pool)
  local k = rng(1, 16)
  if k == 1 then return nil
  elseif k == 2 then return rng(1, 2) == 1
  elseif k == 3 then return rng(-3, 8) -- small integers: sizes, dims, indices
  elseif k == 4 then return ({0, -1, 1 << 40, -(1 << 40), math.maxinteger, math.mininteger})[rng(1, 6)]
  elseif k == 5 then return ({0.5, -2.25, 0 / 0, math.huge, -math.huge, 1e300})[rng(1, 6)]
  elseif k == 6 then return ({"float32", "int64", "bool", "cuda", "cpu", "", "x", "float16"})[rng(1, 8)]
  elseif k == 7 then return small_shape(rng)
  elseif k == 8 then return {dtype = dtypes[rng(1, #dtypes)]}
  elseif k == 9 then return {{1, 2}, {3}} -- ragged
  elseif k == 10 then return function() end
  elseif k == 11 then return {{}, {1, 2}}
  else return pool[rng(1, #pool)] end
end

describe("fuzz", function()
  it("only raises Lua errors, whatever the arguments (" .. iters .. " calls)", function()
    local state = seed
    local function rng(lo, hi) -- a tiny LCG, independent of lark's and Lua's generators
      state = (state * 6364136223846793005 + 1442695040888963407) & 0x7fffffffffffffff
      return lo + (state >> 17) % (hi - lo + 1)
    end

    local funcs, methods = {}, {}
    for name, f in pairs(lark) do
      if type(f) == "function" and not skip[name] and not name:find("^_") then funcs[#funcs + 1] = name end
    end
    for name, f in pairs(lark._methods) do
      if type(f) == "function" and not skip[name] then methods[#methods + 1] = name end
    end
    table.sort(funcs)
    table.sort(methods)
    assert.is_true(#funcs > 30 and #methods > 60, "the API is smaller than expected")

    local pool = {}
    for i = 1, 24 do pool[i] = make_tensor(rng) end
    local calls, errors = 0, 0
    for i = 1, iters do
      local args = {}
      local nargs = rng(0, 4)
      for j = 1, nargs do args[j] = random_value(rng, pool) end
      local ok, res
      if rng(1, 2) == 1 then
        local name = funcs[rng(1, #funcs)]
        ok, res = pcall(lark[name], table.unpack(args, 1, nargs))
      else
        local name = methods[rng(1, #methods)]
        local t = pool[rng(1, #pool)]
        ok, res = pcall(function() return t[name](t, table.unpack(args, 1, nargs)) end)
      end
      calls = calls + 1
      if not ok then
        errors = errors + 1
        assert(type(res) == "string", "errors are strings, got " .. type(res))
        assert(#res > 0)
      elseif lark.is_tensor(res) and res:numel() < 1e6 then
        -- keep some results around to feed later calls (views of views, odd dtypes, freed tensors)
        pool[rng(1, #pool)] = res
      end
      -- a freed or closed tensor in the pool is fine: later calls must raise, not crash
      if i % 500 == 0 then collectgarbage() end
    end
    assert.are.equal(iters, calls)
    assert.is_true(errors > iters / 10, "the fuzzer should hit many errors, hit " .. errors)
    assert.is_true(errors < iters, "the fuzzer should hit some successes")
  end)
end)
