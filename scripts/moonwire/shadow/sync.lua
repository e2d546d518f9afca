--[[
moonwire.shadow.sync: part of moonwire.shadow, private to it (apps use require "moonwire.shadow";
this module's contents may change with any release).

Staying in step after every (re)connect: a GET re-reads the document ("sync") before queued
requests and reported batches go out (a batch needs the version it is written against); its
answer settles a batch the outbox resent across the reconnect, and drain() then sends what
waited. The same GET, not blocking anything, refreshes the document after a gap in the
versions seen or a 409.
]]
local json = require "moonwire.json"
local log = require "moonwire.log"
local timer = require "moonwire.timer"
local entry = require("moonwire.shadow.calls").entry
local requests = require "moonwire.shadow.requests"
local flush = require("moonwire.shadow.batches").flush
local snapshot = require("moonwire.shadow.document").snapshot
local holds = require("moonwire.shadow.tables").holds
local label = require("moonwire.shadow.shared").label

local send, enqueue, can_send, ready, new_request, complete =
  requests.send, requests.enqueue, requests.can_send, requests.ready, requests.new_request, requests.complete

-- Sends what waited: the batch a 409 sent back through the sync, the queued requests, and
-- the staged reported values.
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

-- A batch the outbox sends again after a reconnect goes out before the response topics are
-- subscribed again (libmosquitto sends its DUP resends first thing after CONNACK), so its
-- answer may be lost. The sync GET goes out after the subscriptions and is answered after
-- the batch: once it is answered, the document tells whether the batch was applied.
local function settle_resent_batch(st)
  local b = st.inflight
  if not b or b.done or not b.sent or not b.conn_lost or requests.in_outbox(st, b) then return end
  local snap = snapshot(st)
  if holds(snap and snap.state and snap.state.reported, b.batch) then
    complete(st, b, true)
  else
    complete(st, b, nil, "the connection was lost before the answer", "ECONNRESET")
  end
end

-- blocking: the sync after a (re)connect, which holds back queued requests and batches;
-- otherwise a refresh (a gap in the versions seen, a 409) that holds nothing back.
local function start_sync(st, blocking)
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

return { drain = drain, start_sync = start_sync }
