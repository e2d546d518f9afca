--[[
moonwire.shadow.open: part of moonwire.shadow, private to it (apps use require "moonwire.shadow";
this module's contents may change with any release).

Opening a shadow: options and configuration, its state and cached document, the response
subscriptions (made before any request goes out) and the connect, disconnect and dead-letter
listeners that drive the sync; and the list of open shadows.

Adds to moonwire.shadow: open, opened.
]]
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
local device = require "moonwire.device"
local core = require "moonwire.shadow.core"
local entry = require("moonwire.shadow.calls").entry
local document = require "moonwire.shadow.document"
local requests = require "moonwire.shadow.requests"
local sync = require "moonwire.shadow.sync"
local RESPONSES = require("moonwire.shadow.responses").RESPONSES
local SH = require("moonwire.shadow.object").SH
local shared = require "moonwire.shadow.shared"

local QOS1 = { qos = 1 }
local DEFAULT_DEBOUNCE_MS = 100
local DEFAULT_TIMEOUT_MS = 5000
local NAME_RX = "^[%w:_%-]+$"

local default_cache, get_cache = document.default_cache, document.get_cache
local complete, describe = requests.complete, requests.describe
local start_sync, drain = sync.start_sync, sync.drain
local M, priv, open_list, label = shared.M, shared.priv, shared.open_list, shared.label

local function config()
  local c = device.config and device.config.shadow
  return {
    cache = c and c.cache, debounce_ms = c and c.debounce_ms, timeout_ms = c and c.timeout_ms,
  }
end

local OPTS = { thing = "string", cache = "string|false", debounce_ms = "integer", timeout_ms = "integer" }

-- shadow.open([name] [, {thing=, cache=, debounce_ms=, timeout_ms=}]) -> sh
function M.open(name, opts)
  if type(name) == "table" and opts == nil then name, opts = nil, name end
  if name ~= nil then
    if type(name) ~= "string" or #name > 64 or not name:match(NAME_RX) then
      error(("shadow.open: invalid shadow name %s: 1-64 of a-z A-Z 0-9 : _ -"):format(
        type(name) == "string" and ("'" .. name .. "'") or ("(a " .. type(name) .. ")")), 2)
    end
  end
  if opts ~= nil and type(opts) ~= "table" then error("shadow.open: options must be a table", 2) end
  opts = opts or {}
  for k, v in pairs(opts) do
    local want = OPTS[k]
    if not want then error(("shadow.open: unknown option '%s'"):format(tostring(k)), 2) end
    local ok = (want == "string" and type(v) == "string") or (want == "integer" and math.type(v) == "integer" and v >= 0)
      or (want == "string|false" and (type(v) == "string" and v ~= "" or v == false))
    if not ok then error(("shadow.open: option '%s' must be %s"):format(k, want:gsub("|", " or ")), 2) end
  end
  local cfg = config()
  local thing = opts.thing or device.thing
  if not thing then error("shadow.open: no thing name (run with a configuration, or pass {thing = ...})", 2) end
  if #thing > 128 or not thing:match(NAME_RX) then
    error(("shadow.open: invalid thing name '%s'"):format(thing), 2)
  end
  local timeout = opts.timeout_ms or cfg.timeout_ms or DEFAULT_TIMEOUT_MS
  if timeout < 1 then error("shadow.open: timeout_ms must be > 0", 2) end
  name = name or ""
  local prefix = "$aws/things/" .. thing .. "/shadow/" .. (name ~= "" and ("name/" .. name .. "/") or "")
  local st = {
    thing = thing, name = name,
    topics = { get = prefix .. "get", update = prefix .. "update", delete = prefix .. "delete" },
    debounce_ms = opts.debounce_ms or cfg.debounce_ms or DEFAULT_DEBOUNCE_MS,
    timeout_ms = timeout,
    doc = core.doc(), snap = nil, cached = false, last_save = -math.huge,
    subs = {}, listeners = {}, pending = {}, queue = {}, outbox = {},
    delta_handlers = {}, error_handlers = {},
    delta_version = 0, told = {},
    online = false, synced = false, seq = 0,
    token_prefix = ("mw%08x-"):format(math.random(0, 0x7fffffff)),
  }
  st.drain = function() drain(st) end
  -- Every request is published with these: the broker took the message, the outbox is done with it.
  st.publish_opts = { qos = 1, on_ack = function(handle) st.outbox[handle] = nil end }
  local path = opts.cache
  if path == nil then path = cfg.cache or default_cache() end
  if path then
    local c = get_cache(path)
    if c then
      st.doc:bind(c, thing, name)
      local found, err = st.doc:load()
      if found == nil then log.warn(("shadow %s: cached document not read: %s"):format(label(st), err)) end
      st.cached = true
    end
  end
  local sh = setmetatable({}, SH)
  priv[sh] = st
  -- Response topics first: they are subscribed before any request goes out.
  for _, r in ipairs(RESPONSES) do
    local fn = r[2]
    st.subs[#st.subs + 1] = mqtt.subscribe(prefix .. r[1], entry(function(topic, payload)
      if not st.closed then fn(st, topic, payload) end
    end), QOS1)
  end
  st.listeners[1] = mqtt.on("connect", entry(function()
    if st.closed then return end
    st.online = true
    -- Answers to requests of the previous connection may never come: the sync starts over,
    -- and a batch in flight is sent again.
    local old = st.sync_req
    if old then
      st.sync_req, old.on_done = nil, function() end
      complete(st, old, nil, "superseded", "ECONNRESET")
    end
    -- A batch the broker never acknowledged is still in the outbox, which sends it again
    -- with the same clientToken: keep waiting for that answer (a stale version gets a 409,
    -- handled as any other). One the broker took has an answer that was lost with the old
    -- connection: its values go into the next batch.
    local b = st.inflight
    if b and b.sent and not requests.in_outbox(st, b) then
      complete(st, b, nil, "the connection was lost before the answer", "ECONNRESET")
    end
    start_sync(st, true)
    drain(st)
  end))
  st.listeners[2] = mqtt.on("disconnect", entry(function()
    st.online, st.synced = false, false
    for _, req in pairs(st.pending) do req.conn_lost = true end
  end))
  -- The outbox gave up on a request (the broker refuses it): it will never be answered.
  st.listeners[3] = mqtt.on("dead_letter", entry(function(m)
    local req = st.outbox[m.id]
    st.outbox[m.id] = nil
    if req and not req.done then
      complete(st, req, nil, ("%s refused by the broker (dead letter %d: %s)"):format(describe(st, req.op), m.id,
        tostring(m.reason)), "EREFUSED")
    end
  end))
  st.online = mqtt.connected()
  if st.online then start_sync(st, true) end
  open_list[#open_list + 1] = sh
  return sh
end

-- shadow.opened() -> array of the open shadows (for tools such as the REPL).
function M.opened()
  local out = {}
  for i = #open_list, 1, -1 do
    local sh = open_list[i]
    local st = priv[sh]
    -- A shadow whose subscriptions were dropped from outside (an app reload) is gone too.
    if st.subs[1] and not st.subs[1]:info().active then
      st.closed = true
      table.remove(open_list, i)
    end
  end
  for i, sh in ipairs(open_list) do out[i] = sh end
  return out
end
