-- Identity of a local service (provisioning-service, shadow-service, factory-station):
-- MOONWIRE_THING names it; its certificate comes from certs/mkpki.
local name = os.getenv("MOONWIRE_THING") or "provisioning-service"
local pki = os.getenv("MOONWIRE_PKI") or "certs/dev"
return {
  thing = name,
  broker = { host = "127.0.0.1", port = math.tointeger(tonumber(os.getenv("MOONWIRE_BROKER_PORT") or "8883")) },
  tls = { ca = pki .. "/ca-chain.pem", cert = pki .. "/" .. name .. ".crt", key = pki .. "/" .. name .. ".key" },
  limits = { max_inflight = 1000 },
}
