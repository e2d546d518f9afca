--[[
moonwire.shadow.object: part of moonwire.shadow, private to it (apps use require "moonwire.shadow";
this module's contents may change with any release).

The shadow object shadow.open() returns: its fields (the views, version, exists, synced, ...)
and its methods (on_delta, on_error, update, get, delete, flush, document, close). Misuse
raises at the caller's line.
]]
local timer = require "moonwire.timer"
local json = require "moonwire.json"
local calls = require "moonwire.shadow.calls"
local requests = require "moonwire.shadow.requests"
local flush = require("moonwire.shadow.batches").flush
local save_cache = require("moonwire.shadow.document").save_cache
local view = require "moonwire.shadow.views"
local shared = require "moonwire.shadow.shared"

local NULL = json.null
local entry, call_user = calls.entry, calls.call_user
local describe, complete, ready, new_request, await =
  requests.describe, requests.complete, requests.ready, requests.new_request, requests.await
local VIEW, REPORTED, new_view, reported_set = view.VIEW, view.REPORTED, view.new_view, view.reported_set
local priv, views, open_list, label, M = shared.priv, shared.views, shared.open_list, shared.label, shared.M

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

return { SH = SH }
