--- lark.nn: neural-network modules. The modules arrive with the nn issue; the functional ops
-- they are built from live in lark.nn.functional.
local nn = {}
nn.functional = require "lark.nn.functional"
return nn
