-- moonwire.se against the chip simulator (a state file in a temp dir), run by `moonwire script`.
local se = require "moonwire.se"

local function raises(pattern, f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern), "error was: " .. tostring(err))
end

-- Without a configured chip (script mode) the module-level functions say so.
assert(se.available() == false)
local r, msg, code = se.uid()
assert(r == nil and msg:find("no secure element", 1, true) and code == "ENODEV")
-- misuse still raises, chip or not
raises("object id must be", se.read, "E0F1")
raises("n must be 1..1024", se.random, 0)

local dir = os.tmpname()
os.remove(dir)
local state = dir .. ".state"
local function cleanup()
  os.remove(state)
  os.remove(state .. ".lock")
end

raises("needs sim = STATEFILE or device", se.open, {})
raises("invalid option 'simm'", se.open, { simm = state })
local ok, err = pcall(function()
  local chip <close> = assert(se.open { sim = state })
  assert(tostring(chip):find("simulator"))
  assert(chip:available())

  -- identity
  local uid = assert(chip:uid())
  assert(#uid == 54 and uid:match("^%x+$") and uid:sub(1, 2) == "cd")
  local info = assert(chip:info())
  assert(info.uid == uid and info.firmware == "0x80101071" and info.simulator == true)
  assert(info.lifecycle == "creation" and type(info.security_events) == "number")

  -- random
  local a, b = assert(chip:random(32)), assert(chip:random(32))
  assert(#a == 32 and #b == 32 and a ~= b)
  assert(#assert(chip:random(3)) == 3)

  -- keys: generated in the chip, public key out, signature, verification on the chip
  local pem = assert(chip:gen_key(0xE0F1, { curve = "P-256", usage = { "sign", "auth" } }))
  assert(pem:find("^%-%-%-%-%-BEGIN PUBLIC KEY%-%-%-%-%-"))
  assert(chip:pubkey("0xE0F1") == pem) -- stored next to it (F1D1) by default
  raises("unknown curve", chip.gen_key, chip, 0xE0F1, { curve = "P-999" })
  raises("unknown usage 'sing'", chip.gen_key, chip, 0xE0F1, { usage = { "sing" } })
  raises("invalid option 'curv'", chip.gen_key, chip, 0xE0F1, { curv = "P-256" })
  local digest = string.rep("\x5a", 32)
  local sig = assert(chip:sign(0xE0F1, digest))
  assert(sig:byte(1) == 0x30) -- DER ECDSA-Sig-Value
  assert(chip:verify(pem, digest, sig) == true)
  assert(chip:verify(0xE0F1, digest, sig) == true)
  assert(chip:verify(pem, string.rep("\x00", 32), sig) == false)
  raises("digest must be 1..64 bytes", chip.sign, chip, 0xE0F1, "")
  raises("not a PEM public key", chip.verify, chip, "junk", digest, sig)

  -- chip errors come back by name
  local r2, m2, c2 = chip:sign(0xE0F2, digest) -- empty key slot
  assert(r2 == nil and c2 == "INVALID_METADATA_OF_THE_KEY_DATA_OBJECT", tostring(c2))
  assert(m2:find("CalcSign 0xE0F2", 1, true))
  local kx = assert(chip:gen_key(0xE0F3, { usage = { "keyagree" }, store_pubkey = false }))
  assert(kx:find("PUBLIC KEY"))
  local r3, _, c3 = chip:sign(0xE0F3, digest)
  assert(r3 == nil and c3 == "UNSUPPORTED_EXTENSION_IDENTIFIER", tostring(c3))
  local r4, _, c4 = chip:read(0xE0F1) -- key objects are never readable as data
  assert(r4 == nil and c4 == "ACCESS_CONDITION_NOT_SATISFIED", tostring(c4))

  -- data objects
  assert(chip:write(0xF1D0, "hello moonwire", { erase = true }) == true)
  assert(chip:read(0xF1D0) == "hello moonwire")
  assert(chip:read(0xF1D0, 6) == "moonwire")
  assert(chip:read(0xF1D0, 6, 4) == "moon")
  assert(chip:write(0xF1D0, "MOON", { offset = 6 }))
  assert(chip:read(0xF1D0) == "hello MOONwire")
  local r5, _, c5 = chip:read(0xF1D0, 100)
  assert(r5 == nil and c5 == "DATA_OBJECT_BOUNDARY_EXCEEDED", tostring(c5))
  raises("invalid option 'erse'", chip.write, chip, 0xF1D0, "x", { erse = true })

  -- metadata as a table, and back
  local md = assert(chip:metadata(0xF1D0))
  assert(md.used_size == 14 and md.read == "ALW" and md.change and md.raw:sub(1, 2) == "20")
  local km = assert(chip:metadata(0xE0F1))
  assert(km.algorithm == "P-256" and km.key_usage[1] and km.read == "NEV")
  local usage = table.concat(km.key_usage, ",")
  assert(usage == "auth,sign", usage)
  assert(chip:set_metadata(0xF1D1, { read = "LcsO<op", change = "ALW" }))
  local md2 = assert(chip:metadata(0xF1D1))
  assert(md2.read == "LcsO<op" and md2.change == "ALW", md2.read)
  md2.read = "ALW" -- a table from metadata() can be edited and written back
  assert(chip:set_metadata(0xF1D1, md2))
  assert(chip:metadata(0xF1D1).read == "ALW")
  raises("not an access condition", chip.set_metadata, chip, 0xF1D1, { read = "sometimes" })
  raises("invalid option 'reed'", chip.set_metadata, chip, 0xF1D1, { reed = "ALW" })
  raises("nothing to write", chip.set_metadata, chip, 0xF1D1, {})

  -- counters
  local v, t = assert(chip:counter(0xE120))
  assert(type(v) == "number" and type(t) == "number")
  local v2 = assert(chip:counter(0xE120, 3))
  assert(v2 == v + 3)

  -- certificates: the factory one (identity-chain tag C0) and one we store
  local factory = assert(chip:cert(0xE0E0))
  assert(factory:find("BEGIN CERTIFICATE", 1, true))
  assert(chip:cert(0xE0E1) == nil) -- empty slot: just nil
  assert(chip:store_cert(0xE0E1, factory))
  assert(chip:cert(0xE0E1) == factory)
  assert(chip:read(0xE0E1, 0, 1) == "\x30") -- bare DER by default
  assert(chip:store_cert(0xE0E1, factory, { chain = true }))
  assert(chip:read(0xE0E1, 0, 1) == "\xC0") -- wrapped as the factory does
  assert(chip:cert(0xE0E1) == factory)
  raises("not a PEM certificate", chip.store_cert, chip, 0xE0E1, "junk")
  raises("one certificate, not a chain", chip.store_cert, chip, 0xE0E1, factory .. factory)

  -- a CSR signed by the chip key
  local csr = assert(chip:csr(0xE0F1, { cn = "car-07", o = "Moonwire", dns = { "car-07.local" } }))
  assert(csr:find("BEGIN CERTIFICATE REQUEST", 1, true))
  raises("csr needs cn", chip.csr, chip, 0xE0F1, { o = "x" })
  local r6, _, c6 = chip:csr(0xE0F2, { cn = "x" }) -- no key there
  assert(r6 == nil and c6, tostring(c6))

  -- the security monitor: every private-key use counts
  local before = assert(chip:info()).security_events
  for _ = 1, 6 do assert(chip:sign(0xE0F1, digest)) end
  assert(assert(chip:info()).security_events > before)

  -- a second handle on the same state file sees the same chip
  local other <close> = assert(se.open { sim = state })
  assert(other:read(0xF1D0) == "hello MOONwire")
  other:close()
  raises("handle is closed", other.uid, other)
  return true
end)
cleanup()
assert(ok, err)

-- opening a device that is not there is a runtime failure, not an error
local h, m, c = se.open { device = "/dev/i2c-nonexistent" }
assert(h == nil and m:find("cannot open the secure element", 1, true) and c, tostring(c))
print("ok se")
