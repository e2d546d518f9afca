-- The fleet operator: sets a speed limit on each car through its Device Shadow
-- (desired.max_speed) and shows what the cars report back. Another client of the cars'
-- shadows, next to the cars themselves (policy fleet-operator in policy.json).
local shadow = require "moonwire.shadow"
local timer = require "moonwire.timer"
local log = require "moonwire.log"

local CARS = { "car-01", "car-02" }
local LIMITS = { 50, 30, 80, 40 } -- km/h, one step every 15 s

local shadows = {}
for _, thing in ipairs(CARS) do
  shadows[thing] = shadow.open { thing = thing, cache = false }
end

local step = 0
local function set_limits()
  step = step % #LIMITS + 1
  for i, thing in ipairs(CARS) do
    local limit = LIMITS[(step + i - 2) % #LIMITS + 1]
    shadows[thing]:update({ desired = { max_speed = limit } }, function(doc, err)
      if doc then
        log.info(("%s: speed limit %d km/h (shadow version %d)"):format(thing, limit, doc.version))
      else
        log.warn(thing, "speed limit not set:", err)
      end
    end)
  end
end

timer.after(3000, set_limits)
timer.every(15000, set_limits)

-- What each car says in its shadow (the views follow every accepted update).
timer.every(5000, function()
  for _, thing in ipairs(CARS) do
    local r = shadows[thing].reported
    if r.speed then
      log.info(("%s reports %d km/h, limit %s, battery %s%%"):format(thing, r.speed,
        tostring(r.max_speed or "none"), tostring(r.battery)))
    end
  end
end)
