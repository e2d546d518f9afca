--[[
moonwire.shadow.requests: part of moonwire.shadow, private to it (apps use require "moonwire.shadow";
this module's contents may change with any release).

The life of one request to the service (get, update, delete, a reported batch, the sync):
its clientToken, its timeout, publishing it (or queueing it while offline or while the
in-flight window is full) with its outbox handle, and ending it once for whoever waits: an
internal continuation, a coroutine, a callback, or the on_error handlers. When queued
requests go out is decided by moonwire.shadow.sync (st.drain).
]]
local mqtt = require "moonwire.mqtt"
local timer = require "moonwire.timer"
local calls = require "moonwire.shadow.calls"
local label = require("moonwire.shadow.shared").label

local entry, call_user, resume, report_error = calls.entry, calls.call_user, calls.resume, calls.report_error

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

-- Whether the message of req's last send is still in the outbox (the broker has not
-- acknowledged it): the outbox will send it again, with the same clientToken, until it does.
-- st.outbox maps those handles to their requests; st.on_ack and the dead_letter listener
-- (moonwire.shadow.open) take them out.
local function in_outbox(st, req)
  return req.handle ~= nil and st.outbox[req.handle] == req
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
    if req.kind == "batch" and in_outbox(st, req) then
      -- Still in the outbox, which sends it (again) until the broker takes it: sending the
      -- values once more under a new token could apply them twice. Its answer, its dead
      -- letter or the close ends it.
      return arm(st, req)
    end
    local why = " (is the shadow service running?)"
    if in_outbox(st, req) then
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
local function send(st, req)
  req.token = req.token or new_token(st)
  local payload = req.encode(req.token)
  st.pending[req.token] = req
  local h, err, code = mqtt.publish(st.topics[req.op], payload, st.publish_opts)
  if h then
    req.sent, req.conn_lost = true, false
    req.handle = h
    st.outbox[h] = req
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

return {
  describe = describe, complete = complete, enqueue = enqueue, ready = ready, can_send = can_send, send = send,
  new_request = new_request, await = await, in_outbox = in_outbox,
}
