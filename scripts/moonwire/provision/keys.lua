--[[
moonwire.provision.keys: part of moonwire.provision, private to it (flows use
require "moonwire.provision"; this module's contents may change with any release).

The new key and its CSR: a key made in the chip, in a PKCS#11 token or in a file (never
where the current identity's key is), a key the service sent, and a CSR signed where the
key lives.

Adds to moonwire.provision: keygen, save_key, csr.
]]
local pki = require "moonwire.pki"
local se = require "moonwire.se"
local values = require "moonwire.provision.values"
local shared = require "moonwire.provision.shared"

local copy, shown, parse_slot = values.copy, values.shown, values.parse_slot
local M, tasks = shared.M, shared.tasks

-- The configuration may spell the key it uses differently (a file: prefix, either slot notation).
local function same_key(a, b)
  local function norm(r)
    local s = r:lower():gsub("^file:", "")
    local hex = s:match("^trustm:0x(%x+)$") or s:match("^0x(%x+):%^$")
    return hex and ("trustm:" .. tonumber(hex, 16)) or s
  end
  return norm(a) == norm(b)
end

-- prov.keygen{backend = "se"|"pkcs11"|"file", slot = 0xE0F1, uri = PKCS11_URI, path = FILE,
--             curve = "P-256", se = {sim|device}, pkcs11 = {module}, in_use = {refs}}
-- -> key {backend, ref, slot, path, uri, curve, public_key, se, pkcs11}
function M.keygen(opts)
  opts = opts or {}
  local backend = opts.backend or "se"
  local curve = opts.curve or "P-256"
  local key = { backend = backend, curve = curve }
  if backend == "se" then
    local slot = parse_slot(opts.slot or 0xE0F1, 0xE0F1, 0xE0F3, "the key slot")
    key.slot, key.ref = slot, string.format("trustm:0x%04X", slot)
    key.se = copy(opts.se)
  elseif backend == "pkcs11" then
    if type(opts.uri) ~= "string" or not opts.uri:match("^pkcs11:") then
      error("keygen: backend 'pkcs11' needs uri, a pkcs11: URI naming the new key (object= or id=)", 2)
    end
    key.uri, key.ref, key.pkcs11 = opts.uri, opts.uri, copy(opts.pkcs11)
  elseif backend == "file" then
    if type(opts.path) ~= "string" then error("keygen: backend 'file' needs path", 2) end
    key.path, key.ref = opts.path, opts.path
  else
    error("keygen: backend must be 'se', 'pkcs11' or 'file', got " .. tostring(backend), 2)
  end
  for _, used in ipairs(opts.in_use or {}) do
    if same_key(used, key.ref) then
      return nil, shown(key.ref) .. " holds the key of the current identity; a new key goes elsewhere "
                  .. "(another slot, object or file) so the old identity keeps working until commit", "EBUSY"
    end
  end
  local pub, err, code
  if backend == "se" then
    -- The runtime's chip: the one named here, else the configuration's (moonwire.se uses it).
    local ok, oerr, ocode = pki.se_open(opts.se)
    if not ok then return nil, oerr, ocode end
    pub, err, code = se.gen_key(key.slot, { curve = curve, usage = { "sign", "auth" } })
  elseif backend == "pkcs11" then
    -- Made inside the token (sensitive, not extractable); refused if the object exists.
    pub, err, code = pki.p11_keygen(key.uri, { curve = curve })
  else
    pub, err, code = pki.keygen_file(key.path, { curve = curve })
    local t = coroutine.running() and tasks[coroutine.running()]
    if pub and t then t.cleanup[key.path] = true end
  end
  if not pub then return nil, err, code end
  key.public_key = pub
  return key
end

-- prov.save_key(pem, path) -> key: a private key the service made (CreateKeysAndCertificate).
function M.save_key(pem, path)
  local ok, err, code = pki.write_file(path, pem, { mode = 384 --[[0600]], exclusive = true })
  if not ok then return nil, err, code end
  local t = coroutine.running() and tasks[coroutine.running()]
  if t then t.cleanup[path] = true end
  local pub, perr, pcode = pki.public_key(path)
  if not pub then return nil, perr, pcode end
  return { backend = "file", ref = path, path = path, public_key = pub }
end

-- prov.csr(key, {cn = ..., o, ou, c, st, l, serial, dns}) -> PEM (signed by the key where it lives)
function M.csr(key, subject)
  if type(key) ~= "table" or not key.ref then error("csr: key must come from prov.keygen", 2) end
  if key.backend == "se" then return se.csr(key.slot, subject) end
  return pki.csr(key.ref, subject)
end
