"""The durable outbox: offline publishing, order, handles and on_ack across reconnects, DUP on
resends after a restart, QoS 0 offline policies, counters, the limit policies, and the
`moonwire outbox` command. Fault tests proper (broker restarts, kill -9, network cuts, poison
messages, a full outbox or disk) are in test_fault_*.py."""

import re
import sqlite3
import time

import mwtest
from tcpproxy import TcpProxy

FAST = {"reconnect": {"base_ms": 100, "cap_ms": 400}}


def dup_flags(broker, client_id="car-01", topic_prefix="cars/car-01/"):
    """(dup, mid, topic) of every PUBLISH the broker received from client_id, from its debug log."""
    rx = re.compile(r"Received PUBLISH from %s \(d(\d), q\d, r\d, m(\d+), '([^']*)'" % re.escape(client_id))
    return [(int(d), int(m), t) for d, m, t in rx.findall(broker.log_text()) if t.startswith(topic_prefix)]


def wait_log(app, pattern, timeout=20):
    return app.wait_for_output(pattern, timeout=timeout)


OFFLINE_APP = r'''
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
local handles = {}
for i = 1, 30 do
  local h, err, code = mqtt.publish("cars/car-01/telemetry", tostring(i),
    {qos = 1, on_ack = function(handle) log.info("acked", handle) end})
  assert(h, err)
  handles[#handles + 1] = h
end
local s = mqtt.outbox()
log.info("handles " .. table.concat(handles, ","))
log.info("offline pending=" .. s.pending .. " durable=" .. tostring(s.durable) .. " inflight=" .. s.inflight)
mqtt.on("connect", function()
  log.info("connected; pending=" .. mqtt.outbox().pending)
end)
'''


def test_publish_offline_returns_handles_and_delivers_in_order_after_connect(broker, client, moonwire):
    peer = client("dispatcher")
    peer.subscribe("cars/car-01/#")
    with TcpProxy(broker.port) as proxy:
        proxy.blackhole()  # the network is down from the start: connections are refused
        app = moonwire(OFFLINE_APP, broker=proxy.port, config=FAST)
        m = wait_log(app, r"handles ([\d,]+)")
        handles = [int(x) for x in m.group(1).split(",")]
        assert handles == sorted(handles) and len(set(handles)) == 30
        wait_log(app, r"offline pending=30 durable=true inflight=0")
        time.sleep(0.5)
        assert not peer.received("cars/car-01/#")
        proxy.restore()
        msgs = peer.wait_messages(30, "cars/car-01/telemetry", timeout=20)
        assert [int(x.payload) for x in msgs] == list(range(1, 31))
        # Every on_ack ran once, with the handle publish returned.
        for h in handles:
            wait_log(app, r"acked %d\b" % h)
        assert len(re.findall(r"acked \d+", app.stderr())) == 30
        # First deliveries are not marked DUP.
        flags = dup_flags(broker)
        assert len(flags) == 30 and all(d == 0 for d, _, _ in flags)


RESTART_APP = r'''
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
local timer = require "moonwire.timer"
local app = require("moonwire.device").config.app
for i = 1, app.count do assert(mqtt.publish("cars/car-01/telemetry", "n" .. i, {qos = 1})) end
local fired = false
timer.every(50, function()
  if app.trigger and not fired then
    local f = io.open(app.trigger)
    if f then
      f:close()
      fired = true
      for i = 1, 5 do assert(mqtt.publish("cars/car-01/telemetry", "s" .. i, {qos = 1})) end
    end
  end
  local s = mqtt.outbox()
  log.info("state pending=" .. s.pending .. " inflight=" .. s.inflight .. " sent=" .. s.sent ..
           " resent=" .. s.resent .. " acked=" .. s.acked)
end)
'''


def test_unacknowledged_messages_are_sent_again_with_dup_after_a_kill(broker, client, moonwire, tmp_path):
    peer = client("dispatcher")
    peer.subscribe("cars/car-01/#")
    cfg = dict(FAST, outbox={"path": str(tmp_path / "outbox.db")})
    trigger = tmp_path / "go"
    with TcpProxy(broker.port) as proxy:
        first = moonwire(RESTART_APP, broker=proxy.port, config=dict(cfg, app={"count": 0, "trigger": str(trigger)}))
        wait_log(first, r"connected to")
        proxy.blackhole()    # the connection stays open, but nothing reaches the broker any more
        trigger.write_text("")
        wait_log(first, r"state pending=5 inflight=5 sent=5 resent=0 acked=0")
        first.kill()         # SIGKILL: no goodbye, the messages were on the wire, unacknowledged
    # The next start sends those five again, marked DUP, and then its own new two, not marked.
    again = moonwire(RESTART_APP, broker=broker, config=dict(cfg, app={"count": 2}))
    wait_log(again, r"5 unacknowledged message\(s\) will be sent again \(DUP\)")
    wait_log(again, r"state pending=0 inflight=0 sent=2 resent=5 acked=7")
    msgs = peer.wait_messages(7, timeout=15)
    assert [m.payload for m in msgs] == [b"s1", b"s2", b"s3", b"s4", b"s5", b"n1", b"n2"]
    assert [d for d, _, _ in dup_flags(broker)] == [1, 1, 1, 1, 1, 0, 0]


QOS0_APP = r'''
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
for i = 1, 5 do
  local ok, err, code = mqtt.publish("cars/car-01/q0", "z" .. i)
  log.info("qos0 " .. i .. " " .. tostring(ok) .. " " .. tostring(err) .. " " .. tostring(code))
end
local s = mqtt.outbox()
log.info("q0 queued=" .. s.qos0_queued .. " dropped=" .. s.qos0_dropped)
'''


def test_qos0_offline_is_dropped_with_a_counter_by_default(broker, client, moonwire):
    peer = client("dispatcher")
    peer.subscribe("cars/car-01/#")
    with TcpProxy(broker.port) as proxy:
        proxy.blackhole()
        app = moonwire(QOS0_APP, broker=proxy.port, config=FAST)
        wait_log(app, r"q0 queued=0 dropped=5")
        assert re.search(r'qos0 1 nil not connected: QoS 0 message to \'cars/car-01/q0\' dropped '
                         r'\(outbox.qos0_offline = "drop"\) ENOTCONN', app.stderr())
        proxy.restore()
        peer.expect_no_message("cars/car-01/q0", within=1.5)


def test_qos0_offline_can_be_queued_in_memory(broker, client, moonwire):
    peer = client("dispatcher")
    peer.subscribe("cars/car-01/#")
    with TcpProxy(broker.port) as proxy:
        proxy.blackhole()
        app = moonwire(QOS0_APP, broker=proxy.port,
                       config=dict(FAST, outbox={"qos0_offline": "queue", "qos0_max": 3, "when_full": "drop_oldest"}))
        wait_log(app, r"q0 queued=3 dropped=2")
        proxy.restore()
        msgs = peer.wait_messages(3, "cars/car-01/q0", timeout=15)
        assert [m.payload for m in msgs] == [b"z3", b"z4", b"z5"]


def test_a_second_runtime_cannot_open_the_same_outbox(broker, moonwire, tmp_path):
    cfg = {"outbox": {"path": str(tmp_path / "shared.db")}}
    first = moonwire("", config=cfg)
    first.wait_for_output(r"connected to")
    second = moonwire("", config=cfg)
    assert second.wait(10) == 1
    assert re.search(r"the outbox .*shared.db is in use by another moonwire process \(pid %d\)" % first.pid,
                     second.stderr())


FLUSH_APP = r'''
local mqtt = require "moonwire.mqtt"
assert(mqtt.publish("cars/car-01/telemetry", "f1", {qos = 1}))
assert(mqtt.flush())
assert(mqtt.publish("cars/car-01/telemetry", "f2", {qos = 1}))
-- Leave at once, like a crash: the loop turn never ends, so only what flush() committed stays.
os.exit(3, false)
'''


def test_flush_makes_accepted_messages_durable_within_the_callback(moonwire, tmp_path):
    db = tmp_path / "outbox.db"
    app = moonwire(FLUSH_APP, broker=mwtest.free_port(), config=dict(FAST, outbox={"path": str(db)}))
    assert app.wait(10) == 3
    conn = sqlite3.connect(str(db))
    rows = [r[0] for r in conn.execute("SELECT payload FROM outbox ORDER BY seq")]
    conn.close()
    assert rows == [b"f1"]
