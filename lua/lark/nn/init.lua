--- lark.nn: neural-network modules, as torch.nn.
--
--   local nn = require "lark.nn"      (or lark.nn)
--   nn.Module, nn.Module:extend("Name")   the base class and the class helper (lark/nn/module.lua)
--   nn.Sequential, nn.ModuleList, nn.ModuleDict                     (lark/nn/containers.lua)
--   nn.Conv2d, nn.DepthwiseConv2d, nn.Linear, nn.BatchNorm2d, nn.LayerNorm, nn.ReLU, nn.GELU,
--   nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.DropPath, nn.AdaptiveAvgPool2d, nn.MaxPool2d,
--   nn.AvgPool2d, nn.Flatten                                         (lark/nn/layers.lua)
--   nn.CrossEntropyLoss, nn.MSELoss                                  (lark/nn/loss.lua)
--   nn.init: initialisers (kaiming_uniform_, trunc_normal_, ...)    (lark/nn/init_fns.lua)
--   nn.functional: the stateless ops the modules are built from      (lark/nn/functional.lua)
local nn = {}
nn.functional = require "lark.nn.functional"
nn.init = require "lark.nn.init_fns"

local module = require "lark.nn.module"
nn.Module = module.Module
nn.is_module = module.is_module
nn.is_instance = module.is_instance
nn.state_dict_keys = module.state_dict_keys

for _, lib in ipairs{"lark.nn.containers", "lark.nn.layers", "lark.nn.loss"} do
  for k, v in pairs(require(lib)) do nn[k] = v end
end

return nn
