--[[
moonwire.provision: provisioning as small steps a flow strings together.

A flow runs in a coroutine (prov.run); a step that talks to the network suspends the flow
until its answer arrives or its timeout passes, so a flow reads as plain sequential code.
Every step returns its result, or nil, message, code (code is AWS IoT's errorCode for a
rejected request, else an E-name such as "ETIMEDOUT"). Inside a flow the same steps are
reached through the flow context f, where a failure stops the flow and is reported as
"step <name> failed: <code>: <message>".

Nothing a device relies on changes before commit: new keys go to a slot or file the current
identity does not use, certificates and the configuration are written under new names, and
commit switches over with one atomic rename, after verify has connected with the new identity.

docs/provisioning.md describes the steps, the shipped flows and the local service.
]]

local pki = require "moonwire.pki"
local se = require "moonwire.se"
local connection = require "moonwire.connection"
local json = require "moonwire.json"
local timer = require "moonwire.timer"
local log = require "moonwire.log"

local M = {}

-- Progress lines are tagged "provision:" like the runtime's own: called through pcall, log
-- finds no Lua caller to name, so the line carries no provision.lua:LINE of ours.
local function say(level, ...)
  pcall(log[level], "provision:", ...)
end

local DEFAULT_TIMEOUT = 10  -- seconds, for one request/answer
local CONNECT_TIMEOUT = 20

------------------------------------------------------------------------------ errors

local StepError = {}
StepError.__index = StepError
StepError.__tostring = function(e)
  local s = "step " .. tostring(e.step) .. " failed: "
  if e.code then s = s .. tostring(e.code) .. ": " end
  return s .. tostring(e.message)
end
M.StepError = StepError

------------------------------------------------------------------------------ tasks

local tasks = setmetatable({}, { __mode = "k" })  -- coroutine -> task

local function running_task(step)
  local co, main = coroutine.running()
  local t = (not main) and tasks[co]
  if not t then
    error(step .. " talks to the network and must run inside a flow: prov.run(function(f) ... end)", 3)
  end
  return t
end

local function seconds(opts, default)
  local t = opts and opts.timeout or default
  if type(t) ~= "number" or t <= 0 then error("timeout must be a positive number of seconds", 3) end
  return t
end

local resume

-- Suspends the flow until resolve(...) is called (by an event) or timeout_s passes.
-- arm(resolve) starts whatever will answer; it may resolve at once.
local function suspend(task, timeout_s, what, arm)
  local result, done, tm
  local function resolve(...)
    if done then return end
    done = true
    if tm then tm:stop() end
    if task.waiting == resolve then task.waiting = nil end
    if coroutine.status(task.co) == "running" then
      result = table.pack(...)
    else
      resume(task, ...)
    end
  end
  task.waiting = resolve
  arm(resolve)
  if done then return table.unpack(result, 1, result.n) end
  tm = timer.after(math.floor(timeout_s * 1000 + 0.5), function()
    resolve(nil, string.format("%s: no answer within %g s", what, timeout_s), "ETIMEDOUT")
  end)
  return coroutine.yield()
end

local function finish(task, ok, res)
  if task.finished then return end
  task.finished = true
  for conn in pairs(task.connections) do
    if conn.c then conn.c:close(); conn.c = nil end
  end
  if ok then
    task.ok, task.result = true, res
  else
    task.ok, task.error = false, res
    -- What was made for the new identity and never committed goes away again; keys in a
    -- chip slot stay (a slot cannot be un-generated) but nothing refers to them.
    for path in pairs(task.cleanup) do
      os.remove(path)
    end
  end
  task.cleanup = {}
  if not ok and not task.on_done then say("warn", "flow " .. tostring(task.name) .. ": " .. tostring(res)) end
  if task.on_done then
    local okcb, err = pcall(task.on_done, task)
    if not okcb then say("error", "flow", task.name, "on_done failed:", err) end
  end
end

resume = function(task, ...)
  local ok, err = coroutine.resume(task.co, ...)
  if not ok then finish(task, false, setmetatable({ step = task.step or "flow", message = tostring(err), code = "ELUA" }, StepError)) end
end

------------------------------------------------------------------------------ values

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

------------------------------------------------------------------------------ configurations

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

local function same_key(a, b)
  local function norm(r)
    local s = r:lower():gsub("^file:", "")
    local hex = s:match("^trustm:0x(%x+)$") or s:match("^0x(%x+):%^$")
    return hex and ("trustm:" .. tonumber(hex, 16)) or s
  end
  return norm(a) == norm(b)
end

------------------------------------------------------------------------------ connections

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

------------------------------------------------------------------------------ keys and CSRs

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

------------------------------------------------------------------------------ AWS IoT Fleet Provisioning

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

------------------------------------------------------------------------------ storing, verifying, switching

-- prov.store_certificate(cert, {key = key, dir = DIR, name = NAME, slot = 0xE0E1})
-- -> {cert_file, slot, certificate_id, not_after}
-- The certificate goes to a file of its own (never over another) and, with slot, also into
-- the chip's certificate object. It must be for the key.
function M.store_certificate(cert, opts)
  opts = opts or {}
  local pem = type(cert) == "table" and cert.certificate_pem or cert
  if type(pem) ~= "string" then error("store_certificate: cert must be a certificate (PEM or a step's result)", 2) end
  if type(opts.dir) ~= "string" then error("store_certificate: dir is required", 2) end
  local info, err, code = pki.cert_info(pem)
  if not info then return nil, err, code end
  if opts.key then
    local same, kerr, kcode = pki.key_matches(opts.key.ref, pem)
    if same == nil then return nil, kerr, kcode end
    if not same then return nil, "the certificate is not for the new key (" .. shown(opts.key.ref) .. ")", "EPROTO" end
  end
  local name = (opts.name or info.cn or "device"):gsub("[^%w_:%-%.]", "_")
  local path = string.format("%s/%s-%s.crt", opts.dir, name, info.id:sub(1, 12))
  local ok, werr, wcode = pki.write_file(path, pem, { mode = 420 --[[0644]], exclusive = true })
  if not ok then return nil, werr, wcode end
  local t = coroutine.running() and tasks[coroutine.running()]
  if t then t.cleanup[path] = true end
  local slot
  if opts.slot then
    slot = parse_slot(opts.slot, 0xE0E1, 0xE0E3, "the certificate slot")
    local sok, serr, scode = se.store_cert(slot, pem)
    if not sok then return nil, serr, scode end
  end
  return { cert_file = path, slot = slot, certificate_id = info.id, not_after = info.not_after, cn = info.cn }
end

-- prov.write_config(path, {thing = ..., key = key, stored = stored, base = cfg, ca = FILE,
--                          device_configuration = {...}, provisioning = {...}})
-- -> staged {path, staged_path, config}: the new configuration, written beside path.
function M.write_config(path, opts)
  opts = opts or {}
  if type(path) ~= "string" then error("write_config: the configuration path is required", 2) end
  if type(opts.thing) ~= "string" then error("write_config: thing is required", 2) end
  if type(opts.key) ~= "table" or type(opts.stored) ~= "table" then
    error("write_config: key (from keygen) and stored (from store_certificate) are required", 2)
  end
  local cfg = copy(opts.base or {})
  cfg.thing = opts.thing
  cfg.client_id = nil  -- AWS IoT policies want client id = thing name, the runtime's default
  cfg.tls = cfg.tls or {}
  cfg.tls.cert = opts.stored.cert_file
  cfg.tls.key = opts.key.ref
  if opts.ca then cfg.tls.ca = opts.ca end
  if not cfg.tls.ca then error("write_config: no tls.ca (give ca, or a base with tls.ca)", 2) end
  if opts.key.se then cfg.se = copy(opts.key.se) end
  if opts.key.pkcs11 then cfg.pkcs11 = copy(opts.key.pkcs11) end
  if opts.key.backend == "se" and not cfg.se then
    return nil, "the key is in the chip but no se section is known for the configuration (give keygen an se table)",
           "EINVAL"
  end
  cfg.app = cfg.app or {}
  if opts.device_configuration then cfg.app.device_configuration = copy(opts.device_configuration) end
  local p = copy(opts.provisioning or {})
  p.certificate_id = opts.stored.certificate_id
  p.provisioned_at = os.date("!%Y-%m-%dT%H:%M:%SZ")
  cfg.app.provisioning = p
  local header = string.format("-- Written by moonwire provision%s on %s.\n-- Certificate %s, key %s.\n",
    p.flow and (" (flow " .. p.flow .. ")") or "", p.provisioned_at, opts.stored.certificate_id,
    shown(opts.key.ref))
  local ok, text = pcall(serialize, cfg, "")
  if not ok then return nil, "write_config: " .. tostring(text), "EINVAL" end
  text = header .. "return " .. text .. "\n"
  local staged_path = path .. ".new"
  local wok, err, code = pki.write_file(staged_path, text, { mode = 420 })
  if not wok then return nil, err, code end
  local t = coroutine.running() and tasks[coroutine.running()]
  if t then t.cleanup[staged_path] = true end
  return { path = path, staged_path = staged_path, config = cfg }
end

-- Shadow rejections are {code, message} (not errorCode/errorMessage); a 404 means no shadow yet.
local function shadow_request(conn, thing, timeout)
  local base = "$aws/things/" .. thing .. "/shadow/get"
  local token = rand_hex(8)
  local acc, rej = base .. "/accepted", base .. "/rejected"
  local ok, err, code = conn:_subscribe({ acc, rej }, timeout)
  if not ok then return nil, err, code end
  local r = table.pack(suspend(conn.task, timeout, "reading the shadow of " .. thing, function(resolve)
    conn.waiting = resolve
    conn.handlers[acc] = function(ev)
      local b = json.decode(ev.payload)
      if type(b) == "table" and (b.clientToken == nil or b.clientToken == token) then resolve("found", b.version) end
    end
    conn.handlers[rej] = function(ev)
      local b = json.decode(ev.payload)
      if type(b) ~= "table" or (b.clientToken ~= nil and b.clientToken ~= token) then return end
      if b.code == 404 then resolve("none") return end
      resolve(nil, tostring(b.message or "rejected"), tostring(b.code or "Rejected"))
    end
    local mid, perr, pcode = conn.c:publish(base, json.encode({ clientToken = token }), 1)
    if not mid then resolve(nil, perr, pcode) end
  end))
  conn.handlers[acc], conn.handlers[rej], conn.waiting = nil, nil, nil
  return table.unpack(r, 1, r.n)
end

-- prov.verify(staged [, {shadow = true, timeout = 10, client_id = thing, attempts = 1, retry_delay = 2}]) -> {thing, shadow = "found"|"none"|nil, version}
-- Connects with the new identity and reads its shadow: the broker accepts the certificate
-- and the key, and the thing's policy lets it at its own topics.
function M.verify(staged, opts)
  running_task("verify")
  opts = opts or {}
  local cfg = staged.config or staged
  if opts.client_id then
    cfg = copy(cfg)
    cfg.client_id = opts.client_id
  end
  local thing = cfg.thing
  local task = running_task("verify")
  local attempts = math.tointeger(opts.attempts or 1)
  if not attempts or attempts < 1 then error("verify: attempts must be a positive integer", 2) end
  local conn, err, code
  for i = 1, attempts do
    conn, err, code = M.connect(cfg, { timeout = opts.connect_timeout or CONNECT_TIMEOUT })
    if conn or i == attempts or code == "ECANCELED" then break end
    -- AWS IoT JITP drops a new certificate's first connection while it registers it.
    say("info", string.format("verify: connecting failed (%s); again in %g s", tostring(err), opts.retry_delay or 2))
    suspend(task, (opts.retry_delay or 2) + 1, "waiting to retry", function(resolve)
      timer.after(math.floor((opts.retry_delay or 2) * 1000), function() resolve(true) end)
    end)
    if task.cancelled then return nil, task.cancelled, "ECANCELED" end
  end
  if not conn then return nil, "the new identity cannot connect: " .. tostring(err), code end
  local res = { thing = thing }
  if opts.shadow ~= false then
    local state, version_or_err, scode = shadow_request(conn, thing, seconds(opts, DEFAULT_TIMEOUT))
    if not state then
      M.disconnect(conn)
      return nil, "the new identity cannot read its shadow: " .. tostring(version_or_err), scode
    end
    res.shadow, res.version = state, version_or_err
  end
  M.disconnect(conn)
  return res
end

-- prov.commit(staged) -> {path, previous}: the switch-over. The old configuration is kept as
-- PATH.previous; then the staged one replaces PATH in one atomic rename.
function M.commit(staged)
  if type(staged) ~= "table" or not staged.staged_path then error("commit: staged must come from write_config", 2) end
  local previous
  if file_exists(staged.path) then
    local old = read_file(staged.path)
    previous = staged.path .. ".previous"
    local ok, err, code = pki.write_file(previous, old, { mode = 420 })
    if not ok then return nil, err, code end
  end
  local ok, err, code = pki.rename(staged.staged_path, staged.path)
  if not ok then return nil, err, code end
  local t = coroutine.running() and tasks[coroutine.running()]
  if t then
    t.cleanup = {} -- everything made for the new identity is in use now
    t.committed = true
  end
  return { path = staged.path, previous = previous }
end

------------------------------------------------------------------------------ flows

M.STEPS = { "keygen", "save_key", "csr", "connect", "disconnect", "create_certificate_from_csr",
            "create_keys_and_certificate", "register_thing", "register_certificate", "sign_csr",
            "store_certificate", "write_config", "verify", "commit" }

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

local function make_context(task, flow, params, opts)
  local f = { config = opts.config, config_path = opts.config_path, params = params, dry_run = opts.dry_run,
              name = flow.name, task = task }
  task.n = 0
  -- f.fail(message [, code]): stops the flow like a failed step (the step is the last one run).
  f.fail = function(...)
    local args = table.pack(...)
    if args[1] == f then table.remove(args, 1) end
    error(setmetatable({ step = task.step or "flow", n = task.n, message = tostring(args[1]), code = args[2] },
                       StepError), 0)
  end
  for _, name in ipairs(M.STEPS) do
    f[name] = function(...)
      local args = table.pack(...)
      if args[1] == f then table.remove(args, 1); args.n = args.n - 1 end
      task.n = task.n + 1
      task.step = name
      if task.dry_run then
        local shown = {}
        for i = 1, args.n do shown[i] = describe(args[i], f) end
        task.out(string.format("  %2d. %-28s %s", task.n, name, table.concat(shown, "  ")))
        return placeholder(string.format("step %d %s", task.n, name))
      end
      say("info", string.format("step %d %s ...", task.n, name))
      local r, msg, code, status = M[name](table.unpack(args, 1, args.n))
      if r == nil then
        error(setmetatable({ step = name, n = task.n, message = msg, code = code, status = status }, StepError), 0)
      end
      say("info", string.format("step %d %s: %s", task.n, name, summary(name, r, args)))
      return r
    end
  end
  return f
end

-- Checks params against the flow's declarations and fills in defaults. -> table | nil, message
local function check_params(flow, given)
  local spec = flow.params or {}
  local out = {}
  for k, v in pairs(given or {}) do
    if not spec[k] and not flow.any_params then
      local known = {}
      for name in pairs(spec) do known[#known + 1] = name end
      table.sort(known)
      return nil, string.format("flow %s has no parameter '%s' (it has: %s)", flow.name, k, table.concat(known, ", "))
    end
    out[k] = v
  end
  local missing = {}
  for k, s in pairs(spec) do
    if out[k] == nil then out[k] = s.default end
    if out[k] == nil and s.required then missing[#missing + 1] = k end
  end
  table.sort(missing)
  if #missing > 0 then
    return nil, string.format("flow %s needs parameter(s): %s", flow.name, table.concat(missing, ", "))
  end
  return out
end

-- prov.flows() -> names of the flows shipped in the binary (scripts/provision/*.lua)
function M.flows()
  local names = {}
  for mod in pairs(package.preload) do
    local n = mod:match("^provision%.(.+)$")
    if n then names[#names + 1] = n end
  end
  table.sort(names)
  return names
end

-- prov.load(name_or_path) -> flow | nil, message
function M.load(what)
  local flow
  if type(what) == "table" then
    flow = what
  elseif type(what) == "function" then
    flow = { name = "inline", run = what }
  elseif type(what) == "string" and file_exists(what) then
    local chunk, err = loadfile(what, "t")
    if not chunk then return nil, err end
    local ok, r = pcall(chunk)
    if not ok then return nil, tostring(r) end
    flow = r
    if type(flow) == "table" and not flow.name then flow.name = what:match("([^/]+)%.lua$") or what end
  elseif type(what) == "string" and package.preload["provision." .. what] then
    flow = require("provision." .. what)
  else
    return nil, string.format("no flow '%s': not a file, and not a shipped flow (%s)", tostring(what),
                              table.concat(M.flows(), ", "))
  end
  if type(flow) ~= "table" or type(flow.run) ~= "function" then
    return nil, tostring(what) .. ": a flow returns a table with a run(f, params) function"
  end
  flow.name = flow.name or "flow"
  return flow
end

-- prov.run(flow, params [, opts]) -> task | nil, message
-- flow: a table {name, description, params = {NAME = {required, default, help}}, run = function(f, p)},
-- a function(f, p), a shipped flow's name or a file. opts: config (table), config_path,
-- dry_run, on_done(task), out (print function for dry runs). The flow starts at once and
-- runs while the loop runs; task.ok is nil until it ends, then true (task.result) or false
-- (task.error, a StepError). task:cancel(reason) stops it at its next wait.
function M.run(what, params, opts)
  opts = opts or {}
  local flow, err = M.load(what)
  if not flow then return nil, err end
  local p, perr = check_params(flow, params)
  if not p then return nil, perr end
  local task = { name = flow.name, flow = flow, params = p, connections = {}, cleanup = {}, dry_run = opts.dry_run,
                 on_done = opts.on_done, out = opts.out or print }
  function task.cancel(self, reason)
    self = self or task
    self.cancelled = reason or "cancelled"
    if self.waiting then self.waiting(nil, self.cancelled, "ECANCELED") end
  end
  if opts.dry_run then
    local names = {}
    for k in pairs(p) do names[#names + 1] = k end
    table.sort(names)
    task.out("parameters:")
    for _, k in ipairs(names) do task.out(string.format("  %-14s %s", k, describe(p[k]))) end
    task.out("plan:")
  end
  opts = copy(opts)
  opts.config = opts.config and copy(opts.config)
  local f = make_context(task, flow, p, opts)
  task.context = f
  task.co = coroutine.create(function()
    local ok, res = xpcall(flow.run, function(e)
      if getmetatable(e) == StepError then return e end
      return setmetatable({ step = task.step or "flow", n = task.n, code = "ELUA",
                            message = debug.traceback(tostring(e), 2) }, StepError)
    end, f, p)
    finish(task, ok, res)
  end)
  tasks[task.co] = task
  resume(task)
  return task
end

-- The entry point of `moonwire provision`: runs a flow, reports, sets task.exit_code.
function M._main(args)
  local out = args.out or print
  local flow, err = M.load(args.flow)
  if not flow then
    return { finished = true, exit_code = 2, message = err }
  end
  local cfg = args.config and copy(args.config) or nil
  local ov = args.overrides or {}
  if cfg and ov.host then
    cfg.broker = cfg.broker or {}
    cfg.broker.host, cfg.broker.port = ov.host, ov.port
  end
  if cfg and ov.thing then cfg.thing, cfg.client_id = ov.thing, nil end
  if args.dry_run then
    out(string.format("flow %s%s", flow.name, flow.description and (": " .. flow.description) or ""))
    out("configuration: " .. tostring(args.config_path))
  end
  local task, rerr = M.run(flow, args.params, {
    config = cfg, config_path = args.config_path, dry_run = args.dry_run, out = out,
    on_done = function(t)
      if t.ok then
        t.exit_code = 0
        if t.dry_run then
          out("dry run: nothing was changed")
        else
          local r = t.result
          say("info", string.format("flow %s done%s", t.name, type(r) == "table" and r.path and (": " .. r.path .. " holds the new identity") or ""))
        end
      else
        t.exit_code = 1
        t.message = tostring(t.error) .. (t.committed and "" or "; nothing was switched over: the previous identity is untouched")
      end
    end,
  })
  if not task then return { finished = true, exit_code = 2, message = rerr } end
  return task
end

return M
