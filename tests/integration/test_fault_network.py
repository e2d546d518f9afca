"""Fault test: the network between the runtime and the broker breaks (a TCP proxy the test
controls sits in between).

- reset: every connection is reset at once, three times, while the app publishes;
- black hole: for longer than the keepalive nothing gets through (bytes vanish, nothing is
  answered, new connections are refused) — a car in a tunnel. The runtime must notice by
  itself (1.5 x keepalive of silence, the rule AWS IoT applies), reconnect once the network
  is back, and drain everything it queued meanwhile.

keepalive is 30 s, the smallest value AWS IoT accepts, so the black-hole test takes ~50 s."""

import time

import faultlib
from tcpproxy import TcpProxy

PUBLISHER = r'''
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
local timer = require "moonwire.timer"
local app = require("moonwire.device").config.app
local seq = 0
local t
t = timer.every(app.period, function()
  seq = seq + 1
  assert(mqtt.publish("cars/car-01/telemetry", tostring(seq), {qos = 1}))
  if seq == app.last then t:stop() end
end)
mqtt.on("disconnect", function(reason) log.warn("DISCONNECT " .. reason) end)
timer.every(200, function()
  local s, st = mqtt.outbox(), mqtt.stats()
  log.info("state seq=" .. seq .. " pending=" .. s.pending .. " inflight=" .. s.inflight .. " resent=" ..
           s.resent .. " connects=" .. st.connects .. " keepalive_timeouts=" .. st.keepalive_timeouts ..
           " broker_closed=" .. st.broker_closed .. " strikes=" .. s.strikes)
end)
'''


def test_connections_reset_three_times_lose_nothing(broker, pki, moonwire):
    peer = faultlib.SeqPeer(broker, pki, "cars/car-01/telemetry")
    last = 1500
    with TcpProxy(broker.port) as proxy:
        app = moonwire(PUBLISHER, broker=proxy.port,
                       config={"reconnect": {"base_ms": 50, "cap_ms": 200}, "app": {"period": 2, "last": last}})
        for i in range(3):
            faultlib.wait_state(app, lambda s, i=i: s["connects"] == i + 1 and s["seq"] > 200 * (i + 1), 20,
                                f"connection {i + 1} carrying traffic")
            proxy.reset()
        st = faultlib.wait_state(app, lambda s: s["seq"] == last and s["pending"] == 0 and s["inflight"] == 0, 30,
                                 "an empty outbox")
    peer.wait_for({(0, n) for n in range(1, last + 1)}, timeout=20)
    assert st["connects"] == 4 and st["broker_closed"] == 3, st
    assert peer.duplicates() - peer.dup_flagged <= st["resent"]
    assert "DISCONNECT connection lost: the broker closed the connection" in app.stderr()
    peer.close()


def test_black_hole_longer_than_keepalive_is_detected_and_drained(broker, pki, moonwire):
    peer = faultlib.SeqPeer(broker, pki, "cars/car-01/telemetry")
    last = 2000
    with TcpProxy(broker.port) as proxy:
        app = moonwire(PUBLISHER, broker=proxy.port,
                       config={"broker": {"keepalive": 30}, "reconnect": {"base_ms": 200, "cap_ms": 1000},
                               "app": {"period": 25, "last": last}})
        faultlib.wait_state(app, lambda s: s["seq"] > 40 and s["pending"] < 5, 20, "traffic")
        cut_at = time.monotonic()
        proxy.blackhole()
        app.wait_for_output(r"DISCONNECT connection lost: nothing received from the broker for 45 s "
                            r"\(1.5 x keepalive\): the network is probably down", timeout=70)
        detected = time.monotonic() - cut_at
        assert 44 <= detected <= 50, f"detected after {detected:.1f} s"
        # Still offline: the app keeps publishing into the outbox.
        queued = faultlib.wait_state(app, lambda s: s["pending"] > 100, 10, "a backlog")
        proxy.restore()
        st = faultlib.wait_state(app, lambda s: s["connects"] == 2 and s["pending"] < 3, 30, "the backlog drained")
        assert st["keepalive_timeouts"] == 1 and st["strikes"] == 0, st
        seq = st["seq"]
    peer.wait_for({(0, n) for n in range(1, seq + 1)}, timeout=20)
    assert peer.duplicates() - peer.dup_flagged <= st["resent"]
    print(f"\nblack hole: detected after {detected:.1f} s; backlog {queued['pending']} drained; "
          f"{seq} messages, all arrived")
    peer.close()
