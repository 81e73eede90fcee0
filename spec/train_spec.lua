-- train_spec.lua: recipes/train.lua end to end on sklearn's digits (real data, a few seconds): it
-- learns (test accuracy above 90%), a fixed seed repeats a run exactly, the metrics log is JSON
-- lines, the hooks run when they should, and the command line rejects nonsense clearly.
package.path = "./?.lua;" .. package.path
local train = require "recipes.train"
local json = require "lark.json"
local data = require "lark.data"

local function have_digits()
  return pcall(data.digits, {train = true})
end

describe("recipes/train.lua", function()
  it("parses the command line and says what is wrong with it", function()
    local cfg = train.parse_args{"--epochs", "3", "--lr=0.01", "--no-augment", "--model", "mlp", "--batch-size", "32"}
    assert.are.same({epochs = 3, lr = 0.01, augment = false, model = "mlp", batch_size = 32}, cfg)
    expect_error("unknown option --epoch", train.parse_args, {"--epoch", "3"})
    expect_error("--epochs takes an integer, got '2.5'", train.parse_args, {"--epochs", "2.5"})
    expect_error("--lr takes a number, got 'fast'", train.parse_args, {"--lr", "fast"})
    expect_error("--out needs a value", train.parse_args, {"--out"})
    expect_error("unexpected argument 'x'", train.parse_args, {"x"})
    expect_error("unknown model 'resnet'", train.build, {model = "resnet", data = "digits"})
    expect_error("unknown option 'epoch'", train.build, {epoch = 1})
  end)

  if not have_digits() then
    pending("sklearn digits are not installed (bash examples/get_data.sh digits)")
    return
  end

  it("learns sklearn's digits to over 90% test accuracy in a few seconds", function()
    local r = train.run{model = "mlp", data = "digits", epochs = 8, batch_size = 32, lr = 5e-3, seed = 1,
      quiet = true, eval_batch_size = 100}
    assert.is_true(r.test_acc > 0.9, string.format("test accuracy %.3f", r.test_acc))
    assert.are.equal(8, #r.history)
    assert.is_true(r.history[8].train_loss < r.history[1].train_loss)
  end)

  it("repeats a run exactly with the same seed, and writes config.json and metrics.jsonl", function()
    local out = os.tmpname()
    os.remove(out)
    local steps, seen = {}, {}
    local hooks = {
      after_step = function(s) steps[#steps + 1] = s.loss:item() end,
      on_epoch_end = function(s, m) seen[#seen + 1] = m.epoch end,
    }
    local cfg = {model = "mlp", data = "digits", epochs = 2, batch_size = 64, seed = 7, quiet = true, ema = 0.9,
      clip_grad = 1.0, out = out}
    local r1 = train.run(cfg, hooks)
    local first = steps
    steps = {}
    cfg.out = ""
    local r2 = train.run(cfg, hooks)
    assert.are.same(first, steps)
    assert.are.equal(r1.test_acc, r2.test_acc)
    assert.are.same({1, 2, 1, 2}, seen)
    assert.are.equal(2 * (1500 // 64), #first)
    local lines = {}
    for line in io.lines(out .. "/metrics.jsonl") do lines[#lines + 1] = json.decode(line) end
    assert.are.equal(2, #lines)
    assert.are.equal(2, lines[2].epoch)
    assert.are.equal(r1.test_acc, lines[2].test_acc)
    local f = assert(io.open(out .. "/config.json"))
    local c = json.decode(f:read("a"))
    f:close()
    assert.are.equal(7, c.seed)
    os.execute("rm -rf '" .. out .. "'")
  end)

  it("trains sparse with --sparse: density on target, masked weights zero, better than chance", function()
    local r = train.run{model = "mlp", data = "digits", epochs = 3, batch_size = 32, lr = 5e-3, seed = 3, quiet = true,
      sparse = true, density = 0.5, sparse_init = "uniform", update_frequency = 10}
    local m = r.state.masking
    for _, name in ipairs(m.names) do
      local p
      for n, t in r.state.model:named_parameters() do if n == name then p = t end end
      assert.are.equal(0, (p:detach() * m.masks[name]:logical_not():float()):abs():sum():item(), name)
    end
    assert.is_true(math.abs(r.history[3].density - 0.5) < 0.05, "density " .. r.history[3].density)
    assert.is_true(r.test_acc > 0.5, "test accuracy " .. r.test_acc)
  end)

  it("trains a RepLK model on digits (8x8 inputs) without errors", function()
    local r = train.run{model = "tiny_replk", data = "digits", epochs = 1, batch_size = 64, seed = 2, quiet = true,
      train_limit = 256, test_limit = 100}
    assert.is_true(r.test_acc >= 0 and r.test_acc <= 1)
    assert.are.equal(1, #r.history)
  end)
end)
