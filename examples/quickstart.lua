-- examples/quickstart.lua: a first look at lark's tensors, ending in a small model trained by
-- hand-written gradient descent (autograd and lark.nn arrive in later milestones).
--
--   build/bin/lark examples/quickstart.lua
local lark = require "lark"
lark.manual_seed(0)

print("== tensors ==")
local a = lark.tensor{{1, 2, 3}, {4, 5, 6}}
print(a)
print("a:size() =", a:size(), " a[2][3] =", a[2][3], " a[{{}, 2}] is a view:", a[{{}, 2}]:shares_storage(a))
print("broadcasting a + {10, 20, 30}:")
print(a + lark.tensor{10, 20, 30})
print("a @ a:t():")
print(a:matmul(a:t()))

print("== a linear model, fitted by gradient descent ==")
-- data: y = X w_true + noise, with 1000 samples of 8 features
local n, d = 1000, 8
local X = lark.randn(n, d)
local w_true = lark.linspace(-1, 1, d):view(d, 1)
local y = X:matmul(w_true) + lark.randn(n, 1) * 0.05

local w = lark.zeros(d, 1)
local lr = 0.1
local t0 = lark.clock()
for step = 1, 100 do
  local err = X:matmul(w) - y                  -- (n, 1)
  local loss = (err * err):mean():item()
  local grad = X:t():matmul(err) * (2 / n)    -- d loss / d w, (d, 1)
  w:sub_(grad * lr)
  if step % 20 == 0 or step == 1 then
    print(string.format("step %3d  loss %.6f", step, loss))
  end
end
local max_err = (w - w_true):abs():max():item()
print(string.format("fitted in %.1f ms; largest weight error %.4f", (lark.clock() - t0) * 1e3, max_err))
assert(max_err < 0.02, "the fit should recover the weights")
print("quick start done")
