-- cuda_ops_spec.lua: reductions, random streams and optimizer updates on the GPU against the CPU
-- backend, their reference (core/ops/reduce.c, core/random.c, core/ops/optim.c; the kernels are
-- cuda/reduce.cu, cuda/random.cu, cuda/optim.cu).
--
-- Every input is made on the CPU (seeded), copied to the GPU, and the op's GPU result brought back
-- and compared with the same op on the CPU copy: integer, bool, index and random-integer results
-- exactly; float results within a tolerance that covers the different order of the float64
-- additions (see cuda/reduce.cu) or of CUDA's log and cos (random.cu). Without a CUDA device every
-- describe below is pending with a message saying so.


local FLOATS = {"float32", "float64"}
local ALL_DTYPES = {"float32", "float64", "int64", "uint8", "bool"}

-- a CPU tensor of shape with seeded values of dtype: floats normal, int64 in [-5, 5] (many ties),
-- uint8 in [0, 9], bool 0/1
local function sample(shape, dtype, gen)
  for _, n in ipairs(shape) do
    if n == 0 then return lark.zeros(shape, {dtype = dtype}) end
  end
  if dtype == "float32" or dtype == "float64" then return lark.randn(shape, {dtype = dtype, generator = gen}) end
  if dtype == "int64" then return lark.randint(-5, 6, shape, {dtype = "int64", generator = gen}) end
  if dtype == "uint8" then return lark.randint(0, 10, shape, {dtype = "uint8", generator = gen}) end
  return lark.randint(0, 2, shape, {dtype = "bool", generator = gen})
end

local function tol_of(dtype) return dtype == "float32" and 2e-6 or dtype == "float64" and 1e-10 or 0 end

-- got (a GPU tensor) equals want (its CPU twin): device, dtype and shape, then the values (floats
-- within tol * (1 + |want|), NaN matching NaN; everything else exactly)
local function expect_match(got, want, tol, what)
  assert.are.equal("cuda:0", got:device(), what)
  assert.are.equal(want:dtype(), got:dtype(), what)
  assert.are.same(shape_of(want), shape_of(got), what)
  local host = got:cpu()
  local ok, err
  if want:dtype() == "float32" or want:dtype() == "float64" then
    ok, err = pcall(assert_near, host, want, tol)
  else
    ok, err = pcall(assert_same, host, want, what)
  end
  if not ok then error(what .. ": " .. tostring(err), 2) end
end

-- the layouts each input is also read in: contiguous, a transposed view, a narrowed view and (2-D and
-- up) an expanded one; returns pairs {name, cpu view, gpu view} of one logical shape
local function layouts(c)
  local g = c:cuda()
  local out = {{"contiguous", c, g}}
  if c:dim() >= 2 then
    out[#out + 1] = {"transposed", c:transpose(1, c:dim()):contiguous():transpose(1, c:dim()),
                     g:transpose(1, c:dim()):contiguous():transpose(1, c:dim())}
  end
  if c:dim() >= 1 and c:size(1) >= 3 then
    -- a narrowed copy of a bigger tensor: same values, a storage offset and non-packed strides
    local shape = shape_of(c)
    shape[1] = shape[1] + 2
    local big = lark.zeros(shape, {dtype = c:dtype()})
    big:narrow(1, 2, c:size(1)):copy_(c)
    out[#out + 1] = {"narrowed", big:narrow(1, 2, c:size(1)), big:cuda():narrow(1, 2, c:size(1))}
  end
  if c:dim() >= 2 and c:size(1) >= 1 then
    -- the first row repeated down dim 1 (stride 0)
    local row = c:narrow(1, 1, 1)
    out[#out + 1] = {"expanded", row:expand(shape_of(c)), row:cuda():expand(shape_of(c))}
  end
  return out
end

gpu_describe("reductions", function()
  -- shapes that reach each loop shape of cuda/reduce.cu: short rows (thread), rows up to 4096 (warp),
  -- longer rows (block, chunked when few), columns (thread, chunked), and 0-d/empty/size-1 dims
  local shapes = {{}, {0}, {1}, {7}, {3, 4}, {2, 0, 3}, {4, 5, 6}, {2, 3, 4, 5}, {1000, 7}, {33, 130},
                  {130, 5000}, {3, 40000}, {70001}, {4, 3000, 40}}

  -- the dim lists tried on a tensor of n dims (1-based; negative from the end; {} = every dim)
  local function dim_lists(n)
    local lists = {{}}
    for d = 1, n do lists[#lists + 1] = {d} end
    if n >= 2 then lists[#lists + 1] = {1, n} lists[#lists + 1] = {-1} end
    if n >= 3 then lists[#lists + 1] = {1, 3} lists[#lists + 1] = {2, 3} end
    return lists
  end

  local function big(shape)
    local n = 1
    for _, s in ipairs(shape) do n = n * s end
    return n > 20000
  end

  it("sum, mean, prod, var, std, norm, any, all match the CPU on every dtype, shape, dim list and layout", function()
    local gen = lark.Generator(11)
    for _, shape in ipairs(shapes) do
      for _, dtype in ipairs(ALL_DTYPES) do
        local is_float = dtype == "float32" or dtype == "float64"
        do
          local c = sample(shape, dtype, gen)
          local lays = big(shape) and {layouts(c)[1]} or layouts(c)
          for _, lay in ipairs(lays) do
            local name, cv, gv = lay[1], lay[2], lay[3]
            for _, dims in ipairs(dim_lists(#shape)) do
              -- keepdim only changes the result's shape: tried on the contiguous layout
              for _, keep in ipairs(name == "contiguous" and {false, true} or {false}) do
                local what = string.format("%s %s [%s] dims {%s} keepdim %s", dtype, name, table.concat(shape, ","),
                  table.concat(dims, ","), tostring(keep))
                local tol = tol_of(dtype)
                expect_match(gv:sum(dims, keep), cv:sum(dims, keep), tol, "sum " .. what)
                expect_match(gv:any(dims, keep), cv:any(dims, keep), 0, "any " .. what)
                expect_match(gv:all(dims, keep), cv:all(dims, keep), 0, "all " .. what)
                if not big(shape) then
                  expect_match(gv:prod(dims, keep), cv:prod(dims, keep), tol, "prod " .. what)
                end
                if is_float then
                  expect_match(gv:mean(dims, keep), cv:mean(dims, keep), tol, "mean " .. what)
                  for _, unb in ipairs{true, false} do
                    expect_match(gv:var(dims, unb, keep), cv:var(dims, unb, keep), tol, "var " .. what)
                    expect_match(gv:std(dims, unb, keep), cv:std(dims, unb, keep), tol, "std " .. what)
                  end
                  for _, p in ipairs{2, 1, 0, 3, 0.5, math.huge, -math.huge} do
                    expect_match(gv:norm(p, dims, keep), cv:norm(p, dims, keep), tol * 4, "norm p=" .. p .. " " .. what)
                  end
                end
              end
            end
          end
        end
      end
    end
  end)

  it("max, min, argmax, argmin and their indices match the CPU, first index on ties", function()
    local gen = lark.Generator(12)
    for _, shape in ipairs(shapes) do
      local nonempty = true
      for _, s in ipairs(shape) do nonempty = nonempty and s > 0 end
      if nonempty then
        for _, dtype in ipairs(ALL_DTYPES) do
          if dtype ~= "bool" or not big(shape) then
            local c = sample(shape, dtype, gen)
            for _, lay in ipairs(big(shape) and {layouts(c)[1]} or layouts(c)) do
              local name, cv, gv = lay[1], lay[2], lay[3]
              local what = string.format("%s %s [%s]", dtype, name, table.concat(shape, ","))
              expect_match(gv:max(), cv:max(), 0, "max() " .. what)
              expect_match(gv:min(), cv:min(), 0, "min() " .. what)
              expect_match(gv:argmax(), cv:argmax(), 0, "argmax() " .. what)
              expect_match(gv:argmin(), cv:argmin(), 0, "argmin() " .. what)
              for d = 1, #shape do
                for _, keep in ipairs{false, true} do
                  local w = what .. " dim " .. d .. " keepdim " .. tostring(keep)
                  local gvals, gidx = gv:max(d, keep)
                  local cvals, cidx = cv:max(d, keep)
                  expect_match(gvals, cvals, 0, "max values " .. w)
                  expect_match(gidx, cidx, 0, "max indices " .. w)
                  gvals, gidx = gv:min(d, keep)
                  cvals, cidx = cv:min(d, keep)
                  expect_match(gvals, cvals, 0, "min values " .. w)
                  expect_match(gidx, cidx, 0, "min indices " .. w)
                  expect_match(gv:argmax(d, keep), cv:argmax(d, keep), 0, "argmax " .. w)
                  expect_match(gv:argmin(d, keep), cv:argmin(d, keep), 0, "argmin " .. w)
                end
              end
            end
          end
        end
      end
    end
  end)

  it("NaN wins max, min and the infinity norms, at its first position", function()
    local n = 9000 -- past one warp's row: the block shape, where partial results meet in a tree
    for _, dtype in ipairs(FLOATS) do
      local c = lark.randn({3, n}, {dtype = dtype, generator = lark.Generator(5)})
      c[1][7] = 0 / 0
      c[1][n - 3] = 0 / 0 -- a second NaN, later: the index stays the first one's
      c[2][n] = 0 / 0
      local g = c:cuda()
      for d = 1, 2 do
        local gv, gi = g:max(d)
        local cv, ci = c:max(d)
        expect_match(gv, cv, 0, dtype .. " max values with NaN, dim " .. d)
        expect_match(gi, ci, 0, dtype .. " max indices with NaN, dim " .. d)
        gv, gi = g:min(d)
        cv, ci = c:min(d)
        expect_match(gv, cv, 0, dtype .. " min values with NaN, dim " .. d)
        expect_match(gi, ci, 0, dtype .. " min indices with NaN, dim " .. d)
        expect_match(g:norm(math.huge, d), c:norm(math.huge, d), 0, dtype .. " inf-norm with NaN, dim " .. d)
        expect_match(g:norm(-math.huge, d), c:norm(-math.huge, d), 0, dtype .. " -inf-norm with NaN, dim " .. d)
      end
      assert.are.equal(7, g:argmax():item())
      assert.are.equal(7, g:argmin():item())
      assert.is_true(g:max():item() ~= g:max():item())
      -- ties: every element equal, the first index wins
      local z = lark.zeros({5, n}, {dtype = dtype, device = "cuda"})
      assert_same(z:argmax(2), {1, 1, 1, 1, 1}, dtype .. " argmax of ties")
      assert_same(z:argmin(1), lark.ones(n, {dtype = "int64"}), dtype .. " argmin of ties")
      assert.are.equal(1, z:argmax():item())
    end
  end)

  it("gives exact integer sums and products (wrapping in int64) and bool sums", function()
    local c = lark.randint(-3, 4, {64, 70}, {dtype = "int64", generator = lark.Generator(3)})
    c[1][1] = 1 << 62 -- products and sums that wrap
    c[1][2] = 1 << 62
    local g = c:cuda()
    for _, dims in ipairs{{}, {1}, {2}} do
      expect_match(g:sum(dims), c:sum(dims), 0, "int64 sum")
      expect_match(g:prod(dims), c:prod(dims), 0, "int64 prod")
    end
    local b = lark.randint(0, 2, {300, 3}, {dtype = "bool", generator = lark.Generator(4)})
    expect_match(b:cuda():sum(1), b:sum(1), 0, "bool sum")
    assert.are.equal("int64", b:cuda():sum():dtype())
  end)

  it("reduces empty dims to the identity and refuses max over an empty dim like the CPU", function()
    local c = lark.zeros({3, 0}, {dtype = "float32"})
    local g = c:cuda()
    assert_same(g:sum(2), {0, 0, 0}, "sum over an empty dim")
    assert_same(g:prod(2), {1, 1, 1}, "prod over an empty dim")
    assert_same(g:any(2), {false, false, false}, "any over an empty dim")
    assert_same(g:all(2), {true, true, true}, "all over an empty dim")
    expect_match(g:mean(2), c:mean(2), 0, "mean over an empty dim (NaN)")
    expect_match(g:var(2), c:var(2), 0, "var over an empty dim (NaN)")
    assert.are.same({0}, shape_of(g:sum(1)))
    local cpu_err = error_of(function() return c:max(2) end)
    expect_error(cpu_err:match("max: .*"), function() return g:max(2) end)
    expect_error("cannot reduce over an empty dim", function() return g:argmax() end)
  end)

  it("one result per output whatever the run: chunked sums are deterministic", function()
    local c = lark.randn({2, 300000}, {generator = lark.Generator(9)})
    local g = c:cuda()
    local a, b = g:sum(2):cpu(), g:sum(2):cpu()
    assert_same(a, b, "two runs of a chunked sum")
    expect_match(g:sum(2), c:sum(2), 2e-6, "chunked sum vs the CPU")
    expect_match(g:sum(), c:sum(), 2e-6, "whole-tensor sum vs the CPU")
    expect_match(g:t():contiguous():sum(1), c:sum(2), 2e-6, "chunked column sum vs the CPU")
  end)
end)

gpu_describe("random streams", function()
  -- the same draw on the GPU and on the CPU from generators of one state
  local function both(seed, offset, draw)
    local gg, gc = lark.Generator(seed), lark.Generator(seed)
    gg:set_state({seed = seed, offset = offset})
    gc:set_state({seed = seed, offset = offset})
    local a, b = draw(gg, "cuda"), draw(gc, "cpu")
    assert.are.same(gc:get_state(), gg:get_state())
    return a, b
  end

  local seeds = {0, 1234, (1 << 40) + 5, -1}
  local offsets = {0, 17, (1 << 32) - 5} -- the last crosses into the counter's high word

  it("rand and uniform_ give the CPU's numbers bit for bit", function()
    for _, seed in ipairs(seeds) do
      for _, off in ipairs(offsets) do
        for _, dtype in ipairs(FLOATS) do
          local a, b = both(seed, off, function(g, dev) return lark.rand({1000}, {dtype = dtype, device = dev, generator = g}) end)
          assert_same(a:cpu(), b, "rand " .. dtype .. " seed " .. seed .. " offset " .. off)
          a, b = both(seed, off, function(g, dev)
            return lark.zeros({37, 29}, {dtype = dtype, device = dev}):uniform_(-3.25, 7.5, g)
          end)
          assert_same(a:cpu(), b, "uniform_(-3.25, 7.5) " .. dtype .. " seed " .. seed)
          -- low == high, and a range whose top rounds to high in float32
          a, b = both(seed, off, function(g, dev) return lark.zeros({50}, {dtype = dtype, device = dev}):uniform_(2, 2, g) end)
          assert_same(a:cpu(), b, "uniform_(2, 2) " .. dtype)
          a, b = both(seed, off, function(g, dev)
            return lark.zeros({500}, {dtype = dtype, device = dev}):uniform_(1, 1 + 1e-7, g)
          end)
          assert_same(a:cpu(), b, "uniform_ over a one-ulp range " .. dtype)
        end
      end
    end
  end)

  it("randn and normal_ give the CPU's numbers (float64 within a few ulp of log and cos)", function()
    for _, seed in ipairs(seeds) do
      for _, off in ipairs(offsets) do
        local a, b = both(seed, off, function(g, dev) return lark.randn({4000}, {dtype = "float64", device = dev, generator = g}) end)
        assert_near(a:cpu(), b, 1e-14)
        a, b = both(seed, off, function(g, dev) return lark.randn({4000}, {dtype = "float32", device = dev, generator = g}) end)
        assert_near(a:cpu(), b, 3e-7) -- at most one float32 rounding step apart, nearly always equal
        local equal = lark.eq(a:cpu(), b):sum():item()
        assert.is_true(equal >= 3990, "float32 normals equal to the CPU's: " .. equal .. " of 4000")
        a, b = both(seed, off, function(g, dev)
          return lark.zeros({20, 30}, {dtype = "float64", device = dev}):t():normal_(0.5, 2.5, g)
        end)
        assert_near(a:cpu(), b, 1e-14)
      end
    end
  end)

  it("randint and bernoulli_ give the CPU's numbers exactly, in every dtype", function()
    for _, seed in ipairs(seeds) do
      for _, off in ipairs(offsets) do
        for _, dtype in ipairs(ALL_DTYPES) do
          local hi = dtype == "bool" and 2 or 10
          local a, b = both(seed, off, function(g, dev)
            return lark.randint(0, hi, {333}, {dtype = dtype, device = dev, generator = g})
          end)
          assert_same(a:cpu(), b, "randint " .. dtype)
          a, b = both(seed, off, function(g, dev)
            return lark.zeros({21, 16}, {dtype = dtype, device = dev}):t():bernoulli_(0.3, g)
          end)
          assert_same(a:cpu(), b, "bernoulli_(0.3) " .. dtype)
        end
        -- ranges that need the whole 128-bit product of randint's mapping
        for _, r in ipairs{{-(1 << 62), 1 << 62}, {math.mininteger, math.maxinteger}, {-7, 1000003}} do
          local a, b = both(seed, off, function(g, dev)
            return lark.randint(r[1], r[2], {500}, {dtype = "int64", device = dev, generator = g})
          end)
          assert_same(a:cpu(), b, "randint [" .. r[1] .. ", " .. r[2] .. ")")
        end
      end
    end
  end)

  it("bernoulli with a tensor p (any layout and dtype) matches the CPU and checks p", function()
    local pc = lark.rand({40, 30}, {dtype = "float64", generator = lark.Generator(2)})
    for _, view in ipairs{function(t) return t end, function(t) return t:t() end,
                          function(t) return t:narrow(1, 3, 10) end} do
      local a, b = both(77, 5, function(g, dev)
        local p = dev == "cuda" and pc:cuda() or pc
        return view(p):bernoulli(g)
      end)
      assert_same(a:cpu(), b, "bernoulli(p)")
      assert.are.equal("float64", a:dtype())
    end
    -- float32 p, and an int64 p of 0s and 1s, broadcast into bernoulli_
    local a, b = both(3, 0, function(g, dev)
      return lark.zeros({6, 30}, {device = dev}):bernoulli_(pc:narrow(1, 1, 1):float():to(dev), g)
    end)
    assert_same(a:cpu(), b, "bernoulli_ with a float32 row of p broadcast down 6 rows")
    local ip = lark.tensor({0, 1, 1, 0, 1}, {dtype = "int64"})
    a, b = both(4, 9, function(g, dev) return ip:to(dev):bernoulli(g) end)
    assert_same(a:cpu(), b, "bernoulli(int64 p)")
    assert_same(a:cpu(), ip, "bernoulli of 0s and 1s is p")
    -- an invalid p: the CPU's message, and the generator stays where it was
    local bad = lark.tensor({0.5, 0.25, 1.5, 0.1}):cuda()
    local g = lark.Generator(1)
    local before = g:get_state()
    local cpu_msg = error_of(function() return bad:cpu():bernoulli(g) end)
    expect_error(cpu_msg:match("bernoulli: .*"), function() return bad:bernoulli(g) end)
    expect_error("got 1.5 at element 3", function() return bad:bernoulli(g) end)
    expect_error("at element 2", function() return lark.tensor({0, 0 / 0}):cuda():bernoulli(g) end)
    assert.are.same(before, g:get_state())
  end)

  it("fills big, strided and empty targets in row-major order", function()
    local a, b = both(5, 0, function(g, dev) return lark.rand({1500, 1400}, {device = dev, generator = g}) end)
    assert_same(a:cpu():sum():item(), b:sum():item(), "sum of 2.1M uniforms")
    assert_same(a:cpu():narrow(1, 1499, 2), b:narrow(1, 1499, 2), "the last rows of 2.1M uniforms")
    a, b = both(6, 3, function(g, dev)
      local t = lark.zeros({4, 5, 6}, {dtype = "float64", device = dev})
      t:permute(3, 1, 2):narrow(1, 2, 4):uniform_(0, 1, g)
      return t
    end)
    assert_same(a:cpu(), b, "uniform_ into a permuted, narrowed view")
    a, b = both(7, 0, function(g, dev) return lark.zeros({0, 3}, {device = dev}):normal_(0, 1, g) end)
    assert.are.equal(0, a:numel())
    expect_error("expanded", function() return lark.zeros({1, 3}, {device = "cuda"}):expand(4, 3):uniform_() end)
  end)
end)

gpu_describe("optimizer updates", function()
  local shapes = {{37}, {3, 5}, {200, 201}, {0}}

  local function tensors(dtype, gen)
    local ts = {}
    for i, s in ipairs(shapes) do ts[i] = s[1] == 0 and lark.zeros(s, {dtype = dtype}) or lark.randn(s, {dtype = dtype, generator = gen}) end
    return ts
  end
  local function to_gpu(ts)
    local g = {}
    for i, t in ipairs(ts) do g[i] = t:cuda() end
    return g
  end
  local function clones(ts)
    local c = {}
    for i, t in ipairs(ts) do c[i] = t:clone() end
    return c
  end
  local function holes(n, on)
    if not on then return nil end
    local h = {}
    for i = 1, n do h[i] = false end
    return h
  end
  local function expect_list(got, want, tol, what)
    for i = 1, #want do expect_match(got[i], want[i], tol, what .. " " .. i) end
  end

  it("SGD matches the CPU for every option, with its buffers made on the GPU", function()
    for _, dtype in ipairs(FLOATS) do
      local tol = dtype == "float64" and 1e-13 or 2e-6
      for _, o in ipairs{{lr = 0.1}, {lr = 0.1, weight_decay = 0.01}, {lr = 0.1, momentum = 0.9, dampening = 0.1},
                         {lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 1e-3, maximize = true},
                         {lr = 0.05, momentum = 0.5, weight_decay = 0.1, maximize = true}} do
        local gen = lark.Generator(21)
        local pc = tensors(dtype, gen)
        local pg = to_gpu(pc)
        local bc, bg = holes(#pc, o.momentum), holes(#pc, o.momentum)
        for step = 1, 3 do
          local gc = tensors(dtype, gen)
          local gg = to_gpu(gc)
          if step == 3 then gc[2], gg[2] = gc[2]:t():contiguous():t(), gg[2]:t():contiguous():t() end -- non-contiguous grads
          lark.sgd_step_(pc, gc, bc, o)
          lark.sgd_step_(pg, gg, bg, o)
        end
        local what = dtype .. " sgd " .. string.format("momentum %s nesterov %s", tostring(o.momentum), tostring(o.nesterov))
        expect_list(pg, pc, tol, what .. " param")
        if bg then expect_list(bg, bc, tol, what .. " momentum_buffer") end
      end
    end
  end)

  it("AdamW matches the CPU with and without amsgrad, per-tensor step counts", function()
    for _, dtype in ipairs(FLOATS) do
      local tol = dtype == "float64" and 1e-13 or 5e-6
      for _, ams in ipairs{false, true} do
        for _, maximize in ipairs{false, true} do
          local o = {lr = 1e-2, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0.05, amsgrad = ams, maximize = maximize}
          local gen = lark.Generator(22)
          local pc = tensors(dtype, gen)
          local pg = to_gpu(pc)
          local sc = {holes(#pc, true), holes(#pc, true), holes(#pc, ams)}
          local sg = {holes(#pc, true), holes(#pc, true), holes(#pc, ams)}
          for t = 1, 3 do
            local gc = tensors(dtype, gen)
            local steps = {t, t + 5, 2 * t, t}
            lark.adamw_step_(pc, gc, sc[1], sc[2], sc[3], steps, o)
            lark.adamw_step_(pg, to_gpu(gc), sg[1], sg[2], sg[3], steps, o)
          end
          local what = dtype .. " adamw amsgrad " .. tostring(ams) .. " maximize " .. tostring(maximize)
          expect_list(pg, pc, tol, what .. " param")
          expect_list(sg[1], sc[1], tol, what .. " exp_avg")
          expect_list(sg[2], sc[2], tol, what .. " exp_avg_sq")
          if ams then expect_list(sg[3], sc[3], tol, what .. " max_exp_avg_sq") end
        end
      end
    end
  end)

  it("lerp_list_ matches the CPU on both branches and copies integer tensors", function()
    for _, dtype in ipairs(FLOATS) do
      for _, w in ipairs{1e-4, 0.3, 0.7, 1} do
        local gen = lark.Generator(23)
        local dc, src = tensors(dtype, gen), tensors(dtype, gen)
        local dg = to_gpu(dc)
        local ic, is = lark.tensor({1, 2, 3}, {dtype = "int64"}), lark.tensor({7, 8, 9}, {dtype = "int64"})
        local ig = ic:cuda()
        local srcs_c, srcs_g = clones(src), to_gpu(src)
        srcs_c[#srcs_c + 1], srcs_g[#srcs_g + 1] = is, is:cuda()
        dc[#dc + 1], dg[#dg + 1] = ic, ig
        lark.lerp_list_(dc, srcs_c, w)
        lark.lerp_list_(dg, srcs_g, w)
        expect_list(dg, dc, dtype == "float64" and 1e-14 or 1e-6, dtype .. " lerp weight " .. w)
        if w == 1 then assert_same(dg[3]:cpu(), src[3], "lerp with weight 1 is the source") end
        assert_same(ig:cpu(), {7, 8, 9}, "an int64 entry is copied")
      end
    end
  end)

  it("total_norm and clip_grad_norm_ match the CPU, NaN included", function()
    local gen = lark.Generator(24)
    for _, dtype in ipairs(FLOATS) do
      local tc = tensors(dtype, gen)
      tc[2] = tc[2]:t() -- non-contiguous: read through a copy
      local tg = {}
      for i, t in ipairs(tc) do tg[i] = i == 2 and tc[2]:t():contiguous():cuda():t() or t:cuda() end
      for _, p in ipairs{2, 1, 3, 0.5, math.huge} do
        local a, b = lark.total_norm(tg, p), lark.total_norm(tc, p)
        assert.is_true(math.abs(a - b) <= 1e-12 * (1 + math.abs(b)), string.format("%s total_norm p=%g: %.17g vs %.17g", dtype, p, a, b))
      end
      local gc, gg = clones(tc), clones(tg)
      local a, b = lark.clip_grad_norm_(gg, 1.0), lark.clip_grad_norm_(gc, 1.0)
      assert.is_true(math.abs(a - b) <= 1e-12 * (1 + math.abs(b)))
      expect_list(gg, gc, dtype == "float64" and 1e-13 or 1e-6, dtype .. " clipped grads")
      local nanc = {lark.tensor({1, 0 / 0, 2}, {dtype = dtype})}
      local nang = {nanc[1]:cuda()}
      for _, p in ipairs{2, math.huge} do
        local x = lark.total_norm(nang, p)
        assert.is_true(x ~= x, "total_norm with a NaN is NaN (p=" .. p .. ")")
      end
    end
  end)

  it("makes state on the parameter's device and names what it cannot do", function()
    local p, g = lark.ones(3):cuda(), lark.ones(3):cuda()
    local bufs = {false}
    lark.sgd_step_({p}, {g}, bufs, {lr = 0.5, momentum = 0.9})
    assert.are.equal("cuda:0", bufs[1]:device())
    assert_same(p:cpu(), {0.5, 0.5, 0.5}, "sgd on the GPU")
    local m, v = {false}, {false}
    lark.adamw_step_({p}, {g}, m, v, nil, {1}, {lr = 0.1})
    assert.are.equal("cuda:0", m[1]:device())
    assert.are.equal("cuda:0", v[1]:device())
    expect_error("the reference loop runs on CPU tensors only", function()
      lark.sgd_step_reference_({p}, {g}, nil, {lr = 0.1})
    end)
    expect_error("the reference loop runs on CPU tensors only", function()
      lark.adamw_step_reference_({p}, {g}, {false}, {false}, nil, {1}, {lr = 0.1})
    end)
    expect_error("its grad is on cpu but the parameter is on cuda:0", function()
      lark.sgd_step_({p}, {lark.ones(3)}, nil, {lr = 0.1})
    end)
  end)
end)
