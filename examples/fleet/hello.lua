-- The application note's subscribe/publish sample, the Moonwire way: the key stays in the
-- chip (the configuration says trustm:0xE0F1), the app subscribes to its own topic and says
-- hello on it every second; it also reports to its shadow once connected.
local mqtt = require "moonwire.mqtt"
local device = require "moonwire.device"
local json = require "moonwire.json"
local timer = require "moonwire.timer"
local log = require "moonwire.log"

local topic = "cars/" .. device.thing .. "/hello"
mqtt.subscribe(topic, function(t, payload) log.info("Subscribe callback", t, payload) end, { qos = 1 })

mqtt.on("connect", function()
  local fleet = device.config.app and device.config.app.device_configuration or {}
  mqtt.publish("$aws/things/" .. device.thing .. "/shadow/update",
               json.encode({ state = { reported = { fleet = fleet.Fleet, online = true } } }), { qos = 1 })
end)

local n = 0
timer.every(1000, function()
  if not mqtt.connected() then return end
  mqtt.publish(topic, "hello from Moonwire : " .. n, { qos = 1 })
  n = n + 1
end)
