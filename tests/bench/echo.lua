-- Echo app for the MQTT echo benchmark (issue 2, tests/bench/run).
-- Subscribes bench/req/<thing>/# and republishes every payload to bench/resp/<thing>
-- at the QoS given by app.qos in the configuration (0 or 1).
local mqtt = require "moonwire.mqtt"
local device = require "moonwire.device"
local log = require "moonwire.log"

local app = device.config.app or {}
local qos = app.qos or 0
local resp = "bench/resp/" .. device.thing
local opts = { qos = qos }            -- built once: the handler allocates nothing of its own
local publish = mqtt.publish
local failures = 0

mqtt.subscribe("bench/req/" .. device.thing .. "/#", function(_, payload)
  local ok, msg = publish(resp, payload, opts)
  if not ok then
    failures = failures + 1
    if failures <= 10 then log.warn("echo publish failed: " .. tostring(msg)) end
  end
end, opts)
