-- The moonwire peer of the shadow update benchmark (tests/bench/shadow): the same work as
-- tests/bench/shadow_c.c, through require "moonwire.shadow". sh:update{desired = ...} with a
-- callback (the /update/accepted, correlated by clientToken, applied to the cached document)
-- and an on_delta handler (the /update/delta as a Lua table); an update counts when both
-- have arrived for its version. app = {shadow, fields, warmup, count, window} in the config.
-- Prints "ok=1 updates=N seconds=S cpu_s=C" on stdout, then idles until SIGTERM.
local shadow = require "moonwire.shadow"
local device = require "moonwire.device"
local timer = require "moonwire.timer"
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"

local app = device.config.app
local fields, warmup, count, window = app.fields, app.warmup, app.count, app.window
local total = warmup + count

-- The same document as shadow_c.c: "seq" and fields fNNN of 60 letters.
local base = {}
for i = 0, fields - 1 do
  local chars = {}
  for j = 0, 59 do chars[#chars + 1] = string.char(97 + (i + j) % 26) end
  base[("f%03d"):format(i)] = table.concat(chars)
end

local sh = shadow.open(app.shadow)
local sent, done = 0, 0
local accepted = {} -- versions accepted, waiting for their delta
local t0, c0
local send

local function one_done()
  done = done + 1
  if done == warmup then t0, c0 = timer.now(), os.clock() end
  if done == total then
    io.stdout:write(("ok=1 updates=%d seconds=%.6f cpu_s=%.6f\n"):format(count, (timer.now() - t0) / 1000,
      os.clock() - c0))
    io.stdout:flush()
    return
  end
  if sent < total then send() end
end

local function on_accepted(res, err, code)
  if not res then
    log.error("update failed:", code, err)
    io.stdout:write("ok=0\n")
    io.stdout:flush()
    return
  end
  accepted[res.version] = true
end

function send()
  local desired = {}
  for k, v in pairs(base) do desired[k] = v end
  desired.seq = sent
  sent = sent + 1
  sh:update({ desired = desired }, on_accepted)
end

sh:on_delta(function(_, version)
  if accepted[version] then
    accepted[version] = nil
    one_done()
  end
end)

local started = false
mqtt.on("connect", function()
  if started then return end
  started = true
  for _ = 1, window do send() end
end)
