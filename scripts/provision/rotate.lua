--[[
Certificate rotation: the same steps as fleet provisioning, run by the device under its
current identity, with a fresh key in a slot (or file) the current identity does not use.
The old key and certificate keep working until the new identity has connected and read its
shadow; only then does the configuration switch (the old one stays as CONFIG.previous).

  new key elsewhere -> CSR -> connect as the current identity -> CreateCertificateFromCsr
  -> RegisterThing (same template and parameters as at provisioning: the same thing)
  -> store -> stage -> verify as the new identity -> commit

moonwire provision rotate --config /etc/moonwire/device.lua
]]
local prov = require "moonwire.provision"

-- A new object name for a key in a PKCS#11 token: the current one with a date suffix.
local function next_uri(uri)
  local stamp = os.date("!%Y%m%dT%H%M%S")
  local path, query = uri:match("^([^?]*)(.*)$")
  local obj = path:match("[:;]object=([^;]*)")
  if obj then
    local name = obj:gsub("%-r%d+T%d+$", "") .. "-r" .. stamp
    path = path:gsub("([:;]object=)[^;]*", function(prefix) return prefix .. name end, 1)
  else
    path = path .. ";object=device-r" .. stamp
  end
  path = path:gsub("[:;]id=[^;]*", "") -- the new key gets an id of its own
  return path .. query
end

-- The key slot after the current one (E0F1 -> E0F2 -> E0F3 -> E0F1).
local function next_slot(ref)
  local hex = ref:lower():match("^trustm:0x(%x+)$") or ref:lower():match("^0x(%x+):%^$")
  local cur = hex and tonumber(hex, 16) or 0xE0F1
  return string.format("0x%04X", cur >= 0xE0F3 and 0xE0F1 or math.max(cur, 0xE0F0) + 1)
end

return {
  name = "rotate",
  description = "certificate rotation: new key and certificate for the same thing, switched only once verified",
  params = {
    template = { help = "provisioning template (default: the one the device was provisioned with)" },
    template_params = { help = "template parameters NAME=VALUE,... (default: those of the last provisioning)" },
    key = { help = "se, file or pkcs11 (default: where the current key is)" },
    slot = { help = "key slot for the new key (default: the next slot after the current one)" },
    key_uri = { help = "key=pkcs11: the new key's URI (default: the current one's object name with a date suffix)" },
    cert_slot = { help = "chip certificate object for a copy (default: the new key slot's; 'none' for no copy)" },
    key_file = { help = "private key file (key=file; default DIR/THING-TIME.key)" },
    dir = { help = "folder for the certificate (default: the configuration's folder)" },
    cn = { help = "CN of the CSR (default: the thing name)" },
    verify_shadow = { default = "yes", help = "read the thing's shadow when verifying (yes/no)" },
    client_id = { help = "client id of the flow's own connections (default: the thing name; another one lets "
                         .. "the running app keep its session, where the broker's policy allows it)" },
  },
  run = function(f, p)
    local cur = f.config
    local info = (cur.app and cur.app.provisioning) or {}
    local template = p.template or info.template
    if not template then
      f.fail("this configuration does not say which template provisioned it; give --param template=NAME", "EINVAL")
    end
    local params = prov.copy(info.parameters or {})
    for k, v in pairs(prov.parse_pairs(p.template_params)) do params[k] = v end
    local dir = p.dir or prov.dirname(f.config_path)
    -- Checked first: a folder that is not there would fail only after the service issued.
    if not require("moonwire.pki").is_dir(dir) then f.fail("the folder " .. dir .. " does not exist", "ENOENT") end
    local current_key = cur.tls.key
    local in_chip = current_key:lower():match("^trustm:") or current_key:match("^0[xX]%x+:%^$")
    local in_token = current_key:lower():match("^pkcs11:")
    local backend = p.key or (in_chip and "se" or in_token and "pkcs11" or "file")
    local key
    local slot = p.slot or next_slot(current_key)
    if backend == "pkcs11" then
      local uri = p.key_uri or (in_token and next_uri(current_key))
      if not uri then f.fail("key=pkcs11 needs --param key_uri=pkcs11:...", "EINVAL") end
      key = f.keygen { backend = "pkcs11", uri = uri, pkcs11 = prov.copy(cur.pkcs11), in_use = { current_key } }
    elseif backend == "file" then
      local path = p.key_file or string.format("%s/%s-%s.key", dir, cur.thing, os.date("!%Y%m%dT%H%M%S"))
      key = f.keygen { backend = "file", path = path, in_use = { current_key } }
    else
      key = f.keygen { backend = backend, slot = slot, se = prov.copy(cur.se), in_use = { current_key } }
    end
    local csr = f.csr(key, { cn = p.cn or cur.thing })
    local me = cur
    if p.client_id then
      me = prov.copy(cur)
      me.client_id = p.client_id
    end
    local conn = f.connect(me)
    local cert = f.create_certificate_from_csr(conn, csr)
    local thing = f.register_thing(conn, template, { token = cert.ownership_token, parameters = params })
    f.disconnect(conn)
    if not f.dry_run and thing.thing_name ~= cur.thing then
      f.fail(string.format("template %s made thing %s, but this device is %s (check the parameters)",
                           template, thing.thing_name, cur.thing), "EINVAL")
    end
    local cert_slot = p.cert_slot
    if cert_slot == nil and backend == "se" then cert_slot = prov.cert_slot_for(slot) end
    if cert_slot == "none" then cert_slot = nil end
    local stored = f.store_certificate(cert, { key = key, dir = dir, name = cur.thing, slot = cert_slot })
    local staged = f.write_config(f.config_path, {
      base = cur, thing = cur.thing, key = key, stored = stored,
      device_configuration = thing.device_configuration,
      provisioning = { flow = "rotate", template = template, parameters = params,
                       previous_certificate_id = info.certificate_id },
    })
    f.verify(staged, { shadow = p.verify_shadow ~= "no", client_id = p.client_id })
    return f.commit(staged)
  end,
}
