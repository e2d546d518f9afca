-- A small connected car: reports telemetry every second, obeys commands on
-- cars/<thing>/cmd, slows down when another car comes close, and keeps its Device
-- Shadow: it reports speed, position and battery there and obeys desired.max_speed
-- (a speed limit set by the fleet operator, examples/car/operator.lua).
-- Edit this file while the demo runs: the runtime reloads it, and the car keeps its place,
-- speed and battery because they live in app.state.
local mqtt = require "moonwire.mqtt"
local timer = require "moonwire.timer"
local json = require "moonwire.json"
local log = require "moonwire.log"
local device = require "moonwire.device"
local app = require "moonwire.app"
local shadow = require "moonwire.shadow"
local track = require "track"

local me = device.thing
local settings = device.config.app or {}
local TICK = 1.0        -- seconds between telemetry reports
local CLOSE = 30        -- metres: closer than this, another car makes us yield
local YIELD_SPEED = 10  -- km/h while yielding

app.state.car = app.state.car or {
  angle = settings.start_angle or 0,
  direction = settings.direction or 1,
  target = settings.speed or 40, -- km/h the driver asked for
  speed = 0,                     -- km/h now
  battery = 100.0,
  yielding_until = 0,
  seq = 0,
  limit = nil,                   -- km/h allowed by the operator (desired.max_speed), nil = none
}
local car = app.state.car

-- The shadow: what the car reports, and the speed limit it must obey. The last known
-- document comes from the cache, so a car starting offline keeps its previous limit.
local sh = shadow.open()
local function valid_limit(v) return math.type(v) == "integer" and v >= 0 and v <= 130 end
if valid_limit(sh.desired.max_speed) then car.limit = sh.desired.max_speed end

sh:on_delta(function(delta, version)
  local limit = delta.max_speed
  if limit == nil then return end
  if not valid_limit(limit) then
    log.warn("ignoring speed limit", tostring(limit), "from shadow version", version)
    return
  end
  car.limit = limit
  sh.reported.max_speed = limit -- obeyed: the delta goes away
  log.info(("speed limit %d km/h (shadow version %d)"):format(limit, version))
end)

local function now_s() return timer.now() / 1000 end

local function drive()
  local want = car.target
  if car.limit then want = math.min(want, car.limit) end
  if now_s() < car.yielding_until then want = math.min(want, YIELD_SPEED) end
  -- Accelerate or brake by at most 10 km/h per tick.
  local delta = math.max(-10, math.min(10, want - car.speed))
  car.speed = car.speed + delta
  car.angle = track.advance(car.angle, car.direction, car.speed, TICK)
  car.battery = math.max(0, car.battery - 0.02 - car.speed * 0.001)
end

local function report()
  local lat, lon = track.position(car.angle)
  car.seq = car.seq + 1
  local ok, err = mqtt.publish("cars/" .. me .. "/telemetry", json.encode {
    thing = me,
    seq = car.seq,
    speed = car.speed,
    heading = track.heading(car.angle, car.direction),
    battery = math.floor(car.battery * 10 + 0.5) / 10,
    position = { lat = lat, lon = lon },
  })
  if not ok and mqtt.connected() then log.warn("telemetry not sent:", err) end
  -- The shadow gets the same state; the writes of one tick go out as one /update.
  sh.reported.speed = car.speed
  sh.reported.battery = math.floor(car.battery + 0.5)
  sh.reported.position = { lat = lat, lon = lon }
end

timer.every(math.floor(TICK * 1000), function()
  drive()
  report()
end)

local commands = {
  speed = function(msg)
    local v = tonumber(msg.value)
    if not v or v < 0 or v > 130 then
      log.warn("ignoring speed command with value", tostring(msg.value))
      return
    end
    car.target = v
    log.info(("new target speed %d km/h"):format(v))
  end,
  stop = function()
    car.target = 0
    log.info("stopping")
  end,
  honk = function() log.info("HONK HONK") end,
}

mqtt.subscribe("cars/" .. me .. "/cmd", function(_, payload)
  local msg, err = json.decode(payload)
  if type(msg) ~= "table" or type(msg.cmd) ~= "string" then
    log.warn("bad command payload:", err or payload)
    return
  end
  local handler = commands[msg.cmd]
  if not handler then
    log.warn("unknown command", msg.cmd)
    return
  end
  handler(msg)
end, { qos = 1 })

mqtt.subscribe("cars/+/telemetry", function(topic, payload)
  local other = topic:match("^cars/([^/]+)/telemetry$")
  if other == me then return end
  local t = json.decode(payload)
  if type(t) ~= "table" or type(t.position) ~= "table" then return end
  local lat, lon = track.position(car.angle)
  local d = track.distance(lat, lon, t.position.lat, t.position.lon)
  if d < CLOSE and now_s() >= car.yielding_until then
    car.yielding_until = now_s() + 3
    log.info(("%s is %.0f m away: slowing down"):format(other, d))
  end
end)

mqtt.on("connect", function(info)
  log.info("online" .. (info.session_present and " (session resumed)" or ""))
  mqtt.publish("cars/" .. me .. "/status", "online", { qos = 1, retain = true })
end)

mqtt.on("disconnect", function(reason) log.warn("offline:", reason) end)

log.info(("%s ready (version %d): target %d km/h, %s"):format(me, app.version, car.target,
  car.direction > 0 and "counter-clockwise" or "clockwise"))
