-- moonwire.timer: ordering, repetition, stopping, and life without a Lua reference.
local timer = require "moonwire.timer"

local order = {}
local t0 = timer.now()

timer.after(30, function() order[#order + 1] = "30" end)
timer.after(10, function() order[#order + 1] = "10" end)
timer.after(0, function() order[#order + 1] = "0" end)

-- A repeating timer that stops itself from inside its callback after 3 runs.
local ticks = 0
local rep
rep = timer.every(5, function()
  ticks = ticks + 1
  if ticks == 3 then assert(rep:stop() == true) end
end)

-- A timer whose handle is dropped must still fire (the runtime anchors it).
local anchored = false
do timer.after(20, function() anchored = true end) end
collectgarbage("collect")

-- A stopped timer never fires, and stopping twice is harmless.
local cancelled = timer.after(15, function() error("stopped timer fired") end)
assert(cancelled:active())
assert(cancelled:stop() == true)
assert(cancelled:stop() == false)
assert(not cancelled:active())
assert(tostring(cancelled):find("stopped"))

-- <close> stops a timer at the end of its scope.
do
  local scoped <close> = timer.after(5, function() error("closed timer fired") end)
end

-- Misuse raises.
assert(not pcall(timer.after, -1, function() end))
assert(not pcall(timer.every, 0, function() end))
assert(not pcall(timer.after, 10, "not a function"))

timer.after(100, function()
  assert(table.concat(order, ",") == "0,10,30", "order was " .. table.concat(order, ","))
  assert(ticks == 3, "ticks " .. ticks)
  assert(anchored, "anchored timer did not fire")
  assert(rep:active() == false)
  assert(timer.now() - t0 >= 100)
  print("ok timer")
end)
