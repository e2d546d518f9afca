--[[
moonwire.provision.identity: part of moonwire.provision, private to it (flows use
require "moonwire.provision"; this module's contents may change with any release).

The new identity, and the switch to it: the certificate stored beside the old one, the
configuration staged under a new name, a connection with the new identity that reads its
shadow, and commit's atomic rename.

Adds to moonwire.provision: store_certificate, write_config, verify, commit.
]]
local pki = require "moonwire.pki"
local se = require "moonwire.se"
local json = require "moonwire.json"
local timer = require "moonwire.timer"
local values = require "moonwire.provision.values"
local serialize = require("moonwire.provision.config").serialize
local runner = require "moonwire.provision.runner"
local shared = require "moonwire.provision.shared"

local copy, shown, rand_hex = values.copy, values.shown, values.rand_hex
local file_exists, read_file, parse_slot = values.file_exists, values.read_file, values.parse_slot
local running_task, seconds, suspend = runner.running_task, runner.seconds, runner.suspend
local DEFAULT_TIMEOUT, CONNECT_TIMEOUT = runner.DEFAULT_TIMEOUT, runner.CONNECT_TIMEOUT
local M, tasks, say = shared.M, shared.tasks, shared.say

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
