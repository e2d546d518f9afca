-- moonwire.log, moonwire.device and moonwire.mqtt argument rules, without a broker.
local log = require "moonwire.log"
local mqtt = require "moonwire.mqtt"
local device = require "moonwire.device"

-- log: levels
assert(log.level() == "info")
assert(log.level("debug") == "debug")
assert(not pcall(log.level, "loud"))
log.level("info")
log.info("a", 1, true, nil, {})

-- device: read-only configuration view
assert(device.thing == nil) -- no configuration in script mode
assert(not pcall(function() device.config.x = 1 end))

-- mqtt: topic rules raise, naming the rule
local function raises(pattern, f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern), "error was: " .. tostring(err))
end
raises("wildcards", mqtt.publish, "cars/+/x", "p")
raises("more than AWS IoT's limit of 7", mqtt.publish, "a/b/c/d/e/f/g/h/i", "p")
raises("longer than the 256%-byte limit", mqtt.publish, string.rep("a", 300), "p")
raises("UTF%-8", mqtt.publish, "bad\255", "p")
raises("QoS 2 is not supported", mqtt.publish, "a/b", "p", { qos = 2 })
raises("qos must be 0 or 1", mqtt.publish, "a/b", "p", { qos = 7 })
raises("payload must be a string", mqtt.publish, "a/b", { 1 })
raises("on_ack needs qos = 1", mqtt.publish, "a/b", "p", { on_ack = function() end })
raises("'#' must be the whole last", mqtt.subscribe, "a/#/b", function() end)
raises("'%+' must occupy a whole", mqtt.subscribe, "a/b+", function() end)
raises("QoS 2", mqtt.subscribe, "a/b", function() end, { qos = 2 })
raises("invalid option 'bogus'", mqtt.on, "bogus", function() end)

-- publish without a broker is a runtime failure: nil, message, code
local ok, msg, code = mqtt.publish("a/b", "p")
assert(ok == nil and msg == "no broker configured" and code == "ENOTCONN")
assert(mqtt.connected() == false)
-- the outbox functions exist; without a broker there is no outbox
for _, f in ipairs { "outbox", "pending", "dead_letters" } do
  local r, m, c = mqtt[f]()
  assert(r == nil and m == "no broker configured" and c == "ENOTCONN", f)
end
raises("number expected", mqtt.requeue, "x")
raises("number expected", mqtt.drop, {})
assert(select(3, mqtt.requeue(1)) == "ENOTCONN")
local l = mqtt.on("dead_letter", function() end)
assert(l:remove() == true)

-- subscriptions: handles, info, idempotent unsubscribe, listing
local s1 = mqtt.subscribe("cars/+/telemetry", function() end, { qos = 1 })
local s2 = mqtt.subscribe("cars/#", function() end)
local subs = mqtt.subscriptions()
assert(#subs == 2 and subs[1].filter == "cars/+/telemetry" and subs[1].qos == 1)
assert(s1:unsubscribe() == true)
assert(s1:unsubscribe() == false)
assert(s1:info().active == false)
assert(#mqtt.subscriptions() == 1)
assert(tostring(s2):find("cars/#", 1, true))
local l = mqtt.on("connect", function() end)
assert(l:remove() == true and l:remove() == false)
print("ok modules")
