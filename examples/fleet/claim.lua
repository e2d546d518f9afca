-- The claim identity every new device starts with (AWS IoT fleet provisioning by claim),
-- and the chip the device gets its own key in. The demo sets the environment.
local pki = os.getenv("MOONWIRE_PKI") or "certs/dev"
return {
  thing = "fleet-claim",
  broker = { host = "127.0.0.1", port = math.tointeger(tonumber(os.getenv("MOONWIRE_BROKER_PORT") or "8883")) },
  tls = { ca = pki .. "/ca-chain.pem", cert = pki .. "/fleet-claim.crt", key = pki .. "/fleet-claim.key" },
  se = { sim = os.getenv("MOONWIRE_SE_SIM") or "trustm-sim.state" },  -- or { device = "/dev/i2c-1" }
}
