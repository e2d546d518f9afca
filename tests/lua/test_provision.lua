-- moonwire.provision and moonwire.pki without a broker: configuration writing, parameters,
-- flows that fail offline (with their cleanup), dry runs, misuse, file keys and CSRs.
local prov = require "moonwire.provision"
local pki = require "moonwire.pki"
local timer = require "moonwire.timer"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

local function deep_equal(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do if not deep_equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- Configurations are written as Lua that reads back to the same table.
local cfg = {
  thing = "car-1", broker = { host = "h", port = 8883, keepalive = 60 },
  tls = { ca = "ca.pem", cert = "c\"q\n.crt", key = "trustm:0xE0F2" },
  se = { sim = "chip.state" }, app = { route = { "a", "b" }, ["odd key"] = 1.5, flag = false },
}
local text = "return " .. prov.serialize(cfg, "")
assert(text:find('^return {\n  thing = "car%-1",'), text)
assert(deep_equal(load(text)(), cfg))
local path = dir .. "/cfg.lua"
assert(pki.write_file(path, text))
assert(deep_equal(prov.read_config(path), cfg))
assert(select(2, prov.read_config(dir .. "/missing.lua")))
assert(pki.write_file(dir .. "/bad.lua", "return 42"))
assert(select(2, prov.read_config(dir .. "/bad.lua")):find("does not return a table"))
assert(deep_equal(prov.keys_in_use(path), { "trustm:0xE0F2" }))
assert(not pcall(prov.serialize, { f = print }, ""))
assert(deep_equal(prov.device_base(cfg), { broker = cfg.broker, tls = { ca = "ca.pem" } }))

assert(deep_equal(prov.parse_pairs("A=1, B = x y ,C="), { A = "1", B = "x y", C = "" }))
assert(deep_equal(prov.parse_pairs(nil), {}))
assert(not pcall(prov.parse_pairs, "novalue"))
assert(prov.cert_slot_for("0xE0F2") == 0xE0E2 and prov.cert_slot_for(0xE0F1) == 0xE0E1)
assert(not pcall(prov.cert_slot_for, "0xE0F0"))

-- Shipped flows are in the binary.
local names = table.concat(prov.flows(), ",")
assert(names == "fleet-claim,own-ca,rotate", names)
assert(prov.load("fleet-claim").params.serial.required)
local f0, err = prov.load("no-such-flow")
assert(not f0 and err:find("not a shipped flow"), err)

-- Network steps refuse to run outside a flow (misuse raises).
local ok, msg = pcall(prov.create_certificate_from_csr, {}, "csr")
assert(not ok and msg:find("must run inside a flow"), msg)

-- Atomic files: exclusive never replaces.
assert(pki.write_file(dir .. "/x", "one", { exclusive = true }))
local okw, werr, wcode = pki.write_file(dir .. "/x", "two", { exclusive = true })
assert(not okw and wcode == "ECONFLICT", werr)
assert(io.open(dir .. "/x"):read("a") == "one")
assert(pki.rename(dir .. "/x", dir .. "/y") and exists(dir .. "/y") and not exists(dir .. "/x"))

-- File keys and CSRs.
local keyfile = dir .. "/dev.key"
local pub = assert(pki.keygen_file(keyfile))
assert(pub:find("BEGIN PUBLIC KEY"))
assert(select(3, pki.keygen_file(keyfile)) == "ECONFLICT")
assert(pki.public_key(keyfile) == pub)
local csr = assert(pki.csr(keyfile, { cn = "0042", o = "Acme", dns = { "car.local" } }))
local info = assert(pki.csr_info(csr))
assert(info.cn == "0042" and info.public_key == pub)
local _, cerr = pki.csr_info(csr:gsub("MI", "MJ", 1))
assert(cerr)
assert(not pcall(pki.csr, keyfile, { o = "no cn" }))
assert(select(3, pki.csr("trustm:0xE0F1", { cn = "x" })) == "EDEVICE") -- no chip configured here
assert(select(3, pki.cert_info("junk")) == "EINVAL")

-- A flow that fails offline: the error names the step, and what it made is removed again.
local done = {}
local t = assert(prov.run({
  name = "offline",
  params = { a = { required = true }, b = { default = "B" } },
  run = function(f, p)
    assert(p.a == "A" and p.b == "B")
    f.keygen { backend = "file", path = dir .. "/made.key" }
    assert(exists(dir .. "/made.key"))
    f.keygen { backend = "file", path = dir .. "/other.key", in_use = { "file:" .. dir .. "/other.key" } }
  end,
}, { a = "A" }, { on_done = function(task) done[#done + 1] = task end }))
assert(t.finished and t.ok == false and #done == 1)
assert(t.error.step == "keygen" and t.error.code == "EBUSY", tostring(t.error))
assert(tostring(t.error):find("^step keygen failed: EBUSY: "), tostring(t.error))
assert(not exists(dir .. "/made.key"), "an uncommitted key file must be removed")

-- Parameters are checked before anything runs.
local nt, perr = prov.run({ name = "p", params = { a = { required = true } }, run = function() end }, {})
assert(not nt and perr:find("needs parameter%(s%): a"), perr)
nt, perr = prov.run({ name = "p", run = function() end }, { zz = "1" })
assert(not nt and perr:find("has no parameter 'zz'"), perr)

-- f.fail and plain errors.
t = prov.run(function(f) f.fail("custom reason", "EX") end)
assert(t.ok == false and tostring(t.error) == "step flow failed: EX: custom reason", tostring(t.error))
t = prov.run(function() error("boom") end)
assert(t.ok == false and t.error.code == "ELUA" and t.error.message:find("boom"))

-- Dry run: steps print and return placeholders; nothing is made.
local lines = {}
t = prov.run("fleet-claim", { serial = "0042", out = dir .. "/device.lua", key = "file" }, {
  dry_run = true, config = { thing = "claim", broker = { host = "h" }, tls = { ca = "ca" } },
  config_path = "claim.lua", out = function(l) lines[#lines + 1] = l end,
})
assert(t.ok, tostring(t.error))
local plan = table.concat(lines, "\n")
assert(plan:find("1%. keygen"), plan)
assert(plan:find("10%. commit"), plan)
assert(plan:find("<identity claim%-0042", 1), plan)
assert(plan:find("token=<step 4 create_certificate_from_csr.ownership_token>", 1, false), plan)
assert(not exists(dir .. "/device.lua") and not exists(dir .. "/device.lua.new"))

-- A connection that cannot even be set up fails its step at once.
t = prov.run(function(f)
  f.connect({ thing = "x", broker = { host = "127.0.0.1", port = 1 },
                           tls = { ca = keyfile, cert = keyfile, key = keyfile } })
end)
-- (the TLS files are not certificates: connect fails at once, without waiting)
assert(t.finished and not t.ok and t.error.step == "connect", tostring(t.error))

-- moonwire.connection: misuse raises, failures are values.
local connection = require "moonwire.connection"
assert(not pcall(connection.open, {}, function() end))
assert(not pcall(connection.open, { host = "h", client_id = "c", ca = "a", cert = "b", key = "k", port = 0 },
                 function() end))
local c, cerr2, ccode = connection.open({ host = "127.0.0.1", client_id = "c", ca = keyfile, cert = keyfile,
                                          key = keyfile }, function() end)
assert(not c and ccode == "ETLS", tostring(cerr2))

timer.after(10, function()
  os.execute("rm -rf " .. dir)
end)
