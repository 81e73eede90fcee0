-- cuda_spec.lua: the CUDA backend from Lua. Without a GPU (or without CUDA in the build) the GPU
-- specs are pending with a visible message, and what must hold on a CPU-only machine is checked:
-- lark.cuda answers, and asking for a CUDA tensor fails with an error that says so. With a GPU,
-- every result is brought back and compared with references computed in Lua loops (float64).

local has_cuda = lark.cuda.is_available()

local dtypes = {"float32", "float64", "int64", "uint8", "bool"}

-- values of each dtype that every backend stores and converts exactly
local function sample(dtype, rows, cols)
  local t = {}
  for i = 1, rows do
    t[i] = {}
    for j = 1, cols do
      local k = (i * 7 + j * 3) % 11
      if dtype == "bool" then t[i][j] = k % 2 == 1
      elseif dtype == "uint8" then t[i][j] = k * 20
      elseif dtype == "int64" then t[i][j] = (k - 5) * 1000003
      else t[i][j] = (k - 5) / 4 end
    end
  end
  return t
end

-- a[i][j] op b[i][j] over nested tables of one shape (the reference for elementwise ops)
local function zip(a, b, f)
  if type(a) ~= "table" then return f(a, b) end
  local r = {}
  for i = 1, #a do r[i] = zip(a[i], b[i], f) end
  return r
end

-- broadcast a table of shape {r, 1} or {1, c} (or a full one) to {rows, cols}
local function bcast(t, rows, cols)
  local r = {}
  for i = 1, rows do
    r[i] = {}
    for j = 1, cols do r[i][j] = t[#t == 1 and 1 or i][#t[1] == 1 and 1 or j] end
  end
  return r
end

-- plain matrix product in float64 over tables
local function matmul_ref(a, b)
  local m, k, n = #a, #b, #b[1]
  local c = {}
  for i = 1, m do
    c[i] = {}
    for j = 1, n do
      local s = 0
      for p = 1, k do s = s + a[i][p] * b[p][j] end
      c[i][j] = s
    end
  end
  return c
end

local function transpose_ref(a)
  local r = {}
  for j = 1, #a[1] do
    r[j] = {}
    for i = 1, #a do r[j][i] = a[i][j] end
  end
  return r
end

describe("lark.cuda", function()
  it("reports its devices consistently", function()
    assert.is_boolean(lark.cuda.is_available())
    local n = lark.cuda.device_count()
    assert.is_true(math.type(n) == "integer" and n >= 0)
    assert.are.equal(n > 0, lark.cuda.is_available())
    lark.cuda.synchronize() -- a no-op without a device, never an error
    local bytes = lark.cuda.bytes_allocated()
    assert.is_true(math.type(bytes) == "integer" and bytes >= 0)
    assert.are.equal(bytes, lark.cuda.memory_allocated())
    assert.are.equal(bytes, lark.bytes_allocated("cuda"))
  end)

  if not has_cuda then
    pending("no CUDA device: CUDA specs skipped")

    it("refuses CUDA tensors with an error that names CUDA", function()
      local t = lark.ones(2, 3)
      for _, f in ipairs {
        function() return t:to("cuda") end,
        function() return t:cuda() end,
        function() return lark.zeros(2, 3, {device = "cuda"}) end,
        function() return lark.tensor({1, 2}, {device = "cuda:0"}) end,
      } do
        local ok, err = pcall(f)
        assert.is_false(ok)
        assert.truthy(tostring(err):lower():find("cuda", 1, true), "error without 'cuda': " .. tostring(err))
      end
      assert.are.equal(0, lark.cuda.bytes_allocated())
      -- the CPU tensor is untouched
      assert.are.same({{1, 1, 1}, {1, 1, 1}}, t:table())
    end)
    return
  end

  describe("on the GPU", function()
    it("round-trips every dtype", function()
      for _, dt in ipairs(dtypes) do
        local values = sample(dt, 3, 4)
        local g = lark.tensor(values, {dtype = dt}):cuda()
        assert.are.equal("cuda:0", g:device())
        assert.are.equal(dt, g:dtype())
        assert.are.same(values, g:table())
        assert.are.same(values, g:cpu():table())
        assert.are.equal("cpu", g:cpu():device())
        -- a transposed view on the GPU comes back transposed
        assert.are.same(transpose_ref(values), g:t():cpu():table())
        assert.are.same(transpose_ref(values), g:t():contiguous():table())
      end
    end)

    it("round-trips 0-d and empty tensors", function()
      local s = lark.tensor(2.5):cuda()
      assert.are.equal(0, s:dim())
      assert.are.equal(2.5, s:item())
      local e = lark.zeros(0, 3):cuda()
      assert.are.equal(0, e:numel())
      assert.are.equal(0, e:cpu():numel())
      assert.are.equal(0, e:clone():numel())
    end)

    it("converts dtypes on the GPU as the CPU does", function()
      local src = lark.tensor({{0, 1.5, -1.5, 255.9}, {256, -300, 0.25, 1e10}}, {dtype = "float64"})
      for _, from in ipairs(dtypes) do
        local c = src:to(from)
        local g = c:cuda()
        for _, to in ipairs(dtypes) do
          assert.are.same(c:to(to):table(), g:to(to):cpu():table())
          assert.are.same(c:t():to(to):table(), g:t():to(to):cpu():table())
        end
      end
    end)

    it("fills any layout and dtype", function()
      for _, dt in ipairs(dtypes) do
        local v = dt == "bool" and true or 3
        local g = lark.full({2, 3}, v, {dtype = dt, device = "cuda"})
        assert.are.same({{v, v, v}, {v, v, v}}, g:table())
      end
      local g = lark.zeros(4, 5, {device = "cuda"})
      g:t():narrow(1, 2, 2):fill_(7) -- columns 2 and 3 of the 4x5 tensor
      local want = {}
      for i = 1, 4 do
        want[i] = {}
        for j = 1, 5 do want[i][j] = (j == 2 or j == 3) and 7 or 0 end
      end
      assert.are.same(want, g:table())
      g:zero_()
      assert.are.same(bcast({{0}}, 4, 5), g:table())
    end)

    it("adds and multiplies with broadcasting like the CPU and a Lua reference", function()
      local a, b = rand_table({3, 1}), rand_table({1, 4})
      local ga, gb = lark.tensor(a, {dtype = "float64"}):cuda(), lark.tensor(b, {dtype = "float64"}):cuda()
      local A, B = bcast(a, 3, 4), bcast(b, 3, 4)
      assert_near(ga + gb, zip(A, B, function(x, y) return x + y end), 1e-12)
      assert_near(ga * gb, zip(A, B, function(x, y) return x * y end), 1e-12)
      assert_near(ga - gb, zip(A, B, function(x, y) return x - y end), 1e-12)
      assert_near(ga / gb, zip(A, B, function(x, y) return x / y end), 1e-12)
      assert_near(ga + gb, lark.tensor(a, {dtype = "float64"}) + lark.tensor(b, {dtype = "float64"}), 0)
      -- float32, int64 and a number
      local fa = lark.tensor(a):cuda()
      assert_near((fa * 2 + 1):cpu(), (lark.tensor(a) * 2 + 1), 0)
      local ia = lark.tensor({{1, -2}, {3, 4}}, {dtype = "int64"}):cuda()
      local ib = lark.tensor({10, 20}, {dtype = "int64"}):cuda()
      assert.are.same({{11, 18}, {13, 24}}, (ia + ib):table())
      assert.are.same({{10, -40}, {30, 80}}, (ia * ib):table())
      assert.are.equal("int64", (ia + ib):dtype())
    end)

    it("compares on the GPU", function()
      local a = lark.tensor({{1, 5}, {3, 3}}):cuda()
      local b = lark.tensor({3, 4}):cuda()
      assert.are.same({{true, false}, {false, true}}, lark.lt(a, b):table())
      assert.are.same({{false, false}, {true, false}}, lark.eq(a, b):table())
    end)

    it("takes non-contiguous operands", function()
      local a, b = rand_table({4, 6}), rand_table({6, 4})
      local ga, gb = lark.tensor(a, {dtype = "float64"}):cuda(), lark.tensor(b, {dtype = "float64"}):cuda()
      local bt = transpose_ref(b)
      assert_near(ga + gb:t(), zip(a, bt, function(x, y) return x + y end), 1e-12)
      -- a narrowed, transposed view of each
      local an, bn = ga:narrow(2, 2, 3), gb:t():narrow(2, 2, 3)
      local want = {}
      for i = 1, 4 do
        want[i] = {}
        for j = 1, 3 do want[i][j] = a[i][j + 1] * bt[i][j + 1] end
      end
      assert_near(an * bn, want, 1e-12)
      -- in place into a strided view
      ga:narrow(2, 1, 2):add_(1)
      for i = 1, 4 do for j = 1, 2 do a[i][j] = a[i][j] + 1 end end
      assert_near(ga, a, 1e-12)
    end)

    it("multiplies matrices like a float64 reference (float32 within 1e-5)", function()
      for _, s in ipairs {{1, 1, 1}, {3, 4, 5}, {17, 33, 9}, {64, 64, 64}, {1, 9, 1}} do
        local m, k, n = s[1], s[2], s[3]
        local a, b = rand_table({m, k}), rand_table({k, n})
        local want = matmul_ref(a, b)
        local ga, gb = lark.tensor(a):cuda(), lark.tensor(b):cuda()
        assert_near(ga:matmul(gb), want, 1e-5)
        -- transposed operands, read in place: a = (a^T)^T, b = (b^T)^T
        local gat = lark.tensor(transpose_ref(a)):cuda():t()
        local gbt = lark.tensor(transpose_ref(b)):cuda():t()
        assert_near(gat:matmul(gb), want, 1e-5)
        assert_near(ga:matmul(gbt), want, 1e-5)
        assert_near(gat:matmul(gbt), want, 1e-5)
        -- float64, with a transposed second operand
        local da = lark.tensor(a, {dtype = "float64"}):cuda()
        local dbt = lark.tensor(transpose_ref(b), {dtype = "float64"}):cuda():t()
        assert_near(da:matmul(dbt), want, 1e-12)
        -- the CPU agrees
        assert_near(ga:matmul(gb), lark.tensor(a):matmul(lark.tensor(b)), 1e-5)
      end
    end)

    it("multiplies batches, with broadcast batch dims", function()
      local a = {rand_table({3, 4}), rand_table({3, 4})}
      local b = {rand_table({4, 2}), rand_table({4, 2})}
      local ga, gb = lark.tensor(a):cuda(), lark.tensor(b):cuda()
      local want = {matmul_ref(a[1], b[1]), matmul_ref(a[2], b[2])}
      assert_near(ga:matmul(gb), want, 1e-5)
      -- one matrix against the batch
      assert_near(ga:matmul(gb:select(1, 1)), {matmul_ref(a[1], b[1]), matmul_ref(a[2], b[1])}, 1e-5)
      assert_near(lark.tensor(a[1]):cuda():matmul(gb), {matmul_ref(a[1], b[1]), matmul_ref(a[1], b[2])}, 1e-5)
      -- vectors
      local v = rand_table({4})
      local want_v = {}
      for i = 1, 3 do
        want_v[i] = 0
        for p = 1, 4 do want_v[i] = want_v[i] + a[1][i][p] * v[p] end
      end
      assert_near(lark.tensor(a[1]):cuda():matmul(lark.tensor(v):cuda()), want_v, 1e-5)
      -- an empty inner dim gives zeros
      local z = lark.zeros(3, 0, {device = "cuda"}):matmul(lark.zeros(0, 2, {device = "cuda"}))
      assert.are.same({{0, 0}, {0, 0}, {0, 0}}, z:table())
    end)

    it("names both devices when operands are on different devices", function()
      local g, c = lark.ones(2, 2):cuda(), lark.ones(2, 2)
      assert_error_match(function() return g + c end,
        "add: the first operand is on cuda:0 but the second operand is on cpu")
      assert_error_match(function() return c * g end,
        "mul: the first operand is on cpu but the second operand is on cuda:0")
      assert_error_match(function() return g:matmul(c) end,
        "matmul: the first operand is on cuda:0 but the second operand is on cpu")
    end)

    it("runs cumsum, once the example of an op it lacked (a missing kernel's error: test_device_dispatch.c)", function()
      local g = lark.ones(2, 2):cuda()
      assert.are.same({{1, 1}, {2, 2}}, g:cumsum(1):cpu():table())
    end)

    -- values that find the corners of each dtype: NaN, infinities, -0, halves (round to even),
    -- the integer extremes (neg and abs wrap), uint8's top half
    local function edge_values(dt)
      if dt == "float32" or dt == "float64" then
        return {{0 / 0, 1 / 0, -1 / 0, -0.0, 0.5, 1.5}, {2.5, -2.5, -0.5, 3, -7.25, 1e-3},
                {100, -100, 1e-30, 42.75, -1e10, 0.1}}
      elseif dt == "int64" then
        return {{math.mininteger, math.maxinteger, 0, -1}, {1, -3, 3037000500, -5}}
      elseif dt == "uint8" then
        return {{0, 1, 127, 128}, {200, 255, 16, 3}}
      end
      return {{true, false, true}, {false, false, true}}
    end

    -- the GPU's result (or error) equals the CPU's: exactly, or within tol for float results
    local function same_as_cpu(what, gpu_fn, cpu_fn, tol)
      local okc, rc = pcall(cpu_fn)
      local okg, rg = pcall(gpu_fn)
      if not okc then
        assert.is_false(okg, what .. ": the CPU refuses but the GPU does not")
        assert.are.equal(tostring(rc), tostring(rg), what)
        return
      end
      assert.is_true(okg, what .. ": " .. tostring(rg))
      assert.are.equal("cuda:0", rg:device(), what)
      assert.are.equal(rc:dtype(), rg:dtype(), what)
      assert.are.same(rc:size(), rg:size(), what)
      if tol and tol > 0 and (rc:dtype() == "float32" or rc:dtype() == "float64") then
        assert_near(rg:cpu(), rc, tol)
      else
        assert_same(rg:cpu(), rc, what)
      end
    end

    it("runs every unary op on every dtype like the CPU", function()
      local ops = {"neg", "abs", "exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid", "relu", "floor",
                   "ceil", "round", "sign", "reciprocal", "square", "logical_not"}
      -- libm functions may differ in the last bits between the CPU and the GPU; the rest is exact
      local approx = {exp = true, log = true, sin = true, cos = true, tanh = true, sigmoid = true}
      for _, dt in ipairs(dtypes) do
        for _, values in ipairs {edge_values(dt), sample(dt, 3, 5)} do
          local c = lark.tensor(values, {dtype = dt})
          local g = c:cuda()
          for _, op in ipairs(ops) do
            local tol = approx[op] and (c:dtype() == "float64" and 1e-13 or 1e-6) or 0
            local what = op .. " on " .. dt
            same_as_cpu(what, function() return g[op](g) end, function() return c[op](c) end, tol)
            -- a strided view, and in place
            same_as_cpu(what .. " (transposed)", function() return g:t()[op](g:t()) end,
              function() return c:t()[op](c:t()) end, tol)
            -- in place (not for libm functions into an integer tensor: a one-ulp difference of
            -- exp(20) is a different uint8)
            if not (approx[op] and dt ~= "float32" and dt ~= "float64") then
              same_as_cpu(what .. " (in place)", function() local h = g:clone(); h[op .. "_"](h); return h end,
                function() local h = c:clone(); h[op .. "_"](h); return h end, tol)
            end
          end
        end
      end
      -- the unary minus operator is neg
      assert_same((-lark.tensor({1.5, -2}):cuda()):cpu(), {-1.5, 2})
    end)

    it("clamps every dtype like the CPU, NaN included", function()
      local bounds = {{-1, 2}, {-2.5, 3.7}, {nil, 0.5}, {0.5, nil}, {3, -1}, {-1e30, 1e30}, {0 / 0, 1}, {-10, 300},
                      {130, 140}}
      for _, dt in ipairs(dtypes) do
        for _, values in ipairs {edge_values(dt), sample(dt, 3, 5)} do
          local c = lark.tensor(values, {dtype = dt})
          local g = c:cuda()
          for _, b in ipairs(bounds) do
            local what = string.format("clamp(%s, %s) on %s", tostring(b[1]), tostring(b[2]), dt)
            same_as_cpu(what, function() return g:clamp(b[1], b[2]) end, function() return c:clamp(b[1], b[2]) end)
            same_as_cpu(what .. " (transposed, in place)", function() local h = g:clone():t(); h:clamp_(b[1], b[2]); return h end,
              function() local h = c:clone():t(); h:clamp_(b[1], b[2]); return h end)
          end
        end
      end
      -- the float rules spelled out: NaN stays, a NaN bound is no bound, hi wins over lo
      local g = lark.tensor({0 / 0, -5, 5, 0.5}):cuda()
      assert_same(g:clamp(-1, 1):cpu(), {0 / 0, -1, 1, 0.5})
      assert_same(g:clamp(0 / 0, 1):cpu(), {0 / 0, -5, 1, 0.5})
      assert_same(g:clamp(2, 1):cpu(), {0 / 0, 1, 1, 1})
    end)

    it("selects with where like the CPU, broadcasting every operand", function()
      for _, dt in ipairs(dtypes) do
        local a = lark.tensor(sample(dt, 1, 4), {dtype = dt})
        local b = lark.tensor(sample(dt, 3, 4), {dtype = dt})
        local cond = lark.tensor({{true}, {false}, {true}})
        local ga, gb, gc = a:cuda(), b:cuda(), cond:cuda()
        same_as_cpu("where on " .. dt, function() return lark.where(gc, ga, gb) end,
          function() return lark.where(cond, a, b) end)
        -- a full condition, a transposed operand, a number
        local full = lark.tensor({{true, false, false, true}, {false, true, true, false}, {true, true, false, false}})
        same_as_cpu("where (full condition) on " .. dt, function() return lark.where(full:cuda(), gb, ga) end,
          function() return lark.where(full, b, a) end)
        local bt, gbt = b:t():contiguous():t(), gb:t():contiguous():t() -- column-major views
        same_as_cpu("where (strided) on " .. dt, function() return lark.where(full:cuda(), gbt, 1) end,
          function() return lark.where(full, bt, 1) end)
      end
      -- mixed dtypes promote, and a uint8 condition works
      local c8 = lark.tensor({1, 0, 2}, {dtype = "uint8"})
      local x, y = lark.tensor({1, 2, 3}, {dtype = "int64"}), lark.tensor({0.5, 0.25, 0.125})
      same_as_cpu("where (uint8 condition, int64 and float32)", function() return lark.where(c8:cuda(), x:cuda(), y:cuda()) end,
        function() return lark.where(c8, x, y) end)
    end)

    it("refuses a device that is not there", function()
      local n = lark.cuda.device_count()
      assert_error_match(function() return lark.zeros(2, {device = "cuda:" .. n}) end, "not available")
    end)

    it("counts the bytes it holds", function()
      collectgarbage()
      collectgarbage()
      lark.cuda.synchronize()
      local before = lark.cuda.bytes_allocated()
      local g = lark.zeros(100, 10, {dtype = "float64", device = "cuda"})
      assert.are.equal(before + 8000, lark.cuda.bytes_allocated())
      g:free()
      assert.are.equal(before, lark.cuda.bytes_allocated())
    end)
  end)
end)
