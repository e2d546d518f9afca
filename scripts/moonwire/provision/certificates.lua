--[[
moonwire.provision.certificates: part of moonwire.provision, private to it (flows use
require "moonwire.provision"; this module's contents may change with any release).

Getting a certificate for the new key: AWS IoT Fleet Provisioning's MQTT API (a certificate
from a CSR or with a key, RegisterThing), Moonwire's JITP-style registration, or signing
with an own CA.

Adds to moonwire.provision: create_certificate_from_csr, create_keys_and_certificate, register_thing,
register_certificate, sign_csr.
]]
local pki = require "moonwire.pki"
local json = require "moonwire.json"
local values = require "moonwire.provision.values"
local running_task = require("moonwire.provision.runner").running_task
local M = require("moonwire.provision.shared").M

local copy, request_id = values.copy, values.request_id

local function need(body, fields, what)
  for _, f in ipairs(fields) do
    if type(body[f]) ~= "string" or body[f] == "" then
      return nil, what .. " answer lacks " .. f, "EPROTO"
    end
  end
  return true
end

-- prov.create_certificate_from_csr(conn, csr [, {timeout}]) -> {certificate_id, certificate_pem, ownership_token}
function M.create_certificate_from_csr(conn, csr, opts)
  running_task("create_certificate_from_csr")
  local info, err, code = pki.csr_info(csr)
  if not info then return nil, "the CSR does not verify: " .. tostring(err), code end
  local o = copy(opts or {})
  o.request_id = request_id(csr)
  -- Answers reach every client subscribed to the topic on a plain broker: ours is also the
  -- one whose certificate carries our public key.
  o.accept = function(body)
    local ci = type(body.certificatePem) == "string" and pki.cert_info(body.certificatePem)
    return ci and ci.public_key == info.public_key
  end
  local body, msg, ecode, status = conn:request("$aws/certificates/create-from-csr/json",
    json.encode({ certificateSigningRequest = csr }), o)
  if not body then return nil, msg, ecode, status end
  local ok, nerr, ncode = need(body, { "certificateId", "certificatePem", "certificateOwnershipToken" },
                               "CreateCertificateFromCsr")
  if not ok then return nil, nerr, ncode end
  return { certificate_id = body.certificateId, certificate_pem = body.certificatePem,
           ownership_token = body.certificateOwnershipToken }
end

-- prov.create_keys_and_certificate(conn [, {timeout}]) -> {certificate_id, certificate_pem, private_key, ownership_token}
-- The service makes the key and sends it over MQTT: prefer create_certificate_from_csr.
function M.create_keys_and_certificate(conn, opts)
  running_task("create_keys_and_certificate")
  local body, msg, code, status = conn:request("$aws/certificates/create/json", "{}", opts)
  if not body then return nil, msg, code, status end
  local ok, nerr, ncode = need(body, { "certificateId", "certificatePem", "privateKey", "certificateOwnershipToken" },
                               "CreateKeysAndCertificate")
  if not ok then return nil, nerr, ncode end
  return { certificate_id = body.certificateId, certificate_pem = body.certificatePem, private_key = body.privateKey,
           ownership_token = body.certificateOwnershipToken }
end

-- prov.register_thing(conn, template, {token = ..., parameters = {...}, expect_thing = name, timeout})
-- -> {thing_name, device_configuration}
function M.register_thing(conn, template, opts)
  running_task("register_thing")
  opts = opts or {}
  if type(template) ~= "string" or not template:match("^[%w_%-]+$") or #template > 36 then
    error("register_thing: a template name is 1..36 of 0-9 A-Z a-z _ -", 2)
  end
  if type(opts.token) ~= "string" then error("register_thing: token (the certificate ownership token) is required", 2) end
  local params = {}
  for k, v in pairs(opts.parameters or {}) do
    if type(k) ~= "string" then error("register_thing: parameter names are strings", 2) end
    params[k] = tostring(v)
  end
  local o = copy(opts)
  o.request_id = request_id(opts.token)
  if opts.expect_thing then
    o.accept = function(body) return body.thingName == opts.expect_thing end
  end
  local body, msg, code, status = conn:request("$aws/provisioning-templates/" .. template .. "/provision/json",
    json.encode({ certificateOwnershipToken = opts.token, parameters = json.object(params) }), o)
  if not body then return nil, msg, code, status end
  if type(body.thingName) ~= "string" or body.thingName == "" then
    return nil, "RegisterThing answer lacks thingName", "EPROTO"
  end
  local dc = type(body.deviceConfiguration) == "table" and body.deviceConfiguration or {}
  return { thing_name = body.thingName, device_configuration = dc }
end

-- prov.register_certificate(conn, cert [, {timeout}]) -> {thing_name, certificate_id, device_configuration}
-- JITP-style: the service registers a certificate its CA issued, with its JITP template
-- (Moonwire's moonwire/certificates/register/json; AWS IoT does this on first connect).
function M.register_certificate(conn, cert, opts)
  running_task("register_certificate")
  local pem = type(cert) == "table" and cert.certificate_pem or cert
  local info, err, code = pki.cert_info(pem)
  if not info then return nil, err, code end
  local o = copy(opts or {})
  o.request_id = request_id(pem)
  o.accept = function(body) return body.certificateId == info.id end
  local body, msg, ecode, status = conn:request("moonwire/certificates/register/json",
    json.encode({ certificatePem = pem }), o)
  if not body then return nil, msg, ecode, status end
  local dc = type(body.deviceConfiguration) == "table" and body.deviceConfiguration or {}
  return { thing_name = body.thingName, certificate_id = body.certificateId, device_configuration = dc }
end

-- prov.sign_csr(csr, {ca = "certs/dev", days = 825, cn = nil}) -> {certificate_id, certificate_pem, not_after}
-- Own CA: the CSR is signed here, with the signing CA's key (a factory station, or development).
function M.sign_csr(csr, opts)
  opts = opts or {}
  if type(opts.ca) ~= "string" then error("sign_csr: ca (a certs/mkpki directory or a STEM) is required", 2) end
  local r, err, code = pki.issue(csr, { ca = opts.ca, days = opts.days, cn = opts.cn })
  if not r then return nil, err, code end
  return { certificate_id = r.id, certificate_pem = r.pem, not_after = r.not_after }
end
