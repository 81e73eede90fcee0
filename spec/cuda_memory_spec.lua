-- cuda_memory_spec.lua: the CUDA caching allocator seen from Lua: lark.cuda.memory_stats(),
-- empty_cache() and reset_peak_memory_stats(). Without a GPU the stats are zeros and the rest are
-- no-ops (checked here on every machine); with one, blocks are reused from the cache, empty_cache
-- gives them back, and running out of memory collects garbage and retries before failing.

local has_cuda = lark.cuda.is_available()
local MiB = 1 << 20

local fields = {"allocated", "requested", "reserved", "cached", "peak_allocated", "peak_reserved", "num_allocs",
                "num_frees", "num_cache_hits", "num_segments", "num_raw_allocs", "num_raw_frees", "num_ooms",
                "num_retries"}

-- the stats after every tensor Lua no longer holds is freed and the GPU is idle
local function settled_stats()
  collectgarbage()
  collectgarbage()
  lark.cuda.synchronize()
  return lark.cuda.memory_stats()
end

describe("lark.cuda memory", function()
  it("memory_stats returns every counter as a non-negative integer", function()
    local s = lark.cuda.memory_stats()
    local n = 0
    for _ in pairs(s) do n = n + 1 end
    assert.are.equal(#fields, n)
    for _, k in ipairs(fields) do
      assert.are.equal("integer", math.type(s[k]), k)
      assert.is_true(s[k] >= 0, k)
    end
    assert.are.equal(s.reserved, s.allocated + s.cached)
    assert.is_true(s.peak_allocated >= s.allocated and s.peak_reserved >= s.reserved)
    -- the same device, named three ways
    assert.are.same(lark.cuda.memory_stats(0).num_allocs, s.num_allocs)
    assert.are.same(lark.cuda.memory_stats("cuda:0").num_allocs, s.num_allocs)
    assert.are.same(lark.cuda.memory_stats("cuda").num_allocs, s.num_allocs)
  end)

  it("refuses arguments that are not CUDA devices", function()
    assert_error_match(function() return lark.cuda.memory_stats("cpu") end, "expected a CUDA device")
    assert_error_match(function() return lark.cuda.memory_stats(-1) end, "expected a device ordinal")
    assert_error_match(function() return lark.cuda.memory_stats(0.5) end, "expected a device ordinal")
    assert_error_match(function() return lark.cuda.memory_stats({}) end, "expected a device ordinal")
    assert_error_match(function() return lark.cuda.reset_peak_memory_stats("gpu") end, "is not a device")
  end)

  if not has_cuda then
    pending("no CUDA device: the GPU memory specs are skipped")

    it("is all zeros and no-ops without a GPU", function()
      local s = lark.cuda.memory_stats()
      for _, k in ipairs(fields) do assert.are.equal(0, s[k], k) end
      lark.cuda.empty_cache()
      lark.cuda.reset_peak_memory_stats()
      lark.cuda.reset_peak_memory_stats(3)
      -- any ordinal, since there is nothing to count
      assert.are.equal(0, lark.cuda.memory_stats(5).allocated)
      assert.are.same(s, lark.cuda.memory_stats())
    end)
    return
  end

  describe("on the GPU", function()
    it("counts an allocation and its free, and reuses the block from the cache", function()
      local s0 = settled_stats()
      local t = lark.empty(1000, {device = "cuda"}) -- 4000 bytes, a 4096-byte block
      local s1 = lark.cuda.memory_stats()
      assert.are.equal(s0.allocated + 4096, s1.allocated)
      assert.are.equal(s0.requested + 4000, s1.requested)
      assert.are.equal(s0.num_allocs + 1, s1.num_allocs)
      assert.is_true(s1.peak_allocated >= s1.allocated)
      t:free()
      local s2 = lark.cuda.memory_stats()
      assert.are.equal(s0.allocated, s2.allocated)
      assert.are.equal(s0.requested, s2.requested)
      assert.are.equal(s1.num_frees + 1, s2.num_frees)
      assert.are.equal(s1.reserved, s2.reserved) -- kept, not given back
      -- the same size again: from the cache, no cudaMalloc
      local u = lark.empty(1000, {device = "cuda"})
      local s3 = lark.cuda.memory_stats()
      assert.are.equal(s2.num_cache_hits + 1, s3.num_cache_hits)
      assert.are.equal(s2.num_raw_allocs, s3.num_raw_allocs)
      assert.are.equal(s2.reserved, s3.reserved)
      u:free()
      -- a tensor made from the reused block holds what it is given
      local v = lark.tensor({1, 2, 3}):cuda()
      assert.are.same({1, 2, 3}, v:table())
    end)

    it("reuses pinned host blocks across allocations of a size, and releases them with empty_cache", function()
      for i = 1, 40 do -- a loader's cycle: pin a batch, move it, free it
        local x = lark.empty({64, 3, 32, 32}, {pin_memory = true})
        assert.is_true(x:is_pinned(), "allocation " .. i)
        x:fill_(i)
        local g = x:cuda()
        assert.are.equal(i, g:sum():item() / x:numel())
        x:free()
        g:free()
      end
      local small = lark.empty({10}, {pin_memory = true}) -- a much smaller request: a new block
      assert.is_true(small:is_pinned())
      small:free()
      lark.cuda.empty_cache()
      local again = lark.empty({64, 3, 32, 32}, {pin_memory = true})
      assert.is_true(again:is_pinned())
      again:free()
    end)

    it("gives cached blocks back with empty_cache", function()
      local s0 = settled_stats()
      local big = lark.empty(64 * MiB, {dtype = "uint8", device = "cuda"}) -- a segment of its own
      local s1 = lark.cuda.memory_stats()
      assert.is_true(s1.reserved >= s0.reserved, "reserved grew or the block came from the cache")
      big:free()
      local s2 = lark.cuda.memory_stats()
      assert.is_true(s2.cached >= 64 * MiB, "the freed 64 MiB are cached")
      lark.cuda.empty_cache()
      local s3 = lark.cuda.memory_stats()
      assert.is_true(s3.reserved <= s2.reserved - 64 * MiB, "empty_cache gave back the 64 MiB")
      assert.is_true(s3.num_raw_frees > s2.num_raw_frees)
      assert.are.equal(s2.allocated, s3.allocated) -- live tensors untouched
      -- live tensors keep their contents through empty_cache
      local keep = lark.tensor({4, 5, 6}):cuda()
      lark.cuda.empty_cache()
      assert.are.same({4, 5, 6}, keep:table())
    end)

    it("tracks and resets the peak", function()
      settled_stats()
      lark.cuda.reset_peak_memory_stats()
      local s0 = lark.cuda.memory_stats()
      assert.are.equal(s0.allocated, s0.peak_allocated)
      assert.are.equal(s0.reserved, s0.peak_reserved)
      local t = lark.empty(32 * MiB, {dtype = "uint8", device = "cuda"})
      t:free()
      local s1 = lark.cuda.memory_stats()
      assert.are.equal(s0.allocated, s1.allocated)
      assert.is_true(s1.peak_allocated >= s0.allocated + 32 * MiB, "the peak saw the 32 MiB")
      lark.cuda.reset_peak_memory_stats(0)
      assert.are.equal(s1.allocated, lark.cuda.memory_stats().peak_allocated)
    end)

    it("names the size when even the retry fails", function()
      local s0 = settled_stats()
      local err = error_of(function() return lark.empty(1 << 50, {dtype = "uint8", device = "cuda"}) end)
      assert.truthy(err:find("cuda: out of memory allocating 1125899906842624 bytes (1073741824.00 MiB) on cuda:0",
        1, true), err)
      assert.truthy(err:find("MiB allocated", 1, true), err)
      local s1 = lark.cuda.memory_stats()
      assert.are.equal(s0.num_ooms + 1, s1.num_ooms)
      assert.are.equal(s0.num_retries + 1, s1.num_retries)
      assert.are.equal(s0.allocated, s1.allocated)
      -- and the GPU still works
      assert.are.same({2, 4}, (lark.tensor({1, 2}):cuda() * 2):table())
    end)

    it("collects garbage tensors when the GPU is full, then succeeds", function()
      settled_stats()
      lark.cuda.empty_cache()
      -- fill the GPU with 1 GiB tensors that Lua still references
      local chunks, chunk = {}, 1 << 30
      collectgarbage("stop") -- nothing is collected behind the spec's back while it fills
      local ok, err = true, nil
      while ok and #chunks < 1024 do
        ok, err = pcall(lark.empty, chunk, {dtype = "uint8", device = "cuda"})
        if ok then chunks[#chunks + 1] = err end
      end
      local filled = #chunks
      chunks = nil -- garbage now, but not collected: only the allocator's handler can find it
      local s0 = lark.cuda.memory_stats()
      local ok2, t = pcall(lark.empty, 2 * chunk, {dtype = "uint8", device = "cuda"})
      collectgarbage("restart")
      assert.is_true(filled >= 2, "could not fill the GPU: " .. tostring(err))
      assert.is_true(ok2, "the allocation after the collection failed: " .. tostring(t))
      local s1 = lark.cuda.memory_stats()
      assert.are.equal(s0.num_retries + 1, s1.num_retries)
      assert.are.equal(s0.num_ooms, s1.num_ooms)
      assert.is_true(s1.allocated <= 2 * chunk + 64 * MiB, "the garbage was freed")
      t:free()
      settled_stats()
      lark.cuda.empty_cache()
    end)
  end)
end)
