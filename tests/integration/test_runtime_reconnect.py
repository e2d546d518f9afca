"""Reconnection: backoff after the broker goes away, subscriptions restored."""

import re
import time

APP = r'''
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
local connects = 0
mqtt.subscribe("cars/car-01/cmd", function(t, p) mqtt.publish("cars/car-01/seen", p) end, {qos = 1})
mqtt.on("connect", function(info)
  connects = connects + 1
  log.info("connect event", connects, "session_present=" .. tostring(info.session_present))
end)
mqtt.on("disconnect", function(reason) log.info("disconnect event:", reason) end)
'''


def test_reconnect_after_broker_restart_restores_subscriptions(broker, client, moonwire):
    app = moonwire(APP, config={"reconnect": {"base_ms": 200, "cap_ms": 2000}})
    app.wait_for_output(r"connect event 1 session_present=false")
    broker.kill()
    app.wait_for_output(r"disconnect event: connection lost")
    app.wait_for_output(r"reconnecting in \d+\.\d s")
    time.sleep(1.0)
    broker.restart()
    app.wait_for_output(r"connect event 2 session_present=false", timeout=10)
    watcher = client("dispatcher")
    watcher.subscribe("cars/car-01/seen")
    watcher.publish("cars/car-01/cmd", "after restart", qos=1)
    assert watcher.wait_message("cars/car-01/seen").payload == b"after restart"
    # The connection failures while the broker was down were explained, not silent.
    assert re.search(r"cannot connect to 127\.0\.0\.1:\d+: Connection refused", app.stderr())


def test_backoff_stays_within_its_bounds_while_nothing_listens(moonwire):
    from mwtest import free_port
    port = free_port()  # nothing listens here
    app = moonwire(APP, broker=port, config={"reconnect": {"base_ms": 400, "cap_ms": 1600}})
    delays = []
    deadline = time.monotonic() + 10
    while len(delays) < 6 and time.monotonic() < deadline:
        delays = [float(x) for x in re.findall(r"reconnecting in (\d+\.\d) s", app.stderr())]
        time.sleep(0.05)
    assert len(delays) >= 6, app.stderr()
    assert delays[0] <= 0.4
    assert all(d <= 1.6 for d in delays)
    assert app.running


def test_refused_connack_is_explained_and_backs_off(pki, make_broker, moonwire):
    # mosquitto refuses client ids outside clientid_prefixes ("not authorised", CONNACK 5),
    # as AWS IoT refuses a client id its policy does not allow to connect.
    b = make_broker(extra_conf=["clientid_prefixes allowed-"])
    app = moonwire(APP, broker=b, config={"reconnect": {"base_ms": 200, "cap_ms": 400}})
    app.wait_for_output(r"the broker refused the connection: Connection Refused: not authorised\. \(CONNACK 5\)")
    app.wait_for_output(r"reconnecting in 0\.[0-4] s")
    # It keeps trying, with backoff, and never reports a connect event.
    time.sleep(1.0)
    assert len(re.findall(r"CONNACK 5", app.stderr())) >= 2
    assert "connect event" not in app.stderr()
