"""moonwire run against a real mosquitto with mutual TLS, paho-mqtt as the other side."""

import json
import signal
import time

# An app that reports what each of its handlers saw to cars/car-01/seen, so the test can
# check per-filter dispatch from the outside.
ECHO_APP = r'''
local mqtt = require "moonwire.mqtt"
local json = require "moonwire.json"
local function report(name)
  return function(topic, payload, info)
    -- cars/car-01/# also sees what this app publishes itself; report only inputs.
    if topic:match("/seen$") or topic:match("/acked$") or topic:match("/status$") then return end
    mqtt.publish("cars/car-01/seen", json.encode{handler = name, topic = topic, payload = payload,
      qos = info.qos, retain = info.retain, dup = info.dup}, {qos = 1})
  end
end
mqtt.subscribe("cars/car-01/cmd", report("exact"), {qos = 1})
mqtt.subscribe("cars/car-01/+", report("plus"), {qos = 1})
mqtt.subscribe("cars/car-01/#", report("hash"))
mqtt.subscribe("cars/+/telemetry", report("telemetry"))
mqtt.on("connect", function(info)
  mqtt.publish("cars/car-01/status", "online", {qos = 1, on_ack = function(mid)
    mqtt.publish("cars/car-01/acked", tostring(mid))
  end})
end)
'''


def seen(messages):
    return sorted((json.loads(m.payload)["handler"], json.loads(m.payload)["topic"]) for m in messages)


def test_per_filter_handlers_with_overlapping_wildcards(broker, client, moonwire):
    watcher = client("dispatcher")
    watcher.subscribe("cars/#", qos=1)
    app = moonwire(ECHO_APP)
    app.wait_for_output(r"connected to 127\.0\.0\.1")
    watcher.wait_message("cars/car-01/status")
    # on_ack fired for the QoS 1 status publish
    ack = watcher.wait_message("cars/car-01/acked")
    assert int(ack.payload) > 0

    watcher.publish("cars/car-01/cmd", '{"cmd":"honk"}', qos=1)
    got = watcher.wait_messages(3, "cars/car-01/seen")
    time.sleep(0.3)  # any duplicate would arrive by now
    got = watcher.received("cars/car-01/seen")
    assert seen(got) == [("exact", "cars/car-01/cmd"), ("hash", "cars/car-01/cmd"),
                         ("plus", "cars/car-01/cmd")]
    payload = json.loads(got[0].payload)
    assert payload["payload"] == '{"cmd":"honk"}'
    assert payload["retain"] is False and payload["dup"] is False

    # Another car's telemetry reaches only the telemetry handler.
    watcher.clear()
    other = client("car-02")
    other.publish("cars/car-02/telemetry", "{}", qos=0)
    msg = watcher.wait_message("cars/car-01/seen")
    time.sleep(0.3)
    assert seen(watcher.received("cars/car-01/seen")) == [("telemetry", "cars/car-02/telemetry")]
    assert json.loads(msg.payload)["qos"] == 0


def test_qos0_and_qos1_and_retained_delivery(broker, client, moonwire):
    watcher = client("dispatcher")
    # A retained command published before the app subscribes arrives with retain = true.
    watcher.publish("cars/car-01/cmd", "early", qos=1, retain=True)
    watcher.subscribe("cars/car-01/seen", qos=1)
    app = moonwire(ECHO_APP)
    app.wait_for_output("connected")
    watcher.wait_messages(3, "cars/car-01/seen")
    time.sleep(0.5)
    # mosquitto sends a retained message once per subscribing filter that matches it (three
    # here), and each copy goes to every matching handler; AWS IoT sends it only for an
    # exact-topic filter. Either way every handler sees it, flagged as retained.
    first = [json.loads(m.payload) for m in watcher.received("cars/car-01/seen")]
    assert {p["handler"] for p in first} == {"exact", "plus", "hash"}
    assert all(p["retain"] is True and p["payload"] == "early" for p in first)
    assert len(first) % 3 == 0
    watcher.publish("cars/car-01/cmd", "", qos=1, retain=True)  # remove the retained message
    time.sleep(0.3)
    watcher.clear()
    watcher.publish("cars/car-01/cmd", "q0", qos=0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = [json.loads(m.payload) for m in watcher.received("cars/car-01/seen")
               if json.loads(m.payload)["payload"] == "q0"]
        if len(got) >= 3:
            break
        time.sleep(0.02)
    assert len(got) == 3
    assert {p["qos"] for p in got} == {0} and {p["payload"] for p in got} == {"q0"}
    assert all(p["retain"] is False for p in got)


def test_raising_handler_is_logged_and_others_keep_running(broker, client, moonwire):
    app_src = (
        'local mqtt = require "moonwire.mqtt"\n'
        'local count = 0\n'
        'mqtt.subscribe("cars/car-01/cmd", function(t, p)\n'
        '  count = count + 1\n'
        '  if p == "boom" then error("handler exploded on purpose") end\n'
        'end)\n'
        'mqtt.subscribe("cars/car-01/cmd", function(t, p)\n'
        '  mqtt.publish("cars/car-01/seen", p .. ":" .. count)\n'
        'end)\n')
    watcher = client("dispatcher")
    watcher.subscribe("cars/car-01/seen")
    app = moonwire(app_src)
    app.wait_for_output("connected")
    watcher.publish("cars/car-01/cmd", "boom", qos=1)
    assert watcher.wait_message("cars/car-01/seen").payload == b"boom:1"
    m = app.wait_for_output(r"handler for 'cars/car-01/cmd' failed: (\S+):(\d+): handler exploded on purpose")
    assert m.group(1).endswith("app.lua") and m.group(2) == "5"
    assert "stack traceback" in app.stderr()
    watcher.clear()
    watcher.publish("cars/car-01/cmd", "fine", qos=1)
    assert watcher.wait_message("cars/car-01/seen").payload == b"fine:2"
    assert app.running


def test_policy_refusals_are_reported_and_the_app_keeps_working(broker, client, moonwire):
    app_src = (
        'local mqtt = require "moonwire.mqtt"\n'
        'mqtt.subscribe("cars/car-02/cmd", function() end)\n'  # outside car-01's policy
        'mqtt.subscribe("cars/car-01/cmd", function(t, p) mqtt.publish("cars/car-01/seen", p) end)\n'
        'mqtt.on("connect", function()\n'
        '  mqtt.publish("cars/car-02/telemetry", "spoofed")\n'  # forbidden publish: broker drops it
        'end)\n')
    watcher = client("dispatcher")
    watcher.subscribe("cars/#")
    app = moonwire(app_src)
    app.wait_for_output(r"refused the subscription to 'cars/car-02/cmd' \(SUBACK 0x80\)")
    watcher.publish("cars/car-01/cmd", "still here", qos=1)
    assert watcher.wait_message("cars/car-01/seen").payload == b"still here"
    assert not watcher.received("cars/car-02/telemetry")


def test_topic_rules_raise_naming_the_rule(broker, client, moonwire):
    app_src = (
        'local mqtt = require "moonwire.mqtt"\n'
        'mqtt.on("connect", function()\n'
        '  local ok, err = pcall(mqtt.publish, "cars/car-01/a/b/c/d/e/f/g", "x")\n'
        '  mqtt.publish("cars/car-01/seen", tostring(err))\n'
        '  local ok2, msg, code = mqtt.publish("cars/car-01/big", string.rep("x", 200 * 1024))\n'
        '  mqtt.publish("cars/car-01/seen", tostring(msg) .. "|" .. tostring(code))\n'
        'end)\n')
    watcher = client("dispatcher")
    watcher.subscribe("cars/car-01/seen")
    moonwire(app_src)
    first, second = watcher.wait_messages(2, "cars/car-01/seen")
    assert b"more than AWS IoT's limit of 7" in first.payload
    assert b"over the 131072-byte limit|E2BIG" in second.payload


def test_clean_shutdown_sends_disconnect_and_no_last_will(broker, client, moonwire):
    cfg = {"will": {"topic": "cars/car-01/status", "payload": "offline", "qos": 1, "retain": False}}
    watcher = client("dispatcher")
    watcher.subscribe("cars/car-01/status", qos=1)
    app = moonwire('require "moonwire.log".info("up")', config=cfg)
    app.wait_for_output("connected")
    assert app.terminate(sig=signal.SIGINT) == 0
    assert "disconnected" in app.stderr()
    watcher.expect_no_message("cars/car-01/status", within=1.0)
    broker.wait_for_log(r"Client car-01 disconnected\.")

    # Without a clean DISCONNECT the broker does publish the will: the test above could fail.
    app2 = moonwire('require "moonwire.log".info("up")', config=cfg)
    app2.wait_for_output("connected")
    app2.kill()
    assert watcher.wait_message("cars/car-01/status", timeout=5).payload == b"offline"


def test_sigterm_exit_code_and_unsubscribe(broker, client, moonwire):
    app_src = (
        'local mqtt = require "moonwire.mqtt"\n'
        'local sub\n'
        'sub = mqtt.subscribe("cars/car-01/cmd", function(t, p)\n'
        '  mqtt.publish("cars/car-01/seen", p)\n'
        '  if p == "last" then sub:unsubscribe() end\n'
        'end)\n')
    watcher = client("dispatcher")
    watcher.subscribe("cars/car-01/seen")
    app = moonwire(app_src)
    app.wait_for_output("connected")
    watcher.publish("cars/car-01/cmd", "last", qos=1)
    watcher.wait_message("cars/car-01/seen")
    broker.wait_for_log(r"Received UNSUBSCRIBE from car-01")
    watcher.clear()
    watcher.publish("cars/car-01/cmd", "after", qos=1)
    watcher.expect_no_message("cars/car-01/seen", within=0.5)
    assert app.terminate(sig=signal.SIGTERM) == 0
