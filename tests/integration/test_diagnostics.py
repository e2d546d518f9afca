"""Diagnostics: why a connection failed or ended is said in plain words in the log and counted
in mqtt.stats() (CONNACK refusals, TLS failures, broker closes, MQTT 5 reason codes)."""

import re

import pytest

STATS_APP = r'''
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
local timer = require "moonwire.timer"
timer.every(100, function()
  local s = mqtt.stats()
  log.info("stats connack_refused=" .. s.connack_refused .. " tls_failures=" .. s.tls_failures ..
           " broker_closed=" .. s.broker_closed .. " keepalive_timeouts=" .. s.keepalive_timeouts ..
           " last_connack=" .. tostring(s.last_connack) .. " last_disconnect_reason=" ..
           tostring(s.last_disconnect_reason))
end)
'''

FAST = {"reconnect": {"base_ms": 100, "cap_ms": 300}}


def test_refused_connack_is_explained_and_counted(make_broker, moonwire):
    b = make_broker(extra_conf=["clientid_prefixes allowed-"])
    app = moonwire(STATS_APP, broker=b, config=FAST)
    app.wait_for_output(r"the broker refused the connection: Connection Refused: not authorised\. \(CONNACK 5\): "
                        r"the broker does not authorise this device \(not authorised; AWS IoT: the certificate is "
                        r"inactive, not attached to a policy, or the policy does not allow iot:Connect")
    app.wait_for_output(r"stats connack_refused=[2-9]\d* tls_failures=0 .* last_connack=5 ")


def test_refused_connack_with_mqtt5_names_the_reason_code(make_broker, moonwire):
    b = make_broker(extra_conf=["clientid_prefixes allowed-"])
    app = moonwire(STATS_APP, broker=b, config=dict(FAST, broker={"protocol": "5"}))
    m = app.wait_for_output(r"the broker refused the connection: (.*) \(CONNACK reason 0x([0-9A-F]{2})\): (.*)")
    code = int(m.group(2), 16)
    assert code >= 0x80, m.group(0)
    assert m.group(1) != "unknown reason"
    app.wait_for_output(r"stats connack_refused=[1-9]\d* .* last_connack=%d " % code)


@pytest.mark.parametrize("server_cert", ["server.expired", "server.rogue"])
def test_tls_failures_are_counted(make_broker, moonwire, server_cert):
    bad = make_broker(server_cert=server_cert)
    app = moonwire(STATS_APP, broker=bad, config=FAST)
    app.wait_for_output(r"TLS: the broker's certificate")
    app.wait_for_output(r"stats connack_refused=0 tls_failures=[2-9]\d* ")


def test_mqtt5_maximum_packet_size_is_respected(make_broker, moonwire):
    # mosquitto announces max_packet_size to MQTT 5 clients in CONNACK: a larger message is
    # refused before it leaves, goes to the dead letters, and does not hold up the rest.
    b = make_broker(extra_conf=["max_packet_size 2048"])
    app = moonwire(STATS_APP + r'''
mqtt.on("connect", function()
  if sent then return end
  sent = true
  assert(mqtt.publish("cars/car-01/blob", string.rep("b", 4000), {qos = 1}))
  assert(mqtt.publish("cars/car-01/small", "s", {qos = 1, on_ack = function() log.info("small acked") end}))
end)
mqtt.on("dead_letter", function(m) log.warn("DEAD " .. m.topic .. ": " .. m.reason) end)
''', broker=b, config=dict(FAST, broker={"protocol": "5"}))
    app.wait_for_output(r"DEAD cars/car-01/blob: it cannot be sent: the message is larger than the broker accepts "
                        r"\(the Maximum Packet Size it announced\)")
    app.wait_for_output(r"small acked")
    app.wait_for_output(r"stats connack_refused=0 tls_failures=0 broker_closed=0 ")


def test_broker_shutdown_is_counted_as_a_broker_close(broker, moonwire):
    app = moonwire(STATS_APP, config=FAST)
    app.wait_for_output(r"connected to")
    broker.stop()
    app.wait_for_output(r"connection lost: the broker closed the connection")
    app.wait_for_output(r"stats connack_refused=0 tls_failures=0 broker_closed=1 keepalive_timeouts=0")
    assert not re.search(r"connection lost: TLS", app.stderr())
