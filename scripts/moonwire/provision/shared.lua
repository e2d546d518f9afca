--[[
moonwire.provision.shared: part of moonwire.provision, private to it (flows use
require "moonwire.provision"; this module's contents may change with any release).

The module-wide state the parts share, here so that no part requires another only to reach
it: the public module table M, to which each part adds its public functions (and through
which a step that uses another step, such as verify using connect, and the flow context
find it, as they did when this was one file), the task of each running flow's coroutine,
and the progress log.
]]
local log = require "moonwire.log"

local S = {}

S.M = {} -- what require "moonwire.provision" returns
S.tasks = setmetatable({}, { __mode = "k" })  -- coroutine -> task

-- Progress lines are tagged "provision:" like the runtime's own: called through pcall, log
-- finds no Lua caller to name, so the line carries no FILE:LINE of ours.
function S.say(level, ...)
  pcall(log[level], "provision:", ...)
end

return S
