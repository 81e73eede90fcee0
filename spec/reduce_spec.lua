-- reduce_spec.lua: sum, mean, prod, var, std, norm, any, all, max, min, argmax and argmin against a
-- plain Lua reference (float64 arithmetic over t:table()), on random shapes of 1 to 4 dims, on
-- transposed, narrowed and expanded (stride-0) views, for every dim subset of a 3-D tensor, with
-- keepdim; integer and bool dtypes; ties and NaN; empty tensors; and the error messages.

local nan = 0 / 0

-- A nested table of `shape` (a number for no dims) from a row-major list.
local function nest(list, shape)
  local pos = 0
  return build_table(shape, function()
    pos = pos + 1
    return list[pos]
  end)
end

-- The reference's groups: for each output (row-major), the values it reduces in row-major order
-- of the reduced dims; and the output's shape. dims: list of 1-based dims (negative allowed) or
-- nil for all. Memoised per tensor, as every op of a case reads the same groups.
local memo = setmetatable({}, {__mode = "k"})
local function ref_groups(t, dims, keepdim)
  local key = (dims and table.concat(dims, ",") or "all") .. tostring(keepdim)
  memo[t] = memo[t] or {}
  if memo[t][key] then return table.unpack(memo[t][key]) end
  local vals, shape = flat_numbers(t), shape_of(t)
  local n = #shape
  local red = {}
  if dims == nil or #dims == 0 then
    for d = 1, n do red[d] = true end
  else
    for _, d in ipairs(dims) do red[d < 0 and d + n + 1 or d] = true end
  end
  local out_shape, kept_shape = {}, {}
  for d = 1, n do
    if not red[d] then
      out_shape[#out_shape + 1] = shape[d]
      kept_shape[#kept_shape + 1] = shape[d]
    elseif keepdim then
      out_shape[#out_shape + 1] = 1
    end
  end
  local nout = 1
  for _, s in ipairs(kept_shape) do nout = nout * s end
  local groups = {}
  for o = 1, nout do groups[o] = {} end
  for i = 1, #vals do
    local rem, o, om = i - 1, 0, 1
    for d = n, 1, -1 do
      local c = rem % shape[d]
      rem = rem // shape[d]
      if not red[d] then
        o = o + c * om
        om = om * shape[d]
      end
    end
    local g = groups[o + 1]
    g[#g + 1] = vals[i]
  end
  memo[t][key] = {groups, out_shape}
  return groups, out_shape
end

-- Reference reduction: fn(values) for each output, as a nested table of the output's shape.
local function ref_reduce(t, dims, keepdim, fn)
  local groups, out_shape = ref_groups(t, dims, keepdim)
  local res = {}
  for o = 1, #groups do res[o] = fn(groups[o]) end
  return nest(res, out_shape), out_shape
end

local R = {}
function R.sum(v) local s = 0 for _, x in ipairs(v) do s = s + x end return s end
function R.prod(v) local s = 1 for _, x in ipairs(v) do s = s * x end return s end
function R.mean(v) return R.sum(v) / #v end
-- The 1-based index of the first max (beats: >) or min (beats: <); a NaN beats everything, and
-- the first NaN wins.
local function first_best(v, beats)
  local b = 1
  for i, x in ipairs(v) do
    if v[b] ~= v[b] then break end
    if x ~= x or beats(x, v[b]) then b = i end
  end
  return b
end
function R.argmax(v) return first_best(v, function(x, y) return x > y end) end
function R.argmin(v) return first_best(v, function(x, y) return x < y end) end
function R.max(v) return v[R.argmax(v)] end
function R.min(v) return v[R.argmin(v)] end
local function var_fn(unbiased)
  return function(v)
    local m = R.mean(v)
    local s = 0
    for _, x in ipairs(v) do s = s + (x - m) ^ 2 end
    local dof = #v - (unbiased and 1 or 0)
    if dof <= 0 then return nan end
    return s / dof
  end
end
local function std_fn(unbiased)
  local f = var_fn(unbiased)
  return function(v) return math.sqrt(f(v)) end
end
local function norm_fn(p)
  return function(v)
    if p == math.huge then
      local m = 0
      for _, x in ipairs(v) do m = math.max(m, math.abs(x)) end
      return m
    elseif p == 0 then
      local c = 0
      for _, x in ipairs(v) do if x ~= 0 then c = c + 1 end end
      return c
    end
    local s = 0
    for _, x in ipairs(v) do s = s + math.abs(x) ^ p end
    return s ^ (1 / p)
  end
end
function R.any(v) for _, x in ipairs(v) do if x ~= 0 then return 1 end end return 0 end
function R.all(v) for _, x in ipairs(v) do if x == 0 then return 0 end end return 1 end

-- The views every op is checked on: contiguous, transposed, narrowed, expanded.
local function layouts(dtype)
  local out = {}
  local shapes = {{7}, {4, 5}, {3, 4, 5}, {2, 3, 2, 4}, {1, 6, 1}}
  for _, s in ipairs(shapes) do out[#out + 1] = {"contiguous " .. table.concat(s, "x"), rand_tensor(s, dtype)} end
  local b = rand_tensor({4, 5, 6}, dtype)
  out[#out + 1] = {"transposed", b:transpose(1, 3)}
  out[#out + 1] = {"narrowed", b:narrow(2, 2, 3)}
  out[#out + 1] = {"expanded", rand_tensor({4, 1, 6}, dtype):expand(4, 5, 6)}
  out[#out + 1] = {"expanded leading", rand_tensor({5, 6}, dtype):expand(3, 5, 6)}
  out[#out + 1] = {"4-D permuted", rand_tensor({2, 3, 4, 5}, dtype):transpose(2, 4):narrow(1, 2, 1)}
  return out
end

-- All dim subsets of an n-D tensor as lists (nil: every dim), a few of them negative.
local function dim_subsets(n)
  local subsets = {false}
  for m = 1, (1 << n) - 1 do
    local s = {}
    for d = 1, n do
      if (m >> (d - 1)) & 1 == 1 then s[#s + 1] = (d % 2 == 0) and d - n - 1 or d end
    end
    subsets[#subsets + 1] = s
  end
  return subsets
end

local function check(name, got, t, dims, keepdim, fn, tol)
  local want, want_shape = ref_reduce(t, dims or nil, keepdim, fn)
  local gs = shape_of(got)
  assert.are.same(want_shape, gs, name .. ": shape")
  assert_near(got, want, tol)
end

before_each(function() math.randomseed(1234) end)

describe("sum, mean, prod, var, std, norm, any, all", function()
  it("match the Lua reference on every layout and every dim subset, float64 and float32", function()
    for _, dtype in ipairs({"float64", "float32"}) do
      local tol = dtype == "float64" and 1e-12 or 2e-6
      for _, case in ipairs(layouts(dtype)) do
        local what, t = case[1], case[2]
        for _, dims in ipairs(dim_subsets(t:dim())) do
          dims = dims or nil
          local arg = dims
          if dims and #dims == 1 and math.random() < 0.5 then arg = dims[1] end -- a plain number too
          for _, keep in ipairs({false, true}) do
            local label = string.format("%s %s dims {%s} keep=%s", dtype, what,
              dims and table.concat(dims, ",") or "all", tostring(keep))
            check(label .. " sum", t:sum(arg, keep), t, dims, keep, R.sum, tol)
            check(label .. " mean", lark.mean(t, arg, keep), t, dims, keep, R.mean, tol)
            if not dims then
              check(label .. " max", t:max(nil, keep), t, dims, keep, R.max, 0)
              check(label .. " min", t:min(nil, keep), t, dims, keep, R.min, 0)
            end
            check(label .. " var", t:var(arg, true, keep), t, dims, keep, var_fn(true), tol * 10)
            if not keep then
              check(label .. " var biased", t:var(arg, false, keep), t, dims, keep, var_fn(false), tol * 10)
            end
            check(label .. " std", t:std(arg, nil, keep), t, dims, keep, std_fn(true), tol * 10)
            for _, p in ipairs(keep and {2} or {2, 1, math.huge, 0, 3, 0.5}) do
              check(label .. " norm " .. p, t:norm(p, arg, keep), t, dims, keep, norm_fn(p), tol * 10)
            end
            check(label .. " any", t:gt(0.5):any(arg, keep), t:gt(0.5), dims, keep, R.any, 0)
            check(label .. " all", lark.all(t:gt(-0.9), arg, keep), t:gt(-0.9), dims, keep, R.all, 0)
          end
        end
        check(what .. " prod", t:prod(), t, nil, false, R.prod, tol * 10)
        check(what .. " prod dim 1", t:prod(1, true), t, {1}, true, R.prod, tol * 10)
      end
    end
  end)

  it("gives the result dtypes of PyTorch", function()
    local f = lark.tensor({1.5, 2})
    assert.are.equal("float32", f:sum():dtype())
    assert.are.equal("float64", f:double():mean():dtype())
    assert.are.equal("int64", f:long():sum():dtype())
    assert.are.equal("int64", f:byte():sum():dtype())
    assert.are.equal("int64", f:bool():sum():dtype())
    assert.are.equal("int64", f:bool():prod():dtype())
    assert.are.equal("uint8", f:byte():max():dtype())
    assert.are.equal("bool", f:bool():min():dtype())
    assert.are.equal("bool", f:any():dtype())
    assert.are.equal("bool", f:long():all():dtype())
  end)

  it("sums integers exactly and without uint8 wrap-around", function()
    -- (item() reads through a double, so look at the low bits after subtracting 2^60 in int64)
    local big = lark.tensor({2 ^ 60, 1, 2}, {dtype = "int64"})
    assert.are.equal(3, (big:sum() - (1 << 60)):item())
    assert.are.equal(0, (big:max() - (1 << 60)):item())
    local bytes = lark.full({1000}, 200, {dtype = "uint8"})
    assert.are.equal(200000, bytes:sum():item())
    assert.are.equal(200, bytes:max():item())
    local n = lark.tensor({{3, -4, 5}, {0, 7, -1}}, {dtype = "int64"})
    assert.are.same({-60, 0}, n:prod(2):table())
    assert.are.same({3, 3, 4}, n:sum(1):table())
    assert.are.same({-4, -1}, (n:min(2)):table())
    local b = lark.tensor({{true, false, true}, {true, true, true}})
    assert.are.same({2, 1, 2}, b:sum(1):table())
    assert.are.same({false, true}, b:all(2):table())
    assert.are.same({{true}, {true}}, b:any(-1, true):table())
    -- integer reductions against the reference on a view
    local r = lark.tensor(rand_table({3, 4, 5}, -5, 5), {dtype = "int64"}):transpose(1, 3)
    for _, dims in ipairs(dim_subsets(3)) do
      dims = dims or nil
      check("int64 sum", r:sum(dims), r, dims, false, R.sum, 0)
      check("int64 max", dims and #dims == 1 and (r:max(dims[1])) or r:max(), r,
        dims and #dims == 1 and dims or nil, false, R.max, 0)
      check("int64 prod", r:prod(dims, true), r, dims, true, R.prod, 0)
    end
  end)

  it("handles 0-d tensors and size-1 dims", function()
    local s = lark.tensor(3.5, {dtype = "float64"})
    assert.are.equal(0, s:sum():dim())
    assert.are.equal(3.5, s:sum():item())
    assert.are.equal(3.5, s:sum(1):item())
    assert.are.equal(3.5, s:mean(-1, true):item())
    assert.are.equal(0, s:std(nil, false):item())
    assert.is_true(s:var():item() ~= s:var():item()) -- one element, unbiased: nan
    local v, i = s:max(1)
    assert.are.equal(3.5, v:item())
    assert.are.equal(1, i:item())
    assert.are.equal(1, s:argmin():item())
    local one = lark.ones(1, 1, 1)
    assert.are.same({1, 1, 1}, shape_of(one:sum({1, 3}, true)))
    assert.are.same({1}, shape_of(one:sum({1, 3})))
  end)

  it("keeps float32 sums accurate on many elements", function()
    -- 2^20 + 1 elements of 0.1: float32 accumulation would drift by ~1e-3 relative
    local n = (1 << 20) + 1
    local t = lark.full({n}, 0.1)
    local want = n * 0.10000000149011612 -- the float32 nearest 0.1, summed exactly
    assert.is_true(math.abs(t:sum():item() - want) / want < 1e-6)
    assert.is_true(math.abs(t:mean():item() - 0.10000000149011612) < 1e-7)
    assert.is_true(t:var():item() < 1e-10)
  end)
end)

describe("max, min, argmax, argmin", function()
  it("match the reference along every dim, with 1-based indices", function()
    for _, dtype in ipairs({"float64", "float32", "int64"}) do
      for _, case in ipairs(layouts(dtype)) do
        local what, t = case[1], case[2]
        if dtype == "int64" then t = (t * 3):long() end -- small integers: many ties
        for d = -t:dim(), t:dim() do
          if d ~= 0 then
            for _, keep in ipairs({false, true}) do
              local label = string.format("%s %s dim %d keep %s", dtype, what, d, tostring(keep))
              local v, i = t:max(d, keep)
              check(label .. " max", v, t, {d}, keep, R.max, 0)
              check(label .. " max idx", i, t, {d}, keep, R.argmax, 0)
              assert.are.equal("int64", i:dtype())
              assert.are.equal(t:dtype(), v:dtype())
              v, i = lark.min(t, d, keep)
              check(label .. " min", v, t, {d}, keep, R.min, 0)
              check(label .. " min idx", i, t, {d}, keep, R.argmin, 0)
              check(label .. " argmax", t:argmax(d, keep), t, {d}, keep, R.argmax, 0)
              check(label .. " argmin", lark.argmin(t, d, keep), t, {d}, keep, R.argmin, 0)
            end
          end
        end
        check(what .. " max all", t:max(), t, nil, false, R.max, 0)
        check(what .. " min all", t:min(), t, nil, false, R.min, 0)
        check(what .. " argmax flat", t:argmax(), t, nil, false, R.argmax, 0)
        check(what .. " argmin flat", t:argmin(), t, nil, false, R.argmin, 0)
      end
    end
  end)

  it("return the first index on ties", function()
    local t = lark.tensor({{1, 5, 5, 2}, {-3, -3, 0, -3}})
    local v, i = t:max(2)
    assert.are.same({5, 0}, v:table())
    assert.are.same({2, 3}, i:table())
    v, i = t:min(2)
    assert.are.same({1, 1}, i:table())
    assert.are.same({2, 2, 2, 2}, t:argmin(1):table())
    assert.are.same({1, 1, 1, 1}, t:argmax(1):table())
    assert.are.equal(2, t:argmax():item())
    assert.are.equal(5, t:argmin():item())
  end)

  it("propagate NaN as the max and the min, at its first position", function()
    local t = lark.tensor({{1, nan, 7, nan}, {2, 3, 4, 5}}, {dtype = "float64"})
    local v, i = t:max(2)
    local vt = v:table()
    assert.is_true(vt[1] ~= vt[1])
    assert.are.equal(5, vt[2])
    assert.are.same({2, 4}, i:table())
    v, i = t:min(-1, true)
    assert.is_true(v:table()[1][1] ~= v:table()[1][1])
    assert.are.same({{2}, {1}}, i:table())
    assert.is_true(t:max():item() ~= t:max():item())
    assert.is_true(t:min():item() ~= t:min():item())
    assert.are.equal(2, t:argmax():item())
    assert.are.equal(2, t:argmin():item())
    assert.are.same({2, 1, 1, 1}, t:argmax(1):table())
    assert.is_true(t:sum():item() ~= t:sum():item())
    assert.is_true(t:norm(math.huge):item() ~= t:norm(math.huge):item())
    assert.are.same({true, true}, t:any(2):table()) -- NaN is not zero
  end)
end)

describe("empty tensors", function()
  it("reduce to the identity, nan for mean and var", function()
    local e = lark.zeros(3, 0)
    assert.are.same({0, 0, 0}, e:sum(2):table())
    assert.are.same({1, 1, 1}, e:prod(2):table())
    assert.are.same({{0}, {0}, {0}}, e:norm(2, 2, true):table())
    assert.are.same({false, false, false}, e:any(2):table())
    assert.are.same({true, true, true}, e:all(2):table())
    for _, x in ipairs(e:mean(2):table()) do assert.is_true(x ~= x) end
    for _, x in ipairs(e:var(2):table()) do assert.is_true(x ~= x) end
    assert.are.equal(0, e:sum():item())
    assert.are.equal(1, e:prod():item())
    assert.is_true(e:mean():item() ~= e:mean():item())
    assert.are.same({0}, shape_of(e:sum(1)))
    assert.are.same({1, 0}, shape_of(e:max(1, true)))
    local v, i = e:max(1)
    assert.are.same({0}, shape_of(v))
    assert.are.same({0}, shape_of(i))
  end)

  it("have no max or min over an empty dim", function()
    local e = lark.zeros(3, 0)
    assert_error_match(function() e:max(2) end, "max: cannot reduce over an empty dim of size 0")
    assert_error_match(function() e:min(-1) end, "min: cannot reduce over an empty dim of size 0")
    assert_error_match(function() e:max() end, "max: cannot reduce over an empty dim of size 0")
    assert_error_match(function() e:argmax() end, "argmax: cannot reduce over an empty dim of size 0")
    assert_error_match(function() lark.zeros(0):argmin(1) end, "argmin: cannot reduce over an empty dim of size 0")
  end)
end)

describe("errors", function()
  local t = lark.zeros(2, 3, 4)
  it("name the function, the argument and what was expected", function()
    assert_error_match(function() t:sum(4) end, "sum: argument 2: dim 4 is out of range")
    assert_error_match(function() t:mean(-4) end, "mean: argument 2: dim -4 is out of range")
    assert_error_match(function() t:sum({1, 5}) end, "sum: argument 2: dim 5 is out of range")
    assert_error_match(function() t:sum({1, -3}) end, "sum: dim 1 appears more than once")
    assert_error_match(function() t:var({2, 2}) end, "var: dim 2 appears more than once")
    assert_error_match(function() t:sum(1.5) end, "sum: argument 2: dim must be an integer")
    assert_error_match(function() t:sum({1, "a"}) end, "sum: argument 2: dim 2 of the list must be an integer")
    assert_error_match(function() t:sum("x") end, "sum: argument 2: expected a dim (integer) or a list of dims")
    assert_error_match(function() t:sum(t) end, "sum: argument 2: expected a dim (integer) or a list of dims, got Tensor")
    assert_error_match(function() t:sum(1, 1) end, "sum: argument 3: expected keepdim (a boolean)")
    assert_error_match(function() t:std(1, "yes") end, "std: argument 3: expected unbiased (a boolean)")
    assert_error_match(function() t:norm("fro") end, "norm: argument 2: expected the order p")
    assert_error_match(function() t:norm(0 / 0) end, "norm: the order p is NaN")
    assert_error_match(function() t:max(t) end, "lark.maximum(a, b)")
    assert_error_match(function() t:max({1, 2}) end, "max: argument 2: expected a dim (integer)")
    assert_error_match(function() t:argmax(9) end, "argmax: argument 2: dim 9 is out of range")
    assert_error_match(function() t:min(0) end, "min: argument 2: dim 0 is out of range")
    assert_error_match(function() lark.sum(nil) end, "sum: argument 1: expected a Tensor")
    assert_error_match(function() lark.argmin("t") end, "argmin: argument 1: expected a Tensor")
    local many = {}
    for i = 1, 17 do many[i] = 1 end
    assert_error_match(function() t:sum(many) end, "sum: argument 2: 17 dims given")
  end)

  it("refuse mean, var, std and norm of integer and bool tensors, naming the dtype", function()
    local i = lark.tensor({1, 2, 3}, {dtype = "int64"})
    assert_error_match(function() i:mean() end, "mean: expected a float32 or float64 tensor, got int64")
    assert_error_match(function() i:var(1) end, "var: expected a float32 or float64 tensor, got int64")
    assert_error_match(function() i:byte():std() end, "std: expected a float32 or float64 tensor, got uint8")
    assert_error_match(function() i:bool():norm() end, "norm: expected a float32 or float64 tensor, got bool")
  end)
end)
