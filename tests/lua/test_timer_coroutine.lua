-- Timers created inside coroutines fire on the main thread, whatever became of the coroutine
-- (moonwire.shadow arms its request timers from the caller's coroutine).
local timer = require "moonwire.timer"

local fired = {}

-- The coroutine is dead long before its timer fires.
coroutine.wrap(function()
  timer.after(20, function()
    local _, main = coroutine.running()
    fired.dead = main
  end)
end)()

-- The coroutine is suspended (waiting) when its timer fires, and is resumed by it.
local waiting = coroutine.create(function()
  timer.after(10, function()
    local _, main = coroutine.running()
    fired.suspended = main
  end)
  local v = coroutine.yield()
  fired.resumed = v
end)
assert(coroutine.resume(waiting))

-- A repeating timer made in a coroutine keeps running after the coroutine ended.
local ticks = 0
coroutine.wrap(function()
  local t
  t = timer.every(5, function()
    ticks = ticks + 1
    if ticks == 3 then t:stop() end
  end)
end)()

timer.after(15, function()
  assert(coroutine.status(waiting) == "suspended")
  assert(coroutine.resume(waiting, "from a timer"))
end)

timer.after(60, function()
  assert(fired.dead == true, "timer of a dead coroutine did not run on the main thread")
  assert(fired.suspended == true, "timer of a suspended coroutine did not run on the main thread")
  assert(fired.resumed == "from a timer")
  assert(ticks == 3, "ticks " .. ticks)
  print("ok timer coroutine")
end)
