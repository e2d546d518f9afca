--[[
moonwire.provision.report: part of moonwire.provision, private to it (flows use
require "moonwire.provision"; this module's contents may change with any release).

How steps show: the progress line of a finished step, and for dry runs the placeholder a
step returns and the description of the arguments it would get.
]]
local values = require "moonwire.provision.values"

local shown, short_id = values.shown, values.short_id

-- One line saying what a step did, for the progress log.
local function summary(name, r, args)
  if name == "keygen" then return string.format("new %s key in %s", r.curve or "", shown(r.ref)) end
  if name == "save_key" then return "key saved in " .. r.path end
  if name == "csr" then return "CSR for CN=" .. tostring((args[2] or {}).cn) .. ", signed by " .. shown((args[1] or {}).ref) end
  if name == "connect" then return string.format("connected to %s:%d as %s", r.host, r.port, r.client_id) end
  if name == "disconnect" then return "disconnected" end
  if name == "create_certificate_from_csr" or name == "create_keys_and_certificate" then
    return "certificate " .. short_id(r.certificate_id) .. " issued (pending activation)"
  end
  if name == "register_thing" or name == "register_certificate" then return "registered as thing " .. tostring(r.thing_name) end
  if name == "sign_csr" then return "certificate " .. short_id(r.certificate_id) .. " signed" end
  if name == "store_certificate" then
    return "certificate in " .. r.cert_file .. (r.slot and string.format(" and chip object 0x%04X", r.slot) or "")
  end
  if name == "write_config" then return "configuration staged in " .. r.staged_path end
  if name == "verify" then
    return "connected as " .. tostring(r.thing) .. (r.shadow == "found" and (" and read its shadow (version " .. tostring(r.version) .. ")")
      or r.shadow == "none" and " and may read its shadow (none yet)" or "")
  end
  if name == "commit" then return r.path .. " now holds the new identity" .. (r.previous and (" (previous: " .. r.previous .. ")") or "") end
  return "ok"
end

-- Dry runs: step results are placeholders that say where a value would come from.
local Placeholder = {}
local function placeholder(desc) return setmetatable({ [Placeholder] = desc }, Placeholder) end
Placeholder.__index = function(p, k) return placeholder(p[Placeholder] .. "." .. tostring(k)) end
Placeholder.__tostring = function(p) return "<" .. p[Placeholder] .. ">" end
Placeholder.__concat = function(a, b) return tostring(a) .. tostring(b) end

local function describe(v, f, depth)
  depth = depth or 0
  if type(v) == "table" and getmetatable(v) == Placeholder then return tostring(v) end
  if f and v == f.config then return "<configuration " .. tostring(f.config_path) .. ">" end
  if type(v) == "table" and type(v.broker) == "table" and type(v.tls) == "table" then
    return string.format("<identity %s, %s, at %s:%s>", tostring(v.client_id or v.thing), tostring(v.tls.cert),
                         tostring(v.broker.host), tostring(v.broker.port or 8883))
  end
  if type(v) == "string" then
    if v:find("-----BEGIN", 1, true) then return "<PEM>" end
    v = v:gsub("pin%-value=[^&;]*", "pin-value=***")
    if #v > 60 then v = v:sub(1, 57) .. "..." end
    return string.format("%q", v)
  end
  if type(v) == "number" and math.type(v) == "integer" and v >= 0xE0E0 and v <= 0xE0F3 then
    return string.format("0x%04X", v)
  end
  if type(v) ~= "table" then return tostring(v) end
  if depth >= 2 then return "{...}" end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. "=" .. describe(v[k], f, depth + 1) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

return { summary = summary, placeholder = placeholder, describe = describe }
