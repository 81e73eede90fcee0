-- resume_spec.lua: recipes/train.lua's checkpoints. A run stopped after 2 of 4 epochs and resumed
-- from its checkpoint in a fresh build gives exactly the losses of the uninterrupted run (weights,
-- EMA, AdamW state, schedule, RNG and data order all restored), which a resume of the weights alone
-- does not; the command line writes checkpoint.h5, resumes from it and exports an inference file
-- PyTorch can read.
package.path = "./?.lua;" .. package.path
local train = require "recipes.train"
local data = require "lark.data"

local LARK = os.getenv("LARK_BIN") or "build/bin/lark"

local function have_digits() return pcall(data.digits, {train = true}) end

local function tmpdir()
  local p = os.tmpname()
  os.remove(p)
  os.execute("mkdir -p '" .. p .. "'")
  return p
end

-- trains cfg; returns the loss of every step as {epoch, loss} and the result
local function run(cfg, stop_after)
  local losses = {}
  local r = train.run(cfg, {
    after_step = function(s) losses[#losses + 1] = {s.epoch, s.loss:item()} end,
    on_epoch_end = function(s) if stop_after and s.epoch == stop_after then s.stop = true end end,
  })
  return losses, r
end

-- the losses of epochs from..to (to: the last)
local function of_epochs(losses, from, to)
  local out = {}
  for _, e in ipairs(losses) do
    if e[1] >= from and e[1] <= (to or math.huge) then out[#out + 1] = e[2] end
  end
  return out
end

local function copy(t, extra)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

describe("recipes/train.lua checkpoints", function()
  it("has the options, with clear errors", function()
    local cfg = train.parse_args{"--save-every", "2", "--resume", "x.h5", "--export", "m.h5"}
    assert.are.same({save_every = 2, resume = "x.h5", export = "m.h5"}, cfg)
    expect_error("lark.load: expected", train.build, {resume = 3})
    expect_error("h5.open: '/nonexistent/ckpt.h5': no such file", train.build, {resume = "/nonexistent/ckpt.h5"})
  end)

  if not have_digits() then
    pending("sklearn digits are not installed (bash examples/get_data.sh digits)")
    return
  end

  it("resumes mlp on digits after 2 of 4 epochs with exactly the uninterrupted run's losses", function()
    local out = tmpdir()
    local base = {model = "mlp", data = "digits", epochs = 4, batch_size = 64, seed = 3, quiet = true, ema = 0.9,
      clip_grad = 1.0, lr = 5e-3}
    local full, r_full = run(base)
    local first = run(copy(base, {out = out}), 2)
    assert.are.same(of_epochs(full, 1, 2), of_epochs(first, 1)) -- checkpointing changes nothing
    assert.are.equal(2, lark.load(out .. "/checkpoint.h5").epoch)
    os.execute(string.format("cp '%s/checkpoint.h5' '%s/epoch2.h5'", out, out))
    -- a fresh build from the checkpoint alone: every other option comes from it
    local resumed, r_res = run({resume = out .. "/checkpoint.h5", quiet = true})
    local want = of_epochs(full, 3)
    assert.are.equal(2 * (1500 // 64), #want)
    assert.are.same(want, of_epochs(resumed, 1))
    assert.are.equal(3, resumed[1][1])
    assert.are.equal(r_full.test_acc, r_res.test_acc)
    assert.are.equal(r_full.best_acc, r_res.best_acc)
    assert.are.equal(full[#full][2], resumed[#resumed][2])
    -- metrics.jsonl goes on where it stopped; the final checkpoint is epoch 4
    local epochs = {}
    for line in io.lines(out .. "/metrics.jsonl") do epochs[#epochs + 1] = require("lark.json").decode(line).epoch end
    assert.are.same({1, 2, 3, 4}, epochs)
    local st = lark.load(out .. "/checkpoint.h5")
    assert.are.equal(4, st.epoch)
    assert.are.equal(4 * (1500 // 64), st.step)
    -- the control (this check can fail): the weights alone, without the optimizer's moments, the
    -- schedule's position and the EMA, continue differently
    local s = train.build(copy(base))
    lark.load_into(out .. "/epoch2.h5", {model = s.model})
    s.start_epoch, s.step, s.epoch = 3, 2 * (1500 // 64), 2
    local weights_only = run(s)
    assert.are.equal(#want, #weights_only)
    assert.are_not.same(want, of_epochs(weights_only, 1))
    os.execute("rm -rf '" .. out .. "'")
  end)

  it("restores the RNG: tiny_replk with drop path resumes exactly too", function()
    local out = tmpdir()
    local base = {model = "tiny_replk", data = "digits", epochs = 2, batch_size = 64, seed = 4, quiet = true,
      drop_path = 0.2, train_limit = 192, test_limit = 64, lr = 2e-3}
    local full = run(base)
    run(copy(base, {out = out}), 1)
    local resumed = run({resume = out .. "/checkpoint.h5", quiet = true})
    assert.are.equal(3, #of_epochs(full, 2))
    assert.are.same(of_epochs(full, 2), of_epochs(resumed, 1))
    os.execute("rm -rf '" .. out .. "'")
  end)

  it("checkpoints, resumes and exports from the command line", function()
    local out = tmpdir()
    local function lark_cmd(args)
      local p = io.popen(string.format("'%s' recipes/train.lua %s 2>&1", LARK, args))
      local text = p:read("a")
      local ok = p:close()
      return ok, text
    end
    local ok, text = lark_cmd(string.format("--model mlp --data digits --epochs 2 --batch-size 128 --seed 1 --quiet "
      .. "--out '%s' --save-every 1", out))
    assert.is_truthy(ok, text)
    local st = lark.load(out .. "/checkpoint.h5")
    assert.are.equal(2, st.epoch)
    assert.are.equal("mlp", st.config.arch)
    assert.are.equal(false, st.config.reparameterized)
    -- --epochs 3 continues the same run one more epoch, and exports the weights
    ok, text = lark_cmd(string.format("--resume '%s/checkpoint.h5' --epochs 3 --export '%s/model.h5'", out, out))
    assert.is_truthy(ok, text)
    assert.are.equal(3, lark.load(out .. "/checkpoint.h5").epoch)
    local ex = lark.load(out .. "/model.h5")
    assert.is_nil(ex.optimizer)
    assert.is_nil(ex.ema)
    assert.is_nil(ex.epoch)
    assert.are.same({"1.weight", "1.bias", "3.weight", "3.bias"}, ex.keys.model)
    assert.are.equal("mlp", ex.config.arch)
    local f <close> = lark.h5.open(out .. "/model.h5")
    assert.are.same({"model_state_dict"}, f:keys())
    f:close()
    -- a checkpoint that does not fit: a clear error, exit status 1
    ok, text = lark_cmd(string.format("--resume '%s/checkpoint.h5' --model tiny_replk", out))
    assert.is_falsy(ok)
    assert.truthy(text:find("cannot load", 1, true), text)
    assert.truthy(text:find("nothing was changed", 1, true), text)
    if have_torch() then -- PyTorch's Sequential of the same layers takes the export as it is
      local lines = run_python(string.format([[
import h5py, numpy as np, torch
m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
with h5py.File(%q, "r") as f:
    m.load_state_dict({k: torch.from_numpy(np.asarray(v[()])) for k, v in f["model_state_dict"].items()}, strict=True)
print("loaded")
]], out .. "/model.h5"))
      assert.are.same({"loaded"}, lines)
    end
    os.execute("rm -rf '" .. out .. "'")
  end)
end)
