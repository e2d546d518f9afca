--[[
moonwire.shadow.views: part of moonwire.shadow, private to it (apps use require "moonwire.shadow";
this module's contents may change with any release).

The live views of the document. sh.desired, sh.delta and sh.state are read-only userdata
resolved from the current document on every access, so a view stays live across updates;
sh.reported reads back the newest value (staged, then in flight, then the document) and
stages what is assigned to it, checked at the caller's line.
]]
local json = require "moonwire.json"
local core = require "moonwire.shadow.core"
local snapshot = require("moonwire.shadow.document").snapshot
local schedule_flush = require("moonwire.shadow.batches").schedule_flush
local tables = require "moonwire.shadow.tables"
local shared = require "moonwire.shadow.shared"

local NULL = json.null
local is_object, merge_into = tables.is_object, tables.merge_into
local views, M = shared.views, shared.M

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

return { VIEW = VIEW, REPORTED = REPORTED, new_view = new_view, view_target = view_target,
  reported_set = reported_set }
