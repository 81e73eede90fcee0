-- interop_spec.lua: lark's RepLKNet and SLaK against PyTorch through HDF5 checkpoints.
-- The PyTorch models are spec/torch_models.py, written from ../shared/reference/MODELS.md with the
-- official module names, so a file that loads there with load_state_dict(strict=True) loads into the
-- official classes. For a tiny RepLKNet and a tiny SLaK (widths int(d * 1.3)), with random weights and
-- random BN statistics (eval mode):
--   (a) lark -> PyTorch: lark.save, then h5py + load_state_dict(strict=True); same logits;
--   (b) PyTorch -> lark: tools/pth2h5.py (and a file written with h5py alone), lark.load_into
--       strictly; same logits;
--   (c) re-parameterised: lark's reparameterize() against PyTorch's merged form (RepLKNet's official
--       structural_reparam, lkb_reparam; SLaK's merge is lark's extension, MODELS.md 2.1), both ways,
--       plus the merged kernels themselves; and the BN-folded forms (deep_fuse_BN / fold_bn);
--   and the state_dict key order is PyTorch's (CHECKPOINTS.md: files list keys in that order).
-- spec/torch_models.py itself is checked against MODELS.md's parameter and key counts.
-- "Same" is max |lark - torch| / max |torch| <= 1e-5 over the logits (float32 on both sides).
-- Set INTEROP_VERBOSE=1 to print the measured errors.
package.path = "./?.lua;" .. package.path
local json = require "lark.json"

local SPEC_DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
local ROOT = SPEC_DIR:match("^(.*)/spec$") or "."
local PTH2H5 = ROOT .. "/tools/pth2h5.py"
local TOL = 1e-5
local VERBOSE = os.getenv("INTEROP_VERBOSE") == "1"

-- The tiny configurations (the same tables go to spec/torch_models.py as JSON).
local CONFIGS = {
  replknet = {cfg = {channels = {16, 32}, layers = {1, 1}, kernels = {13, 7}, small_kernel = 5, num_classes = 10},
              input = {2, 3, 32, 32}},
  slak = {cfg = {dims = {16, 32, 48, 64}, depths = {1, 1, 1, 1}, kernel_size = {13, 11, 9, 7, 5}, width_factor = 1.3,
                 num_classes = 10},
          input = {2, 3, 64, 64}},
}

-- ---- what the specs need, and pending() when it is missing ------------------------------------------


local function file_exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end

-- nil when everything arch needs is here, else why not (for pending()).
local function missing(arch, need_pth2h5)
  if not have_torch() then return "PyTorch is not importable by " .. PYTHON .. " (apt-get install python3-torch)" end
  if not have_h5py() then return "h5py is not importable by " .. PYTHON .. " (apt-get install python3-h5py)" end
  local ok, save = pcall(function() return lark.save end)
  if not ok or type(save) ~= "function" or type(lark.load_into) ~= "function" then
    return "lark.save / lark.load_into are not there yet (lua/lark/checkpoint.lua)"
  end
  local mod = arch == "slak" and "recipes.slak" or "recipes.replknet"
  local okm, err = pcall(require, mod)
  if not okm then return mod .. " cannot be loaded yet: " .. tostring(err):match("[^\n]*") end
  if need_pth2h5 and not file_exists(PTH2H5) then return PTH2H5 .. " is not there yet" end
  return nil
end

-- ---- lark side ----------------------------------------------------------------------------------------

local function build(arch)
  if arch == "slak" then return require("recipes.slak").slak(CONFIGS.slak.cfg) end
  return require("recipes.replknet").replknet(CONFIGS.replknet.cfg)
end

-- Random weights and non-trivial BN statistics, by state-dict entry (as torch_models.randomize_):
-- conv/linear weights with std 1/sqrt(fan_in), affine weights 0.5..1.5, biases +-0.3, running mean
-- +-0.5, running var 0.5..2, num_batches_tracked 7, SLaK's gamma 0.5..1.5 (1e-6 would hide the blocks).
local function randomise(model, seed)
  lark.manual_seed(seed)
  local g <close> = lark.no_grad()
  local sd, keys = model:state_dict()
  for _, k in ipairs(keys) do
    local t, leaf = sd[k], k:match("([^.]+)$")
    if leaf == "num_batches_tracked" then
      t:fill_(7)
    elseif leaf == "running_mean" then
      t:uniform_(-0.5, 0.5)
    elseif leaf == "running_var" then
      t:uniform_(0.5, 2)
    elseif leaf == "gamma" then
      t:uniform_(0.5, 1.5)
    elseif t:dim() >= 2 then
      local a = math.sqrt(3 / (t:numel() // t:size(1)))
      t:uniform_(-a, a)
    elseif leaf == "weight" then
      t:uniform_(0.5, 1.5)
    else
      t:uniform_(-0.3, 0.3)
    end
  end
  return model:eval()
end

local function forward(model, x)
  local g <close> = lark.no_grad()
  return model(x)
end

local function tmpname(suffix)
  local p = os.tmpname()
  os.remove(p)
  return p .. suffix
end

-- Writes tensors (name -> tensor) to a plain HDF5 file for the Python side.
local function write_tensors(path, tensors)
  local f <close> = lark.h5.open(path, "w")
  for k, t in pairs(tensors) do f:write(k, t) end
end

-- ---- PyTorch side -----------------------------------------------------------------------------------------

local PRELUDE = [[
import json, os, sys
import h5py, numpy as np, torch
sys.path.insert(0, %q)
import torch_models as tm
torch.set_num_threads(2)
ARCH, CFG = %q, json.loads(%q)
PTH2H5 = %q
if os.path.exists(PTH2H5):
    sys.path.insert(0, os.path.dirname(PTH2H5))
    import pth2h5          # tools/pth2h5.py, run in this process (its main takes argv)

def model(merged=False):
    m = tm.build(ARCH, CFG)
    if merged:
        m.structural_reparam() if ARCH == "replknet" else m.merge_kernels()
    return m.eval()

def out(tag, t):
    print(tag, " ".join("%%.9g" %% v for v in t.detach().double().flatten().tolist()))

def read(path, name):
    with h5py.File(path, "r") as f:
        return torch.from_numpy(np.asarray(f[name][()]))
]]

-- Runs a script (after PRELUDE) and returns name -> list of numbers from its "NAME v1 v2 ..." lines;
-- fails with the whole output unless the script printed "DONE".
local function python(arch, body)
  local script = string.format(PRELUDE, SPEC_DIR, arch, json.encode(CONFIGS[arch].cfg), PTH2H5) .. body ..
    "\nprint('DONE')\n"
  local lines = run_python(script)
  local res, done = {}, false
  for _, line in ipairs(lines) do
    if line == "DONE" then done = true end
    local tag, rest = line:match("^([%u%d_]+) (.*)$")
    if tag then
      local nums = {}
      for w in rest:gmatch("%S+") do nums[#nums + 1] = tonumber(w) end
      res[tag] = nums
    end
  end
  if not done then error("the PyTorch side failed:\n" .. table.concat(lines, "\n"), 2) end
  return res
end

-- max |a - b| / max |b| over two flat lists (or tensors)
local function rel_err(a, b)
  a, b = flat_numbers(a), flat_numbers(b)
  assert.are.equal(#b, #a, "number of logits")
  local d, m = 0, 0
  for i = 1, #a do
    d = math.max(d, math.abs(a[i] - b[i]))
    m = math.max(m, math.abs(b[i]))
  end
  return d / m, d, m
end

local measured = {}

local function check(what, lark_vals, torch_vals, tol)
  local r, d, m = rel_err(lark_vals, torch_vals)
  measured[#measured + 1] = string.format("%-58s max|diff| %.3g  max|logit| %.3g  rel %.3g", what, d, m, r)
  if VERBOSE then print("interop: " .. measured[#measured]) end
  assert(r <= (tol or TOL), string.format("%s: relative error %.3g > %.3g (max |diff| %.3g, max |logit| %.3g)", what,
    r, tol or TOL, d, m))
  -- and every logit on its own, against its size
  assert_near(flat_numbers(lark_vals), flat_numbers(torch_vals), 10 * (tol or TOL))
  return r
end

-- The lark model made, randomised and run on a random input: model, input, logits.
local function lark_case(arch, seed)
  local m = randomise(build(arch), seed)
  lark.manual_seed(seed + 1000)
  local x = lark.rand(CONFIGS[arch].input) * 2 - 1
  return m, x, forward(m, x)
end

-- ---- the specs ----------------------------------------------------------------------------------------

for _, arch in ipairs{"replknet", "slak"} do
  local merge_name = arch == "replknet" and "structural_reparam" or "merge_kernels (lark's extension)"

  describe("interop " .. arch, function()
    it("lark -> PyTorch: lark.save loads with strict=True and gives the same logits", function()
      local why = missing(arch)
      if why then return pending(why) end
      local m, x, y = lark_case(arch, 11)
      local ck, io_ = tmpname(".h5"), tmpname(".h5")
      lark.save(ck, {model = m, config = {arch = arch, reparameterized = false}})
      write_tensors(io_, {input = x})
      local r = python(arch, string.format([[
m = model()
attrs = tm.load_h5_(m, %q)
assert attrs["format"] == "lark-checkpoint" and attrs["tensor_layout"] == "pytorch", attrs
assert json.loads(attrs["model_config"])["reparameterized"] is False
with torch.no_grad():
    out("LOGITS", m(read(%q, "input")))
]], ck, io_))
      os.remove(ck)
      os.remove(io_)
      check(arch .. " (a) lark -> torch", y, r.LOGITS)
    end)

    it("lists the keys in PyTorch's state_dict order (so the files read in that order, CHECKPOINTS.md)", function()
      local why = missing(arch)
      if why then return pending(why) end
      for _, merged in ipairs{false, true} do
        local m = build(arch)
        if merged then m:reparameterize() end
        local _, keys = m:state_dict()
        local r = run_python(string.format(PRELUDE, SPEC_DIR, arch, json.encode(CONFIGS[arch].cfg), PTH2H5) ..
          string.format("for k in model(merged=%s).state_dict(): print(k)\n", merged and "True" or "False"))
        local first
        for i = 1, math.max(#keys, #r) do
          if keys[i] ~= r[i] then
            first = string.format("key %d is '%s' in lark, '%s' in PyTorch", i, tostring(keys[i]), tostring(r[i]))
            break
          end
        end
        assert.is_nil(first, (merged and "merged: " or "") .. tostring(first))
      end
    end)

    it("PyTorch -> lark: tools/pth2h5.py output loads strictly and gives the same logits", function()
      local why = missing(arch, true)
      if why then return pending(why) end
      local ck, pth, io_ = tmpname(".h5"), tmpname(".pth"), tmpname(".h5")
      python(arch, string.format([[
torch.manual_seed(5)
m = tm.randomize_(model(), seed=21)
g = torch.Generator().manual_seed(22)
x = torch.rand(%s, generator=g) * 2 - 1
with torch.no_grad():
    y = m(x)
torch.save({"model": m.state_dict(), "epoch": 3}, %q)
pth2h5.main([%q, %q, "--arch", ARCH])
with h5py.File(%q, "w") as f:
    f["input"] = x.numpy()
    f["logits"] = y.numpy()
]], json.encode(CONFIGS[arch].input), pth, pth, ck, io_))
      local m = build(arch):eval()
      local st = lark.load_into(ck, {model = m, strict = true})
      assert.are.equal(3, st.epoch)
      local x, want = lark.h5.read(io_, "input"), lark.h5.read(io_, "logits")
      local y = forward(m, x)
      for _, p in ipairs{ck, pth, io_} do os.remove(p) end
      check(arch .. " (b) torch -> lark (pth2h5)", y, want)
    end)

    it("PyTorch -> lark: a file written with h5py alone (CHECKPOINTS.md section 3) loads too", function()
      local why = missing(arch)
      if why then return pending(why) end
      local ck = tmpname(".h5")
      python(arch, string.format([[
m = tm.randomize_(model(), seed=31)
x = torch.rand(%s, generator=torch.Generator().manual_seed(32)) * 2 - 1
with torch.no_grad():
    y = m(x)
tm.write_h5(%q, m.state_dict(), {"arch": ARCH}, extra={"input": x, "logits": y})
]], json.encode(CONFIGS[arch].input), ck))
      local m = build(arch):eval()
      lark.load_into(ck, {model = m})
      local y = forward(m, lark.h5.read(ck, "input"))
      local want = lark.h5.read(ck, "logits")
      os.remove(ck)
      check(arch .. " (b) torch -> lark (h5py)", y, want)
    end)

    it("a strict load refuses a file of the other form, naming the keys", function()
      local why = missing(arch)
      if why then return pending(why) end
      local m = randomise(build(arch), 41)
      local ck = tmpname(".h5")
      lark.save(ck, {model = m})
      local merged = build(arch):reparameterize()
      local err = expect_error("lkb_reparam", lark.load_into, ck, {model = merged})
      assert.truthy(err:find("missing", 1, true) and err:find("unexpected", 1, true), err)
      os.remove(ck)
    end)

    it("re-parameterised, lark -> PyTorch: lark's merge equals PyTorch's " .. merge_name, function()
      local why = missing(arch)
      if why then return pending(why) end
      local m, x, y0 = lark_case(arch, 51)
      local ck0, ck1, io_ = tmpname(".h5"), tmpname(".h5"), tmpname(".h5")
      lark.save(ck0, {model = m, config = {arch = arch, reparameterized = false}})
      m:reparameterize()
      local y1 = forward(m, x)
      lark.save(ck1, {model = m, config = {arch = arch, reparameterized = true}})
      local _, keys = m:state_dict()
      local n_reparam = 0
      for _, k in ipairs(keys) do
        if k:find("large_kernel.lkb_reparam.", 1, true) then n_reparam = n_reparam + 1 end
        assert.is_nil(k:find("lkb_origin", 1, true) or k:find("LoRA", 1, true) or k:find("small_conv", 1, true), k)
      end
      assert.are.equal(2 * (arch == "slak" and 4 or 2), n_reparam)
      write_tensors(io_, {input = x})
      local r = python(arch, string.format([[
x = read(%q, "input")
merged = model(merged=True)
tm.load_h5_(merged, %q)              # lark's merged file, into PyTorch's merged form
ours = model()
tm.load_h5_(ours, %q)                # lark's unmerged file, merged here
ours.structural_reparam() if ARCH == "replknet" else ours.merge_kernels()
a, b = merged.state_dict(), ours.state_dict()
assert list(a.keys()) == list(b.keys())
print("KERNEL_DIFF", max((a[k].double() - b[k].double()).abs().max().item() for k in a if "lkb_reparam" in k))
print("KERNEL_MAX", max(a[k].abs().max().item() for k in a if "lkb_reparam" in k))
with torch.no_grad():
    out("MERGED", merged(x))
    out("OURS", ours(x))
]], io_, ck1, ck0))
      for _, p in ipairs{ck0, ck1, io_} do os.remove(p) end
      -- the merged kernels agree to float32 rounding
      assert(r.KERNEL_DIFF[1] <= 1e-6 * r.KERNEL_MAX[1], string.format("merged kernels differ by %.3g (max %.3g)",
        r.KERNEL_DIFF[1], r.KERNEL_MAX[1]))
      measured[#measured + 1] = string.format("%-58s max|diff| %.3g  max|w| %.3g", arch .. " (c) merged kernels lark vs torch",
        r.KERNEL_DIFF[1], r.KERNEL_MAX[1])
      check(arch .. " (c) lark merged -> torch merged", y1, r.MERGED)
      check(arch .. " (c) lark unmerged vs torch merged-from-lark", y0, r.OURS)
    end)

    it("re-parameterised, PyTorch -> lark: PyTorch's merged weights load into reparameterize()'s form", function()
      local why = missing(arch, true)
      if why then return pending(why) end
      local ck, pth, io_ = tmpname(".h5"), tmpname(".pth"), tmpname(".h5")
      python(arch, string.format([[
m = tm.randomize_(model(), seed=61)
x = torch.rand(%s, generator=torch.Generator().manual_seed(62)) * 2 - 1
with torch.no_grad():
    y0 = m(x)
    m.structural_reparam() if ARCH == "replknet" else m.merge_kernels()
    y1 = m(x)
assert any("lkb_reparam" in k for k in m.state_dict())
torch.save({"model": m.state_dict()}, %q)
pth2h5.main([%q, %q, "--arch", ARCH, "--reparameterized"])
with h5py.File(%q, "w") as f:
    f["input"] = x.numpy()
    f["unmerged"] = y0.numpy()
    f["merged"] = y1.numpy()
]], json.encode(CONFIGS[arch].input), pth, pth, ck, io_))
      local st = lark.load(ck)
      assert.is_true(st.config.reparameterized)
      local m = build(arch):reparameterize():eval()
      lark.load_into(st, {model = m})
      local y = forward(m, lark.h5.read(io_, "input"))
      local want1, want0 = lark.h5.read(io_, "merged"), lark.h5.read(io_, "unmerged")
      for _, p in ipairs{ck, pth, io_} do os.remove(p) end
      check(arch .. " (c) torch merged -> lark merged", y, want1)
      check(arch .. " (c) torch merged -> lark merged, vs torch unmerged", y, want0)
    end)

    it("BN-folded form: lark's " .. (arch == "replknet" and "fuse_bn()" or "fold_bn()") ..
      " loads into PyTorch's folded form (conv.weight + conv.bias)", function()
      local why = missing(arch)
      if why then return pending(why) end
      local m, x, y0 = lark_case(arch, 71)
      if arch == "replknet" then m:fuse_bn() else m:fold_bn() end
      local y1 = forward(m, x)
      local ck, io_ = tmpname(".h5"), tmpname(".h5")
      lark.save(ck, {model = m})
      write_tensors(io_, {input = x})
      local r = python(arch, string.format([[
m = model()
if ARCH == "replknet":
    m.deep_fuse_BN()
else:
    with torch.no_grad():
        for lk in [mm for mm in m.modules() if isinstance(mm, tm.SLaKLargeKernel)]:
            for br in lk.branches():
                w, b = tm.fused(br)
                c = br.conv
                br.conv = torch.nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, padding=c.padding,
                                          groups=c.groups, bias=True)
                br.bn = torch.nn.Identity()
m.eval()
tm.load_h5_(m, %q)
with torch.no_grad():
    out("LOGITS", m(read(%q, "input")))
]], ck, io_))
      os.remove(ck)
      os.remove(io_)
      check(arch .. " (c) lark BN-folded -> torch BN-folded", y1, r.LOGITS)
      check(arch .. " (c) lark BN-folded vs lark unfolded", y1, y0)
    end)
  end)
end

describe("interop, PyTorch models of spec/torch_models.py", function()
  it("have MODELS.md's parameter counts and key counts (RepLKNet-31B, SLaK-T, the small configs)", function()
    if not have_torch() then return pending("PyTorch is not importable by " .. PYTHON) end
    local r = python("replknet", [[
def count(m): return sum(p.numel() for p in m.parameters())
b = tm.build("replknet", dict(tm.REPLKNET_31B, num_classes=1000))
print("R31B", count(b), count(b.structural_reparam()))
t = tm.build("slak", dict(tm.SLAK_T, num_classes=1000))
print("SLAKT", count(t), *t.dims)
s = tm.RepLKNet([32, 64, 128, 256], [1, 1, 2, 1], [31, 29, 27, 13], 5)
print("RSMALL", len(s.state_dict()), len(s.structural_reparam().state_dict()))
print("SSMALL", len(tm.SLaK([16, 32, 64, 128], [1, 1, 2, 1], [13, 11, 9, 7, 5]).state_dict()))
]])
    assert.are.same({79864168, 79527272}, r.R31B)
    assert.are.same({50703838, 124, 249, 499, 998}, r.SLAKT)
    assert.are.same({297, 247}, r.RSMALL)
    assert.are.same({145}, r.SSMALL)
  end)
end)

-- the measured errors, for the report (busted prints this at exit with INTEROP_VERBOSE=1)
if VERBOSE then
  local ok, busted = pcall(require, "busted")
  if ok and busted.subscribe then
    busted.subscribe({"suite", "end"}, function()
      print("\ninterop: measured errors")
      for _, l in ipairs(measured) do print("  " .. l) end
      return nil, true
    end)
  end
end
