--[[
Own CA, JITP style (development and factory lines): the CSR is signed here with the signing
CA's key (certs/dev's intermediate, or the factory's), and the certificate is registered with
the local provisioning service, which applies its JITP template (thing name from the
certificate's CN) and adds the thing to the broker's policy, as AWS IoT does for a JITP CA.

  new key -> CSR with CN = thing -> sign with the CA -> store the certificate
  -> connect as the station (--config) -> moonwire/certificates/register -> stage the device
  configuration -> verify as the new thing -> commit

moonwire provision own-ca --config STATION.lua --param thing=car-17 --param out=/etc/moonwire/device.lua
]]
local prov = require "moonwire.provision"

return {
  name = "own-ca",
  description = "own CA (JITP style): sign the CSR with the signing CA, register the certificate with the local service",
  params = {
    thing = { required = true, help = "thing name; the certificate's CN" },
    out = { required = true, help = "the device configuration to write" },
    ca = { default = "certs/dev", help = "signing CA: a certs/mkpki folder or STEM (STEM.crt + STEM.key)" },
    days = { default = "825", help = "certificate validity in days" },
    key = { default = "se", help = "se, file or pkcs11" },
    slot = { default = "0xE0F1", help = "key slot in the chip (key=se)" },
    key_uri = { help = "key=pkcs11: the new key's URI, e.g. pkcs11:token=device;object=tls?pin-source=/run/pin "
                       .. "(the token makes the key; the object must not exist yet)" },
    cert_slot = { help = "chip certificate object for a copy (default: the key slot's; 'none' for no copy)" },
    key_file = { help = "private key file (key=file; default DIR/THING-TIME.key)" },
    dir = { help = "folder for the certificate (default: the folder of out)" },
    se_sim = { help = "the chip simulator's state file (default: the configuration's se section)" },
    se_device = { help = "the chip's I2C bus (default: the configuration's se section)" },
    organization = { help = "O of the CSR subject" },
    register = { default = "yes", help = "register with the provisioning service (no: the thing exists already)" },
    verify_shadow = { default = "yes", help = "read the thing's shadow when verifying (yes/no)" },
    verify_attempts = { default = "1", help = "connection attempts when verifying (2 for AWS IoT JITP, which drops "
                                             .. "the first connection of a new certificate)" },
  },
  run = function(f, p)
    local dir = p.dir or prov.dirname(p.out)
    -- Checked first: a folder that is not there would fail only after the service issued.
    if not require("moonwire.pki").is_dir(dir) then f.fail("the folder " .. dir .. " does not exist", "ENOENT") end
    local key
    if p.key == "pkcs11" then
      if not p.key_uri then f.fail("key=pkcs11 needs --param key_uri=pkcs11:...", "EINVAL") end
      key = f.keygen { backend = "pkcs11", uri = p.key_uri, pkcs11 = prov.copy(f.config.pkcs11),
                       in_use = prov.keys_in_use(p.out) }
    elseif p.key == "file" then
      local path = p.key_file or string.format("%s/%s-%s.key", dir, p.thing, os.date("!%Y%m%dT%H%M%S"))
      key = f.keygen { backend = "file", path = path, in_use = prov.keys_in_use(p.out) }
    else
      local se = p.se_sim and { sim = p.se_sim } or p.se_device and { device = p.se_device } or prov.copy(f.config.se)
      key = f.keygen { backend = p.key, slot = p.slot, se = se, in_use = prov.keys_in_use(p.out) }
    end
    local csr = f.csr(key, { cn = p.thing, o = p.organization })
    local cert = f.sign_csr(csr, { ca = p.ca, days = math.tointeger(tonumber(p.days)) })
    local cert_slot = p.cert_slot
    if cert_slot == nil and p.key == "se" then cert_slot = prov.cert_slot_for(p.slot) end
    if cert_slot == "none" then cert_slot = nil end
    local stored = f.store_certificate(cert, { key = key, dir = dir, name = p.thing, slot = cert_slot })
    local thing_name, devcfg = p.thing, nil
    if p.register ~= "no" then
      local station = f.connect(f.config)
      local reg = f.register_certificate(station, cert)
      f.disconnect(station)
      thing_name, devcfg = reg.thing_name, reg.device_configuration
    end
    local staged = f.write_config(p.out, {
      base = prov.device_base(f.config), thing = thing_name, key = key, stored = stored,
      device_configuration = devcfg, provisioning = { flow = "own-ca", ca = p.ca },
    })
    f.verify(staged, { shadow = p.verify_shadow ~= "no", attempts = math.tointeger(tonumber(p.verify_attempts)) })
    return f.commit(staged)
  end,
}
