return {
  thing = "car-01",
  broker = { host = "127.0.0.1", port = 8883 },
  tls = { ca = "ca.pem", cert = "car-01.crt", key = "car-01.key" },
  limits = { lua_memory = 16 * 1024 * 1024 },
  lua = { budget_ms = 150, quarantine_after = 2, load_budget_ms = 500, load_memory = 1048576,
          watch = false, debounce_ms = 20, rollback = { errors = 3, within_s = 10 } },
}
