--[[
moonwire.shadow.tables: part of moonwire.shadow, private to it (apps use require "moonwire.shadow";
this module's contents may change with any release).

Plain-table helpers with JSON meaning (copies that keep the array/object marker, the
service's merge, deep equality), for documents, deltas and staged reported values.
]]
local json = require "moonwire.json"

local NULL = json.null
local is_array = json.is_array

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

return { deep_copy = deep_copy, is_object = is_object, merge_into = merge_into, news = news, holds = holds }
