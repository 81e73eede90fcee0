-- h5_spec.lua: lark.h5 (core/io/h5.c): bit-exact round trips of every dtype (0-d, empty and
-- non-contiguous tensors included), paths and dotted names, creation order, attributes, compressed
-- datasets, atomic files, clear errors for every fault (and nothing from HDF5 on stderr), and
-- interchange with h5py in both directions.
local h5 = lark.h5

local LARK = os.getenv("LARK_BIN") or "build/bin/lark"

local function tmpfile(suffix)
  local p = os.tmpname()
  os.remove(p)
  return p .. (suffix or ".h5")
end

-- the temporaries of atomic writes to p that are on disk
local function tmps_of(p)
  local proc = io.popen("ls -1 '" .. p .. "'.tmp.* 2>/dev/null")
  local out = {}
  for line in proc:lines() do out[#out + 1] = line end
  proc:close()
  return out
end

local function file_exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end

local function write_bytes(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

local function read_bytes(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- a and b have the same dtype, shape and bits (NaN matching NaN, the sign of zero compared).
local function assert_bits(a, b, what)
  assert.are.equal(b:dtype(), a:dtype(), what)
  assert.are.same(shape_of(b), shape_of(a), what)
  local x, y = flat(a), flat(b)
  assert.are.equal(#y, #x, what)
  for i = 1, #x do
    local u, v = x[i], y[i]
    local same = u == v or (u ~= u and v ~= v)
    if same and type(u) == "number" and u == 0 then same = 1 / u == 1 / v end
    if not same then error(string.format("%s: element %d is %s, expected %s", what or "bits", i, tostring(u), tostring(v)), 2) end
  end
end


-- one tensor of each dtype, with the awkward values in it
local function samples()
  return {
    f32 = lark.tensor({{0 / 0, 1 / 0, -1 / 0, -0.0}, {1e-45, 3.4028234663852886e38, -1.5, 0.1}}, {dtype = "float32"}),
    f64 = lark.tensor({0 / 0, -0.0, 5e-324, 1.7976931348623157e308, 0.1, -1 / 3}, {dtype = "float64"}),
    i64 = lark.tensor({math.mininteger, math.maxinteger, -1, 0, 1 << 53}, {dtype = "int64"}),
    u8 = lark.arange(0, 256, 1, {dtype = "uint8"}):view(16, 16),
    b = lark.tensor({{true, false, true}, {false, false, true}}, {dtype = "bool"}),
  }
end

describe("lark.h5", function()
  it("round-trips every dtype bit-exactly, 0-d, empty and non-contiguous tensors included", function()
    local p = tmpfile()
    local s = samples()
    local written = {}
    do
      local f <close> = h5.open(p, "w")
      for name, t in pairs(s) do
        f:write(name, t)
        written[name] = t
        local scalar = t:reshape(-1):select(1, 1) -- a 0-d view
        f:write("scalar/" .. name, scalar)
        written["scalar/" .. name] = scalar
        local empty = lark.zeros({0, 3}, {dtype = t:dtype()})
        f:write("empty/" .. name, empty)
        written["empty/" .. name] = empty
        local e1 = lark.zeros({0}, {dtype = t:dtype()})
        f:write("empty1/" .. name, e1)
        written["empty1/" .. name] = e1
      end
      local base = lark.randn(5, 7, {dtype = "float64"})
      f:write("strided.t", base:t()) -- a transposed view: written in its logical order
      written["strided.t"] = base:t():contiguous()
      f:write("strided.narrow", base:narrow(2, 2, 3))
      written["strided.narrow"] = base:narrow(2, 2, 3):contiguous()
    end
    local f <close> = h5.open(p)
    for name, t in pairs(written) do
      assert_bits(f:read(name), t, name)
    end
    assert.are.equal(0, f:read("scalar/i64"):dim())
    assert.are.equal(math.mininteger, f:read("scalar/i64"):item())
    assert.are.same({0, 3}, shape_of(f:read("empty/f32")))
    assert.are.equal("bool", f:info("b").dtype)
    assert.are.same({2, 3}, {table.unpack(f:info("b").shape)})
    assert.are.same({2, 3}, shape_of(f:read("b")))
    assert.are.equal("uint8", f:info("u8").dtype)
    assert.are.same({}, {table.unpack(f:info("scalar/f64").shape)})
    f:close()
    os.remove(p)
  end)

  it("keeps dotted names, makes groups on the way and lists them in creation order", function()
    local p = tmpfile()
    local names = {"stem.0.conv.weight", "stem.0.bn.running_mean", "stages.0.blocks.1.pw1.bn.weight", "head.bias", "a"}
    local f = h5.open(p, "w")
    for i, n in ipairs(names) do f:write("model_state_dict/" .. n, lark.full({i}, i)) end
    f:write("deep/er/still/x.y", lark.ones(2))
    f:create_group("empty_group")
    f:close()
    f = h5.open(p, "r")
    assert.are.same(names, f:keys("model_state_dict"))
    assert.are.same({"model_state_dict", "deep", "empty_group"}, f:keys())
    assert.are.same({"model_state_dict", "deep", "empty_group"}, f:keys("/"))
    assert.are.same({}, f:keys("empty_group"))
    assert.are.same({"x.y"}, f:keys("deep/er/still"))
    for i, n in ipairs(names) do assert_same(f:read("model_state_dict/" .. n), lark.full({i}, i), n) end
    assert.is_true(f:has("deep/er"))
    assert.is_true(f:has("/deep/er/still/x.y"))
    assert.is_false(f:has("deep/nothing/here"))
    assert.is_false(f:has("model_state_dict/stem.0"))
    assert.are.equal("group", f:kind("deep"))
    assert.are.equal("dataset", f:kind("deep/er/still/x.y"))
    assert.is_nil(f:kind("nope"))
    local sd, keys = f:read_group("model_state_dict")
    assert.are.same(names, keys)
    local order = {}
    for k in pairs(sd) do order[#order + 1] = k end
    assert.are.same(names, order) -- pairs() follows the file's order
    assert.are.same(names, h5.keys_of(sd))
    f:close()
    os.remove(p)
  end)

  it("writes a dataset again by replacing it, and updates files opened with \"a\"", function()
    local p = tmpfile()
    h5.write(p, "x", lark.ones(3))
    h5.write(p, "x", lark.zeros(2, 2, {dtype = "int64"}))
    h5.write(p, "g/y", lark.ones(1))
    local f <close> = h5.open(p, "a")
    assert_bits(f:read("x"), lark.zeros(2, 2, {dtype = "int64"}), "x")
    f:write("g/z", lark.full({2}, 7))
    assert.are.same({"y", "z"}, f:keys("g"))
    f:close()
    assert_same(h5.read(p, "g/z"), {7, 7})
    os.remove(p)
  end)

  it("stores attributes: strings (UTF-8), integers, numbers and booleans, on any object", function()
    local p = tmpfile()
    local f = h5.open(p, "w")
    f:write("g/d.s", lark.ones(1))
    f:set_attr("format", "lark-checkpoint")
    f:set_attr("unicode", "héllo ✓ 漢字")
    f:set_attr("big", math.maxinteger)
    f:set_attr("neg", -42)
    f:set_attr("pi", math.pi)
    f:set_attr("flag", true)
    f:set_attr("empty", "")
    f:set_attr("on_group", 3, "g")
    f:set_attr("on_dataset", "yes", "g/d.s")
    f:set_attr("neg", -43) -- replaced
    expect_error("expected a string, number or boolean, got table", f.set_attr, f, "t", {1, 2})
    f:close()
    f = h5.open(p)
    assert.are.equal("lark-checkpoint", f:attr("format"))
    assert.are.equal("héllo ✓ 漢字", f:attr("unicode"))
    assert.are.equal(math.maxinteger, f:attr("big"))
    assert.are.equal("integer", math.type(f:attr("big")))
    assert.are.equal(-43, f:attr("neg"))
    assert.are.equal(math.pi, f:attr("pi"))
    assert.are.equal("float", math.type(f:attr("pi")))
    assert.are.equal(true, f:attr("flag"))
    assert.are.equal("", f:attr("empty"))
    assert.are.equal(3, f:attr("on_group", "g"))
    assert.are.equal("yes", f:attr("on_dataset", "g/d.s"))
    assert.is_nil(f:attr("missing"))
    assert.are.same({"format", "unicode", "big", "pi", "flag", "empty", "neg"}, f:attr_names())
    assert.are.same({on_group = 3}, f:attrs("g"))
    expect_error("no object 'nope'", f.attr, f, "x", "nope")
    f:close()
    os.remove(p)
  end)

  it("compresses bool masks (and anything with compress = true) losslessly", function()
    local p = tmpfile()
    lark.manual_seed(5)
    local mask = lark.rand(1500, 1000):gt(0.7)     -- 1.5 MB of bools: chunks split along dim 1
    local w = lark.randn(64, 1, 31, 31)
    local f = h5.open(p, "w")
    f:write("mask", mask)
    f:write("w", w, {compress = true})
    f:write("w9", w, {compress = true, level = 9})
    f:write("raw", w)
    f:write("mask0d", lark.tensor(true, {dtype = "bool"})) -- scalars cannot be chunked: stored plain
    expect_error("level 12 is out of range", f.write, f, "x", w, {compress = true, level = 12})
    expect_error("unknown option 'gzip'", f.write, f, "x", w, {gzip = true})
    f:close()
    f = h5.open(p)
    assert.is_true(f:read("mask"):eq(mask):all():item())
    assert.are.equal("bool", f:read("mask"):dtype())
    assert.is_true(f:read("w"):eq(w):all():item())
    assert.is_true(f:read("w9"):eq(w):all():item())
    assert.are.equal(true, f:read("mask0d"):item())
    f:close()
    if have_h5py() then
      local out = run_python(string.format([[
import h5py
f = h5py.File(%q, "r")
for n in ["mask", "w", "raw"]:
    d = f[n]
    print(n, d.dtype, d.compression, d.shuffle, d.fletcher32, d.chunks)
print(int(f["mask"][()].sum()))
]], p))
      assert.are.equal("mask bool gzip True True (1048, 1000)", out[1])
      assert.are.equal("w float32 gzip True True (64, 1, 31, 31)", out[2])
      assert.are.equal("raw float32 None False False None", out[3])
      assert.are.equal(tostring(mask:sum():item()), out[4])
    end
    os.remove(p)
  end)

  it("closes idempotently, with <close> and when collected", function()
    local p = tmpfile()
    local f = h5.open(p, "w")
    f:write("x", lark.ones(2))
    assert.is_true(f:is_open())
    f:close()
    f:close()
    assert.is_false(f:is_open())
    assert.truthy(tostring(f):find("closed", 1, true))
    expect_error("the file '" .. p .. "' is closed", f.read, f, "x")
    expect_error("is closed", f.write, f, "y", lark.ones(1))
    do
      local g <close> = h5.open(p, "a")
      g:write("y", lark.ones(3))
    end
    -- a file nobody closed is closed by the collector (data flushed), so it can be opened again
    local function leak()
      local g = h5.open(p, "a")
      g:write("z", lark.ones(4))
    end
    leak()
    collectgarbage()
    collectgarbage()
    local r <close> = h5.open(p, "a")
    assert.are.same({"x", "y", "z"}, r:keys())
    os.remove(p)
  end)

  it("writes atomic files: committed on close, discarded on error, abort or collection", function()
    local p = tmpfile()
    h5.write(p, "v", lark.full({3}, 1))
    local before = read_bytes(p)
    -- an error inside the scope: the temporary goes, the old file stays
    local ok = pcall(function()
      local f <close> = h5.open(p, "w", {atomic = true})
      f:write("v", lark.full({3}, 2))
      assert.are.equal(1, #tmps_of(p))
      error("boom")
    end)
    assert.is_false(ok)
    assert.are.equal(before, read_bytes(p))
    assert.are.same({}, tmps_of(p))
    -- abort
    local f = h5.open(p, "w", {atomic = true})
    f:write("v", lark.full({3}, 3))
    f:abort()
    assert.are.equal(before, read_bytes(p))
    -- never closed: the collector discards it
    local function forget()
      local g = h5.open(p, "w", {atomic = true})
      g:write("v", lark.full({3}, 4))
    end
    forget()
    collectgarbage()
    collectgarbage()
    assert.are.equal(before, read_bytes(p))
    assert.are.same({}, tmps_of(p))
    -- commit
    f = h5.open(p, "w", {atomic = true})
    assert.truthy(tostring(f):find("atomic", 1, true))
    f:write("v", lark.full({3}, 5))
    f:close()
    assert_same(h5.read(p, "v"), {5, 5, 5})
    -- a stale temporary of a dead process is removed by the next atomic write; a live one's is kept
    local dead = p .. ".tmp.999999999"
    local live = p .. ".tmp.1" -- pid 1 is alive
    write_bytes(dead, "partial")
    write_bytes(live, "partial")
    f = h5.open(p, "w", {atomic = true})
    f:close()
    assert.is_false(file_exists(dead))
    assert.is_true(file_exists(live))
    os.remove(live)
    expect_error("atomic files are written whole", h5.open, p, "a", {atomic = true})
    os.remove(p)
  end)

  it("raises clear errors naming the file and the problem", function()
    local p = tmpfile()
    expect_error("h5.open: '/nonexistent/dir/x.h5': no such file", h5.open, "/nonexistent/dir/x.h5")
    expect_error("cannot create: the directory '/nonexistent/dir' does not exist", h5.open, "/nonexistent/dir/x.h5", "w")
    expect_error("mode must be \"r\", \"w\" or \"a\", got \"rw\"", h5.open, p, "rw")
    expect_error("unknown option 'atomc'", h5.open, p, "w", {atomc = true})
    write_bytes(p, "this is a text file, not HDF5\n")
    expect_error("'" .. p .. "' is not an HDF5 file", h5.open, p)
    write_bytes(p, "")
    expect_error("is not an HDF5 file (no HDF5 signature in its 0 bytes)", h5.open, p)
    expect_error("is a directory", h5.open, "/tmp")
    expect_error("not an HDF5 file", h5.open, p, "a") -- "a" does not overwrite a stray file
    os.remove(p)
    -- a truncated file: the signature is there, the rest is not
    h5.write(p, "x", lark.randn(1000))
    local whole = read_bytes(p)
    write_bytes(p, whole:sub(1, #whole // 2))
    local err = expect_error("cannot open for reading: the file is truncated, corrupt", h5.open, p)
    assert.truthy(err:find(p, 1, true))
    write_bytes(p, whole:sub(1, 600))
    expect_error("truncated, corrupt", h5.open, p)
    -- datasets and groups
    local f <close> = h5.open(p, "w")
    f:write("model_state_dict/a.weight", lark.ones(2))
    f:write("model_state_dict/b.bias", lark.ones(2))
    err = expect_error("no dataset 'model_state_dict/c.weight' (model_state_dict holds 'a.weight', 'b.bias')", f.read, f,
      "model_state_dict/c.weight")
    assert.truthy(err:find("h5.read: '" .. p .. "'", 1, true))
    expect_error("no dataset 'ema/x' (the root group holds 'model_state_dict')", f.read, f, "ema/x")
    expect_error("'model_state_dict' is a group, not a dataset (it holds 'a.weight', 'b.bias')", f.read, f,
      "model_state_dict")
    expect_error("'model_state_dict' exists and is a group", f.write, f, "model_state_dict", lark.ones(1))
    expect_error("'model_state_dict/a.weight' exists and is not a group", f.write, f, "model_state_dict/a.weight/x",
      lark.ones(1))
    expect_error("bad name 'a//b'", f.write, f, "a//b", lark.ones(1))
    expect_error("bad name 'a/./b'", f.read, f, "a/./b")
    expect_error("expected a dataset name, got ''", f.read, f, "")
    expect_error("expected a Tensor, got number", f.write, f, "x", 3)
    expect_error("no group 'nothing'", f.keys, f, "nothing")
    expect_error("'model_state_dict/a.weight' is a dataset, not a group", f.keys, f, "model_state_dict/a.weight")
    f:close()
    local r <close> = h5.open(p)
    expect_error("is open read-only", r.write, r, "y", lark.ones(1))
    expect_error("is open read-only", r.set_attr, r, "y", 1)
    r:close()
    os.remove(p)
  end)

  it("prints nothing from HDF5 on stderr, whatever fails", function()
    local script = tmpfile(".lua")
    local p = tmpfile()
    write_bytes(script, string.format([[
local h5 = lark.h5
pcall(h5.open, "/nonexistent.h5")
local f = h5.open(%q, "w")
f:write("a", lark.ones(1))
pcall(f.read, f, "b/c/d")
pcall(f.read, f, "a/b")
pcall(f.keys, f, "zz")
pcall(f.attr, f, "x", "nope")
f:close()
local s = io.open(%q, "rb"):read("a")
io.open(%q, "wb"):write(s:sub(1, #s // 2)):close()
pcall(h5.open, %q)
print("done")
]], p, p, p, p))
    local proc = io.popen(string.format("'%s' '%s' 2>&1", LARK, script))
    local out = proc:read("a")
    proc:close()
    assert.are.equal("done\n", out)
    os.remove(script)
    os.remove(p)
  end)

  describe("with h5py", function()
    if not have_h5py() then
      pending("h5py is not installed (apt-get install python3-h5py)")
      return
    end

    it("h5py reads lark's files: dtypes, 0-d scalars, order, string attributes", function()
      local p = tmpfile()
      local s = samples()
      local f = h5.open(p, "w")
      for _, n in ipairs{"f32", "f64", "i64", "u8", "b"} do f:write("g/" .. n, s[n]) end
      f:write("g/n.batches", lark.tensor(7, {dtype = "int64"}))
      f:set_attr("format", "lark-checkpoint")
      f:set_attr("version", 1)
      f:set_attr("x", 0.25)
      f:close()
      local out = run_python(string.format([[
import h5py, numpy as np
f = h5py.File(%q, "r")
g = f["g"]
print(" ".join(g.keys()))
for k, v in g.items():
    print(k, v.dtype, v.shape)
print(repr(f.attrs["format"]), repr(f.attrs["version"]), repr(float(f.attrs["x"])))
a = g["f32"][()]
print(np.isnan(a[0, 0]), a[0, 1], np.signbit(a[0, 3]), a[1, 0] > 0, a[1, 1])
print(g["i64"][()].tolist())
print(g["b"][()].tolist())
print(type(g["n.batches"][()]).__name__, g["n.batches"][()])
print(f.libver)
]], p))
      assert.are.equal("f32 f64 i64 u8 b n.batches", out[1])
      assert.are.equal("f32 float32 (2, 4)", out[2])
      assert.are.equal("f64 float64 (6,)", out[3])
      assert.are.equal("i64 int64 (5,)", out[4])
      assert.are.equal("u8 uint8 (16, 16)", out[5])
      assert.are.equal("b bool (2, 3)", out[6])
      assert.are.equal("n.batches int64 ()", out[7])
      assert.are.equal("'lark-checkpoint' 1 0.25", out[8])
      assert.are.equal("True inf True True 3.4028235e+38", out[9])
      assert.are.equal("[-9223372036854775808, 9223372036854775807, -1, 0, 9007199254740992]", out[10])
      assert.are.equal("[[True, False, True], [False, False, True]]", out[11])
      assert.are.equal("int64 7", out[12])
      os.remove(p)
    end)

    it("reads h5py's files: float16/bfloat16 as float32, narrower integers as int64, bools; refuses the rest by name", function()
      local p = tmpfile()
      local out = run_python(string.format([==[
import h5py, numpy as np
with h5py.File(%q, "w") as f:   # no track_order: lark lists names alphabetically
    f["z16"] = np.array([1.5, -0.0009765625, 65504.0, 0.1], dtype=np.float16)
    f["i32"] = np.array([-2**31, 2**31 - 1], dtype=np.int32)
    f["u16"] = np.array([0, 65535], dtype=np.uint16)
    f["i8"] = np.array([-128, 127], dtype=np.int8)
    f["big"] = np.array([2**53 + 1, 2**63 - 2, -2**63 + 1], dtype=np.int64)
    f["mask"] = np.array([[True, False], [False, True]])
    f["be"] = np.array([1.25, -2.5], dtype=">f8")
    f["u64"] = np.array([1, 2], dtype=np.uint64)
    f["s"] = "just a string"
    f["c"] = np.zeros(2, dtype=[("a", "i4"), ("b", "f4")])
    f.attrs["arr"] = np.array([1.5, 2.5])
    f.attrs["iarr"] = np.array([3, 4], dtype=np.int32)
    f.attrs["fixed"] = np.bytes_(b"fixed-len")
    f.attrs["b"] = np.bool_(True)
    # bfloat16: a custom 16-bit float type, as CHECKPOINTS.md defines it
    t = h5py.h5t.IEEE_F32LE.copy()
    t.set_fields(15, 7, 8, 0, 7); t.set_size(2); t.set_ebias(127)
    bits = (np.array([1.0, -3.0e38, 0.1], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    sid = h5py.h5s.create_simple((3,))
    did = h5py.h5d.create(f.id, b"bf16", t, sid)
    did.write(h5py.h5s.ALL, h5py.h5s.ALL, bits, mtype=t)
    print(" ".join("%%.9g" %% x for x in (bits.astype(np.uint32) << 16).view(np.float32)))
]==], p))
      local bf = {}
      for w in out[1]:gmatch("%S+") do bf[#bf + 1] = tonumber(w) end
      assert.are.equal(3, #bf, table.concat(out, "\n"))
      local f <close> = h5.open(p)
      assert.are.same({"be", "bf16", "big", "c", "i32", "i8", "mask", "s", "u16", "u64", "z16"}, f:keys())
      -- int64 beyond 2^53 passes through lark untouched (h5py -> lark -> h5py)
      local q = tmpfile()
      h5.write(q, "big", f:read("big"))
      assert.are.same({"True"}, run_python(string.format([[
import h5py, numpy as np
print((h5py.File(%q, "r")["big"][()] == np.array([2**53 + 1, 2**63 - 2, -2**63 + 1])).all())
]], q)))
      os.remove(q)
      assert_bits(f:read("z16"), lark.tensor({1.5, -0.0009765625, 65504.0, 0.0999755859375}, {dtype = "float32"}), "z16")
      assert_bits(f:read("bf16"), lark.tensor(bf, {dtype = "float32"}), "bf16")
      assert_bits(f:read("i32"), lark.tensor({-2 ^ 31, 2 ^ 31 - 1}, {dtype = "int64"}), "i32")
      assert_bits(f:read("u16"), lark.tensor({0, 65535}, {dtype = "int64"}), "u16")
      assert_bits(f:read("i8"), lark.tensor({-128, 127}, {dtype = "int64"}), "i8")
      assert_bits(f:read("mask"), lark.tensor({{true, false}, {false, true}}, {dtype = "bool"}), "mask")
      assert_bits(f:read("be"), lark.tensor({1.25, -2.5}, {dtype = "float64"}), "be")
      expect_error("'u64' has an unsupported dtype: uint64", f.read, f, "u64")
      expect_error("'s' has an unsupported dtype: string", f.read, f, "s")
      expect_error("'c' has an unsupported dtype: compound", f.read, f, "c")
      assert.are.same({1.5, 2.5}, f:attr("arr"))
      assert.are.same({3, 4}, f:attr("iarr"))
      assert.are.equal("fixed-len", f:attr("fixed"))
      assert.are.equal(true, f:attr("b"))
      os.remove(p)
    end)
  end)
end)
