--[[
Fleet provisioning by claim (AWS IoT): the device proves nothing but its claim certificate,
and leaves with an identity of its own.

  new key (chip slot, or a file) -> CSR with CN = serial -> connect as the claim identity
  -> CreateCertificateFromCsr -> RegisterThing(template, SerialNumber = serial)
  -> store the certificate (file, and the chip's certificate object) -> stage the device
  configuration -> verify: connect as the new thing and read its shadow -> commit

moonwire provision fleet-claim --config CLAIM.lua --param serial=0042 --param out=/etc/moonwire/device.lua
]]
local prov = require "moonwire.provision"

return {
  name = "fleet-claim",
  description = "fleet provisioning by claim: CreateCertificateFromCsr + RegisterThing, verified before the switch",
  params = {
    serial = { required = true, help = "the device's serial number: CSR CN and the template's SerialNumber" },
    out = { required = true, help = "the device configuration to write (moonwire run --config OUT)" },
    template = { default = "moonwire-fleet", help = "provisioning template name" },
    template_params = { help = "more template parameters, NAME=VALUE[,NAME=VALUE...]" },
    key = { default = "se", help = "where the new key is made: se (the chip), file (development) or pkcs11" },
    slot = { default = "0xE0F1", help = "key slot in the chip (key=se)" },
    key_uri = { help = "key=pkcs11: the new key's URI, e.g. pkcs11:token=device;object=tls?pin-source=/run/pin "
                       .. "(the token makes the key; the object must not exist yet)" },
    cert_slot = { help = "chip certificate object for a copy of the certificate (default: the key slot's, "
                         .. "0xE0E1 for 0xE0F1; 'none' for no copy)" },
    key_file = { help = "private key file (key=file; default DIR/SERIAL-TIME.key)" },
    dir = { help = "folder for the certificate (default: the folder of out)" },
    se_sim = { help = "the chip simulator's state file (default: the configuration's se section)" },
    se_device = { help = "the chip's I2C bus, e.g. /dev/i2c-1 (default: the configuration's se section)" },
    organization = { help = "O of the CSR subject" },
    verify_shadow = { default = "yes", help = "read the thing's shadow when verifying (yes/no)" },
    client_id = { help = "client id of the claim connection (default: the configuration's client_id, else "
                         .. "claim-SERIAL: devices sharing a claim certificate must not take over each other's session)" },
  },
  run = function(f, p)
    local dir = p.dir or prov.dirname(p.out)
    -- Checked first: a folder that is not there would fail only after the service issued.
    if not require("moonwire.pki").is_dir(dir) then f.fail("the folder " .. dir .. " does not exist", "ENOENT") end
    local params = prov.parse_pairs(p.template_params)
    params.SerialNumber = p.serial
    local key
    if p.key == "pkcs11" then
      if not p.key_uri then f.fail("key=pkcs11 needs --param key_uri=pkcs11:...", "EINVAL") end
      key = f.keygen { backend = "pkcs11", uri = p.key_uri, pkcs11 = prov.copy(f.config.pkcs11),
                       in_use = prov.keys_in_use(p.out) }
    elseif p.key == "file" then
      local path = p.key_file or string.format("%s/%s-%s.key", dir, p.serial, os.date("!%Y%m%dT%H%M%S"))
      key = f.keygen { backend = "file", path = path, in_use = prov.keys_in_use(p.out) }
    else
      local se = p.se_sim and { sim = p.se_sim } or p.se_device and { device = p.se_device } or prov.copy(f.config.se)
      key = f.keygen { backend = p.key, slot = p.slot, se = se, in_use = prov.keys_in_use(p.out) }
    end
    local csr = f.csr(key, { cn = p.serial, o = p.organization })
    local as_claim = prov.copy(f.config)
    as_claim.client_id = p.client_id or f.config.client_id or ("claim-" .. p.serial)
    local claim = f.connect(as_claim)
    local cert = f.create_certificate_from_csr(claim, csr)
    local thing = f.register_thing(claim, p.template, { token = cert.ownership_token, parameters = params })
    f.disconnect(claim)
    local cert_slot = p.cert_slot
    if cert_slot == nil and p.key == "se" then cert_slot = prov.cert_slot_for(p.slot) end
    if cert_slot == "none" then cert_slot = nil end
    local stored = f.store_certificate(cert, { key = key, dir = dir, name = thing.thing_name, slot = cert_slot })
    local staged = f.write_config(p.out, {
      base = prov.device_base(f.config), thing = thing.thing_name, key = key, stored = stored,
      device_configuration = thing.device_configuration,
      provisioning = { flow = "fleet-claim", template = p.template, parameters = params },
    })
    f.verify(staged, { shadow = p.verify_shadow ~= "no" })
    return f.commit(staged)
  end,
}
