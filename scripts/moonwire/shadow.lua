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
]]
local mqtt = require "moonwire.mqtt"
local timer = require "moonwire.timer"
local json = require "moonwire.json"
local log = require "moonwire.log"
local device = require "moonwire.device"
local core = require "moonwire.shadow.core"

local NULL = json.null
local is_array = json.is_array
local QOS1 = { qos = 1 }
local DEFAULT_DEBOUNCE_MS = 100
local DEFAULT_TIMEOUT_MS = 5000
local CACHE_INTERVAL_MS = 1000 -- the cache is written at most once a second (and at exit)
local NAME_RX = "^[%w:_%-]+$"

local M = {}

local priv = setmetatable({}, { __mode = "k" })  -- shadow object -> its state
local views = setmetatable({}, { __mode = "k" }) -- view userdata -> {st, kind, path}
local open_list = {}                              -- open shadows, in opening order
local caches = {}                                 -- path -> core cache, or false (could not open)

------------------------------------------------------------------------ errors in callbacks

local failures -- messages of failed user callbacks during the current event, or nil

-- Wraps an event entry point (subscription handler, timer, listener): user callbacks that
-- fail are collected, and the first failure is raised once the event is fully processed.
local function entry(fn)
  return function(...)
    local saved = failures
    failures = {}
    local ok, err = xpcall(fn, debug.traceback, ...)
    local f = failures
    failures = saved
    if not ok then table.insert(f, 1, err) end
    if #f > 0 then error(table.concat(f, "\n"), 0) end
  end
end

local function failed(msg)
  if failures then failures[#failures + 1] = msg else error(msg, 0) end
end

local function call_user(what, fn, ...)
  local ok, err = xpcall(fn, debug.traceback, ...)
  if not ok then failed(what .. " failed: " .. tostring(err)) end
end

local function resume(co, ...)
  if coroutine.status(co) ~= "suspended" then
    failed("a coroutine waiting for a shadow result could not be resumed (" .. coroutine.status(co) .. ")")
    return
  end
  local ok, err = coroutine.resume(co, ...)
  if not ok then failed("coroutine waiting for a shadow result failed: " .. debug.traceback(co, tostring(err))) end
end

------------------------------------------------------------------------ tables

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = deep_copy(x) end
  return setmetatable(out, getmetatable(v)) -- keeps the json array/object marker
end

local function is_object(v)
  return type(v) == "table" and not is_array(v)
end

-- Merges over into base (both plain), as the shadow service merges an update: objects
-- recursively, anything else (arrays, scalars, json.null) replaces. Returns base.
local function merge_into(base, over)
  for k, v in pairs(over) do
    local b = base[k]
    if is_object(v) and is_object(b) then merge_into(b, v) else base[k] = deep_copy(v) end
  end
  return base
end

-- Deep equality with JSON meaning (1 == 1.0; arrays element-wise; objects by keys).
local function equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- True when delta holds a leaf that told does not already hold with the same value.
local function news(delta, told)
  for k, v in pairs(delta) do
    local t = told and told[k]
    if is_object(v) and is_object(t) then
      if news(v, t) then return true end
    elseif not equal(v, t) then
      return true
    end
  end
  return false
end

-- True when doc (a plain table) already holds every leaf batch writes (json.null: absent).
local function holds(doc, batch)
  for k, v in pairs(batch) do
    local d = doc and doc[k]
    if v == NULL then
      if d ~= nil then return false end
    elseif is_object(v) and is_object(d) then
      if not holds(d, v) then return false end
    elseif not equal(v, d) then
      return false
    end
  end
  return true
end

------------------------------------------------------------------------ state helpers

local function label(st)
  return st.name == "" and st.thing or (st.thing .. "/" .. st.name)
end

local function report_error(st, msg, code, what)
  if #st.error_handlers == 0 then
    log.warn(msg)
    return
  end
  for _, h in ipairs(table.move(st.error_handlers, 1, #st.error_handlers, 1, {})) do
    if h.active then call_user("shadow on_error handler", h.fn, msg, code, what) end
  end
end

local function snapshot(st)
  if st.snap == nil then st.snap = st.doc:table() or false end
  return st.snap or nil
end

local function save_cache(st)
  st.last_save = timer.now()
  local ok, err = st.doc:save()
  if not ok and not st.save_warned then
    st.save_warned = true
    log.warn(("shadow %s: the cache is not written: %s"):format(label(st), err))
  end
end

-- The document changed: views re-read it, and the cache gets it (write-behind).
local function changed(st)
  st.snap = nil
  if not st.cached or st.save_timer or st.closed then return end
  local wait = st.last_save + CACHE_INTERVAL_MS - timer.now()
  if wait <= 0 then
    save_cache(st)
  else
    st.save_timer = timer.after(wait, entry(function()
      st.save_timer = nil
      if not st.closed and st.doc:dirty() then save_cache(st) end
    end))
  end
end

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

------------------------------------------------------------------------ requests

local send, flush, start_sync -- forward declarations

local function describe(st, op)
  return ("shadow %s (%s)"):format(op, label(st))
end

local function subscriptions_refused(st)
  for _, s in ipairs(st.subs) do
    if s:info().granted == 0x80 then return true end
  end
  return false
end

-- Ends a request once: its timer stops, its token is forgotten, and its waiter (internal
-- continuation, coroutine, callback) gets (result, err, code). res may be a function that
-- builds the result; it is only called when someone wants the result.
local function complete(st, req, res, err, code)
  if req.done then return end
  req.done = true
  if req.timer then req.timer:stop(); req.timer = nil end
  if req.token then st.pending[req.token] = nil end
  if req.on_done then return req.on_done(res ~= nil, err, code) end
  if type(res) == "function" then res = (req.co or req.cb or req.issuing) and res() or true end
  if req.issuing then -- finished while being issued: the caller returns or defers it
    req.result = { res, err, code }
  elseif req.co then
    resume(req.co, res, err, code)
  elseif req.cb then
    call_user(describe(st, req.op) .. " callback", req.cb, res, err, code)
  elseif res == nil then
    report_error(st, err, code, req.op)
  end
end

local function arm(st, req)
  if req.timer then req.timer:stop() end
  req.timer = timer.after(st.timeout_ms, entry(function()
    req.timer = nil
    if req.done then return end
    local what = describe(st, req.op)
    if not req.sent then
      if st.online then
        local why = req.busy and "the broker connection's in-flight window stayed full"
          or "the document was not read back after connecting (is the shadow service running?)"
        return complete(st, req, nil, ("%s not sent within %d ms: %s"):format(what, st.timeout_ms, why), "ETIMEDOUT")
      end
      return complete(st, req, nil, ("%s not sent within %d ms: not connected"):format(what, st.timeout_ms), "ENOTCONN")
    end
    if req.kind == "batch" and req.handle and not req.acked then
      -- Still in the outbox, which sends it (again) until the broker takes it: sending the
      -- values once more under a new token could apply them twice. Its answer, its dead
      -- letter or the close ends it.
      return arm(st, req)
    end
    local why = " (is the shadow service running?)"
    if req.handle and not req.acked then
      why = " (still in the outbox, not yet taken by the broker: it may be applied later)"
    elseif subscriptions_refused(st) then
      why = " (the broker refused the subscription to the response topics: check the thing's policy)"
    elseif req.conn_lost then
      why = " (the connection was lost after it was sent)"
    end
    complete(st, req, nil, ("%s: no response within %d ms%s"):format(what, st.timeout_ms, why), "ETIMEDOUT")
  end))
end

local function enqueue(st, req)
  req.sent = false
  st.queue[#st.queue + 1] = req
  if not req.timer then arm(st, req) end
end

-- Requests go out as soon as the connection is up (the response topics are subscribed
-- first); reported batches also wait for the document to be read, for its version.
local function ready(st)
  return st.online and st.synced and not st.closed
end

local function can_send(st, req)
  if req.kind == "batch" then return ready(st) end
  return st.online and not st.closed
end

local function new_token(st)
  st.seq = st.seq + 1
  return st.token_prefix .. st.seq
end

-- Publishes a request now. Not connected or a full in-flight window: queued again.
function send(st, req)
  req.token = req.token or new_token(st)
  local payload = req.encode(req.token)
  st.pending[req.token] = req
  local h, err, code = mqtt.publish(st.topics[req.op], payload, { qos = 1, on_ack = function(handle)
    if req.handle == handle then req.acked = true end
  end })
  if h then
    req.sent, req.conn_lost = true, false
    if req.handle then st.by_handle[req.handle] = nil end
    req.handle, req.acked = h, false
    if req.kind == "batch" then st.by_handle[h] = req end
    arm(st, req)
    return
  end
  st.pending[req.token] = nil
  if req.kind == "sync" then -- not queued behind itself: its timeout retries it
    req.sent = false
    arm(st, req)
    return
  end
  if code == "ENOTCONN" or code == "EBUSY" then
    req.busy = code == "EBUSY"
    enqueue(st, req)
    if code == "EBUSY" and not st.retry_timer then
      st.retry_timer = timer.after(50, entry(function()
        st.retry_timer = nil
        st.drain()
      end))
    end
    return
  end
  complete(st, req, nil, ("%s not sent: %s"):format(describe(st, req.op), tostring(err)), code)
end

local function drain(st)
  if not st.online or st.closed then return end
  if st.retry_batch and ready(st) then
    local b = st.retry_batch
    st.retry_batch = nil
    send(st, b)
  end
  local q = st.queue
  st.queue = {}
  for _, req in ipairs(q) do
    if not req.done then
      if can_send(st, req) then send(st, req) else enqueue(st, req) end
    end
  end
  flush(st)
end

local function new_request(st, op, encode)
  return { op = op, encode = encode, token = new_token(st) }
end

-- Issues a request and returns what the calling form expects: with fn the clientToken (fn
-- gets the result later); inside a coroutine the result (it yields until then); otherwise
-- the clientToken (fire and forget: failures go to on_error handlers or the log).
local function await(st, req, fn)
  req.cb = fn
  local co, main = coroutine.running()
  local waits = fn == nil and not main and coroutine.isyieldable()
  req.issuing = true
  if can_send(st, req) then send(st, req) else enqueue(st, req) end
  req.issuing = nil
  if req.done then -- failed at once
    local r = req.result
    if waits then return r[1], r[2], r[3] end
    if fn then
      timer.after(0, entry(function() call_user(describe(st, req.op) .. " callback", fn, r[1], r[2], r[3]) end))
      return req.token
    end
    return r[1], r[2], r[3]
  end
  if waits then
    req.co = co
    return coroutine.yield()
  end
  return req.token
end

------------------------------------------------------------------------ reported batches

local function stage_merge_back(st, batch)
  -- Values written since the batch left win over the batch's own.
  st.batch = st.batch and merge_into(batch, st.batch) or batch
end

local function batch_done(st, req, ok, err, code)
  st.inflight = nil
  if req.handle then st.by_handle[req.handle] = nil end
  if st.closed then return end
  if not ok then
    local retry = code == "ETIMEDOUT" or code == "ENOTCONN" or code == "EBUSY" or code == "ECONNRESET" or code == 409
    if retry then stage_merge_back(st, req.batch) end
    if code == "ECONNRESET" then
      log.debug(("shadow %s: reported values in flight at the disconnect are sent again"):format(label(st)))
    else
      report_error(st, ("reported state of shadow %s %s: %s"):format(label(st),
        retry and "not confirmed (kept for the next update)" or "dropped", err), code, "reported")
    end
  end
  if st.batch and not st.flush_timer then
    st.flush_timer = timer.after(ok and 0 or st.debounce_ms, entry(function()
      st.flush_timer = nil
      flush(st)
    end))
  end
end

-- Sends the staged reported values as one /update, written against the known version.
function flush(st)
  if st.flush_timer then st.flush_timer:stop(); st.flush_timer = nil end
  if not st.batch or st.inflight or not ready(st) then return end
  local batch = st.batch
  st.batch = nil
  local req = new_request(st, "update", function(token)
    return json.encode { state = { reported = batch }, clientToken = token,
      version = st.doc:exists() and st.doc:version() or nil }
  end)
  req.kind, req.batch = "batch", batch
  req.on_done = function(ok, err, code) batch_done(st, req, ok, err, code) end
  st.inflight = req
  send(st, req)
end

local function schedule_flush(st)
  if st.flush_timer or st.closed then return end
  st.flush_timer = timer.after(st.debounce_ms, entry(function()
    st.flush_timer = nil
    flush(st)
  end))
end

------------------------------------------------------------------------ sync (GET after connect)

-- A batch the outbox sends again after a reconnect goes out before the response topics are
-- subscribed again (libmosquitto sends its DUP resends first thing after CONNACK), so its
-- answer may be lost. The sync GET goes out after the subscriptions and is answered after
-- the batch: once it is answered, the document tells whether the batch was applied.
local function settle_resent_batch(st)
  local b = st.inflight
  if not b or b.done or not (b.sent and b.conn_lost and b.acked) then return end
  local snap = snapshot(st)
  if holds(snap and snap.state and snap.state.reported, b.batch) then
    complete(st, b, true)
  else
    complete(st, b, nil, "the connection was lost before the answer", "ECONNRESET")
  end
end

-- blocking: the sync after a (re)connect, which holds back queued requests and batches;
-- otherwise a refresh (a gap in the versions seen, a 409) that holds nothing back.
function start_sync(st, blocking)
  if blocking then st.synced = false end
  if st.sync_req and not st.sync_req.done then return end
  if not st.online or st.closed then return end
  local req = new_request(st, "get", function(token) return json.encode { clientToken = token } end)
  req.kind = "sync"
  req.on_done = function(ok, err, code)
    st.sync_req = nil
    if st.closed then return end
    if ok or code == 404 then
      st.synced = true
      settle_resent_batch(st)
      drain(st)
    elseif st.online then
      log.warn(("shadow %s: reading the document failed: %s; retrying"):format(label(st), err))
      if code == "ETIMEDOUT" then
        start_sync(st, not st.synced)
      elseif not st.sync_retry then
        st.sync_retry = timer.after(st.timeout_ms, entry(function()
          st.sync_retry = nil
          start_sync(st, not st.synced)
        end))
      end
    end
  end
  st.sync_req = req
  send(st, req)
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

------------------------------------------------------------------------ views

local VIEW, REPORTED = {}, {}

local function new_view(mt, st, kind, path, value)
  local v = core.proxy(mt)
  views[v] = { st = st, kind = kind, path = path, value = value }
  return v
end

local function extend(path, k)
  local p = table.move(path, 1, #path, 1, {})
  p[#p + 1] = k
  return p
end

local function walk(t, path)
  for i = 1, #path do
    if type(t) ~= "table" then return nil end
    t = t[path[i]]
  end
  return t
end

-- The table a read-only view stands for, resolved from the current document every time
-- (a view stays live across updates); a "const" view holds a fixed value (arrays).
local function view_target(info)
  if info.kind == "const" then return walk(info.value, info.path) end
  local snap = snapshot(info.st)
  if not snap then return nil end
  if info.kind == "state" then return walk(snap.state, info.path) end
  return walk(snap.state[info.kind], info.path)
end

local function view_name(info)
  local name = info.kind == "const" and "this array" or ("sh." .. info.kind)
  for _, k in ipairs(info.path) do name = name .. (type(k) == "string" and k:match("^[%a_][%w_]*$") and "." .. k or "[" .. tostring(k) .. "]") end
  return name
end

VIEW.__index = function(v, k)
  local info = views[v]
  local t = view_target(info)
  local x = type(t) == "table" and t[k] or nil
  if type(x) == "table" then return new_view(VIEW, info.st, info.kind, extend(info.path, k), info.value) end
  return x
end

VIEW.__newindex = function(v, k)
  local info = views[v]
  info = { kind = info.kind, path = extend(info.path, k) }
  local hint = info.kind == "desired" and " (change desired state with sh:update{desired = {...}})"
    or info.kind == "const" and " (arrays are whole values in a shadow: assign the whole array)"
    or " (write reported values through sh.reported)"
  error(("%s is read-only%s"):format(view_name(info), hint), 2)
end

VIEW.__len = function(v)
  local t = view_target(views[v])
  return type(t) == "table" and #t or 0
end

VIEW.__pairs = function(v)
  local info = views[v]
  local t = view_target(info)
  if type(t) ~= "table" then t = {} end
  local function nxt(_, k)
    local key, x = next(t, k)
    if type(x) == "table" then x = new_view(VIEW, info.st, info.kind, extend(info.path, key), info.value) end
    return key, x
  end
  return nxt, v, nil
end

VIEW.__tostring = function(v) return "moonwire.shadow view " .. view_name(views[v]) end

-- sh.reported reads back the newest value: staged (not sent yet), then in flight, then the document.

-- Looks path up in a staged layer: "hit", value | "hidden" (a staged non-object above it
-- replaces whatever the document has there) | nil (the layer does not touch it).
local function staged(layer, path)
  local t = layer
  for i = 1, #path do
    if t == nil then return nil end
    if not is_object(t) then return "hidden" end
    t = t[path[i]]
  end
  if t == nil then return nil end
  return "hit", t
end

local OBJECT = {} -- reported_value's answer for "an object: look deeper, layers merged"

local function reported_value(st, path)
  for _, layer in ipairs { st.batch or false, st.inflight and st.inflight.batch or false } do
    if layer then
      local s, x = staged(layer, path)
      if s == "hidden" then return nil end
      if s == "hit" then
        if x == NULL then return nil end
        if not is_object(x) then return x end
        return OBJECT
      end
    end
  end
  local snap = snapshot(st)
  local x = snap and walk(snap.state.reported, path)
  if is_object(x) then return OBJECT end
  return x
end

local function reported_child(st, path)
  local x = reported_value(st, path)
  if x == OBJECT then return new_view(REPORTED, st, "reported", path) end
  if type(x) == "table" then return new_view(VIEW, st, "const", {}, x) end -- an array
  return x
end

local function reported_keys(st, path)
  local keys = {}
  local snap = snapshot(st)
  local base = snap and walk(snap.state.reported, path)
  if is_object(base) then for k in pairs(base) do keys[k] = true end end
  for _, layer in ipairs { st.inflight and st.inflight.batch or false, st.batch or false } do
    if layer then
      local s, x = staged(layer, path)
      if s == "hidden" or (s == "hit" and not is_object(x)) then
        keys = {}
      elseif s == "hit" then
        for k, y in pairs(x) do keys[k] = y ~= NULL or nil end
      end
    end
  end
  return keys
end

local function check_value(v, where, level)
  local tv = type(v)
  if v == nil then
    error(("%s = nil: assign json.null to delete a reported value"):format(where), level + 1)
  elseif views[v] then
    return M.copy(v)
  elseif v == NULL or tv == "string" or tv == "boolean" then
    return v
  elseif tv == "number" or tv == "table" then
    local ok, text = pcall(json.encode, v)
    if not ok then error(("%s: %s"):format(where, text), level + 1) end
    return tv == "table" and json.decode(text) or v -- a private copy: later changes to v do not leak in
  end
  error(("%s: a %s cannot be stored in a shadow (strings, numbers, booleans, tables, json.null)"):format(where, tv),
    level + 1)
end

local function stage(st, path, k, v)
  st.batch = st.batch or {}
  local t = st.batch
  for _, e in ipairs(path) do
    local nxt = t[e]
    if not is_object(nxt) then nxt = {}; t[e] = nxt end
    t = nxt
  end
  if is_object(v) and is_object(t[k]) then merge_into(t[k], v) else t[k] = v end
  schedule_flush(st)
end

local function reported_set(st, path, k, v, level)
  if st.closed then error("the shadow is closed", level + 1) end
  if type(k) ~= "string" then
    error(("keys of a shadow document are strings, not %s"):format(type(k)), level + 1)
  end
  local where = view_name { kind = "reported", path = extend(path, k) }
  stage(st, path, k, check_value(v, where, level + 1))
end

REPORTED.__index = function(v, k)
  local info = views[v]
  return reported_child(info.st, extend(info.path, k))
end

REPORTED.__newindex = function(v, k, x)
  local info = views[v]
  reported_set(info.st, info.path, k, x, 2)
end

REPORTED.__pairs = function(v)
  local info = views[v]
  local keys = reported_keys(info.st, info.path)
  local function nxt(_, k)
    local key = next(keys, k)
    if key == nil then return nil end
    return key, reported_child(info.st, extend(info.path, key))
  end
  return nxt, v, nil
end

REPORTED.__len = function() return 0 end
REPORTED.__tostring = function(v) return "moonwire.shadow view " .. view_name(views[v]) end

------------------------------------------------------------------------ the shadow object

local SH = {}
local methods = {}

local function state_of(self, method)
  local st = priv[self]
  if not st then error(("use sh:%s(...) (with a colon) on a shadow from shadow.open()"):format(method), 3) end
  if st.closed and method ~= "close" and method ~= "document" then error("the shadow is closed", 3) end
  return st
end

SH.__index = function(self, k)
  local m = methods[k]
  if m then return m end
  local st = priv[self]
  if k == "desired" or k == "delta" then return new_view(VIEW, st, k, {})
  elseif k == "state" then return new_view(VIEW, st, "state", {})
  elseif k == "reported" then return new_view(REPORTED, st, "reported", {})
  elseif k == "version" then return st.doc:version()
  elseif k == "exists" then return st.doc:exists()
  elseif k == "name" then return st.name ~= "" and st.name or nil
  elseif k == "thing" then return st.thing
  elseif k == "synced" then return st.synced and st.online or false
  end
  return nil
end

SH.__newindex = function(self, k, v)
  local st = priv[self]
  if k == "reported" then
    if type(v) ~= "table" or views[v] then
      error("sh.reported = t takes a plain table of values to report (or set sh.reported.key = value)", 2)
    end
    local ok, err = pcall(json.encode, v)
    if not ok then error("sh.reported: " .. err, 2) end
    for key, x in pairs(v) do reported_set(st, {}, key, x, 2) end
    return
  end
  error(("sh.%s is read-only%s"):format(tostring(k),
    k == "desired" and " (change desired state with sh:update{desired = {...}})" or ""), 2)
end

SH.__tostring = function(self)
  local st = priv[self]
  return ("moonwire.shadow (%s%s)"):format(label(st), st.closed and ", closed" or "")
end

SH.__close = function(self) self:close() end

-- sh:on_delta(fn) -> handle with :remove()
function methods.on_delta(self, fn)
  local st = state_of(self, "on_delta")
  if type(fn) ~= "function" then error("sh:on_delta expects a function(delta, version, info)", 2) end
  local h = { fn = fn, active = true }
  st.delta_handlers[#st.delta_handlers + 1] = h
  if st.pending_delta then
    -- A delta arrived before anyone listened: the first handler gets it, once.
    timer.after(0, entry(function()
      local p = st.pending_delta
      if not p or not h.active or st.closed then return end
      st.pending_delta = nil
      call_user("shadow on_delta handler", fn, p[1], p[2], p[3])
    end))
  end
  return {
    remove = function()
      local was = h.active
      h.active = false
      for i, x in ipairs(st.delta_handlers) do if x == h then table.remove(st.delta_handlers, i) break end end
      return was
    end,
  }
end

-- sh:on_error(fn): fn(message, code, what) for failures nobody waits for (reported
-- batches, fire-and-forget requests). Without a handler they are logged as warnings.
function methods.on_error(self, fn)
  local st = state_of(self, "on_error")
  if type(fn) ~= "function" then error("sh:on_error expects a function(message, code, what)", 2) end
  local h = { fn = fn, active = true }
  st.error_handlers[#st.error_handlers + 1] = h
  return {
    remove = function()
      local was = h.active
      h.active = false
      for i, x in ipairs(st.error_handlers) do if x == h then table.remove(st.error_handlers, i) break end end
      return was
    end,
  }
end

local function check_callback(fn, method)
  if fn ~= nil and type(fn) ~= "function" then
    error(("sh:%s: the callback must be a function(result, err, code)"):format(method), 3)
  end
end

-- sh:update{desired = t|json.null, reported = t|json.null, version = n} [, fn]
function methods.update(self, tbl, fn)
  local st = state_of(self, "update")
  if type(tbl) ~= "table" or views[tbl] then
    error("sh:update expects a table {desired = {...}, reported = {...}, version = n}", 2)
  end
  check_callback(fn, "update")
  local state, version = {}, nil
  for k, v in pairs(tbl) do
    if k == "desired" or k == "reported" then
      if v ~= NULL and type(v) ~= "table" and not views[v] then
        error(("sh:update: %s must be a table or json.null, not %s"):format(k, type(v)), 2)
      end
      state[k] = views[v] and M.copy(v) or v
    elseif k == "version" then
      if math.type(v) ~= "integer" or v < 0 then error("sh:update: version must be an integer >= 0", 2) end
      version = v
    else
      error(("sh:update: unknown key '%s' (desired, reported, version)"):format(tostring(k)), 2)
    end
  end
  -- Encoded once now (misuse raises here, at the caller's line). Keys are written in byte
  -- order, so "clientToken" comes first and the token is spliced in when the request is sent.
  local ok, text = pcall(json.encode, { state = state, version = version, clientToken = "" })
  if not ok then
    error("sh:update: " .. text .. (text:find("userdata") and " (copy shadow views with shadow.copy)" or ""), 2)
  end
  local head = '{"clientToken":"'
  assert(text:sub(1, #head + 1) == head .. '"', "clientToken is not the first key")
  local tail = text:sub(#head + 1)
  local req = new_request(st, "update", function(token) return head .. token .. tail end)
  return await(st, req, fn)
end

-- sh:get([fn]): reads the document (and delivers an outstanding delta, once).
function methods.get(self, fn)
  local st = state_of(self, "get")
  check_callback(fn, "get")
  return await(st, new_request(st, "get", function(token) return json.encode { clientToken = token } end), fn)
end

-- sh:delete([fn]): deletes the shadow.
function methods.delete(self, fn)
  local st = state_of(self, "delete")
  check_callback(fn, "delete")
  return await(st, new_request(st, "delete", function(token) return json.encode { clientToken = token } end), fn)
end

-- sh:flush(): sends the staged reported values now instead of at the end of the debounce.
function methods.flush(self)
  local st = state_of(self, "flush")
  local had = st.batch ~= nil
  flush(st)
  return had
end

-- sh:document() -> a copy of the last known document, or nil.
function methods.document(self)
  local st = state_of(self, "document")
  return st.doc:table()
end

-- sh:close(): stops everything; waiting requests fail with "ECLOSED".
function methods.close(self)
  local st = state_of(self, "close")
  if st.closed then return false end
  if st.batch and ready(st) then flush(st) end -- last chance for staged values (not awaited)
  st.closed = true
  for _, s in ipairs(st.subs) do s:unsubscribe() end
  for _, l in ipairs(st.listeners) do l:remove() end
  for _, k in ipairs { "flush_timer", "save_timer", "retry_timer", "sync_retry" } do
    if st[k] then st[k]:stop(); st[k] = nil end
  end
  local waiting = {}
  for _, req in pairs(st.pending) do waiting[#waiting + 1] = req end
  for _, req in ipairs(st.queue) do waiting[#waiting + 1] = req end
  if st.retry_batch then waiting[#waiting + 1] = st.retry_batch end
  st.queue, st.retry_batch = {}, nil
  for _, req in ipairs(waiting) do
    complete(st, req, nil, describe(st, req.op) .. ": the shadow was closed", "ECLOSED")
  end
  if st.cached and st.doc:dirty() then save_cache(st) end
  for i, x in ipairs(open_list) do if x == self then table.remove(open_list, i) break end end
  return true
end

------------------------------------------------------------------------ opening

local function config()
  local c = device.config and device.config.shadow
  return {
    cache = c and c.cache, debounce_ms = c and c.debounce_ms, timeout_ms = c and c.timeout_ms,
  }
end

local function default_cache()
  local dir = os.getenv("STATE_DIRECTORY")
  dir = dir and dir:match("^[^:]+") or "."
  return dir .. "/moonwire-shadow.db"
end

local function get_cache(path)
  if caches[path] == nil then
    local c, err = core.cache(path)
    if not c then log.warn(("shadow: %s; the last known document is kept in memory only"):format(err)) end
    caches[path] = c or false
  end
  return caches[path] or nil
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
    subs = {}, listeners = {}, pending = {}, queue = {}, by_handle = {},
    delta_handlers = {}, error_handlers = {},
    delta_version = 0, told = {},
    online = false, synced = false, seq = 0,
    token_prefix = ("mw%08x-"):format(math.random(0, 0x7fffffff)),
  }
  st.drain = function() drain(st) end
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
    if b and b.sent and (b.acked or not b.handle) then
      complete(st, b, nil, "the connection was lost before the answer", "ECONNRESET")
    end
    start_sync(st, true)
    drain(st)
  end))
  st.listeners[2] = mqtt.on("disconnect", entry(function()
    st.online, st.synced = false, false
    for _, req in pairs(st.pending) do req.conn_lost = true end
  end))
  -- The outbox gave up on a batch (the broker refuses it): it will never be answered.
  st.listeners[3] = mqtt.on("dead_letter", entry(function(m)
    local req = st.by_handle[m.id]
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
