--[[
moonwire.shadow.responses: part of moonwire.shadow, private to it (apps use require "moonwire.shadow";
this module's contents may change with any release).

The handlers of the response topics (get, update and delete accepted/rejected, and
update/delta): they apply what the service says to the document, end the request its
clientToken names, and dispatch deltas to the on_delta handlers. The ordering rules are in
docs/shadow.md, "Device side".
]]
local json = require "moonwire.json"
local log = require "moonwire.log"
local core = require "moonwire.shadow.core"
local call_user = require("moonwire.shadow.calls").call_user
local tables = require "moonwire.shadow.tables"
local changed = require("moonwire.shadow.document").changed
local requests = require "moonwire.shadow.requests"
local start_sync = require("moonwire.shadow.sync").start_sync
local label = require("moonwire.shadow.shared").label

local deep_copy, is_object, merge_into, news = tables.deep_copy, tables.is_object, tables.merge_into, tables.news
local complete, describe = requests.complete, requests.describe

------------------------------------------------------------------------ deltas

local function deliver(st, delta, version, info)
  if #st.delta_handlers == 0 then
    st.pending_delta = { delta, version, info } -- for the first on_delta handler
    return
  end
  st.pending_delta = nil
  local first = true
  for _, h in ipairs(table.move(st.delta_handlers, 1, #st.delta_handlers, 1, {})) do
    if h.active and not st.closed then
      call_user("shadow on_delta handler", h.fn, first and delta or deep_copy(delta), version, info)
      first = false
    end
  end
end

------------------------------------------------------------------------ responses

local H = {}

local function decode(st, topic, payload)
  local msg, err = json.decode(payload)
  if type(msg) ~= "table" then
    log.warn(("shadow %s: ignored a malformed message on %s: %s"):format(label(st), topic, err or "not an object"))
    return nil
  end
  return msg
end

local function rejected(st, op, msg)
  local code = math.type(msg.code) == "integer" and msg.code or "EPROTO"
  return ("%s rejected: %s (%s)"):format(describe(st, op), tostring(msg.message), tostring(msg.code)), code
end

function H.update_accepted(st, topic, payload)
  local resp, version, token = core.parse(payload)
  if not resp or not version then
    log.warn(("shadow %s: ignored a malformed message on %s"):format(label(st), topic))
    return
  end
  local before, existed = st.doc:version(), st.doc:exists()
  local status, err = st.doc:apply(resp)
  if status == "applied" then
    changed(st)
    -- A version skipped while connected means a missed update: re-read the document.
    if existed and version > before + 1 and st.synced then start_sync(st, false) end
  elseif not status then
    log.warn(("shadow %s: ignored an /update/accepted: %s"):format(label(st), err))
  end
  local req = token and st.pending[token]
  if req then complete(st, req, function() return resp:table() end) end
  resp:free()
end

function H.update_rejected(st, topic, payload)
  local msg = decode(st, topic, payload)
  local req = msg and msg.clientToken and st.pending[msg.clientToken]
  if not req then return end
  if req.kind == "batch" and msg.code == 409 and not req.retried then
    -- Written against an old version: re-read the document, then send the batch once more.
    req.retried = true
    st.pending[req.token] = nil
    req.token = nil -- a new clientToken for the second attempt
    if req.timer then req.timer:stop(); req.timer = nil end
    req.sent = false
    st.retry_batch = req
    start_sync(st, true)
    return
  end
  complete(st, req, nil, rejected(st, "update", msg))
end

-- info.metadata is built when the handler reads it: most never do, and it is as big as the delta.
local function delta_info(resp)
  return setmetatable({ source = "delta", timestamp = resp:table("timestamp") }, {
    __index = function(t, k)
      if k ~= "metadata" then return nil end
      local m = resp:table("metadata")
      rawset(t, "metadata", m)
      return m
    end,
  })
end

function H.update_delta(st, topic, payload)
  local resp, v = core.parse(payload)
  if not resp then
    log.warn(("shadow %s: ignored a malformed message on %s"):format(label(st), topic))
    return
  end
  local state = resp:table("state")
  if math.type(v) ~= "integer" or not is_object(state) then
    log.warn(("shadow %s: ignored a delta without version or state on %s"):format(label(st), topic))
    return
  end
  -- Older than the last delta, or than the document we hold: out of order, drop it. The
  -- same version as the document is fine (its /update/accepted simply came first).
  if v <= st.delta_version or v < st.doc:version() then return end
  st.delta_version = v
  merge_into(st.told, state)
  deliver(st, state, v, delta_info(resp))
end

function H.get_accepted(st, topic, payload)
  local resp, version, token = core.parse(payload)
  if not resp or not version then
    log.warn(("shadow %s: ignored a malformed message on %s"):format(label(st), topic))
    return
  end
  local req = token and st.pending[token]
  -- Someone else's GET: only a newer document is worth taking.
  if not req and (version <= st.doc:version() and st.doc:exists()) then resp:free(); return end
  local result = req and (req.cb or req.co) and resp:table()
  local ok, err = st.doc:replace(resp)
  resp:free()
  if not ok then
    log.warn(("shadow %s: ignored a /get/accepted: %s"):format(label(st), err))
    if req then complete(st, req, nil, describe(st, "get") .. ": malformed answer", "EPROTO") end
    return
  end
  changed(st)
  if req then
    -- Our own GET is the current document: deliver whatever the app has not been told.
    local delta = st.doc:delta()
    local outstanding = delta and news(delta, st.told)
    st.told = delta and deep_copy(delta) or {}
    st.delta_version = version
    if outstanding then deliver(st, delta, version, { source = "get" }) end
    complete(st, req, result or true)
  end
end

function H.get_rejected(st, topic, payload)
  local msg = decode(st, topic, payload)
  local req = msg and msg.clientToken and st.pending[msg.clientToken]
  if not req then return end
  if msg.code == 404 then
    st.doc:reset()
    st.told = {}
    changed(st)
  end
  complete(st, req, nil, rejected(st, "get", msg))
end

function H.delete_accepted(st, topic, payload)
  local msg = decode(st, topic, payload)
  if not msg then return end
  local v = math.type(msg.version) == "integer" and msg.version or st.doc:version()
  local req = msg.clientToken and st.pending[msg.clientToken]
  if req or (st.doc:exists() and v >= st.doc:version()) then
    st.doc:mark_deleted(v)
    st.told = {}
    changed(st)
  end
  if req then complete(st, req, msg) end
end

function H.delete_rejected(st, topic, payload)
  local msg = decode(st, topic, payload)
  local req = msg and msg.clientToken and st.pending[msg.clientToken]
  if not req then return end
  if msg.code == 404 then
    st.doc:reset()
    changed(st)
  end
  complete(st, req, nil, rejected(st, "delete", msg))
end

local RESPONSES = {
  { "get/accepted", H.get_accepted }, { "get/rejected", H.get_rejected },
  { "update/accepted", H.update_accepted }, { "update/rejected", H.update_rejected },
  { "update/delta", H.update_delta },
  { "delete/accepted", H.delete_accepted }, { "delete/rejected", H.delete_rejected },
}

return { RESPONSES = RESPONSES }
