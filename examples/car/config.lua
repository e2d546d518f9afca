-- Configuration shared by the demo's processes: the identity comes from the
-- environment (MOONWIRE_THING), so one file serves car-01, car-02, the dispatcher, the
-- operator and the shadow service.
-- The demo script passes --broker 127.0.0.1:PORT for its own local broker.
local thing = os.getenv("MOONWIRE_THING") or "car-01"
local pki = os.getenv("MOONWIRE_PKI") or "certs/dev"
-- When set (the demo does for car-01), the TLS key is the one generated inside the
-- (simulated) secure element: see docs/trustm.md.
local chip = os.getenv("MOONWIRE_SE_STATE")
if chip == "" then chip = nil end

return {
  thing = thing,
  broker = { host = "127.0.0.1", port = 8883, keepalive = 30 },
  tls = {
    ca = pki .. "/ca-chain.pem",
    cert = pki .. "/" .. thing .. ".crt",
    key = chip and "trustm:0xE0F1" or pki .. "/" .. thing .. ".key",
  },
  se = chip and { sim = chip } or nil,
  -- The broker publishes this if the car vanishes without a clean DISCONNECT.
  will = { topic = "cars/" .. thing .. "/status", payload = "offline", qos = 1, retain = true },
  reconnect = { base_ms = 500, cap_ms = 10000 },
  -- The car's last known shadow document survives restarts here (the demo sets MOONWIRE_STATE).
  shadow = { cache = (os.getenv("MOONWIRE_STATE") or ".") .. "/" .. thing .. "-shadow.db" },
  app = {
    -- car-01 drives counter-clockwise, car-02 clockwise: they meet twice a lap.
    direction = thing == "car-02" and -1 or 1,
    start_angle = thing == "car-02" and 180 or 0,
    speed = thing == "car-02" and 35 or 45,
  },
}
