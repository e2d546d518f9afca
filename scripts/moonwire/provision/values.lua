--[[
moonwire.provision.values: part of moonwire.provision, private to it (flows use
require "moonwire.provision"; this module's contents may change with any release).

Small helpers on the values steps pass around: deep copies, NAME=VALUE lists, key
references as they may be shown (no PIN), ids, files, and Trust M slot numbers.

Adds to moonwire.provision: copy, parse_pairs, dirname, shown, cert_slot_for.
]]
local pki = require "moonwire.pki"
local M = require("moonwire.provision.shared").M

-- A deep copy; read-only views (moonwire.device.config) become plain tables.
local function copy(v, seen)
  local t = type(v)
  if t ~= "table" and not (t == "userdata" and pcall(pairs, v)) then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local out = {}
  seen[v] = out
  for k, x in pairs(v) do out[copy(k, seen)] = copy(x, seen) end
  return out
end
M.copy = copy
-- "Location=lab,Fleet=blue" -> {Location = "lab", Fleet = "blue"} (for --param values).
function M.parse_pairs(text)
  local out = {}
  if text == nil or text == "" then return out end
  for item in tostring(text):gmatch("[^,]+") do
    local k, v = item:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
    if not k or k == "" then error("expected NAME=VALUE[,NAME=VALUE...], got '" .. item .. "'", 2) end
    out[k] = v
  end
  return out
end

M.dirname = function(path) return path:match("^(.*)/[^/]*$") or "." end

-- A key reference as it may be shown: a PKCS#11 URI's PIN never goes to a log or a file we write.
local function shown(ref)
  return (tostring(ref):gsub("pin%-value=[^&;]*", "pin-value=***"))
end
M.shown = shown

local function request_id(text) return pki.sha256(text):sub(1, 16) end

local function short_id(id) return type(id) == "string" and id:sub(1, 12) .. "…" or tostring(id) end

local function rand_hex(n)
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(n) or tostring(os.time()) .. tostring({})
  if f then f:close() end
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end)):sub(1, 2 * n)
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

-- Key slots and the certificate object that goes with each (E0F1 -> E0E1, ...).
local function parse_slot(v, lo, hi, what)
  local n = type(v) == "number" and v or (type(v) == "string" and v:match("^0[xX](%x+)$") and tonumber(v:sub(3), 16))
  if not n or n < lo or n > hi then
    error(string.format("%s must be 0x%04X..0x%04X, got %s", what, lo, hi, tostring(v)), 3)
  end
  return n
end

function M.cert_slot_for(key_slot)
  local n = parse_slot(key_slot, 0xE0F1, 0xE0F3, "a key slot")
  return n - 0x10
end

return {
  copy = copy, shown = shown, request_id = request_id, short_id = short_id, rand_hex = rand_hex,
  file_exists = file_exists, read_file = read_file, parse_slot = parse_slot,
}
