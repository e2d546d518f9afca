--[[
moonwire.provision.conn: part of moonwire.provision, private to it (flows use
require "moonwire.provision"; this module's contents may change with any release).

The connections steps talk over: one MQTT connection (moonwire.connection) per identity,
opened with a configuration table, and request/answer over it (subscribe to /accepted and
/rejected, publish, wait) with the flow suspended meanwhile.

Adds to moonwire.provision: connect, disconnect.
]]
local connection = require "moonwire.connection"
local json = require "moonwire.json"
local runner = require "moonwire.provision.runner"
local M = require("moonwire.provision.shared").M

local running_task, seconds, suspend = runner.running_task, runner.seconds, runner.suspend
local DEFAULT_TIMEOUT, CONNECT_TIMEOUT = runner.DEFAULT_TIMEOUT, runner.CONNECT_TIMEOUT

local Conn = {}
Conn.__index = Conn

function Conn:_event(ev)
  local t = ev.type
  if t == "connect" then
    self.connected = true
    if self.on_connect then self.on_connect(true) end
  elseif t == "connect_failed" then
    self.last_error = ev.reason
    if self.on_connect then
      self.c:stop()
      self.on_connect(nil, ev.reason, "EREFUSED")
    end
  elseif t == "disconnect" then
    self.connected = false
    if self.waiting then self.waiting(nil, "connection lost: " .. tostring(ev.reason), "ENOTCONN") end
  elseif t == "message" then
    local h = self.handlers[ev.topic]
    if h then h(ev) end
  elseif t == "suback" then
    local h = self.subacks[ev.filter]
    if h then h(ev.granted) end
  elseif t == "stopped" then
    self.stopped = true
    if self.on_stopped then self.on_stopped(true) end
  end
end

function Conn:__tostring()
  return string.format("<connection %s to %s:%d>", self.client_id, self.host, self.port)
end

-- Subscribes to the filters not subscribed yet and waits for their SUBACKs.
function Conn:_subscribe(filters, timeout)
  local missing = {}
  for _, f in ipairs(filters) do if not self.subscribed[f] then missing[#missing + 1] = f end end
  if #missing == 0 then return true end
  local pending = #missing
  local r = table.pack(suspend(self.task, timeout, "subscribe to " .. table.concat(missing, ", "), function(resolve)
    self.waiting = resolve
    for _, f in ipairs(missing) do
      self.subacks[f] = function(granted)
        self.subacks[f] = nil
        if granted >= 0x80 then
          resolve(nil, "the broker refused the subscription to " .. f .. " (the identity's policy does not allow it)",
                  "EREFUSED")
          return
        end
        self.subscribed[f] = true
        pending = pending - 1
        if pending == 0 then resolve(true) end
      end
      local ok, err, code = self.c:subscribe(f, 1)
      if not ok then resolve(nil, err, code) return end
    end
  end))
  self.waiting = nil
  return table.unpack(r, 1, r.n)
end

-- Publishes payload on base and waits for base/accepted (that accept() takes as ours) or
-- base/rejected. -> accepted body | nil, errorMessage, errorCode, statusCode
function Conn:request(base, payload, opts)
  opts = opts or {}
  local timeout = seconds(opts, DEFAULT_TIMEOUT)
  local acc, rej = base .. "/accepted", base .. "/rejected"
  local ok, err, code = self:_subscribe({ acc, rej }, timeout)
  if not ok then return nil, err, code end
  local r = table.pack(suspend(self.task, timeout, base, function(resolve)
    self.waiting = resolve
    -- The local service names the request it answers (moonwireRequestId); AWS IoT answers
    -- only the requester and sends no such field.
    local function theirs(body)
      return opts.request_id and type(body.moonwireRequestId) == "string" and body.moonwireRequestId ~= opts.request_id
    end
    self.handlers[acc] = function(ev)
      local body = json.decode(ev.payload)
      if type(body) ~= "table" then resolve(nil, "malformed answer on " .. ev.topic, "EPROTO") return end
      if theirs(body) or (opts.accept and not opts.accept(body)) then return end -- another device's answer
      resolve(body)
    end
    self.handlers[rej] = function(ev)
      local body = json.decode(ev.payload)
      if type(body) ~= "table" then resolve(nil, "malformed answer on " .. ev.topic, "EPROTO") return end
      if theirs(body) then return end
      resolve(nil, tostring(body.errorMessage or "rejected"), tostring(body.errorCode or "Rejected"),
              math.tointeger(body.statusCode))
    end
    local mid, perr, pcode = self.c:publish(base, payload, 1)
    if not mid then resolve(nil, perr, pcode) end
  end))
  self.handlers[acc], self.handlers[rej], self.waiting = nil, nil, nil
  return table.unpack(r, 1, r.n)
end

-- The connection options of a configuration-like table.
local function endpoint(identity)
  if type(identity) ~= "table" or type(identity.broker) ~= "table" or type(identity.tls) ~= "table" then
    error("an identity is a configuration table with broker and tls", 3)
  end
  local b, tls = identity.broker, identity.tls
  return {
    host = b.host, port = b.port or 8883, alpn = b.alpn, keepalive = b.keepalive or 60,
    client_id = identity.client_id or identity.thing,
    ca = tls.ca, cert = tls.cert, key = tls.key,
  }
end

-- prov.connect(identity [, {timeout = 20}]) -> connection | nil, message, code
-- Connects with the identity of a configuration table (thing/client_id, broker, tls). One
-- attempt: a refusal is an answer, not something to retry.
function M.connect(identity, opts)
  local task = running_task("connect")
  local ep = endpoint(identity)
  local timeout = seconds(opts, CONNECT_TIMEOUT)
  local self = setmetatable({ task = task, handlers = {}, subacks = {}, subscribed = {},
                              client_id = ep.client_id, host = ep.host, port = ep.port }, Conn)
  local c, err, code = connection.open(ep, function(ev) self:_event(ev) end)
  if not c then return nil, err, code end
  self.c = c
  task.connections[self] = true
  local ok, cerr, ccode = suspend(task, timeout, string.format("connect to %s:%d", ep.host, ep.port), function(resolve)
    self.on_connect = resolve
  end)
  self.on_connect = nil
  if not ok then
    c:close()
    self.c = nil
    task.connections[self] = nil
    return nil, cerr, ccode
  end
  return self
end

-- prov.disconnect(conn) -> true: DISCONNECT and close (a claim session ends before the new one).
function M.disconnect(conn)
  if not conn or not conn.c then return true end
  local task = conn.task
  if not conn.stopped then
    conn.c:stop()
    if not conn.stopped then
      suspend(task, 5, "disconnect", function(resolve) conn.on_stopped = resolve end)
      conn.on_stopped = nil
    end
  end
  conn.c:close()
  conn.c = nil
  task.connections[conn] = nil
  return true
end
