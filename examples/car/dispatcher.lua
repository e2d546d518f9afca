-- The dispatcher: watches every car's telemetry and sends them commands.
local mqtt = require "moonwire.mqtt"
local timer = require "moonwire.timer"
local json = require "moonwire.json"
local log = require "moonwire.log"

local cars = {}   -- thing -> last telemetry
local status = {} -- thing -> "online" / "offline"

mqtt.subscribe("cars/+/telemetry", function(topic, payload)
  local thing = topic:match("^cars/([^/]+)/")
  local t = json.decode(payload)
  if type(t) == "table" then cars[thing] = t end
end)

mqtt.subscribe("cars/+/status", function(topic, payload)
  local thing = topic:match("^cars/([^/]+)/")
  if status[thing] ~= payload then log.info(thing, "is", payload) end
  status[thing] = payload
end, { qos = 1 })

local function send(thing, cmd)
  local ok, err = mqtt.publish("cars/" .. thing .. "/cmd", json.encode(cmd), {
    qos = 1,
    on_ack = function() log.debug("command acknowledged by the broker") end,
  })
  if ok then
    log.info(("-> %s %s"):format(thing, json.encode(cmd)))
  else
    log.warn("command to", thing, "failed:", err)
  end
end

-- Print a compact board every 2 seconds.
timer.every(2000, function()
  local names = {}
  for thing in pairs(cars) do names[#names + 1] = thing end
  table.sort(names)
  local parts = {}
  for _, thing in ipairs(names) do
    local t = cars[thing]
    parts[#parts + 1] = ("%s %3d km/h hdg %3d bat %5.1f%%"):format(thing, t.speed, t.heading, t.battery)
  end
  if #parts > 0 then log.info("board: " .. table.concat(parts, " | ")) end
end)

-- A little script of commands, one every 4 seconds, repeating.
local plan = {
  { "car-01", { cmd = "speed", value = 30 } },
  { "car-02", { cmd = "honk" } },
  { "car-02", { cmd = "speed", value = 60 } },
  { "car-01", { cmd = "stop" } },
  { "car-01", { cmd = "speed", value = 50 } },
  { "car-02", { cmd = "speed", value = 25 } },
}
local step = 0
timer.every(4000, function()
  if not mqtt.connected() then return end
  step = step % #plan + 1
  send(plan[step][1], plan[step][2])
end)

mqtt.on("connect", function() log.info("dispatcher online") end)
