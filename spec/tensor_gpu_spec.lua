-- tensor_gpu_spec.lua: the indexing, sorting and running-sum ops on the GPU against the CPU backend,
-- their reference (core/ops/index.c, core/ops/sort.c; the kernels are cuda/index.cu, cuda/sort.cu):
-- index_select, gather, scatter_add(_), masked_fill(_), masked_select, nonzero, sort, topk, cumsum,
-- their gradients, and their errors.
--
-- Every input is made on the CPU (seeded), copied to the GPU, and the op's GPU result brought back
-- and compared with the same op on the CPU copy. These ops move or order elements, so values and
-- indices must match exactly, scatter_add's float sums included (the GPU adds each destination in
-- the CPU's order); cumsum matches exactly where it runs a thread per line and within float64
-- rounding where long lines are scanned by a block (cuda/sort.cu says which). Shapes are picked to
-- reach every path of the kernels: short lines packed into one sorting block, a line of exactly one
-- block (2048), lines that need merge passes, prefix sums over more than one level of tiles.
-- Without a CUDA device every describe below is pending with a message saying so.


local ALL_DTYPES = {"float32", "float64", "int64", "uint8", "bool"}

-- a CPU tensor of shape with seeded values of dtype: floats normal (with a NaN, -0 and +0 planted
-- when there is room), int64 in [-5, 5] (many ties), uint8 in [0, 9], bool 0/1
local function sample(shape, dtype, gen)
  for _, n in ipairs(shape) do
    if n == 0 then return lark.zeros(shape, {dtype = dtype}) end
  end
  local t
  if dtype == "float32" or dtype == "float64" then
    t = lark.randn(shape, {dtype = dtype, generator = gen})
    local flat = t:view(-1)
    if flat:numel() >= 8 then
      flat[2] = 0 / 0
      flat[5] = -0.0
      flat[7] = 0.0
    end
  elseif dtype == "int64" then t = lark.randint(-5, 6, shape, {dtype = "int64", generator = gen})
  elseif dtype == "uint8" then t = lark.randint(0, 10, shape, {dtype = "uint8", generator = gen})
  else t = lark.randint(0, 2, shape, {dtype = "bool", generator = gen}) end
  return t
end

-- int64 indices in [1, hi] of shape (1-based, as Lua passes them)
local function indices(shape, hi, gen)
  return lark.randint(1, hi + 1, shape, {dtype = "int64", generator = gen})
end

-- got (a GPU tensor) equals want (its CPU twin): device, dtype, shape and every value exactly
-- (NaN matching NaN), or within tol for floats when tol is given
local function expect_match(got, want, what, tol)
  assert.are.equal("cuda:0", got:device(), what)
  assert.are.equal(want:dtype(), got:dtype(), what)
  assert.are.same(shape_of(want), shape_of(got), what)
  local host = got:cpu()
  local ok, err
  if tol then ok, err = pcall(assert_near, host, want, tol)
  else ok, err = pcall(assert_same, host, want, what) end
  if not ok then error(what .. ": " .. tostring(err), 2) end
end

-- the layouts an input is also read in: contiguous, transposed storage, a narrowed view (storage
-- offset); pairs {name, cpu view, gpu view} of one logical shape
local function layouts(c)
  local g = c:cuda()
  local out = {{"contiguous", c, g}}
  local nd = c:dim()
  if nd >= 2 then
    out[#out + 1] = {"transposed", c:transpose(1, nd):contiguous():transpose(1, nd),
                     g:transpose(1, nd):contiguous():transpose(1, nd)}
  end
  if nd >= 1 and c:size(1) >= 1 then
    local shape = shape_of(c)
    shape[1] = shape[1] + 2
    local big = lark.zeros(shape, {dtype = c:dtype()})
    big:narrow(1, 2, c:size(1)):copy_(c)
    out[#out + 1] = {"narrowed", big:narrow(1, 2, c:size(1)), big:cuda():narrow(1, 2, c:size(1))}
  end
  return out
end

-- the message of an error without the position Lua may put in front
local function message_of(fn, op)
  local m = error_of(fn)
  return m:match(op .. ": .*") or m
end

gpu_describe("index_select, gather and scatter_add on the GPU", function()
  local shapes = {{7}, {4, 6}, {3, 4, 5}, {2, 0, 3}, {1, 3000}}

  it("index_select and gather match the CPU on every dtype, dim and layout", function()
    local gen = lark.Generator(31)
    for _, shape in ipairs(shapes) do
      for _, dtype in ipairs(ALL_DTYPES) do
        for _, lay in ipairs(layouts(sample(shape, dtype, gen))) do
          local name, cv, gv = lay[1], lay[2], lay[3]
          for d = 1, #shape do
            local size = shape[d]
            if size > 0 then
              local what = string.format("%s %s [%s] dim %d", dtype, name, table.concat(shape, ","), d)
              local idx = indices({9}, size, gen)
              expect_match(gv:index_select(d, idx:cuda()), cv:index_select(d, idx), "index_select " .. what)
              expect_match(gv:index(d, {size, 1, size}), cv:index(d, {size, 1, size}), "index with a list " .. what)
              local ishape = shape_of(cv)
              ishape[d] = 5
              for k = 1, #ishape do
                if k ~= d and ishape[k] > 1 then ishape[k] = ishape[k] - 1 end
              end
              local gi = indices(ishape, size, gen)
              expect_match(gv:gather(d, gi:cuda()), cv:gather(d, gi), "gather " .. what)
              if #ishape >= 2 then -- the same index stored transposed
                local git = gi:cuda():transpose(1, #ishape):contiguous():transpose(1, #ishape)
                expect_match(gv:gather(d, git), cv:gather(d, gi), "gather, transposed index " .. what)
              end
            end
          end
        end
      end
    end
    -- 0-d inputs and empty index lists
    local s = lark.tensor(7.5)
    expect_match(s:cuda():index_select(1, {1}), s:index_select(1, {1}), "index_select of a 0-d tensor")
    local e = lark.tensor({}, {dtype = "int64"})
    local t = lark.randn({3, 4}, {generator = gen})
    expect_match(t:cuda():index_select(2, e:cuda()), t:index_select(2, e), "index_select of no indices")
  end)

  it("scatter_add sums each destination in the CPU's order: the same bits, every dtype", function()
    local gen = lark.Generator(32)
    for _, dtype in ipairs(ALL_DTYPES) do
      for d = 1, 3 do
        local tshape, ishape = {4, 5, 3}, {3, 4, 2}
        ishape[d] = 40 -- ten adds per destination on average
        local c = sample(tshape, dtype, gen)
        local idx = indices(ishape, tshape[d], gen)
        local src = sample(ishape, dtype, gen)
        local what = dtype .. " dim " .. d
        expect_match(c:cuda():scatter_add(d, idx:cuda(), src:cuda()), c:scatter_add(d, idx, src), "scatter_add " .. what)
        -- in place, into a transposed view
        local ct, gt = c:clone():transpose(1, 3), c:cuda():transpose(1, 3)
        local dt = 4 - d
        ct:scatter_add_(dt, idx:transpose(1, 3), src:transpose(1, 3))
        gt:scatter_add_(dt, idx:cuda():transpose(1, 3), src:cuda():transpose(1, 3))
        expect_match(gt, ct, "scatter_add_ transposed " .. what)
      end
    end
    -- one long line: 200000 float32 adds into 3 destinations, each summed in order
    local idx = indices({200000}, 3, gen)
    local src = lark.randn({200000}, {generator = gen})
    local z = lark.zeros(3)
    expect_match(z:cuda():scatter_add(1, idx:cuda(), src:cuda()), z:scatter_add(1, idx, src), "200000 adds into 3")
    -- the source is the tensor itself
    local c = lark.randn({6}, {dtype = "float64", generator = gen})
    local i6 = indices({6}, 6, gen)
    local g = c:cuda()
    c:scatter_add_(1, i6, c)
    g:scatter_add_(1, i6:cuda(), g)
    expect_match(g, c, "scatter_add_ of itself")
  end)

  it("refuses out-of-range indices with the CPU's messages and leaves the tensor untouched", function()
    local c = lark.randn({3, 5}, {generator = lark.Generator(33)})
    local g = c:cuda()
    local bad = lark.tensor({{1, 2}, {6, 1}, {2, 0}}, {dtype = "int64"})
    for _, case in ipairs{
      {"gather", function(t, i) return t:gather(2, i) end},
      {"index_select", function(t, i) return t:index_select(2, i:view(-1)) end},
      {"scatter_add", function(t, i) return t:scatter_add(2, i, lark.ones({3, 2}, {device = t:device()})) end},
    } do
      local op, f = case[1], case[2]
      local want = message_of(function() return f(c, bad) end, op)
      assert.truthy(want:find("index 6 is out of range for dim 2 of size 5", 1, true), want)
      assert.are.equal(want, message_of(function() return f(g, bad:cuda()) end, op))
      -- the first bad value in row-major order, whatever the layout
      local bt = bad:t():contiguous():t()
      assert.are.equal(want, message_of(function() return f(g, bt:cuda()) end, op))
    end
    local keep = g:cpu()
    expect_error("index 6 is out of range for dim 2 of size 5", function()
      return g:scatter_add_(2, bad:cuda(), lark.ones({3, 2}, {device = "cuda"}))
    end)
    expect_match(g, keep, "scatter_add_ with a bad index leaves the tensor")
    expect_error("index 9 is out of range for dim 1 of size 3", function() return g:index(1, {1, 9}) end)
  end)

  it("gives the CPU's gradients through gather, index_select, sort, topk, max and cumsum", function()
    local gen = lark.Generator(34)
    local base = lark.randn({5, 7}, {dtype = "float64", generator = gen})
    local gi = indices({5, 4}, 7, gen)
    local si = indices({6}, 5, gen)
    local function grad_of(dev)
      local x = base:clone():to(dev) -- a fresh leaf on each device
      x.requires_grad = true
      local w = lark.randn({5, 7}, {dtype = "float64", generator = lark.Generator(35)}):to(dev)
      local loss = (x:gather(2, gi:to(dev)) * 1.5):sum() + x:index_select(1, si:to(dev)):pow(2):sum()
      local v = x:sort(2, true)
      loss = loss + (v * w):sum()
      local tv = x:topk(3, 1, true, false)
      loss = loss + tv:pow(3):sum()
      local mv = x:max(2)
      loss = loss + mv:sum() + (x:cumsum(2) * w):sum()
      loss:backward()
      return x.grad, loss
    end
    local gc, lc = grad_of("cpu")
    local gg, lg = grad_of("cuda")
    expect_match(gg, gc, "the gradient", 1e-12)
    assert_near(lg:cpu(), lc, 1e-12)
  end)
end)

gpu_describe("masked_fill, masked_select and nonzero on the GPU", function()
  it("masked_fill(_) and masked_select match the CPU with broadcast masks of both mask dtypes", function()
    local gen = lark.Generator(41)
    for _, shape in ipairs{{7}, {4, 6}, {3, 4, 5}, {2, 0, 3}} do
      for _, dtype in ipairs(ALL_DTYPES) do
        local c = sample(shape, dtype, gen)
        local mshape = copy_list(shape)
        mshape[1] = 1
        for _, mdt in ipairs{"bool", "uint8"} do
          local m = lark.randint(0, 2, mshape, {dtype = mdt, generator = gen})
          for _, lay in ipairs(layouts(c)) do
            local name, cv, gv = lay[1], lay[2], lay[3]
            local what = string.format("%s %s [%s] mask %s", dtype, name, table.concat(shape, ","), mdt)
            for _, value in ipairs{2.5, -1, 300, 0 / 0, true} do
              expect_match(gv:masked_fill(m:cuda(), value), cv:masked_fill(m, value), "masked_fill " .. tostring(value) .. " " .. what)
            end
            expect_match(gv:masked_select(m:cuda()), cv:masked_select(m), "masked_select " .. what)
            local cc, gc = cv:clone(), gv:clone()
            cc:masked_fill_(m, 7)
            gc:masked_fill_(m:cuda(), 7)
            expect_match(gc, cc, "masked_fill_ " .. what)
          end
        end
      end
    end
  end)

  it("selects and counts in order over more than one level of prefix-sum tiles", function()
    local gen = lark.Generator(42)
    -- 2048 * 2048 elements fill one level of tiles; 5 million need the tile totals scanned again
    for _, n in ipairs{1, 2047, 2048, 2049, 70001, 5000000} do
      local c = lark.randn({n}, {generator = gen})
      local m = c:gt(0.3)
      expect_match(c:cuda():masked_select(m:cuda()), c:masked_select(m), "masked_select of " .. n)
      if n <= 70001 then expect_match(m:cuda():nonzero(), m:nonzero(), "nonzero of " .. n) end
    end
    local big = lark.randint(0, 3, {50, 70, 9}, {dtype = "int64", generator = gen})
    expect_match(big:cuda():nonzero(), big:nonzero(), "nonzero of a 3-D int64 tensor")
    expect_match(big:cuda():transpose(1, 3):nonzero(), big:transpose(1, 3):nonzero(), "nonzero of a transposed view")
  end)

  it("nonzero counts NaN, skips -0, and handles 0-d and empty tensors", function()
    local t = lark.tensor({{0, 0 / 0, -0.0}, {1, 0, -2}})
    for _, dtype in ipairs(ALL_DTYPES) do
      local c = dtype == "float32" and t or t:to(dtype)
      expect_match(c:cuda():nonzero(), c:nonzero(), "nonzero " .. dtype)
    end
    expect_match(lark.tensor(3):cuda():nonzero(), lark.tensor(3):nonzero(), "nonzero of a 0-d tensor")
    expect_match(lark.tensor(0):cuda():nonzero(), lark.tensor(0):nonzero(), "nonzero of a 0-d zero")
    expect_match(lark.zeros(0, 4):cuda():nonzero(), lark.zeros(0, 4):nonzero(), "nonzero of an empty tensor")
  end)
end)

gpu_describe("sort, topk and cumsum on the GPU", function()
  -- short lines (packed several to a sorting block), one block exactly, merge passes, many lines
  local shapes = {{1}, {7}, {3, 5}, {4, 3, 6}, {2, 2047}, {2, 2048}, {2, 2049}, {5000}, {600, 7}, {0, 4}}

  it("sort and topk give the CPU's values and indices: NaN last, -0 = +0, ties by position", function()
    local gen = lark.Generator(51)
    for _, shape in ipairs(shapes) do
      for _, dtype in ipairs(ALL_DTYPES) do
        local c = sample(shape, dtype, gen)
        for _, lay in ipairs(layouts(c)) do
          local name, cv, gv = lay[1], lay[2], lay[3]
          for d = 1, #shape do
            for _, desc in ipairs{false, true} do
              local what = string.format("%s %s [%s] dim %d desc %s", dtype, name, table.concat(shape, ","), d,
                tostring(desc))
              local wv, wi = cv:sort(d, desc)
              local rv, ri = gv:sort(d, desc)
              expect_match(rv, wv, "sort values " .. what)
              expect_match(ri, wi, "sort indices " .. what)
              local n = shape[d]
              for _, k in ipairs{1, n // 2, n} do
                if k <= n then
                  for _, sorted in ipairs{true, false} do
                    wv, wi = cv:topk(k, d, desc, sorted)
                    rv, ri = gv:topk(k, d, desc, sorted)
                    local w = string.format("topk k %d sorted %s %s", k, tostring(sorted), what)
                    expect_match(rv, wv, w .. " values")
                    expect_match(ri, wi, w .. " indices")
                  end
                end
              end
            end
          end
        end
      end
    end
  end)

  it("sorts one long line through many merge passes, with heavy ties", function()
    local gen = lark.Generator(52)
    local c = lark.randint(0, 50, {70001}, {dtype = "int64", generator = gen})
    for _, desc in ipairs{false, true} do
      local wv, wi = c:sort(1, desc)
      local rv, ri = c:cuda():sort(1, desc)
      expect_match(rv, wv, "sort of 70001 values")
      expect_match(ri, wi, "sort indices of 70001 values")
      wv, wi = c:topk(10, 1, desc, false)
      rv, ri = c:cuda():topk(10, 1, desc, false)
      expect_match(ri, wi, "unsorted topk of 70001 values")
    end
    local f = lark.randn({3, 9000}, {generator = gen})
    local wv, wi = f:sort(2)
    local rv, ri = f:cuda():sort(2)
    expect_match(rv, wv, "sort of 3 float lines of 9000")
    expect_match(ri, wi, "sort indices of 3 float lines of 9000")
  end)

  it("cumsum matches the CPU: exactly per thread, within rounding per block, integers exactly", function()
    local gen = lark.Generator(53)
    -- {30, 40}: a thread per line; {3, 5000} along dim 2 and {5000, 3} along dim 1: a block per line
    for _, shape in ipairs{{7}, {30, 40}, {3, 5000}, {5000, 3}, {4, 3, 6}, {70001}, {0, 3}} do
      for _, dtype in ipairs(ALL_DTYPES) do
        local c = sample(shape, dtype, gen)
        if dtype == "float32" or dtype == "float64" then c = c:masked_fill(c:ne(c), 0) end -- NaN-free sums
        for _, lay in ipairs(layouts(c)) do
          local name, cv, gv = lay[1], lay[2], lay[3]
          for d = 1, #shape do
            local n, lines = shape[d], cv:numel() // math.max(shape[d], 1)
            local block = n >= 1024 and lines < 16384
            local tol = nil
            -- float64: a block's scan adds in another order than the CPU's running sum; over 5000
            -- unit normals (partial sums near 60) that differs by ~1e-13 relative to a small result
            if block and dtype == "float32" then tol = 1e-6 elseif block and dtype == "float64" then tol = 1e-12 end
            local what = string.format("cumsum %s %s [%s] dim %d", dtype, name, table.concat(shape, ","), d)
            expect_match(gv:cumsum(d), cv:cumsum(d), what, tol)
          end
        end
      end
    end
    expect_match(lark.tensor(2.5):cuda():cumsum(), lark.tensor(2.5):cumsum(), "cumsum of a 0-d tensor")
    -- int64 sums wrap like the CPU's
    local w = lark.tensor({math.maxinteger, 1, 1}, {dtype = "int64"})
    expect_match(w:cuda():cumsum(1), w:cumsum(1), "wrapping int64 cumsum")
  end)
end)
