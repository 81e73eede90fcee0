--- lark.nn.functional: stateless neural-network ops on tensors.
-- Each function takes tensors and returns a new tensor; autograd and the convolution, norm and
-- loss ops arrive with the autograd issue. Names follow torch.nn.functional.
local lark = require "lark"

local F = {}

--- F.relu(x): max(x, 0) elementwise.
function F.relu(x) return x:relu() end

--- F.sigmoid(x): 1 / (1 + exp(-x)).
function F.sigmoid(x) return x:sigmoid() end

--- F.tanh(x)
function F.tanh(x) return x:tanh() end

--- F.linear(x, weight [, bias]): x @ weight^T + bias, with weight of shape (out, in).
function F.linear(x, weight, bias)
  local y = lark.matmul(x, weight:t())
  if bias then y = y + bias end
  return y
end

--- F.mse_loss(input, target): mean of the squared differences.
function F.mse_loss(input, target)
  local d = input - target
  return (d * d):mean()
end

return F
