-- checkpoint_spec.lua: lark.save / lark.load / lark.load_into (lua/lark/checkpoint.lua) and
-- tools/pth2h5.py: a bit-exact round trip of a whole training state, training that continues
-- identically after load_into, PyTorch loading the weights (strict=True, same outputs) and the
-- optimizer state (same next step), every fault a clear error with the model left untouched, a
-- writer killed with SIGKILL mid-save never damaging the previous checkpoint, and .pth conversion.
local nn, optim = lark.nn, lark.optim

local LARK = os.getenv("LARK_BIN") or "build/bin/lark"

local function tmpfile(suffix)
  local p = os.tmpname()
  os.remove(p)
  return p .. (suffix or ".h5")
end

local function read_bytes(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_bytes(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

local function tmps_of(p)
  local proc = io.popen("ls -1 '" .. p .. "'.tmp.* 2>/dev/null")
  local out = {}
  for line in proc:lines() do out[#out + 1] = line end
  proc:close()
  return out
end


-- same dtype, shape and values (exact; NaN matches NaN)
local function same_tensor(a, b, what)
  assert.are.equal(b:dtype(), a:dtype(), what)
  assert.are.same(shape_of(b), shape_of(a), what)
  if a:numel() > 0 then
    if a:is_floating_point() then assert_same(a, b, what)
    else assert.is_true(a:eq(b):all():item(), what) end
  end
end

-- The toy model the PyTorch spec defines identically: conv + bn + relu + flatten + linear.
local function toy(out_features, extra)
  local m = nn.Sequential(nn.Conv2d(3, 4, 3, {padding = 1}), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
    nn.Linear(4 * 6 * 6, out_features or 5))
  if extra then m:add(nn.Linear(out_features or 5, 2)) end
  return m
end

-- A model, optimizer (two groups), scheduler and EMA after a few steps on seeded data.
local function trained(seed)
  lark.manual_seed(seed)
  local m = toy()
  local opt = optim.AdamW(optim.param_groups(m, {weight_decay = 0.05}), {lr = 1e-2})
  local sched = optim.lr_scheduler.cosine(opt, {total_steps = 20, warmup_steps = 2, min_lr = 1e-4})
  local ema = optim.ModelEma(m, {decay = 0.9})
  local xs = {}
  for i = 1, 3 do
    xs[i] = lark.randn(4, 3, 6, 6)
    local loss = m(xs[i]):pow(2):mean()
    opt:zero_grad()
    loss:backward()
    opt:step()
    sched:step()
    ema:update(m)
  end
  return {model = m, optimizer = opt, scheduler = sched, ema = ema}
end

local function step(s, x)
  local loss = s.model(x):pow(2):mean()
  s.optimizer:zero_grad()
  loss:backward()
  s.optimizer:step()
  s.scheduler:step()
  s.ema:update(s.model)
end

local function snapshot(model)
  local snap = {}
  for k, t in pairs((model:state_dict())) do snap[k] = t:clone() end
  return snap
end

local function assert_untouched(model, snap, what)
  for k, t in pairs((model:state_dict())) do same_tensor(t, snap[k], (what or "model") .. ": " .. k) end
end

local function full_state(s, extra)
  local st = {model = s.model, ema = s.ema, optimizer = s.optimizer, scheduler = s.scheduler, rng = true, epoch = 3,
    step = 141, config = {arch = "toy", reparameterized = false, channels = {4}, lr = 1e-2},
    masks = {["0.weight"] = s.model[1].weight:abs():gt(0.1), ["4.weight"] = s.model[5].weight:gt(0)},
    mask_config = {sparsity = 0.4, prune_rate = 0.3}, attrs = {best_acc = 0.75, note = "toy"}}
  for k, v in pairs(extra or {}) do st[k] = v end
  return st
end

describe("lark.save / lark.load", function()
  it("round-trips a whole training state bit-exactly, in state_dict order", function()
    local s = trained(1)
    local p = tmpfile()
    lark.manual_seed(99)
    lark.rand(7) -- move the generator off its seed
    local rng = lark.get_rng_state()
    lark.save(p, full_state(s))
    local st = lark.load(p)
    local sd, keys = s.model:state_dict()
    assert.are.same(keys, st.keys.model)
    local order = {}
    for k, t in pairs(st.model) do
      order[#order + 1] = k
      same_tensor(t, sd[k], k)
    end
    assert.are.same(keys, order)
    assert.are.equal("int64", st.model["1.num_batches_tracked"]:dtype())
    assert.are.equal(0, st.model["1.num_batches_tracked"]:dim())
    assert.are.same(keys, st.keys.ema) -- the EMA in the model's order
    for k, t in pairs(s.ema:state_dict()) do same_tensor(st.ema[k], t, "ema " .. k) end
    same_tensor(st.masks["0.weight"], s.model[1].weight:abs():gt(0.1), "mask")
    assert.are.same({"0.weight", "4.weight"}, st.keys.masks)
    assert.are.same({sparsity = 0.4, prune_rate = 0.3}, st.mask_config)
    -- optimizer: state by name, numbers back as numbers, groups as they were
    local osd = s.optimizer:state_dict()
    assert.are.equal("AdamW", st.optimizer.type)
    for name, ps in pairs(osd.state) do
      assert.are.equal(ps.step, st.optimizer.state[name].step)
      assert.are.equal("integer", math.type(st.optimizer.state[name].step))
      same_tensor(st.optimizer.state[name].exp_avg, ps.exp_avg, name .. " exp_avg")
      same_tensor(st.optimizer.state[name].exp_avg_sq, ps.exp_avg_sq, name .. " exp_avg_sq")
    end
    assert.are.same(osd.param_groups, st.optimizer.param_groups)
    assert.are.same(s.scheduler:state_dict(), st.scheduler)
    assert.are.same(rng, st.rng)
    assert.are.equal(3, st.epoch)
    assert.are.equal(141, st.step)
    assert.are.same({arch = "toy", reparameterized = false, channels = {4}, lr = 1e-2}, st.config)
    assert.are.equal(0.75, st.attrs.best_acc)
    assert.are.equal("toy", st.attrs.note)
    assert.are.equal("lark-checkpoint", st.attrs.format)
    assert.are.equal(1, st.format_version)
    assert.are.equal("pytorch", st.attrs.tensor_layout)
    assert.truthy(st.created_utc:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$"))
    assert.truthy(st.producer:find("^lark "))
    -- what lark.load gives can be saved again as it is
    local q = tmpfile()
    lark.save(q, {model = st.model, ema = st.ema, optimizer = st.optimizer, scheduler = st.scheduler, rng = st.rng,
      masks = st.masks, epoch = st.epoch, step = st.step, config = st.config})
    local st2 = lark.load(q)
    assert.are.same(st.keys, st2.keys)
    for k, t in pairs(st.model) do same_tensor(st2.model[k], t, k) end
    assert.are.same(st.optimizer.param_groups, st2.optimizer.param_groups)
    os.remove(p)
    os.remove(q)
  end)

  it("stores every dtype, 0-d and empty tensors of a plain state dict (sorted by name)", function()
    local p = tmpfile()
    local sd = {
      ["b.f32"] = lark.tensor({0 / 0, -0.0, 1e-45, 3.5}, {dtype = "float32"}),
      ["a.f64"] = lark.tensor({{1 / 3, -1 / 0}}, {dtype = "float64"}),
      ["c.i64"] = lark.tensor(math.mininteger, {dtype = "int64"}),
      ["d.u8"] = lark.tensor({0, 255, 7}, {dtype = "uint8"}),
      ["e.bool"] = lark.tensor({true, false}, {dtype = "bool"}),
      ["f.empty"] = lark.zeros({0, 4}),
      ["g.0d"] = lark.tensor(2.5, {dtype = "float64"}),
    }
    lark.save(p, {model = sd})
    local st = lark.load(p)
    assert.are.same({"a.f64", "b.f32", "c.i64", "d.u8", "e.bool", "f.empty", "g.0d"}, st.keys.model)
    for k, t in pairs(sd) do same_tensor(st.model[k], t, k) end
    assert.are.equal(1 / 0, 1 / st.model["b.f32"]:table()[2] * -1) -- -0.0 kept its sign
    assert.is_nil(st.optimizer)
    assert.is_nil(st.epoch)
    os.remove(p)
  end)

  it("restores into live objects: training then continues exactly as it would have", function()
    local a = trained(2)
    local p = tmpfile()
    lark.save(p, full_state(a, {rng = lark.get_rng_state()}))
    local b = trained(3) -- other weights, other optimizer state
    local st = lark.load_into(p, {model = b.model, optimizer = b.optimizer, scheduler = b.scheduler, ema = b.ema,
      rng = true})
    assert.are.equal(3, st.epoch)
    assert.are.same(a.scheduler:state_dict(), b.scheduler:state_dict())
    lark.manual_seed(11)
    for i = 1, 3 do
      local x = lark.randn(4, 3, 6, 6)
      step(a, x)
      step(b, x)
    end
    for k, t in pairs((a.model:state_dict())) do same_tensor(b.model:state_dict()[k], t, "after 3 more steps: " .. k) end
    for k, t in pairs(a.ema:state_dict()) do same_tensor(b.ema:state_dict()[k], t, "ema " .. k) end
    assert.are.equal(a.optimizer.param_groups[1].lr, b.optimizer.param_groups[1].lr)
    -- the RNG state comes back too
    lark.save(p, {model = a.model, rng = {seed = 5, offset = 1234}})
    lark.manual_seed(0)
    lark.load_into(p, {model = b.model, rng = true})
    assert.are.same({seed = 5, offset = 1234}, lark.get_rng_state())
    os.remove(p)
  end)

  it("checks everything before changing anything, and says what is wrong", function()
    local s = trained(4)
    local p = tmpfile()
    lark.save(p, full_state(s))
    local function fails(pattern, into, path)
      local model = into.model
      local snap = snapshot(model)
      local ostate = into.optimizer and into.optimizer:state_dict()
      local err = expect_error(pattern, lark.load_into, path or p, into)
      assert.truthy(err:find("nothing was changed", 1, true) or path, err)
      assert_untouched(model, snap)
      if ostate then assert.are.same(ostate.param_groups, into.optimizer:state_dict().param_groups) end
      return err
    end
    local function fresh(m)
      return {model = m}
    end
    local wrong = fresh(toy(6))
    fails("model: '4.weight' has shape [5,144] in the checkpoint, [6,144] in the model", wrong)
    fails("model: missing key(s) '5.weight', '5.bias'", fresh(toy(5, true)))
    local short = nn.Sequential(nn.Conv2d(3, 4, 3, {padding = 1}), nn.BatchNorm2d(4))
    fails("model: unexpected key(s) '4.weight', '4.bias'", fresh(short))
    fails("model: '0.weight' is float32 in the checkpoint, float64 in the model", fresh(toy():double()))
    -- a right model with a wrong optimizer: the model is not loaded either
    local m = toy()
    local one_group = optim.AdamW(m, {lr = 1e-3})
    local err = fails("optimizer: 2 parameter group(s) in the checkpoint, 1 in the optimizer",
      {model = m, optimizer = one_group})
    assert.falsy(err:find("model:", 1, true))
    local sgd = optim.SGD(optim.param_groups(m), {lr = 0.1, momentum = 0.9})
    fails("optimizer: the checkpoint holds AdamW state, the optimizer is SGD", {model = m, optimizer = sgd})
    fails("ema: missing key(s)", {model = m, ema = optim.ModelEma(toy(5, true))})
    local sched = optim.lr_scheduler.step(optim.AdamW(optim.param_groups(m)), {step_size = 3})
    fails("scheduler: the checkpoint holds a cosine schedule, this one is step", {model = m, scheduler = sched})
    expect_error("unknown field 'modle'", lark.load_into, p, {modle = m})
    -- strict = false: the keys both have are loaded, the rest left alone
    local bigger = toy(5, true)
    local extra_w = bigger[6].weight:clone()
    lark.load_into(p, {model = bigger, strict = false})
    same_tensor(bigger[5].weight, s.model[5].weight, "4.weight loaded")
    same_tensor(bigger[6].weight, extra_w, "5.weight untouched")
    -- broken files
    local whole = read_bytes(p)
    local q = tmpfile()
    write_bytes(q, whole:sub(1, #whole // 2))
    fails("the file is truncated, corrupt", {model = toy()}, q)
    write_bytes(q, "not an HDF5 file at all")
    fails("is not an HDF5 file", {model = toy()}, q)
    fails("no such file", {model = toy()}, q .. ".missing")
    lark.h5.write(q .. "2", "weights", lark.ones(3))
    fails("is not a lark checkpoint (no format attribute and no model_state_dict group; the file holds: weights)",
      {model = toy()}, q .. "2")
    lark.save(q, {ema = s.ema})
    fails("model: the checkpoint has none", {model = toy()}, q)
    os.remove(q)
    os.remove(q .. "2")
    os.remove(p)
  end)

  it("refuses bad state before touching the file, and never leaves a half-written one", function()
    local p = tmpfile()
    local s = trained(5)
    lark.save(p, {model = s.model, epoch = 1})
    local before = read_bytes(p)
    expect_error("unknown state field 'modle'", lark.save, p, {modle = s.model})
    expect_error("model: 'x' is a number (expected a tensor)", lark.save, p, {model = {x = 3}})
    expect_error("key 'a/b' cannot be a dataset name", lark.save, p, {model = {["a/b"] = lark.ones(1)}})
    expect_error("masks: '0.weight' is float32 (expected bool", lark.save, p, {model = s.model,
      masks = {["0.weight"] = lark.ones(2)}})
    expect_error("epoch must be an integer", lark.save, p, {model = s.model, epoch = 1.5})
    expect_error("config cannot be stored as JSON", lark.save, p, {model = s.model, config = {f = print}})
    expect_error("rng must be lark.get_rng_state()", lark.save, p, {model = s.model, rng = {seed = 1}})
    -- a failure after the file was opened (an attribute HDF5 cannot take) discards the temporary
    expect_error("attrs 'bad' is a table", lark.save, p, {model = s.model, attrs = {bad = {}}})
    expect_error("cannot create: the directory '/nonexistent' does not exist", lark.save, "/nonexistent/x.h5",
      {model = s.model})
    assert.are.equal(before, read_bytes(p))
    assert.are.same({}, tmps_of(p))
    os.remove(p)
  end)

  it("leaves the previous checkpoint intact when the writer is killed with SIGKILL mid-save", function()
    local p = tmpfile()
    local progress = tmpfile(".txt")
    local script = tmpfile(".lua")
    local N, SIZE = 8, 1024 * 1024 -- 8 tensors of 4 MB: a save takes a tenth of a second or more
    write_bytes(script, string.format([[
local path, progress, start = %q, %q, tonumber(arg[1])
local ts, sd = {}, {}
for k = 1, %d do ts[k] = lark.empty(%d) end
local i = start
while true do
  i = i + 1
  for k = 1, #ts do ts[k]:fill_(i) sd["layer" .. k .. ".weight"] = ts[k] end
  lark.save(path, {model = sd, step = i})
  local f = io.open(progress, "a") f:write(i, "\n") f:close()
end
]], p, progress, N, SIZE))
    local sd = {}
    for k = 1, N do sd["layer" .. k .. ".weight"] = lark.zeros(SIZE) end
    lark.save(p, {model = sd, step = 0})
    write_bytes(progress, "0\n")
    local function last_progress()
      local last = 0
      for line in io.lines(progress) do last = tonumber(line) or last end
      return last
    end
    math.randomseed(7)
    local mid_save, saves, start = 0, 0, 0
    -- a kill lands inside a save only by chance: at least 6 rounds, then more (up to 40) until two
    -- did, so that a fast disk, which shrinks the saves, cannot make the check below fail
    local rounds, round = 40, 0
    while round < rounds and (round < 6 or mid_save < 2) do
      round = round + 1
      local sh = io.popen(string.format("sh -c 'exec \"%s\" \"%s\" %d >/dev/null 2>&1' & echo $!", LARK, script, start))
      local pid = tonumber(sh:read("l"))
      sh:close()
      assert.is_truthy(pid)
      -- let it finish one save (so it is in its loop, where saving is most of the time), then kill
      -- it at a random moment
      for _ = 1, 500 do
        if last_progress() > start then break end
        os.execute("sleep 0.01")
      end
      os.execute(string.format("sleep %.3f", 0.3 * math.random()))
      os.execute("kill -9 " .. pid .. " 2>/dev/null")
      -- wait until it is gone (it is not our child, so poll /proc; a zombie counts as gone)
      for _ = 1, 500 do
        local stat = io.open("/proc/" .. pid .. "/stat")
        local state = stat and stat:read("a"):match("^%d+ %b() (%a)")
        if stat then stat:close() end
        if not state or state == "Z" or state == "X" then break end
        os.execute("sleep 0.01")
      end
      if #tmps_of(p) > 0 then mid_save = mid_save + 1 end
      local st = lark.load(p) -- always loads
      local s, last = st.step, last_progress()
      assert.is_true(s == last or s == last + 1, string.format("round %d: checkpoint step %d, last reported %d", round,
        s, last))
      assert.are.equal(N, #st.keys.model)
      for name, t in pairs(st.model) do
        assert.are.equal(SIZE, t:numel())
        assert.is_true(t:min():item() == s and t:max():item() == s, string.format("round %d: %s is not all %d", round,
          name, s))
      end
      saves, start = saves + (s - start), s
    end
    assert.is_true(mid_save >= 1, "no kill landed inside a save (all " .. round .. " were between saves)")
    assert.is_true(saves >= 1, "no save completed in any round")
    -- the next save removes the temporaries the killed writers left
    lark.save(p, {model = sd, step = 0})
    assert.are.same({}, tmps_of(p))
    os.remove(p)
    os.remove(progress)
    os.remove(script)
  end)

  describe("with PyTorch", function()
    if not (have_torch() and have_h5py()) then
      pending("PyTorch or h5py is not installed (python3-torch, python3-h5py)")
      return
    end

    it("PyTorch loads the weights strictly and gives the same outputs; AdamW resumes from the optimizer state", function()
      local s = trained(6)
      local p = tmpfile()
      lark.save(p, full_state(s))
      lark.manual_seed(12)
      local x = lark.randn(2, 3, 6, 6)
      local x2 = lark.randn(4, 3, 6, 6)
      s.model:eval()
      local y = lark.no_grad(function() return s.model(x) end)()
      s.model:train()
      step(s, x2) -- one more AdamW step in lark
      local after = {}
      for name, t in s.model:named_parameters() do after[name] = t end
      local out = run_python(string.format([==[
import h5py, json, numpy as np, torch
torch.set_num_threads(1)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(144, 5))
with h5py.File(%q, "r") as f:
    assert list(f["model_state_dict"]) == list(model.state_dict().keys()), "order"
    sd = {k: torch.from_numpy(np.asarray(v[()])) for k, v in f["model_state_dict"].items()}
    model.load_state_dict(sd, strict=True)
    ema = {k: torch.from_numpy(np.asarray(v[()])) for k, v in f["ema_state_dict"].items()}
    print("masks", f["masks"]["0.weight"].dtype, f["masks"]["0.weight"].compression)
    print("attrs", type(f.attrs["format"]).__name__, f.attrs["format"], f.attrs["format_version"], f.attrs["epoch"],
          f.attrs["global_step"], json.loads(f.attrs["model_config"])["arch"])
    # CHECKPOINTS.md section 3: the optimizer state is keyed by parameter name, the groups are JSON
    named = dict(model.named_parameters())
    tgroups, order = [], []
    for g in json.loads(f["optimizer"].attrs["param_groups"]):
        tg = {k: v for k, v in g.items() if k not in ("params", "name")}
        tg["betas"] = tuple(g["betas"])
        tg["params"] = [named[n] for n in g["params"]]
        tgroups.append(tg)
        order += g["params"]
    opt = torch.optim.AdamW(tgroups)
    osd = opt.state_dict()  # torch numbers the parameters in group order
    osd["state"] = {i: {k: torch.from_numpy(np.asarray(v[()])) for k, v in f["optimizer/state"][n].items()}
                    for i, n in enumerate(order)}
    opt.load_state_dict(osd)
model2 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                             torch.nn.Flatten(), torch.nn.Linear(144, 5))
model2.load_state_dict(ema, strict=True)
print("ema ok")
x = torch.tensor(%s, dtype=torch.float32)
x2 = torch.tensor(%s, dtype=torch.float32)
model.eval()
with torch.no_grad():
    print(" ".join("%%.9g" %% v for v in model(x).flatten().tolist()))
model.train()
loss = model(x2).pow(2).mean()
opt.zero_grad()
loss.backward()
opt.step()
for n, p in model.named_parameters():
    print(n, " ".join("%%.9g" %% v for v in p.detach().flatten().tolist()))
]==], p, pylist(x), pylist(x2)))
      assert.are.equal("masks bool gzip", out[1], table.concat(out, "\n"))
      assert.are.equal("attrs str lark-checkpoint 1 3 141 toy", out[2])
      assert.are.equal("ema ok", out[3])
      local ty = {}
      for w in out[4]:gmatch("%S+") do ty[#ty + 1] = tonumber(w) end
      assert_near(y:reshape(-1), ty, 1e-5)
      for i = 5, #out do
        local name, rest = out[i]:match("^(%S+) (.*)$")
        local vals = {}
        for w in rest:gmatch("%S+") do vals[#vals + 1] = tonumber(w) end
        assert.is_truthy(after[name], out[i])
        -- the conv bias before batch norm has a gradient that is zero up to rounding noise, which
        -- Adam's normalisation turns into noise-sized steps of either sign: not comparable
        if name ~= "0.bias" then assert_near(after[name]:reshape(-1), vals, 1e-5) end
        after[name] = nil
      end
      assert.are.same({}, after)
      os.remove(p)
    end)

    it("tools/pth2h5.py converts official .pth checkpoints (model + model_ema, or a bare state dict)", function()
      local dir = tmpfile("")
      os.execute("mkdir -p '" .. dir .. "'")
      local out = run_python(string.format([==[
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(144, 5))
model.train()
for _ in range(2):
    model(torch.randn(4, 3, 6, 6))
sd = model.state_dict()
ema = {k: v * 0.5 if v.is_floating_point() else v for k, v in sd.items()}
torch.save({"model": sd, "model_ema": ema, "epoch": 7, "optimizer": {"state": {}}}, "%s/official.pth")
torch.save({("module." + k): v for k, v in sd.items()}, "%s/bare.pth")
torch.save({"half": torch.tensor([1.5, 0.1], dtype=torch.float16), "bf": torch.tensor([0.1, 3.0], dtype=torch.bfloat16),
            "i32": torch.tensor([7, -8], dtype=torch.int32)}, "%s/types.pth")
for k, v in sd.items():
    print(k, " ".join("%%.17g" %% x for x in v.double().flatten().tolist()))
print("bf", " ".join("%%.17g" %% x for x in torch.tensor([0.1, 3.0], dtype=torch.bfloat16).double().tolist()))
]==], dir, dir, dir))
      local ref = {}
      local keys = {}
      for _, line in ipairs(out) do
        local k, rest = line:match("^(%S+) (.*)$")
        assert.is_truthy(k, table.concat(out, "\n"))
        local vals = {}
        for w in rest:gmatch("%S+") do vals[#vals + 1] = tonumber(w) end
        if k ~= "bf" then keys[#keys + 1] = k end
        ref[k] = vals
      end
      local function convert(args)
        local proc = io.popen(PYTHON .. " tools/pth2h5.py " .. args .. " 2>&1")
        local text = proc:read("a")
        local ok = proc:close()
        return ok, text
      end
      local ok, text = convert(string.format("'%s/official.pth' '%s/official.h5' --arch toy", dir, dir))
      assert.is_true(ok, text)
      local st = lark.load(dir .. "/official.h5")
      assert.are.same(keys, st.keys.model)
      assert.are.same(keys, st.keys.ema)
      for _, k in ipairs(keys) do
        assert_same(st.model[k], ref[k], k)
        if st.model[k]:is_floating_point() then assert_same(st.ema[k], st.model[k]:double():mul(0.5), k) end
      end
      assert.are.equal("int64", st.model["1.num_batches_tracked"]:dtype())
      assert.are.equal(0, st.model["1.num_batches_tracked"]:dim())
      assert.are.equal("toy", st.config.arch)
      assert.are.equal(false, st.config.reparameterized)
      assert.are.equal(7, st.epoch)
      -- it loads straight into the lark model of the same architecture
      local m = toy()
      lark.load_into(dir .. "/official.h5", {model = m})
      same_tensor(m[5].weight, st.model["4.weight"], "loaded")
      -- a bare state dict with DataParallel's "module." prefix
      ok, text = convert(string.format("'%s/bare.pth' '%s/bare.h5' --strip-prefix module.", dir, dir))
      assert.is_true(ok, text)
      st = lark.load(dir .. "/bare.h5")
      assert.are.same(keys, st.keys.model)
      assert.is_nil(st.ema)
      -- float16 and bfloat16 come back as float32 with their exact values; int32 as int64
      ok, text = convert(string.format("'%s/types.pth' '%s/types.h5'", dir, dir))
      assert.is_true(ok, text)
      st = lark.load(dir .. "/types.h5")
      same_tensor(st.model.half, lark.tensor({1.5, 0.0999755859375}, {dtype = "float32"}), "half")
      same_tensor(st.model.bf, lark.tensor(ref.bf, {dtype = "float32"}), "bf16")
      same_tensor(st.model.i32, lark.tensor({7, -8}, {dtype = "int64"}), "i32")
      assert.are.equal("bfloat16", lark.h5.open(dir .. "/types.h5"):attr("dtype", "model_state_dict/bf"))
      -- errors
      ok, text = convert(string.format("'%s/nothing.pth' '%s/x.h5'", dir, dir))
      assert.is_falsy(ok)
      assert.truthy(text:find("nothing.pth", 1, true), text)
      os.execute("rm -rf '" .. dir .. "'")
    end)
  end)
end)
