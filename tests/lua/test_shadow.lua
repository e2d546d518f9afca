-- moonwire.shadow without a broker: views, staging of reported values, misuse errors, the
-- offline cache, request timeouts and closing. (With a broker: tests/integration/test_shadow_device.py.)
local shadow = require "moonwire.shadow"
local core = require "moonwire.shadow.core"
local json = require "moonwire.json"
local timer = require "moonwire.timer"

local cache = os.tmpname()
local function cleanup()
  for _, suffix in ipairs { "", "-wal", "-shm" } do os.remove(cache .. suffix) end
end

local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern), ("error %q does not match %q"):format(tostring(err), pattern))
  return err
end

-- The line of the caller: misuse errors must name the line that made the mistake.
local function here() return debug.getinfo(2, "l").currentline end

------------------------------------------------------------------ seed the cache as a previous run would

do
  local c = assert(core.cache(cache))
  local d = core.doc()
  d:bind(c, "car-01", "")
  local resp = assert(core.parse(json.encode {
    state = { desired = { max_speed = 80, mode = "eco", route = { "a", "b" } },
              reported = { max_speed = 50, speed = 12, pos = { x = 1, y = 2 } } },
    metadata = {}, version = 7, timestamp = 1700000000,
  }))
  assert(d:replace(resp))
  assert(d:save())
  resp:free()
  c:close() -- the doc still holds the store
  assert(d:save())
end
collectgarbage()

------------------------------------------------------------------ misuse

raises("no thing name", shadow.open)
raises("invalid shadow name 'bad/name'", shadow.open, "bad/name", { thing = "car-01" })
raises("invalid shadow name", shadow.open, ("x"):rep(65), { thing = "car-01" })
raises("unknown option 'debounce'", shadow.open, { thing = "car-01", debounce = 5 })
raises("option 'timeout_ms' must be integer", shadow.open, { thing = "car-01", timeout_ms = "1" })
raises("invalid thing name", shadow.open, { thing = "car 01" })

local sh = shadow.open { thing = "car-01", cache = cache, timeout_ms = 200, debounce_ms = 10 }
local named = shadow.open("settings", { thing = "car-01", cache = false, timeout_ms = 200 })
assert(tostring(sh) == "moonwire.shadow (car-01)")
assert(tostring(named) == "moonwire.shadow (car-01/settings)")
assert(sh.name == nil and named.name == "settings" and sh.thing == "car-01")

local line
line = here() + 1
local err = raises("sh.desired.max_speed is read%-only", function() sh.desired.max_speed = 1 end)
assert(err:find("test_shadow.lua:" .. line .. ":", 1, true), err)
line = here() + 1
err = raises("sh.reported.speed = nil: assign json.null", function() sh.reported.speed = nil end)
assert(err:find("test_shadow.lua:" .. line .. ":", 1, true), err)
-- The same through every part that raises for the caller (shadow.open, the object's methods,
-- the views' value check, the object's field assignment).
for _, case in ipairs {
  { "invalid shadow name", function() shadow.open("bad/name", { thing = "car-01" }) end },
  { "with a colon", function() sh.update { desired = {} } end },
  { "the callback must be a function", function() sh:get(42) end },
  { "a function cannot be stored", function() sh.reported.pos.f = print end },
  { "sh.reported: cannot encode", function() sh.reported = { f = print } end },
} do
  local fn_line = debug.getinfo(case[2], "S").linedefined
  err = raises(case[1], case[2])
  assert(err:find("test_shadow.lua:" .. fn_line .. ":", 1, true), err)
end
raises("sh.state.reported.speed is read%-only", function() sh.state.reported.speed = 1 end)
raises("sh.version is read%-only", function() sh.version = 3 end)
raises("sh.desired is read%-only", function() sh.desired = {} end)
raises("a function cannot be stored", function() sh.reported.f = print end)
raises("cannot encode NaN", function() sh.reported.n = 0 / 0 end)
raises("keys of a shadow document are strings", function() sh.reported[1] = 5 end)
raises("sh.reported = t takes a plain table", function() sh.reported = 5 end)
raises("sh.desired.route%[1%] is read%-only", function() sh.desired.route[1] = "z" end)
raises("use sh:update%(...%) %(with a colon%)", function() sh.update { desired = {} } end)
raises("unknown key 'state'", function() sh:update { state = {} } end)
raises("desired must be a table or json.null", function() sh:update { desired = 5 } end)
raises("version must be an integer", function() sh:update { desired = {}, version = -1 } end)
raises("the callback must be a function", function() sh:get(42) end)
raises("sh:on_delta expects a function", function() sh:on_delta("x") end)
raises("cannot encode userdata", json.encode, sh.desired) -- views are not plain tables
raises("copy shadow views with shadow.copy", function() sh:update { desired = { r = { sh.desired.route } } } end)

------------------------------------------------------------------ views of the cached document

assert(sh.version == 7 and sh.exists == true and sh.synced == false)
assert(sh.desired.max_speed == 80 and sh.desired.mode == "eco")
assert(#sh.desired.route == 2 and sh.desired.route[2] == "b")
assert(sh.state.delta.max_speed == 80 and sh.delta.mode == "eco" and sh.delta.speed == nil)
assert(sh.reported.pos.y == 2)
local doc = sh:document()
assert(doc.version == 7 and doc.state.desired.max_speed == 80 and doc.state.reported.speed == 12)
assert(json.is_array(doc.state.desired.route))
assert(named.version == 0 and named:document() == nil and named.desired.anything == nil)
local live = sh.desired
assert(live.mode == "eco")

-- The REPL's .shadow lists open shadows through shadow.opened() and sh:document().
local repl = require "moonwire.repl"
local listing = repl.commands.shadow.run()
assert(listing:find("classic shadow of car-01:", 1, true) and listing:find("max_speed = 80", 1, true), listing)
assert(listing:find("shadow 'settings' of car-01: no document received yet", 1, true), listing)

-- Writes are staged and read back at once, merged with the document.
sh.reported.speed = 30
sh.reported.pos.x = 5
sh.reported.mode = json.null -- deleting a key the document does not have is fine
sh.reported.extra = { a = { 1, 2 }, b = true }
local src = { k = 1 }
sh.reported.copied = src
src.k = 2 -- later changes to the assigned table do not leak in
assert(sh.reported.speed == 30 and sh.reported.pos.x == 5 and sh.reported.pos.y == 2)
assert(sh.reported.copied.k == 1 and sh.reported.extra.a[2] == 2)
raises("arrays are whole values in a shadow", function() sh.reported.extra.a[1] = 3 end)
assert(sh.state.reported.speed == 12, "sh.state is the document as received")
sh.reported.pos = json.null
assert(sh.reported.pos == nil)
local keys = {}
for k in pairs(sh.reported) do keys[#keys + 1] = k end
table.sort(keys)
assert(table.concat(keys, ",") == "copied,extra,max_speed,speed", table.concat(keys, ","))
-- Objects merge, as the service merges them: within one batch, an object written over a
-- staged json.null merges into the document's object (flush() in between to replace it).
sh.reported = { speed = 31, pos = { x = 9 } }
assert(sh.reported.speed == 31 and sh.reported.pos.x == 9 and sh.reported.pos.y == 2)
assert(json.encode(shadow.copy(sh.reported.extra)) == '{"a":[1,2],"b":true}')
assert(json.encode(shadow.copy(sh.desired.route)) == '["a","b"]')

------------------------------------------------------------------ requests without a connection

local results = {}
local errors = {}
sh:on_error(function(msg, code, what) errors[#errors + 1] = { msg, code, what } end)
local token = sh:get(function(res, e, code) results.cb = { res, e, code } end)
assert(type(token) == "string" and #token <= 64)
assert(type(sh:delete()) == "string") -- fire and forget: failures go to on_error
coroutine.wrap(function()
  local res, e, code = sh:update { desired = { max_speed = 60 } }
  results.co = { res, e, code }
end)()
assert(results.co == nil, "the coroutine waits")
assert(#shadow.opened() == 2)

timer.after(600, function()
  assert(results.cb and results.cb[1] == nil and results.cb[3] == "ENOTCONN", "callback result")
  assert(results.cb[2]:find("shadow get %(car%-01%) not sent within 200 ms: not connected"), results.cb[2])
  assert(results.co and results.co[1] == nil and results.co[3] == "ENOTCONN", "coroutine result")
  assert(#errors == 1 and errors[1][2] == "ENOTCONN" and errors[1][3] == "delete", "on_error")

  -- Closing fails what still waits, and the shadow refuses further use.
  local closed
  named:get(function(_, e, code) closed = { e, code } end)
  assert(named:close() == true)
  assert(closed and closed[2] == "ECLOSED", "request on a closed shadow")
  raises("the shadow is closed", function() named:get() end)
  raises("the shadow is closed", function() named.reported.x = 1 end)
  assert(named:close() == false)
  assert(#shadow.opened() == 1 and shadow.opened()[1] == sh)
  sh:close()
  assert(#shadow.opened() == 0)

  -- A fresh shadow on the same cache sees the last document (the cache survives closing).
  local again = shadow.open { thing = "car-01", cache = cache }
  assert(again.version == 7 and again.desired.max_speed == 80)
  again:close()
  collectgarbage()
  cleanup()
  print("ok shadow")
end)
