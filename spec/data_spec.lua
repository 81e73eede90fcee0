-- spec/data_spec.lua: lark.data, its readers, datasets, DataLoader and transforms.
-- IDX and CSV fixtures are written here; the real data sets are checked when installed
-- (examples/get_data.sh) and left pending otherwise. References are plain Lua loops.
local data = require "lark.data"
local T = data.transforms
local D = require("lark.core")._data

local tmpdir = os.tmpname()
os.remove(tmpdir)
assert(os.execute("mkdir -p '" .. tmpdir .. "'"))
local function path(name) return tmpdir .. "/" .. name end
local function write(name, bytes)
  local f = assert(io.open(path(name), "wb"))
  f:write(bytes)
  f:close()
  return path(name)
end
local function gzip(name) -- name.gz beside name
  assert(os.execute(string.format("gzip -c '%s' > '%s.gz'", path(name), path(name))))
  return path(name) .. ".gz"
end
local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end
local function sha256(p)
  local h = io.popen("sha256sum '" .. p .. "'")
  local out = h:read("*a")
  h:close()
  return out:match("^(%x+)")
end

-- An IDX file: magic 00 00 08 #dims, big-endian sizes, values (7 i + 3) % 256.
local function idx_bytes(dims, dtype_byte)
  local parts = {string.char(0, 0, dtype_byte or 8, #dims)}
  local n = 1
  for _, d in ipairs(dims) do
    parts[#parts + 1] = string.pack(">I4", d)
    n = n * d
  end
  local vals = {}
  for i = 0, n - 1 do vals[#vals + 1] = string.char((7 * i + 3) % 256) end
  parts[#parts + 1] = table.concat(vals)
  return table.concat(parts)
end
local function idx_values(n)
  local v = {}
  for i = 0, n - 1 do v[#v + 1] = (7 * i + 3) % 256 end
  return v
end

local function histogram(labels, k)
  local h = {}
  for c = 1, k do h[c] = 0 end
  for _, v in ipairs(labels:table()) do h[v] = h[v] + 1 end
  return h
end

teardown(function() os.execute("rm -rf '" .. tmpdir .. "'") end)

describe("lark.data", function()
  it("is reachable as lark.data and require 'lark.data'", function()
    assert.are.equal(data, lark.data)
    assert.is_function(data.DataLoader)
  end)
end)

describe("read_idx", function()
  it("reads plain and gzip files of any shape, cut to max_records", function()
    local p = write("a.idx", idx_bytes{5, 3, 2})
    local pg = gzip("a.idx")
    for _, f in ipairs{p, pg} do
      local t = data.read_idx(f)
      assert.are.equal("uint8", t:dtype())
      assert.are.same({5, 3, 2}, shape_of(t))
      assert_same(t, idx_values(30))
      local t2 = data.read_idx(f, 2)
      assert.are.same({2, 3, 2}, shape_of(t2))
      assert_same(t2, idx_values(12))
      assert.are.same({0, 3, 2}, shape_of(data.read_idx(f, 0)))
      assert.are.same({5, 3, 2}, shape_of(data.read_idx(f, 100)))
    end
    local l = data.read_idx(write("l.idx", idx_bytes{300}))
    assert.are.same({300}, shape_of(l))
    assert_same(l, idx_values(300))
  end)

  it("names the file and the fault", function()
    local good = idx_bytes{5, 3, 2}
    expect_error("bad magic 01 00 08 03", data.read_idx, write("m.idx", "\1" .. good:sub(2)))
    expect_error("m.idx", data.read_idx, path("m.idx"))
    expect_error("dtype byte 0x0d (float32) is not supported", data.read_idx, write("f.idx", idx_bytes({4}, 0x0D)))
    expect_error("unknown dtype byte 0x02", data.read_idx, write("u.idx", idx_bytes({4}, 0x02)))
    expect_error("truncated header", data.read_idx, write("h.idx", good:sub(1, 10)))
    expect_error("truncated: the header promises 30 bytes of data (sizes [5,3,2]), the file has 29", data.read_idx,
      write("t.idx", good:sub(1, -2)))
    gzip("t.idx")
    expect_error("the file has 29", data.read_idx, path("t.idx.gz"))
    expect_error("3 bytes of trailing garbage", data.read_idx, write("g.idx", good .. "abc"))
    gzip("g.idx")
    expect_error("3 bytes of trailing garbage", data.read_idx, path("g.idx.gz"))
    expect_error("cannot open '" .. path("nope.idx") .. "'", data.read_idx, path("nope.idx"))
    expect_error("too short", data.read_idx, write("e.idx", ""))
    -- a gzip stream cut short, and one with a damaged byte
    local big = {}
    for i = 1, 20000 do big[i] = string.char(math.random(0, 3)) end
    write("big.idx", idx_bytes{0, 1}:sub(1, 4) .. string.pack(">I4>I4", 100, 200) .. table.concat(big))
    local gz = assert(io.open(gzip("big.idx"), "rb")):read("a")
    expect_error("corrupt gzip stream", data.read_idx, write("cut.gz", gz:sub(1, #gz // 2)))
    local k = #gz // 2
    expect_error("corrupt gzip stream", data.read_idx,
      write("bad.gz", gz:sub(1, k - 1) .. string.char(gz:byte(k) ~ 0xFF, gz:byte(k + 1) ~ 0x5A) .. gz:sub(k + 2)))
    expect_error("max_records must be >= 0", data.read_idx, path("a.idx"), -1)
  end)
end)

describe("read_digits_csv", function()
  local function line(seed, label)
    local v = {}
    for i = 1, 64 do v[i] = (seed * 5 + i * 3) % 17 end
    v[65] = label
    return table.concat(v, ",")
  end

  it("reads pixels / 16 and 1-based labels, plain or gzip", function()
    write("d.csv", line(1, 0) .. "\n" .. line(2, 9) .. "\r\n\n")
    for _, f in ipairs{path("d.csv"), gzip("d.csv")} do
      local im, lab = data.read_digits_csv(f)
      assert.are.same({2, 8, 8}, shape_of(im))
      assert.are.equal("float32", im:dtype())
      assert_same(lab, {1, 10})
      local want = {}
      for r = 1, 2 do
        for i = 1, 64 do want[#want + 1] = ((r * 5 + i * 3) % 17) / 16 end
      end
      assert_same(im, want)
    end
  end)

  it("names the line of a malformed row", function()
    expect_error("line 2: expected 65 comma-separated integers (64 pixels and a label), got 64", data.read_digits_csv,
      write("s.csv", line(1, 0) .. "\n" .. line(1, 0):gsub(",%d+$", "") .. "\n"))
    expect_error("line 1: field 3 is 'a', expected an integer", data.read_digits_csv,
      write("w.csv", "1,2,a," .. line(1, 0)))
    expect_error("line 2: pixel 2 is 20, expected 0..16", data.read_digits_csv,
      write("p.csv", line(1, 0) .. "\n1,20," .. line(1, 0):gsub("^%d+,%d+,", "") .. "\n"))
    expect_error("line 1: label 10 out of range", data.read_digits_csv, write("l.csv", line(1, 10)))
    expect_error("cannot open", data.read_digits_csv, path("none.csv"))
  end)
end)

describe("real data sets", function()
  local fashion = "/usr/share/datasets/fashion-mnist"
  local mnist = data.data_dir() .. "/mnist"
  local digits = data.data_dir() .. "/digits/digits.csv.gz"

  it("Fashion-MNIST: checksums, shapes, balanced labels", function()
    if not exists(fashion .. "/t10k-images-idx3-ubyte.gz") then
      return pending("Fashion-MNIST not installed (examples/get_data.sh fashion)")
    end
    assert.are.equal("cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
      sha256(fashion .. "/t10k-images-idx3-ubyte.gz"))
    assert.are.equal("8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
      sha256(fashion .. "/t10k-labels-idx1-ubyte.gz"))
    assert.are.equal("b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
      sha256(fashion .. "/train-images-idx3-ubyte.gz"))
    assert.are.equal("0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
      sha256(fashion .. "/train-labels-idx1-ubyte.gz"))
    local test = data.fashion_mnist{train = false}
    assert.are.equal(10000, #test)
    assert.are.same({10000, 1, 28, 28}, shape_of(test.images))
    assert.are.same({1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000}, histogram(test.labels, 10))
    assert_near(test.images:float():mean():item() / 255, 0.2868, 1e-3) -- DATA.md
    local train = data.fashion_mnist{train = true}
    assert.are.same({60000, 1, 28, 28}, shape_of(train.images))
    assert.are.same({6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000}, histogram(train.labels, 10))
    local x = train.images:float() / 255
    assert_near(x:mean():item(), train.mean, 1e-3)
    assert_near(x:std():item(), train.std, 1e-3)
    local part = data.fashion_mnist{train = true, max_records = 100}
    assert.are.equal(100, #part)
    assert_same(part.labels, train.labels:narrow(1, 1, 100))
  end)

  it("MNIST: checksums, shapes, the standard label counts", function()
    if not exists(mnist .. "/train-images-idx3-ubyte") then
      return pending("MNIST not installed (examples/get_data.sh mnist)")
    end
    assert.are.equal("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
      sha256(mnist .. "/train-images-idx3-ubyte"))
    assert.are.equal("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
      sha256(mnist .. "/train-labels-idx1-ubyte"))
    assert.are.equal("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
      sha256(mnist .. "/t10k-images-idx3-ubyte"))
    assert.are.equal("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
      sha256(mnist .. "/t10k-labels-idx1-ubyte"))
    local train = data.mnist{}
    assert.are.same({60000, 1, 28, 28}, shape_of(train.images))
    assert.are.same({5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}, histogram(train.labels, 10))
    assert_near(train.images:float():mean():item() / 255, 0.1307, 1e-3)
    local test = data.mnist{train = false}
    assert.are.same({980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009}, histogram(test.labels, 10))
  end)

  it("sklearn digits: checksum, 1797 images, label counts, every value against a Lua parse", function()
    if not exists(digits) then return pending("sklearn digits not installed (examples/get_data.sh digits)") end
    assert.are.equal("46abec6b12486ad9e51943373abcf22bbea1b5a51a1619b361570d8893f1464a", sha256(digits))
    local ds = data.digits()
    assert.are.equal(1797, #ds)
    assert.are.same({1797, 1, 8, 8}, shape_of(ds.images))
    assert.are.same({178, 182, 177, 183, 181, 182, 181, 179, 174, 180}, histogram(ds.labels, 10))
    -- reference: gzip -dc and string.gmatch
    local h = io.popen("gzip -dc '" .. digits .. "'")
    local px, lab = {}, {}
    for l in h:lines() do
      local f = {}
      for v in l:gmatch("[^,]+") do f[#f + 1] = tonumber(v) end
      for i = 1, 64 do px[#px + 1] = f[i] / 16 end
      lab[#lab + 1] = f[65] + 1
    end
    h:close()
    assert_same(ds.images, px)
    assert_same(ds.labels, lab)
    assert.are.equal(1500, #data.digits{train = true})
    assert.are.equal(297, #data.digits{train = false})
    assert_same(data.digits{train = false}.labels, table.move(lab, 1501, 1797, 1, {}))
  end)

  it("says how to install a missing data set", function()
    local err = expect_error("examples/get_data.sh mnist", data.mnist, {root = path("no-such-dir")})
    assert.truthy(err:find("no-such-dir/train-images-idx3-ubyte", 1, true))
    expect_error("examples/get_data.sh fashion", data.fashion_mnist, {root = path("no-such-dir")})
    expect_error("examples/get_data.sh digits", data.digits, {root = path("no-such-dir")})
  end)
end)

describe("datasets", function()
  local images = lark.arange(0, 10 * 2 * 3):view(10, 2, 3)
  local labels = lark.arange(1, 11, 1, {dtype = "int64"})

  it("TensorDataset: #ds, ds:get(i), ds[i]", function()
    local ds = data.TensorDataset(images, labels)
    assert.are.equal(10, #ds)
    local x, y = ds:get(3)
    assert_same(x, images[3])
    assert.are.equal(3, y)
    assert.are.equal("integer", math.type(y))
    local pair = ds[4]
    assert_same(pair[1], images[4])
    assert.are.equal(4, pair[2])
    expect_error("index 11 is out of range (1..10)", ds.get, ds, 11)
    expect_error("labels of size", function() return data.DataLoader(data.TensorDataset(images, labels:narrow(1, 1, 5))) end)
  end)

  it("Subset and random_split: disjoint, covering, tensor-backed", function()
    local ds = data.TensorDataset(images, labels)
    local parts = data.random_split(ds, {6, 3, 1}, 7)
    assert.are.same({6, 3, 1}, {#parts[1], #parts[2], #parts[3]})
    local seen = {}
    for _, p in ipairs(parts) do
      for i = 1, #p do
        local _, y = p:get(i)
        assert.is_nil(seen[y])
        seen[y] = true
      end
    end
    for i = 1, 10 do assert.is_true(seen[i]) end
    local again = data.random_split(ds, {6, 3, 1}, 7)
    assert.are.same(parts[1].indices, again[1].indices)
    local im, lab, rows = parts[2]:tensors()
    assert.are.equal(images, im)
    assert_same(rows, parts[2].indices)
    local sub = data.Subset(parts[1], {2, 4})
    local _, _, r2 = sub:tensors()
    assert_same(r2, {parts[1].indices[2], parts[1].indices[4]})
    local fr = data.random_split(ds, {0.7, 0.3})
    assert.are.same({7, 3}, {#fr[1], #fr[2]})
    expect_error("lengths sum to 9", data.random_split, ds, {5, 4})
  end)
end)

-- A plain Lua dataset over the same tensors: DataLoader gathers it in Lua.
local function lua_dataset(images, labels)
  return setmetatable({}, {
    __len = function() return images:size(1) end,
    __index = function(_, i)
      if math.type(i) == "integer" then return {images[i]:clone(), labels[i]} end
    end,
  })
end

local function collect(loader)
  local xs, ys = {}, {}
  for x, y in loader:iter() do
    xs[#xs + 1], ys[#ys + 1] = x, y
  end
  return xs, ys
end

local function same_batches(a, b)
  assert.are.equal(#a, #b)
  for i = 1, #a do
    assert.are.same(shape_of(a[i]), shape_of(b[i]))
    assert_same(a[i], b[i], "batch " .. i)
  end
end

describe("DataLoader", function()
  local N = 37
  local gen = lark.Generator(3)
  local images = lark.randint(0, 256, {N, 1, 6, 5}, {generator = gen}):byte()
  local labels = lark.arange(1, N + 1, 1, {dtype = "int64"}) -- label = index: shows which sample a row is
  local ds = data.TensorDataset(images, labels)

  it("yields float32 (B, C, H, W) batches and int64 labels, scaled to 0..1", function()
    local loader = data.DataLoader(ds, {batch_size = 8})
    assert.are.equal(5, #loader)
    local xs, ys = collect(loader)
    assert.are.equal(5, #xs)
    assert.are.same({8, 1, 6, 5}, shape_of(xs[1]))
    assert.are.same({5, 1, 6, 5}, shape_of(xs[5]))
    assert.are.equal("float32", xs[1]:dtype())
    assert.are.equal("int64", ys[1]:dtype())
    assert_near(xs[2], images:narrow(1, 9, 8):double() / 255, 1e-7)
    assert_same(ys[5], {33, 34, 35, 36, 37})
    local dl = data.DataLoader(ds, {batch_size = 8, drop_last = true})
    assert.are.equal(4, #dl)
    assert.are.equal(4, #collect(dl))
  end)

  it("visits every sample once per epoch, in the seeded order", function()
    local loader = data.DataLoader(ds, {batch_size = 5, shuffle = true, seed = 11})
    local orders = {}
    for epoch = 1, 3 do
      local seen, order = {}, {}
      for x, y in loader:iter() do
        for k, v in ipairs(y:table()) do
          assert.is_nil(seen[v])
          seen[v] = true
          order[#order + 1] = v
          assert_near(x[k], images[v]:double() / 255, 1e-7) -- the image travels with its label
        end
      end
      assert.are.equal(N, #order)
      assert.are.same(data.permutation(N, 11, epoch):table(), order)
      orders[epoch] = order
    end
    assert.are_not.same(orders[1], orders[2])
    -- same seed, same order; another seed, another order
    local _, y1 = collect(data.DataLoader(ds, {batch_size = 5, shuffle = true, seed = 11}))
    local _, y2 = collect(data.DataLoader(ds, {batch_size = 5, shuffle = true, seed = 12}))
    assert_same(lark.cat(y1, 1), orders[1])
    assert.are_not.same(lark.cat(y2, 1):table(), orders[1])
    -- set_epoch replays an epoch
    loader:set_epoch(2)
    local _, y3 = collect(loader)
    assert_same(lark.cat(y3, 1), orders[2])
  end)

  local augment = {batch_size = 6, shuffle = true, seed = 5, normalize = {0.5, 0.25}, random_crop = {size = 5, padding = 2},
                   hflip = 0.5}

  it("gives the same batches with prefetch 0, 1 and 4, and over the Lua path", function()
    local function run(prefetch, dset)
      local o = {}
      for k, v in pairs(augment) do o[k] = v end
      o.prefetch = prefetch
      local loader = data.DataLoader(dset or ds, o)
      local out = {}
      for _ = 1, 2 do
        local xs, ys = collect(loader)
        for i = 1, #xs do
          out[#out + 1] = xs[i]
          out[#out + 1] = ys[i]
        end
      end
      return out
    end
    local sync = run(0)
    same_batches(run(1), sync)
    same_batches(run(4), sync)
    same_batches(run(2, lua_dataset(images, labels)), sync)
  end)

  it("restarts cleanly after a loop is left early", function()
    local loader = data.DataLoader(ds, augment)
    for _ = 1, 3 do
      for _ in loader:iter() do break end
    end
    loader:set_epoch(1)
    local a = collect(loader)
    local b = collect(data.DataLoader(ds, augment))
    same_batches(a, b)
  end)

  it("runs the user transform after the declarative ones", function()
    local loader = data.DataLoader(ds, {batch_size = 10, transform = function(x, y) return x * 2, y + 100 end})
    local xs, ys = collect(loader)
    assert_near(xs[1], images:narrow(1, 1, 10):double() / 255 * 2, 1e-6)
    assert_same(ys[1], lark.arange(101, 111))
  end)

  it("mixes batches into soft targets that sum to 1 and train with cross_entropy", function()
    local loader = data.DataLoader(ds, {batch_size = 16, seed = 1, mixup = 0.4, cutmix = 1.0, num_classes = N})
    local kinds = 0
    for x, y in loader:iter() do
      assert.are.same({x:size(1), N}, shape_of(y))
      assert.are.equal("float32", y:dtype())
      assert_near(y:sum(2), lark.ones(x:size(1)), 1e-6)
      local logits = lark.randn(x:size(1), N)
      local loss = lark.nn.functional.cross_entropy(logits, y)
      local ref = -(y * lark.nn.functional.log_softmax(logits, 2)):sum() / x:size(1)
      assert_near(loss, ref, 1e-5)
      kinds = kinds + 1
    end
    assert.are.equal(3, kinds)
    expect_error("need hard labels", data.DataLoader, data.TensorDataset(images), {mixup = 1, num_classes = 3})
  end)

  it("rejects bad options with a clear message", function()
    expect_error("unknown option 'batchsize'", data.DataLoader, ds, {batchsize = 3})
    expect_error("batch_size must be an integer >= 1", data.DataLoader, ds, {batch_size = 0})
    expect_error("normalize has 3 means", data.DataLoader, ds, {normalize = {{1, 2, 3}, {1, 2, 3}}})
    expect_error("does not fit", data.DataLoader, ds, {random_crop = {size = 20}})
    expect_error("hflip must be a probability", data.DataLoader, ds, {hflip = 2})
    expect_error("need num_classes", data.DataLoader, data.TensorDataset(images, labels), {cutmix = 1})
  end)
end)

-- Every element of a and b as the same bits: float32 through string.pack, so -0 and NaN count too.
local function same_bits(a, b, what)
  assert.are.same(shape_of(a), shape_of(b), what)
  assert.are.equal(a:dtype(), b:dtype(), what)
  local fa, fb = a:cpu():contiguous():view(-1):table(), b:cpu():contiguous():view(-1):table()
  local fmt = a:dtype() == "float32" and "<f" or a:dtype() == "int64" and "<j" or "<d"
  for i = 1, #fa do
    if string.pack(fmt, fa[i]) ~= string.pack(fmt, fb[i]) then
      error(string.format("%s: element %d differs: %s vs %s", what, i, tostring(fa[i]), tostring(fb[i])), 2)
    end
  end
end

local function batches(loader, epochs)
  local out = {}
  for _ = 1, epochs or 1 do
    for x, y in loader:iter() do
      out[#out + 1] = {x, y}
    end
  end
  return out
end

describe("pinned memory", function()
  local N = 29
  local gen = lark.Generator(17)
  local images = lark.randint(0, 256, {N, 2, 6, 6}, {generator = gen}):byte()
  local labels = lark.randint(1, 5, {N}, {generator = gen})
  local ds = data.TensorDataset(images, labels)
  local opts = {batch_size = 8, shuffle = true, seed = 9, normalize = {{0.5, 0.4}, {0.2, 0.3}},
                random_crop = {size = 5, padding = 1}, hflip = 0.5}
  local function with(extra)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    return o
  end

  it("t:pin_memory(), t:is_pinned() and lark.empty{pin_memory = true}", function()
    local t = lark.arange(1, 13):view(3, 4):t() -- a strided view
    local p = t:pin_memory()
    assert.are.equal(lark.cuda.is_available(), p:is_pinned())
    assert.is_false(t:is_pinned())
    assert.is_true(p:is_contiguous())
    same_bits(p, t, "pin_memory")
    assert.is_false(p:shares_storage(t))
    if p:is_pinned() then assert.are.equal(p, p:pin_memory()) end -- pinned already: itself
    local e = lark.empty(2, 3, {dtype = "int64", pin_memory = true})
    assert.are.same({2, 3}, shape_of(e))
    assert.are.equal("int64", e:dtype())
    assert.are.equal(lark.cuda.is_available(), e:is_pinned())
    assert.are.same({4}, shape_of(lark.empty({4}, {pin_memory = true})))
    assert.are.equal(0, lark.empty(0, {pin_memory = true}):numel())
    assert.is_false(lark.empty(2, {pin_memory = false}):is_pinned())
    expect_error("pin_memory must be a boolean", lark.empty, 2, {pin_memory = "yes"})
    expect_error("pin_memory needs device cpu", lark.empty, 2, {pin_memory = true, device = "cuda"})
  end)

  it("without CUDA, pinning is ordinary memory and no error", function()
    if lark.cuda.is_available() then return end
    assert.is_false(lark.ones(3):pin_memory():is_pinned())
    local loader = data.DataLoader(ds, with{pin_memory = true})
    for x, y in loader:iter() do
      assert.is_false(x:is_pinned())
      assert.is_false(y:is_pinned())
    end
  end)

  it("pin_memory = true gives the same batches bit for bit (C and Lua paths, prefetch, mixing)", function()
    for _, extra in ipairs{{}, {prefetch = 0}, {prefetch = 3}, {mixup = 0.4, cutmix = 1, num_classes = 4}} do
      local plain = batches(data.DataLoader(ds, with(extra)), 2)
      extra.pin_memory = true
      local pinned = batches(data.DataLoader(ds, with(extra)), 2)
      assert.are.equal(#plain, #pinned)
      assert.are.equal(8, #pinned) -- 4 batches, 2 epochs
      for i = 1, #plain do
        same_bits(pinned[i][1], plain[i][1], "x of batch " .. i)
        same_bits(pinned[i][2], plain[i][2], "y of batch " .. i)
        assert.are.equal(lark.cuda.is_available(), pinned[i][1]:is_pinned())
        assert.are.equal(lark.cuda.is_available(), pinned[i][2]:is_pinned())
      end
    end
    -- the Lua path (a dataset without tensors()) pins its stacked batches too
    local lua_ds = lua_dataset(images, labels)
    local plain = batches(data.DataLoader(lua_ds, with{}))
    local pinned = batches(data.DataLoader(lua_ds, with{pin_memory = true}))
    for i = 1, #plain do
      same_bits(pinned[i][1], plain[i][1], "Lua path x " .. i)
      same_bits(pinned[i][2], plain[i][2], "Lua path y " .. i)
      assert.are.equal(lark.cuda.is_available(), pinned[i][1]:is_pinned())
    end
  end)

  it("frees pinned batches with their tensors (device = cpu changes nothing)", function()
    local loader = data.DataLoader(ds, with{pin_memory = true, device = "cpu", prefetch = 2})
    assert.truthy(tostring(loader):find("pin_memory", 1, true))
    collectgarbage()
    collectgarbage()
    local before = lark.bytes_allocated()
    for _ = 1, 3 do
      for x, y in loader:iter() do
        x:free()
        y:free()
      end
      for _ in loader:iter() do break end -- an epoch left early drops the batches made ahead
    end
    collectgarbage()
    collectgarbage()
    assert.are.equal(before, lark.bytes_allocated())
  end)

  it("rejects bad pin_memory and device options with a clear message", function()
    expect_error("DataLoader: pin_memory must be a boolean, got 1", data.DataLoader, ds, {pin_memory = 1})
    expect_error("DataLoader: device must be cpu, cuda or cuda:N, got 'x'", data.DataLoader, ds, {device = "x"})
    expect_error("DataLoader: device must be cpu, cuda or cuda:N, got 'cuda:'", data.DataLoader, ds, {device = "cuda:"})
    expect_error("DataLoader: device must be cpu, cuda or cuda:N, got '3'", data.DataLoader, ds, {device = 3})
    if not lark.cuda.is_available() then
      expect_error("DataLoader: device cuda: no CUDA device is available", data.DataLoader, ds, {device = "cuda"})
      expect_error("DataLoader: device cuda:1: no CUDA device is available", data.DataLoader, ds, {device = "cuda:1"})
    else
      local n = lark.cuda.device_count()
      expect_error("no such CUDA device", data.DataLoader, ds, {device = "cuda:" .. n})
    end
  end)
end)

gpu_describe("pinned memory on a GPU", function()
  local N = 29
  local gen = lark.Generator(23)
  local images = lark.randint(0, 256, {N, 3, 8, 8}, {generator = gen}):byte()
  local labels = lark.randint(1, 11, {N}, {generator = gen})
  local ds = data.TensorDataset(images, labels)
  local opts = {batch_size = 8, shuffle = true, seed = 4, normalize = {0.5, 0.25}, random_crop = {padding = 2},
                hflip = 0.5}
  local function with(extra)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    return o
  end

  it("pins: is_pinned() is true for pin_memory(), lark.empty and loader batches", function()
    local p = lark.randn(5, 7):pin_memory()
    assert.is_true(p:is_pinned())
    assert.are.equal(p, p:pin_memory())
    assert.is_true(lark.empty(4, {pin_memory = true}):is_pinned())
    local g = p:to("cuda")
    assert.are.equal("cuda:0", g:device())
    assert.is_false(g:is_pinned())
    same_bits(g, p, "a pinned tensor through the GPU and back")
    local nc = lark.randn(6, 4):pin_memory():t() -- non-contiguous pinned source: the staging path
    same_bits(nc:to("cuda"), nc, "a strided pinned view")
    for x, y in data.DataLoader(ds, with{pin_memory = true}):iter() do
      assert.is_true(x:is_pinned())
      assert.is_true(y:is_pinned())
    end
    expect_error("pin_memory: expected a CPU tensor, got one on cuda:0", function() return g:pin_memory() end)
  end)

  it("device = 'cuda' hands out batches on the GPU equal to the CPU batches", function()
    local cpu = batches(data.DataLoader(ds, with{}), 2)
    for _, extra in ipairs{{device = "cuda", pin_memory = true}, {device = "cuda:0"}, {device = "cuda", prefetch = 0,
                           pin_memory = true, mixup = 0.4, num_classes = 10}} do
      local want = extra.mixup and batches(data.DataLoader(ds, with{mixup = 0.4, num_classes = 10}), 2) or cpu
      local got = batches(data.DataLoader(ds, with(extra)), 2)
      assert.are.equal(#want, #got)
      for i = 1, #got do
        assert.are.equal("cuda:0", got[i][1]:device())
        assert.are.equal("cuda:0", got[i][2]:device())
        same_bits(got[i][1], want[i][1], "x of batch " .. i)
        same_bits(got[i][2], want[i][2], "y of batch " .. i)
      end
    end
    -- the Lua path too, and the user transform sees GPU tensors
    local seen
    local lua_got = batches(data.DataLoader(lua_dataset(images, labels), with{device = "cuda", pin_memory = true,
      transform = function(x, y) seen = x:device() return x, y end}), 2)
    assert.are.equal("cuda:0", seen)
    for i = 1, #lua_got do same_bits(lua_got[i][1], cpu[i][1], "Lua path x " .. i) end
  end)
end)

describe("transforms", function()
  local B, C, H, W = 5, 3, 6, 7
  local gen = lark.Generator(9)
  local x = lark.randint(0, 256, {B, C, H, W}, {generator = gen}):byte()
  local y = lark.tensor({1, 3, 2, 3, 4}, {dtype = "int64"})
  local xt = x:double():table()
  local mean, std = {0.4, 0.5, 0.6}, {0.2, 0.3, 0.25}

  -- the plain loop: pad, crop at (dy, dx) (0-based offsets in the padded image), flip, normalise
  local function reference(dr, S, p, scale, m, s)
    return build_table({B, C, S, S}, function(c)
      local b, ch, i, j = c[1], c[2], c[3], c[4]
      local jj = dr.flip[b] and (S + 1 - j) or j
      local si, sj = i + dr.dy[b] - p, jj + dr.dx[b] - p
      local v = 0
      if si >= 1 and si <= H and sj >= 1 and sj <= W then v = xt[b][ch][si][sj] * scale end
      return (v - (m and m[ch] or 0)) / (s and s[ch] or 1)
    end)
  end

  it("normalize, random crop and flip match a plain loop", function()
    local out, _, dr = D.transform(x, y, {normalize = {mean, std}, random_crop = {size = 5, padding = 3}, hflip = 0.5},
      lark.Generator(4), true)
    assert.are.same({B, C, 5, 5}, shape_of(out))
    assert_near(out, reference(dr, 5, 3, 1 / 255, mean, std), 1e-5)
    local flips = 0
    for b = 1, B do flips = flips + (dr.flip[b] and 1 or 0) end
    assert.is_true(flips > 0 and flips < B) -- seed 4 draws both
    -- the Lua-function forms do the same with the same generator
    local f = T.compose{T.random_crop{size = 5, padding = 3}, T.hflip(0.5)}
    assert.is_function(f)
    local a = T.from_options({normalize = {mean, std}, random_crop = {size = 5, padding = 3}, hflip = 0.5},
      lark.Generator(4))(x, y)
    assert_same(a, out)
  end)

  it("T.normalize, T.hflip(1) and T.random_crop without padding against plain loops", function()
    local n = T.normalize(mean, std)(x)
    local ident = {dy = {}, dx = {}, flip = {}}
    for b = 1, B do ident.dy[b], ident.dx[b], ident.flip[b] = 0, 0, false end
    local ref = build_table({B, C, H, W}, function(c) return (xt[c[1]][c[2]][c[3]][c[4]] / 255 - mean[c[2]]) / std[c[2]] end)
    assert_near(n, ref, 1e-5)
    local fl = T.hflip(1)(x:float())
    assert_same(fl, build_table({B, C, H, W}, function(c) return xt[c[1]][c[2]][c[3]][W + 1 - c[4]] end))
    local same = T.random_crop{size = H, padding = 0}(x:narrow(4, 1, H):float()) -- H x H: one window only
    assert_same(same, x:narrow(4, 1, H):float())
    local _, y2 = T.normalize(0.5, 0.5)(x, y)
    assert_same(y2, y) -- hard labels pass through
  end)

  it("mixup and cutmix: the formula, and soft targets that sum to 1", function()
    local xf = x:float()
    local xf_t = xf:double():table()
    for _, kind in ipairs{"mixup", "cutmix"} do
      local out, soft, dr = D.transform(xf, y, {[kind] = 0.7, num_classes = 4}, lark.Generator(21), true)
      assert.are.equal(kind, dr.mix)
      assert.are.same({B, 4}, shape_of(soft))
      assert_near(soft:sum(2), lark.ones(B), 1e-6)
      local want_y = build_table({B, 4}, function(c)
        local b, k = c[1], c[2]
        local v = 0
        if y[b] == k then v = v + dr.lam end
        if y[dr.perm[b]] == k then v = v + 1 - dr.lam end
        return v
      end)
      assert_near(soft, want_y, 1e-6)
      local box = dr.box
      local want_x = build_table({B, C, H, W}, function(c)
        local b, ch, i, j = c[1], c[2], c[3], c[4]
        local own, other = xf_t[b][ch][i][j], xf_t[dr.perm[b]][ch][i][j]
        if kind == "mixup" then return dr.lam * own + (1 - dr.lam) * other end
        if i >= box[1] and i <= box[3] and j >= box[2] and j <= box[4] then return other end
        return own
      end)
      assert_near(out, want_x, 1e-6)
      if kind == "cutmix" then
        local area = (box[3] - box[1] + 1) * (box[4] - box[2] + 1)
        assert_near(dr.lam, 1 - area / (H * W), 1e-12)
      end
      -- the Lua-function form
      local f = kind == "mixup" and T.mixup(0.7, 4, lark.Generator(21)) or T.cutmix(0.7, 4, lark.Generator(21))
      local o2, s2 = f(xf, y)
      assert_same(o2, out)
      assert_same(s2, soft)
    end
    expect_error("label 9 is out of range for 4 classes", T.mixup(1, 4), xf, lark.tensor({1, 2, 9, 1, 1}, {dtype = "int64"}))
    expect_error("need hard labels", T.cutmix(1, 4), xf, nil)
  end)

  it("draws lam from Beta(alpha, alpha)", function()
    local g = lark.Generator(1)
    local s, s2, n, a = 0, 0, 4000, 0.5
    for _ = 1, n do
      local v = D.beta(g, a, a)
      assert.is_true(v >= 0 and v <= 1)
      s, s2 = s + v, s2 + v * v
    end
    local m = s / n
    assert_near(m, 0.5, 0.03)
    assert_near(s2 / n - m * m, 1 / (4 * (2 * a + 1)), 0.02)
  end)
end)
