-- A test flow built from the same steps as fleet-claim, with one deliberate fault (mode):
--   csr    the CSR is one the service refuses (p.csr_file: made elsewhere with a weak key)
--   token  RegisterThing gets a forged ownership token
local prov = require "moonwire.provision"

return {
  name = "broken",
  description = "fleet-claim with a deliberate fault, for tests",
  params = { mode = { required = true }, dir = { required = true }, out = { required = true }, csr_file = {} },
  run = function(f, p)
    local key = f.keygen { backend = "file", path = p.dir .. "/broken.key", in_use = prov.keys_in_use(p.out) }
    local csr = f.csr(key, { cn = "0666" })
    if p.mode == "csr" then
      local fh = assert(io.open(p.csr_file))
      csr = fh:read("a")
      fh:close()
    end
    local claim = f.connect(f.config)
    local cert = f.create_certificate_from_csr(claim, csr)
    local token = p.mode == "token" and "forged-token" or cert.ownership_token
    local thing = f.register_thing(claim, "moonwire-fleet", { token = token, parameters = { SerialNumber = "0666" } })
    f.disconnect(claim)
    local stored = f.store_certificate(cert, { key = key, dir = p.dir, name = thing.thing_name })
    local staged = f.write_config(p.out, { base = prov.device_base(f.config), thing = thing.thing_name, key = key,
                                           stored = stored })
    f.verify(staged)
    return f.commit(staged)
  end,
}
