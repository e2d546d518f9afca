--[[
moonwire.shadow: the device side of AWS IoT Device Shadows (docs/lua-api.md, docs/shadow.md).

  local sh = shadow.open()          -- classic shadow of this thing; shadow.open("settings") for a named one
  sh.reported.speed = 12            -- batched into one /update per debounce window
  sh:on_delta(function(delta, version, info) ... end)
  print(sh.desired.max_speed, sh.version)
  sh:update{desired = {...}}        -- callback, coroutine or fire-and-forget

How it stays in step with the service (the rules are in docs/shadow.md, "Device side"):
  - the response topics are subscribed before the first request; every request carries a
    clientToken that correlates its answer; every request has a timeout;
  - after every (re)connect a GET re-reads the document ("sync") before queued requests and
    reported batches go out; its delta is delivered once if it holds anything the app has not
    been told yet;
  - /update/accepted and /update/delta keep separate version floors: a delta is dropped when
    older than the last delta or older than the document, never because the /update/accepted
    of the same version came first;
  - a reported batch carries the version it was written against; a 409 re-reads the document
    and retries the batch once;
  - the document is kept by the C core (moonwire.shadow.core: the service's merge rules) and
    cached in SQLite, so an app that starts offline sees its previous state.

Every registration goes through moonwire.mqtt and moonwire.timer (the app's own handles), and
user callbacks run protected: one failing handler does not stop the others, and the first
failure is raised again at the end of the event, so the runtime logs and counts it.

This file is the public module; the work is done by private parts in scripts/moonwire/shadow/,
one job each (docs/ARCHITECTURE.md): shared (module-wide state, and the module table the
parts add to), calls (protected user callbacks), tables, document (snapshot and cache),
requests, batches (reported values), sync, responses (and delta dispatch), views, object
(the shadow's fields and methods), open (shadow.open, shadow.opened).
]]
local json = require "moonwire.json"
local shared = require "moonwire.shadow.shared"
local view_target = require("moonwire.shadow.views").view_target
local deep_copy = require("moonwire.shadow.tables").deep_copy

local NULL = json.null
local is_array = json.is_array
local views = shared.views

local M = shared.M

require "moonwire.shadow.open" -- shadow.open, shadow.opened

-- shadow.copy(v) -> a plain deep copy of a shadow view (or of any value).
function M.copy(v)
  local info = views[v]
  if not info then return deep_copy(v) end
  local out = {}
  for k, x in pairs(v) do out[k] = M.copy(x) end
  if is_array(view_target(info) or {}) then out = json.array(out) end
  return out
end

M.null = NULL

return M
