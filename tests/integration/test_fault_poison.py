"""Fault test: a message the broker refuses by closing the connection (as AWS IoT does on a
policy denial, an oversized message or a forbidden topic) is retried within its budget, then
moved to the dead letters; the app is told, other traffic keeps flowing, the connection stops
cycling, and `moonwire outbox` lists, requeues and drops it.

How the real broker is made to close the connection on one message: mosquitto's
`max_packet_size` disconnects a client that sends a larger packet (for MQTT 3.1.1 clients it
simply closes the connection, like AWS IoT). mosquitto answers a publish its ACL denies with a
PUBACK instead (and drops the message) under MQTT 3.1.1, so that path cannot show this
pattern; under MQTT 5 it answers with PUBACK reason 0x87, which is tested below as the
explicit refusal."""

import re
import time

import mwtest

POISON_APP = r'''
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
local timer = require "moonwire.timer"
local app = require("moonwire.device").config.app
local seq = 0
mqtt.on("dead_letter", function(m)
  log.warn("DEAD id=" .. m.id .. " topic=" .. m.topic .. " size=" .. m.size .. " strikes=" .. m.strikes ..
           " reason=" .. m.reason)
end)
mqtt.on("connect", function() log.info("CONNECTED") end)
local t
t = timer.every(20, function()
  seq = seq + 1
  assert(mqtt.publish("cars/car-01/telemetry", tostring(seq), {qos = 1}))
  if seq == app.poison_at then
    assert(mqtt.publish(app.poison_topic or "cars/car-01/blob", string.rep("x", app.poison_size), {qos = 1}))
  end
  if seq == app.last then t:stop() end
end)
timer.every(200, function()
  local s = mqtt.outbox()
  log.info("state seq=" .. seq .. " pending=" .. s.pending .. " dead=" .. s.dead .. " strikes=" .. s.strikes ..
           " connects=" .. mqtt.stats().connects)
end)
'''


def check_sequence(msgs, last):
    got = [int(m.payload) for m in msgs]
    assert sorted(set(got)) == list(range(1, last + 1)), f"missing: {set(range(1, last + 1)) - set(got)}"
    return len(got) - len(set(got))


def test_poison_message_is_dead_lettered_and_the_connection_stops_cycling(make_broker, client, moonwire, tmp_path):
    broker = make_broker(extra_conf=["max_packet_size 2048"])
    peer = client("dispatcher", broker=broker)
    peer.subscribe("cars/car-01/#")
    db = tmp_path / "outbox.db"
    env = mwtest.repl_env(tmp_path)
    app = moonwire(POISON_APP, broker=broker, env=env,
                   config={"reconnect": {"base_ms": 100, "cap_ms": 300},
                           "outbox": {"path": str(db), "poison_budget": 3},
                           "app": {"poison_at": 20, "poison_size": 4000, "last": 150}})
    dead = app.wait_for_output(r"DEAD id=(\d+) topic=cars/car-01/blob size=4000 strikes=3 reason=(.*)", timeout=30)
    dead_id = int(dead.group(1))
    assert "the broker closed the connection" in dead.group(2)
    # Plain words in the log for each strike, naming the topic.
    strikes = re.findall(r"message %d to 'cars/car-01/blob' \(4000 bytes\): the broker closed the connection \d+ ms "
                         r"after a publish to 'cars/car-01/blob' without acknowledging it, and accepted the next "
                         r"connection at once: the thing's policy probably denies publishing there" % dead_id,
                         app.stderr())
    assert len(strikes) == 2, app.stderr()
    assert re.search(r"moved to the dead letters after 3 attempt\(s\)", app.stderr())
    # Everything else arrives, in order of first delivery; duplicates only as resends.
    m = app.wait_for_output(r"state seq=150 pending=0 dead=1 strikes=3 connects=(\d+)", timeout=30)
    connects = int(m.group(1))
    assert connects == 4, f"expected the first connection plus one per strike, got {connects}"
    msgs = peer.wait_messages(150, "cars/car-01/telemetry", timeout=20)
    check_sequence(msgs, 150)
    assert not peer.received("cars/car-01/blob")
    # The connection has stopped cycling.
    time.sleep(1.0)
    assert app.wait_for_output(r"state seq=150 pending=0 dead=1 strikes=3 connects=4", timeout=5)

    cfg = str(app.config_path)
    r = mwtest.run_moonwire("outbox", "list", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert re.search(r"dead letters: 1 message\(s\)", r.stdout)
    assert re.search(r"\n  %d\s+\S+ \S+\s+3\s+4000  cars/car-01/blob\n\s+the broker closed the connection" % dead_id,
                     r.stdout), r.stdout
    r = mwtest.run_moonwire("outbox", "show", str(dead_id), "--config", cfg)
    assert r.returncode == 0 and "x" * 4000 in r.stdout and "strikes:  3" in r.stdout
    r = mwtest.run_moonwire("outbox", "show", "999999", "--config", cfg)
    assert r.returncode == 1 and "no dead letter 999999" in r.stderr

    # Requeued from the command line while the runtime runs: it tries again (and fails again).
    r = mwtest.run_moonwire("outbox", "retry", str(dead_id), "--config", cfg)
    assert r.returncode == 0 and re.search(r"dead letter %d requeued as message \d+" % dead_id, r.stdout), r.stderr
    app.wait_for_output(r"state seq=150 pending=0 dead=1 strikes=6 connects=7", timeout=30)
    assert len(re.findall(r"DEAD id=\d+ topic=cars/car-01/blob", app.stderr())) == 2

    # The REPL inside the running device lists it and drops it.
    r = mwtest.attach(env, "car-01", input=".outbox\n")
    assert r.returncode == 0, r.stderr
    assert re.search(r"1 dead letter\(s\):", r.stdout) and "cars/car-01/blob" in r.stdout, r.stdout
    second = int(re.findall(r"DEAD id=(\d+) topic=cars/car-01/blob", app.stderr())[-1])
    r = mwtest.attach(env, "car-01", "-e", f"return mqtt.drop({second})")
    assert r.stdout.strip() == "true", r.stdout + r.stderr
    app.wait_for_output(r"state seq=150 pending=0 dead=0", timeout=10)
    r = mwtest.run_moonwire("outbox", "list", "--config", cfg)
    assert "dead letters: 0 message(s)" in r.stdout
    r = mwtest.run_moonwire("outbox", "drop", "all", "--config", cfg)
    assert r.returncode == 0 and "no dead letters" in r.stdout


REFUSED_APP = r'''
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
local timer = require "moonwire.timer"
mqtt.on("dead_letter", function(m) log.warn("DEAD id=" .. m.id .. " topic=" .. m.topic .. " reason=" .. m.reason) end)
mqtt.on("connect", function()
  assert(mqtt.publish("cars/car-01/ok", "1", {qos = 1}))
  assert(mqtt.publish("cars/car-02/not-mine", "x", {qos = 1}))   -- the policy denies this one
  assert(mqtt.publish("cars/car-01/ok", "2", {qos = 1}))
end)
timer.every(200, function()
  local s = mqtt.outbox()
  log.info("state pending=" .. s.pending .. " dead=" .. s.dead .. " connects=" .. mqtt.stats().connects ..
           " puback_errors=" .. mqtt.stats().puback_errors)
end)
'''


def test_mqtt5_policy_refusal_is_dead_lettered_at_once(broker, client, moonwire):
    peer = client("dispatcher")
    peer.subscribe("cars/#")
    app = moonwire(REFUSED_APP, config={"broker": {"protocol": "5"}})
    dead = app.wait_for_output(r"DEAD id=\d+ topic=cars/car-02/not-mine reason=(.*)", timeout=15)
    assert "PUBACK Not authorized (0x87)" in dead.group(1)
    assert "the thing's policy does not allow this" in dead.group(1)
    app.wait_for_output(r"state pending=0 dead=1 connects=1 puback_errors=1", timeout=10)
    msgs = peer.wait_messages(2, "cars/car-01/ok", timeout=10)
    assert [m.payload for m in msgs] == [b"1", b"2"]
    assert not peer.received("cars/car-02/#")
