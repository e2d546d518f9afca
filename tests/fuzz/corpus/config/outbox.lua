return {
  thing = "car-01",
  broker = { host = "127.0.0.1", port = 8883, protocol = "5" },
  tls = { ca = "ca.pem", cert = "car-01.crt", key = "car-01.key" },
  outbox = { path = "/var/lib/moonwire/car-01.outbox.db", sync = "normal", max_messages = 5000,
             max_bytes = 8388608, when_full = "drop_oldest", qos0_offline = "queue", qos0_max = 10,
             poison_budget = 2, poison_window_ms = 3000 },
}
