-- memory_spec.lua: tensors are freed when Lua lets go of them, and a loop that makes temporaries
-- keeps memory flat without any explicit collectgarbage().

local function rss_bytes()
  local f = io.open("/proc/self/statm")
  if not f then return nil end
  local _, resident = f:read("n", "n")
  f:close()
  return resident * 4096
end

describe("memory", function()
  it("stays bounded over 10,000 ops on a 1M-element tensor", function()
    collectgarbage()
    local x = lark.ones(1000, 1000)
    local base_bytes = lark.bytes_allocated()
    -- warm up: let the allocator cache and the collector settle
    for _ = 1, 200 do local y = x * 2 end
    local rss0 = rss_bytes()
    local peak = 0
    for i = 1, 10000 do
      local y = x * 2 + 1 -- two 4 MB temporaries per iteration, 80 GB in all
      if i % 100 == 0 then
        local live = lark.bytes_allocated() - base_bytes
        if live > peak then peak = live end
      end
    end
    -- tensor memory alive at any time stays within a small multiple of one iteration's 8 MB
    assert.is_true(peak < 512 * 2 ^ 20, string.format("tensor bytes peaked at %.0f MB", peak / 2 ^ 20))
    local rss1 = rss_bytes()
    if rss0 and rss1 then
      local grown = rss1 - rss0
      assert.is_true(grown < 768 * 2 ^ 20, string.format("resident memory grew by %.0f MB", grown / 2 ^ 20))
    end
  end)

  it("returns every byte when tensors and their views are collected", function()
    collectgarbage()
    local before = lark.bytes_allocated()
    do
      local a = lark.zeros(256, 256)
      local v = a:transpose(1, 2):narrow(1, 1, 10)
      local c = v:contiguous()
      assert.is_true(lark.bytes_allocated() >= before + 256 * 256 * 4)
      a, v, c = nil, nil, nil
    end
    collectgarbage()
    collectgarbage()
    assert.are.equal(before, lark.bytes_allocated())
  end)

  it("keeps the storage alive while a view needs it", function()
    collectgarbage()
    local before = lark.bytes_allocated()
    local v
    do
      local a = lark.range(1, 1000):double()
      v = a:narrow(1, 500, 3)
    end
    collectgarbage()
    assert_near(v, {500, 501, 502}, 0)
    assert.is_true(lark.bytes_allocated() > before)
    v = nil
    collectgarbage()
    assert.are.equal(before, lark.bytes_allocated())
  end)

  it("frees now with t:free() and at the end of a <close> scope", function()
    collectgarbage()
    local before = lark.bytes_allocated()
    local t = lark.zeros(1 << 20)
    assert.are.equal(before + 4 * (1 << 20), lark.bytes_allocated())
    t:free()
    assert.are.equal(before, lark.bytes_allocated())
    do
      local u <close> = lark.zeros(1 << 20)
      assert.are.equal(before + 4 * (1 << 20), lark.bytes_allocated())
    end
    assert.are.equal(before, lark.bytes_allocated())
  end)
end)
