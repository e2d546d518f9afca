-- Outbox benchmark app (tests/bench/outbox).
--   app.mode = "throughput": once connected, publish app.count QoS 1 messages of app.size
--     bytes, keeping app.backlog of them accepted but not yet acknowledged (so the in-flight
--     window is always full and the outbox always has rows waiting); report when the last
--     PUBACK is in.
--   app.mode = "drain": publish app.count messages while the broker is unreachable, then
--     report how long the outbox takes to empty once the connection is there.
-- Reports go to stderr as "RESULT <mode> n=.. ms=.. cpu_s=.. commits=.." (cpu_s: os.clock, the
-- process CPU time).
local mqtt = require "moonwire.mqtt"
local timer = require "moonwire.timer"
local log = require "moonwire.log"
local device = require "moonwire.device"

local app = device.config.app
local payload = string.rep("x", app.size)
local topic = "bench/outbox/" .. device.thing
local opts = { qos = 1 }
local publish = mqtt.publish
local published = 0

local function report(mode, t0, c0)
  local s = mqtt.outbox()
  log.warn(string.format("RESULT %s n=%d ms=%d cpu_s=%.4f commits=%d acked=%d resent=%d", mode, published,
                         timer.now() - t0, os.clock() - c0, s.commits, s.acked, s.resent))
end

if app.mode == "throughput" then
  local started = false
  mqtt.on("connect", function()
    if started then return end
    started = true
    local t0, c0 = timer.now(), os.clock()
    local tick
    tick = timer.every(1, function()
      local s = mqtt.outbox()
      local room = app.backlog - s.pending
      while room > 0 and published < app.count do
        assert(publish(topic, payload, opts))
        published = published + 1
        room = room - 1
      end
      if published == app.count and s.pending == 0 then
        tick:stop()
        report("throughput", t0, c0)
      end
    end)
  end)
else
  -- Fill the outbox while offline, 5000 per loop turn (one transaction each).
  local t0, c0 = timer.now(), os.clock()
  local fill
  fill = timer.every(1, function()
    for _ = 1, 5000 do
      if published == app.count then break end
      assert(publish(topic, payload, opts))
      published = published + 1
    end
    if published == app.count then
      fill:stop()
      log.warn(string.format("QUEUED n=%d ms=%d cpu_s=%.4f", published, timer.now() - t0, os.clock() - c0))
    end
  end)
  mqtt.on("connect", function()
    local d0, dc0 = timer.now(), os.clock()
    local watch
    watch = timer.every(2, function()
      if published == app.count and mqtt.outbox().pending == 0 then
        watch:stop()
        report("drain", d0, dc0)
      end
    end)
  end)
end
