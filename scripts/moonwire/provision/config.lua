--[[
moonwire.provision.config: part of moonwire.provision, private to it (flows use
require "moonwire.provision"; this module's contents may change with any release).

Moonwire configuration files as data: reading one in the runtime's small environment,
writing one back as Lua, and what a new identity keeps of the current one.

Adds to moonwire.provision: read_config, serialize, device_base, keys_in_use.
]]
local json = require "moonwire.json"
local values = require "moonwire.provision.values"
local M = require("moonwire.provision.shared").M

local copy, file_exists, read_file = values.copy, values.file_exists, values.read_file

-- Reads a Moonwire configuration file as data, in the same small environment the runtime
-- gives it (string, math, table, os.getenv). -> table | nil, message
function M.read_config(path)
  local text, err = read_file(path)
  if not text then return nil, err end
  local env = { string = string, math = math, table = table, utf8 = utf8, pairs = pairs, ipairs = ipairs,
                tostring = tostring, tonumber = tonumber, type = type, select = select, assert = assert,
                error = error, os = { getenv = os.getenv } }
  local chunk, lerr = load(text, "@" .. path, "t", env)
  if not chunk then return nil, lerr end
  local ok, cfg = pcall(chunk)
  if not ok then return nil, tostring(cfg) end
  if type(cfg) ~= "table" then return nil, path .. ": does not return a table" end
  return cfg
end

local KEY_ORDER = { "thing", "client_id", "broker", "tls", "se", "pkcs11", "will", "reconnect", "limits", "log",
                    "app" }

local function is_ident(k) return type(k) == "string" and k:match("^[%a_][%w_]*$") end

local function serialize(v, indent)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    return string.format("%.17g", v)
  end
  if t == "boolean" then return tostring(v) end
  if t ~= "table" then error("a configuration cannot hold a " .. t, 0) end
  if json.is_array(v) or (#v > 0 and next(v, #v) == nil) then
    local parts = {}
    for i = 1, #v do parts[i] = serialize(v[i], indent .. "  ") end
    return "{ " .. table.concat(parts, ", ") .. " }"
  end
  local keys, seen = {}, {}
  if indent == "" then
    for _, k in ipairs(KEY_ORDER) do if v[k] ~= nil then keys[#keys + 1] = k; seen[k] = true end end
  end
  local rest = {}
  for k in pairs(v) do if not seen[k] then rest[#rest + 1] = k end end
  table.sort(rest, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(rest) do keys[#keys + 1] = k end
  if #keys == 0 then return "{}" end
  local inner = indent .. "  "
  local lines = {}
  for _, k in ipairs(keys) do
    local key = is_ident(k) and k or "[" .. serialize(k, inner) .. "]"
    lines[#lines + 1] = inner .. key .. " = " .. serialize(v[k], inner) .. ","
  end
  return "{\n" .. table.concat(lines, "\n") .. "\n" .. indent .. "}"
end
M.serialize = serialize

-- The parts of a configuration a new identity keeps: where the broker is and how to reach it.
function M.device_base(cfg)
  local base = {}
  for _, k in ipairs({ "broker", "reconnect", "limits", "log", "pkcs11" }) do base[k] = copy(cfg[k]) end
  if cfg.tls then base.tls = { ca = cfg.tls.ca } end
  return base
end

-- The key references a configuration file uses now (so a new key never replaces them).
function M.keys_in_use(path)
  local used = {}
  if path and file_exists(path) then
    local cfg = M.read_config(path)
    if cfg and cfg.tls and cfg.tls.key then used[#used + 1] = cfg.tls.key end
  end
  return used
end

return { serialize = serialize }
