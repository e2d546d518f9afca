return { thing = "car-01", broker = { host = "127.0.0.1", port = 8883 },
  tls = { ca = "ca.pem", cert = "c.crt", key = "trustm:0xE0F1" },
  will = { topic = "cars/car-01/status", payload = "offline", qos = 1, retain = true } }
