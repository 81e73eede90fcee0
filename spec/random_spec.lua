-- random_spec.lua: lark's random numbers against a Philox 4x32-10 written here in plain Lua, so the
-- numbers are checked bit for bit and not only statistically. The scheme (core/random.c): element i
-- of a draw uses counter {lo32(offset + i), hi32(offset + i), 0, 0} and key {lo32(seed), hi32(seed)}.

local M32 = 0xffffffff

-- Philox 4x32-10. Lua 5.4 integers are 64-bit and wrap, and >> is a logical shift, so a 32x32
-- product keeps all its bits.
local function philox(c0, c1, c2, c3, k0, k1)
  for _ = 1, 10 do
    local p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
    c0, c1, c2, c3 = (p1 >> 32) ~ c1 ~ k0, p1 & M32, (p0 >> 32) ~ c3 ~ k1, p0 & M32
    k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
  end
  return c0, c1, c2, c3
end

-- The four words of element counter j (offset + i) under seed.
local function block(seed, j) return philox(j & M32, j >> 32, 0, 0, seed & M32, seed >> 32) end

local function ref_uniform32(seed, j)
  local w0 = block(seed, j)
  return (w0 >> 8) * 2.0 ^ -24
end

local function u53(a, b) return (((a << 32) | b) >> 11) * 2.0 ^ -53 end

local function ref_uniform64(seed, j)
  local w0, w1 = block(seed, j)
  return u53(w0, w1)
end

local function ref_normal(seed, j)
  local w0, w1, w2, w3 = block(seed, j)
  local u1 = ((((w0 << 32) | w1) >> 11) + 1) * 2.0 ^ -53
  local u2 = u53(w2, w3)
  return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
end

-- low + floor(x * range / 2^128) for the 128-bit x = w0w1w2w3 and range < 2^32: long
-- multiplication by 32-bit limbs; what carries out of the top limb is the answer.
local function ref_randint(seed, j, low, high)
  local w = {block(seed, j)}
  local range, carry = high - low, 0
  for k = 4, 1, -1 do carry = (w[k] * range + carry) >> 32 end
  return low + carry
end

local function count_differences(a, b)
  local n = 0
  for i = 1, #a do
    if a[i] ~= b[i] then n = n + 1 end
  end
  return n
end

describe("Philox 4x32-10 reference in Lua", function()
  it("matches the Random123 known-answer vectors", function()
    assert.same({0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}, {philox(0, 0, 0, 0, 0, 0)})
    assert.same({0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
      {philox(M32, M32, M32, M32, M32, M32)})
    assert.same({0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
      {philox(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0)})
  end)
end)

describe("random numbers follow the counter scheme", function()
  it("rand gives the reference float32 and float64 values and advances the offset", function()
    lark.manual_seed(1234)
    local a = flat(lark.rand(3, 4))
    for i = 1, 12 do assert.equal(ref_uniform32(1234, i - 1), a[i]) end
    assert.equal(12, lark.get_rng_state().offset)
    local b = flat(lark.rand({5}, {dtype = "float64"}))
    for i = 1, 5 do assert.equal(ref_uniform64(1234, 12 + i - 1), b[i]) end
    assert.equal(17, lark.get_rng_state().offset)
  end)

  it("randn gives Box-Muller on the block's two 53-bit uniforms", function()
    lark.manual_seed(99)
    local z = flat(lark.randn(20, {dtype = "float64"}))
    for i = 1, 20 do assert_near(z[i], ref_normal(99, i - 1), 1e-12) end
    local z32 = flat(lark.randn(2, 3))
    for i = 1, 6 do assert_near(z32[i], ref_normal(99, 20 + i - 1), 1e-6) end
  end)

  it("randint gives the reference integers in [low, high), not shifted", function()
    lark.manual_seed(7)
    local r = lark.randint(1, 11, {50})
    assert.equal("int64", r:dtype())
    local v = flat(r)
    for i = 1, 50 do assert.equal(ref_randint(7, i - 1, 1, 11), v[i]) end
    -- randint(high, shape) draws from [0, high)
    lark.manual_seed(7)
    local z = flat(lark.randint(10, {50}))
    for i = 1, 50 do assert.equal(ref_randint(7, i - 1, 0, 10), z[i]) end
  end)

  it("uses both words of a seed above 2^32 and of an offset above 2^32", function()
    local seed = 0x123456789abc
    local g = lark.Generator(seed)
    g:set_state({seed = seed, offset = 0xfffffffe})
    local v = flat(lark.rand(4, {dtype = "float64", generator = g}))
    for i = 1, 4 do assert.equal(ref_uniform64(seed, 0xfffffffe + i - 1), v[i]) end
    assert.equal(0x100000002, g:get_state().offset)
  end)

  it("a negative seed is its 64-bit two's complement", function()
    lark.manual_seed(-1)
    assert.equal(-1, lark.seed())
    local v = flat(lark.rand(3, {dtype = "float64"}))
    for i = 1, 3 do assert.equal(ref_uniform64(-1, i - 1), v[i]) end
  end)
end)

describe("determinism", function()
  it("the same seed gives the same numbers, different seeds differ", function()
    lark.manual_seed(5)
    local a = flat(lark.randn(1000))
    lark.manual_seed(5)
    local b = flat(lark.randn(1000))
    lark.manual_seed(6)
    local c = flat(lark.randn(1000))
    assert.equal(0, count_differences(a, b))
    assert.is_true(count_differences(a, c) > 990)
  end)

  it("gives the same numbers with 1 and 2 threads", function()
    local saved = lark.get_num_threads()
    local draws = {}
    for threads = 1, 2 do
      lark.set_num_threads(threads)
      lark.manual_seed(2024)
      draws[threads] = {
        flat(lark.rand(100000)), flat(lark.randn(317, 331, {dtype = "float64"})),
        flat(lark.zeros(400, 250):t():uniform_(-1, 1)), flat(lark.randint(-5, 5, {100000})),
        flat(lark.randperm(100000)),
      }
    end
    lark.set_num_threads(saved)
    for k = 1, #draws[1] do
      assert.equal(#draws[1][k], #draws[2][k])
      assert.equal(0, count_differences(draws[1][k], draws[2][k]))
    end
  end)
end)

describe("generators", function()
  it("drawing from a Generator does not move the global one", function()
    lark.manual_seed(11)
    local before = lark.get_rng_state()
    local g = lark.Generator(3)
    lark.rand(100, {generator = g})
    lark.zeros(10):normal_(0, 1, g)
    lark.zeros(10):uniform_(g)
    lark.zeros(10):bernoulli_(0.5, g)
    lark.bernoulli(lark.full({10}, 0.5), g)
    lark.randperm(10, g)
    lark.randint(0, 5, {10}, {generator = g})
    lark.randn(3, g)
    assert.same(before, lark.get_rng_state())
    assert.same({seed = 3, offset = 163}, g:get_state())
  end)

  it("two generators with one seed agree, and match the global one with that seed", function()
    local g1, g2 = lark.Generator(42), lark.Generator(42)
    local a = flat(lark.randn(50, {generator = g1}))
    local b = flat(lark.randn(50, {generator = g2}))
    lark.manual_seed(42)
    local c = flat(lark.randn(50))
    assert.same(a, b)
    assert.same(a, c)
  end)

  it("seed, manual_seed and tostring", function()
    local g = lark.Generator(8)
    assert.equal(8, g:seed())
    assert.equal(g, g:manual_seed(9)) -- chains
    assert.equal(9, g:seed())
    assert.same({seed = 9, offset = 0}, g:get_state())
    assert.truthy(tostring(g):find("lark.Generator(seed=9, offset=0)", 1, true))
    lark.manual_seed(77)
    assert.equal(77, lark.seed())
    assert.equal(77, lark.initial_seed())
    -- a Generator without a seed starts where a fresh process's global generator starts
    assert.is_number(lark.Generator():seed())
  end)

  it("get/set state round-trips and replays", function()
    lark.manual_seed(123)
    lark.rand(17)
    local st = lark.get_rng_state()
    assert.same({seed = 123, offset = 17}, st)
    local a = flat(lark.randn(30))
    lark.rand(5)
    lark.set_rng_state(st)
    local b = flat(lark.randn(30))
    assert.same(a, b)
    assert.same({seed = 123, offset = 47}, lark.get_rng_state())

    local g = lark.Generator(1)
    lark.rand(9, {generator = g})
    local gs = g:get_state()
    local c = flat(lark.randint(0, 100, {20}, {generator = g}))
    g:set_state(gs)
    assert.same(c, flat(lark.randint(0, 100, {20}, {generator = g})))
    -- a generator state replays on the global generator too
    lark.set_rng_state(gs)
    assert.same(c, flat(lark.randint(0, 100, {20})))
  end)

  it("rejects bad states and seeds", function()
    assert_error_match(function() lark.set_rng_state(5) end, "set_rng_state: argument 1: expected a state table")
    assert_error_match(function() lark.set_rng_state({seed = 1}) end, "the state's offset must be an integer")
    assert_error_match(function() lark.set_rng_state({seed = 1.5, offset = 0}) end, "seed must be an integer")
    assert_error_match(function() lark.Generator(1):set_state("x") end, "Generator:set_state")
    assert_error_match(function() lark.manual_seed("x") end, "manual_seed: argument 1: expected seed")
    assert_error_match(function() lark.manual_seed(0.5) end, "manual_seed: argument 1: seed must be an integer")
    assert_error_match(function() lark.manual_seed() end, "manual_seed")
    assert_error_match(function() lark.Generator({}) end, "Generator: argument 1")
    assert_error_match(function() lark.rand(3, {generator = 5}) end, "generator must be a lark.Generator")
  end)
end)

describe("statistics", function()
  local function mean_std(v)
    local s, ss = 0, 0
    for i = 1, #v do
      s = s + v[i]
      ss = ss + v[i] * v[i]
    end
    local m = s / #v
    return m, math.sqrt(ss / #v - m * m)
  end

  it("uniform: mean, std and range of 200k draws", function()
    lark.manual_seed(1)
    local n = 200000
    local v = flat(lark.rand(n))
    local m, s = mean_std(v)
    -- 5 standard errors: sd(mean) = sqrt(1/12/n); sd of the sample std ~ 0.2/sqrt(n) for a uniform
    assert.is_true(math.abs(m - 0.5) < 5 * math.sqrt(1 / 12 / n), "mean " .. m)
    assert.is_true(math.abs(s - math.sqrt(1 / 12)) < 5 * 0.2 / math.sqrt(n), "std " .. s)
    local lo, hi = math.huge, -math.huge
    for i = 1, n do
      lo, hi = math.min(lo, v[i]), math.max(hi, v[i])
    end
    assert.is_true(lo >= 0 and hi < 1)
    -- uniform_(low, high)
    local w = flat(lark.zeros(n, {dtype = "float64"}):uniform_(-3, 5))
    local mw = mean_std(w)
    assert.is_true(math.abs(mw - 1) < 5 * 8 * math.sqrt(1 / 12 / n), "mean " .. mw)
    for i = 1, n do assert(w[i] >= -3 and w[i] < 5) end
  end)

  it("normal: mean and std of 200k draws, and normal_(mean, std)", function()
    lark.manual_seed(2)
    local n = 200000
    local m, s = mean_std(flat(lark.randn(n, {dtype = "float64"})))
    assert.is_true(math.abs(m) < 5 / math.sqrt(n), "mean " .. m)
    assert.is_true(math.abs(s - 1) < 5 / math.sqrt(2 * n), "std " .. s)
    local m2, s2 = mean_std(flat(lark.empty(n):normal_(3, 0.5)))
    assert.is_true(math.abs(m2 - 3) < 5 * 0.5 / math.sqrt(n), "mean " .. m2)
    assert.is_true(math.abs(s2 - 0.5) < 5 * 0.5 / math.sqrt(2 * n), "std " .. s2)
    -- std 0 gives the mean exactly
    assert.same({-2, -2, -2}, lark.zeros(3):normal_(-2, 0):table())
  end)

  it("randint covers every value and stays in range", function()
    lark.manual_seed(3)
    local n = 60000
    local v = flat(lark.randint(-3, 7, {n}))
    local count = {}
    for i = 1, n do
      local x = v[i]
      assert(math.type(x) == "integer" and x >= -3 and x < 7, "value " .. tostring(x))
      count[x] = (count[x] or 0) + 1
    end
    for x = -3, 6 do -- 6000 expected, sd ~ 73
      assert.is_true(math.abs((count[x] or 0) - 6000) < 6 * 73, "value " .. x .. " drawn " .. tostring(count[x]))
    end
    -- a range of one value, and the widest range
    assert.same({4, 4, 4}, lark.randint(4, 5, {3}):table())
    local wide = flat(lark.randint(math.mininteger, math.maxinteger, {2000}))
    local neg = 0
    for i = 1, #wide do
      if wide[i] < 0 then neg = neg + 1 end
    end
    assert.is_true(neg > 850 and neg < 1150, "negatives " .. neg)
  end)

  it("bernoulli frequency is p", function()
    lark.manual_seed(4)
    local n = 100000
    local function frequency(v)
      local s = 0
      for i = 1, #v do s = s + (v[i] == true and 1 or v[i] == false and 0 or v[i]) end
      return s / #v
    end
    local f = frequency(flat(lark.zeros(n):bernoulli_(0.3)))
    assert.is_true(math.abs(f - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n), "frequency " .. f)
    -- per-element p: the first half 0.1, the second half 0.9
    local p = lark.zeros(2, n // 2)
    p:select(1, 1):fill_(0.1)
    p:select(1, 2):fill_(0.9)
    local b = lark.bernoulli(p):table()
    local f1, f2 = frequency(b[1]), frequency(b[2])
    assert.is_true(math.abs(f1 - 0.1) < 5 * math.sqrt(0.09 / (n / 2)), "frequency " .. f1)
    assert.is_true(math.abs(f2 - 0.9) < 5 * math.sqrt(0.09 / (n / 2)), "frequency " .. f2)
    -- p = 0 and p = 1 are exact
    assert.same({0, 0, 0, 0}, lark.zeros(4):bernoulli_(0):table())
    assert.same({1, 1, 1, 1}, lark.zeros(4, {dtype = "int64"}):bernoulli_(1):table())
  end)

  it("randperm is a permutation of 1..n and equals sorting the indices by their keys", function()
    lark.manual_seed(5)
    for _, n in ipairs({1, 2, 7, 1000, 5000}) do
      local st = lark.get_rng_state()
      local p = lark.randperm(n)
      assert.equal("int64", p:dtype())
      assert.same({n}, {p:size(1)})
      local v = flat(p)
      local seen = {}
      for i = 1, n do
        assert(math.type(v[i]) == "integer" and v[i] >= 1 and v[i] <= n)
        assert(not seen[v[i]], "repeated " .. v[i])
        seen[v[i]] = true
      end
      -- the reference: 1..n sorted by the 64-bit key w0w1 of counter offset + i - 1, ties by index
      local keys, idx = {}, {}
      for i = 1, n do
        local w0, w1 = block(st.seed, st.offset + i - 1)
        keys[i], idx[i] = (w0 << 32) | w1, i
      end
      table.sort(idx, function(a, b)
        if keys[a] ~= keys[b] then return math.ult(keys[a], keys[b]) end
        return a < b
      end)
      assert.same(idx, v)
      assert.equal(st.offset + n, lark.get_rng_state().offset)
    end
    assert.equal(0, lark.randperm(0):numel())
  end)
end)

describe("layouts", function()
  it("uniform_ on a transposed view fills it in its logical order", function()
    lark.manual_seed(9)
    local base = lark.zeros(150, 90)
    local view = base:t() -- 90 x 150, non-contiguous
    assert.is_false(view:is_contiguous())
    assert.equal(view, view:uniform_(-1, 2)) -- returns self
    lark.manual_seed(9)
    local ref = lark.zeros(90, 150):uniform_(-1, 2)
    assert.equal(0, count_differences(flat(view), flat(ref)))
    -- the base holds the same numbers transposed back
    assert.equal(0, count_differences(flat(base), flat(ref:t():contiguous())))
  end)

  it("normal_ on a narrowed 3-d view writes only the view's elements", function()
    local cube = lark.zeros(4, 5, 6, {dtype = "float64"})
    local g = lark.Generator(10)
    cube:narrow(3, 2, 3):normal_(1, 2, g)
    local ref = flat(lark.zeros(4, 5, 3, {dtype = "float64"}):normal_(1, 2, lark.Generator(10)))
    local c, k = cube:table(), 0
    for i = 1, 4 do
      for j = 1, 5 do
        for l = 1, 6 do
          if l >= 2 and l <= 4 then
            k = k + 1
            assert.equal(ref[k], c[i][j][l])
          else
            assert.equal(0, c[i][j][l])
          end
        end
      end
    end
  end)

  it("0-d, empty and size-1 shapes", function()
    lark.manual_seed(12)
    local s = lark.rand()
    assert.equal(0, s:dim())
    assert.equal(ref_uniform32(12, 0), s:item())
    local e = lark.randn(0, 3)
    assert.same({0, 3}, {e:size(1), e:size(2)})
    assert.equal(1, lark.get_rng_state().offset) -- an empty draw takes no numbers
    local one = lark.rand(1, 1, 3, {dtype = "float64"})
    local v = flat(one)
    for i = 1, 3 do assert.equal(ref_uniform64(12, i), v[i]) end
    assert.equal(0, lark.zeros(0):bernoulli_(0.5):numel())
    assert.equal(0, lark.randint(0, 3, {0, 2}):numel())
  end)

  it("refuses to fill an expanded view (its elements share memory)", function()
    local ex = lark.zeros(1, 4):expand(3, 4)
    assert_error_match(function() ex:uniform_() end, "uniform_: cannot fill an expanded tensor")
    assert_error_match(function() ex:normal_() end, "normal_: cannot fill an expanded tensor")
    assert_error_match(function() ex:bernoulli_(0.5) end, "bernoulli_: cannot fill an expanded tensor")
    assert_error_match(function() ex:bernoulli_(lark.full({4}, 0.5)) end, "bernoulli_: cannot fill an expanded tensor")
  end)
end)

describe("dtypes", function()
  it("rand and randn take float dtypes; randint and bernoulli_ any", function()
    assert.equal("float32", lark.rand(2):dtype())
    assert.equal("float64", lark.randn(2, "float64"):dtype())
    assert.equal("float64", lark.randn(2, {dtype = "double"}):dtype())
    assert.equal("uint8", lark.randint(0, 256, {10}, {dtype = "uint8"}):dtype())
    local f = flat(lark.randint(-4, 4, {100}, {dtype = "float32"}))
    for i = 1, 100 do assert(f[i] == math.floor(f[i]) and f[i] >= -4 and f[i] < 4) end
    local b = lark.zeros(10, {dtype = "bool"}):bernoulli_(0.5)
    assert.equal("bool", b:dtype())
    for _, x in ipairs(b:table()) do assert.is_boolean(x) end
  end)

  it("bernoulli keeps p's dtype and shape; bernoulli_ broadcasts a tensor p", function()
    local p = lark.full({2, 3}, 0.5, {dtype = "float64"})
    local b = lark.bernoulli(p)
    assert.equal("float64", b:dtype())
    assert.same({2, 3}, {b:size(1), b:size(2)})
    -- method form, and the same numbers as the scalar form for a constant p
    local g1, g2 = lark.Generator(3), lark.Generator(3)
    local x = flat(lark.zeros(4, 5):bernoulli_(lark.full({5}, 0.25), g1))
    local y = flat(lark.zeros(4, 5):bernoulli_(0.25, g2))
    assert.same(y, x)
    assert.same(g1:get_state(), g2:get_state())
    assert.same(flat(lark.full({3}, 0.7):bernoulli(lark.Generator(1))),
      flat(lark.bernoulli(lark.full({3}, 0.7), lark.Generator(1))))
  end)

  it("randperm accepts a generator or options", function()
    local a = flat(lark.randperm(20, lark.Generator(4)))
    local b = flat(lark.randperm(20, {generator = lark.Generator(4), dtype = "float64"}))
    assert.same(a, b)
  end)
end)

describe("errors", function()
  it("names the function, the argument and what was expected", function()
    local f = lark.zeros(3)
    assert_error_match(function() lark.randn(3, {dtype = "int64"}) end, "randn: dtype int64 is not a float dtype")
    assert_error_match(function() lark.rand(3, "bool") end, "rand: dtype bool is not a float dtype")
    assert_error_match(function() lark.zeros(3, {dtype = "int64"}):normal_() end, "normal_: expected a float32 or float64 tensor, got int64")
    assert_error_match(function() lark.zeros(3, {dtype = "int64"}):uniform_() end, "uniform_: expected a float32 or float64")
    assert_error_match(function() lark.randint(5, 5, {3}) end, "randint: low (5) must be < high (5)")
    assert_error_match(function() lark.randint(6, 5, {3}) end, "randint: low (6) must be < high (5)")
    assert_error_match(function() lark.randint(0, 300, {3}, {dtype = "uint8"}) end, "does not fit a uint8 tensor")
    assert_error_match(function() lark.randint(1.5, 3, {3}) end, "randint: argument 1: low must be an integer")
    assert_error_match(function() lark.randint("a", 3, {3}) end, "randint: argument 1: expected low")
    assert_error_match(function() lark.randint(0, nil, {3}) end, "randint: argument 2: expected high")
    assert_error_match(function() f:uniform_(1, 0) end, "uniform_: low (1) must be <= high (0)")
    assert_error_match(function() f:uniform_(0, math.huge) end, "uniform_: low and high must be finite")
    assert_error_match(function() f:uniform_("a") end, "uniform_: argument 2: expected low (a number), got string")
    assert_error_match(function() f:normal_(0, -1) end, "normal_: std must be finite and >= 0, got -1")
    assert_error_match(function() f:normal_(0, 0 / 0) end, "normal_: std is NaN")
    assert_error_match(function() f:normal_(0, 1, 2) end, "normal_: argument 4: unexpected number")
    assert_error_match(function() f:bernoulli_(1.5) end, "bernoulli_: p must be in [0, 1], got 1.5")
    assert_error_match(function() f:bernoulli_(-0.5) end, "bernoulli_: p must be in [0, 1]")
    assert_error_match(function() f:bernoulli_(0 / 0) end, "bernoulli_: p must be in [0, 1]")
    assert_error_match(function() f:bernoulli_(lark.full({2}, 0.5)) end, "bernoulli_: p of shape [2] cannot be broadcast")
    assert_error_match(function() lark.bernoulli(lark.tensor({0.5, 2})) end, "bernoulli: p must be in [0, 1], got 2 at element 2")
    assert_error_match(function() lark.bernoulli(0.5) end, "bernoulli: argument 1: expected a Tensor")
    assert_error_match(function() lark.bernoulli(f, "x") end, "bernoulli: argument 2: expected a lark.Generator")
    assert_error_match(function() lark.randperm(-1) end, "randperm: argument 1: n must be >= 0, got -1")
    assert_error_match(function() lark.randperm(2.5) end, "randperm: argument 1: n must be an integer")
    assert_error_match(function() lark.randperm() end, "randperm: argument 1: expected n")
    assert_error_match(function() lark.rand(-2) end, "rand: argument 1: size -2 of dim 1 is negative")
    assert_error_match(function() lark.rand(2, {dtype = "nope"}) end, "expected a dtype")
    assert_error_match(function() lark.rand(2, {}, 3) end, "rand: argument 3: unexpected number")
    assert_error_match(function() lark.normal_(nil) end, "normal_: argument 1: expected a Tensor, got nil")
  end)

  it("a failed draw does not move the generator", function()
    lark.manual_seed(1)
    pcall(function() lark.zeros(3):normal_(0, -1) end)
    pcall(function() lark.randint(3, 3, {4}) end)
    pcall(function() lark.bernoulli(lark.tensor({0.5, 2})) end)
    assert.same({seed = 1, offset = 0}, lark.get_rng_state())
  end)
end)
