"""moonwire.shadow (the device side, in Lua) end to end.

The car is `moonwire run` with a Lua app using `require "moonwire.shadow"`; the shadow service is
`moonwire shadow-service` (SQLite) on the same real mosquitto; "another client" is paho as the
`operator` identity (policy fleet-operator). The car reaches the broker through mwtest.TcpProxy so
a test can take the car alone offline while the operator keeps changing its shadow.

Situations the real service cannot produce on demand (out-of-order messages, a 409 against a
reported batch) are played by paho under the `shadow-service` identity, on the real broker.
"""

import json
import re
import signal
import time

import pytest

import mwtest

T = "$aws/things/car-01/shadow"

CAR = r'''
local shadow = require "moonwire.shadow"
local json = require "moonwire.json"
local log = require "moonwire.log"
local timer = require "moonwire.timer"
local mqtt = require "moonwire.mqtt"

local sh = shadow.open(NAME)
local speed = 0
sh:on_delta(function(delta, version, info)
  log.info(("DELTA v%d %s %s"):format(version, info.source, json.encode(delta)))
  -- The car obeys: a new speed limit is applied and reported back.
  if delta.max_speed then sh.reported.max_speed = delta.max_speed end
  if delta.mode then sh.reported.mode = delta.mode end
end)
sh:on_error(function(msg, code) log.warn("SHADOW ERROR", code, msg) end)
timer.every(100, function()
  speed = speed % 50 + 1
  sh.reported.speed = speed
end)
mqtt.on("connect", function() log.info("CONNECTED") end)
mqtt.on("disconnect", function(reason) log.info("OFFLINE", reason) end)
mqtt.subscribe("cars/car-01/cmd", function(_, cmd)
  if cmd == "dump" then
    log.info(("DUMP version=%d desired=%s reported=%s"):format(sh.version,
      json.encode(shadow.copy(sh.desired)), json.encode(shadow.copy(sh.state.reported))))
  end
end, { qos = 1 })
'''


def car_app(name=None):
    return CAR.replace("NAME", "nil" if name is None else json.dumps(name))


@pytest.fixture
def service(shadow_service):
    return shadow_service


@pytest.fixture
def proxy(broker):
    p = mwtest.TcpProxy(broker.port)
    yield p
    p.close()


def car_config(tmp_path, **shadow):
    cfg = {"shadow": {"cache": str(tmp_path / "car-cache.db"), "debounce_ms": 50, "timeout_ms": 3000},
           "reconnect": {"base_ms": 100, "cap_ms": 300}}
    cfg["shadow"].update(shadow)
    return cfg


def count(app, pattern):
    return len(re.findall(pattern, app.stderr()))


def wait_count(app, pattern, n, timeout=10):
    mwtest.wait_until(lambda: count(app, pattern) >= n, timeout,
                      message=f"{n} x {pattern!r} in the car's log:\n{app.stderr()}")


class Operator:
    """paho as another client of the car's shadows (identity operator)."""

    def __init__(self, client, base=T):
        self.base = base
        self.c = client("operator")
        self.c.subscribe([f"{base}/get/+", f"{base}/update/+"], qos=1)
        self.n = 0

    def request(self, op, body, timeout=5):
        self.n += 1
        token = f"op-{self.n}"
        body = dict(body, clientToken=token)
        self.c.publish(f"{self.base}/{op}", json.dumps(body), qos=1)

        def answer():
            for m in self.c.received(f"{self.base}/{op}/+"):
                p = json.loads(m.payload)
                if p.get("clientToken") == token:
                    return m.topic.rsplit("/", 1)[1], p
            return None
        return mwtest.wait_until(answer, timeout, message=f"answer to {op} {body}")

    def get(self):
        kind, doc = self.request("get", {})
        return doc if kind == "accepted" else None

    def wait_reported(self, key, value, timeout=10):
        def ok():
            doc = self.get()
            return doc if doc and doc["state"].get("reported", {}).get(key) == value else None
        return mwtest.wait_until(ok, timeout, interval=0.1, message=f"reported.{key} == {value!r}")

    def wait_for(self, pred, what, timeout=10):
        def ok():
            doc = self.get()
            return doc if doc and pred(doc) else None
        return mwtest.wait_until(ok, timeout, interval=0.1, message=what)

    def set_desired(self, desired):
        kind, doc = self.request("update", {"state": {"desired": desired}})
        assert kind == "accepted", doc
        return doc["version"]


def test_car_obeys_a_desired_change_once_reports_back_and_resyncs_after_reconnect(
        broker, proxy, client, moonwire, service, tmp_path):
    service()
    car = moonwire(car_app(), broker=proxy.port, config=car_config(tmp_path))
    car.wait_for_output(r"CONNECTED")
    op = Operator(client)
    op.wait_for(lambda doc: "speed" in doc["state"].get("reported", {}), "the car's first report")

    # Another client changes desired state: the car gets the delta once and reports back.
    v = op.set_desired({"max_speed": 80})
    wait_count(car, r'DELTA v\d+ delta \{"max_speed":80\}', 1)
    assert re.search(rf'DELTA v{v} delta \{{"max_speed":80\}}', car.stderr()), car.stderr()
    doc = op.wait_reported("max_speed", 80)
    assert "delta" not in doc["state"]
    # The car keeps reporting its speed (new versions, more /update/accepted): no second delta.
    v0 = doc["version"]
    mwtest.wait_until(lambda: op.get()["version"] >= v0 + 5, 10, interval=0.1, message="more reports")
    assert count(car, r"DELTA ") == 1, car.stderr()

    # The car goes offline; meanwhile the desired speed limit changes twice.
    proxy.block()
    wait_count(car, r"OFFLINE", 1)
    op.set_desired({"max_speed": 50})
    op.set_desired({"max_speed": 60})
    time.sleep(0.3)
    assert count(car, r"DELTA ") == 1
    proxy.unblock()
    # After reconnecting, the car re-reads the document and gets the outstanding delta once.
    wait_count(car, r"CONNECTED", 2)
    wait_count(car, r'DELTA v\d+ get \{"max_speed":60\}', 1)
    op.wait_reported("max_speed", 60)
    assert count(car, r"DELTA ") == 2, car.stderr()

    # Reconnecting again with nothing new for the car delivers nothing.
    proxy.cut()
    wait_count(car, r"CONNECTED", 3)
    before = op.get()["state"]["reported"]["speed"]
    mwtest.wait_until(lambda: op.get()["state"]["reported"]["speed"] != before, 10, interval=0.1,
                      message="reports after the third connect")
    time.sleep(0.3)
    assert count(car, r"DELTA ") == 2, car.stderr()
    assert "SHADOW ERROR" not in car.stderr()
    assert "failed" not in car.stderr(), car.stderr()


# ------------------------------------------------------------------------ the cache

CACHED = r'''
local shadow = require "moonwire.shadow"
local log = require "moonwire.log"
local sh = shadow.open()
log.info(("CACHED version=%d max_speed=%s reported=%s connected=%s"):format(sh.version,
  tostring(sh.desired.max_speed), tostring(sh.reported.max_speed), tostring(sh.synced)))
'''


def cached_row(path):
    """(version, document dict) of car-01's classic shadow in the device cache, or None."""
    import sqlite3
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT version, document FROM shadow WHERE thing = 'car-01' AND shadow = ''").fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return (row[0], json.loads(row[1])) if row and row[1] else None


def test_an_app_starting_offline_sees_the_previous_state_even_after_a_crash(
        broker, client, moonwire, service, tmp_path):
    service()
    car = moonwire(car_app(), config=car_config(tmp_path))
    op = Operator(client)
    op.set_desired({"max_speed": 70})
    doc = op.wait_reported("max_speed", 70)
    cache = tmp_path / "car-cache.db"
    # The car writes its cache behind (at most once a second): wait until it holds this state.
    mwtest.wait_until(lambda: (cached_row(cache) or (0, None))[0] >= doc["version"], 10, interval=0.05,
                      message="the cache to catch up")
    car.kill()  # SIGKILL: no chance to write anything at exit
    version, cached = cached_row(cache)
    assert cached["state"]["desired"]["max_speed"] == 70 and cached["state"]["reported"]["max_speed"] == 70

    # No broker to be found: the app still starts with its last known document.
    offline = moonwire(CACHED, broker=mwtest.free_port(), config=car_config(tmp_path))
    offline.wait_for_output(rf"CACHED version={version} max_speed=70 reported=70 connected=false")


# ------------------------------------------------------------------------ named shadows, coroutines

NAMED = r'''
local shadow = require "moonwire.shadow"
local json = require "moonwire.json"
local log = require "moonwire.log"
local mqtt = require "moonwire.mqtt"
local settings = shadow.open("settings")
settings:on_delta(function(delta, version, info)
  log.info(("DELTA v%d %s %s"):format(version, info.source, json.encode(delta)))
  settings.reported.mode = delta.mode
end)
local once = false
mqtt.on("connect", function()
  if once then return end
  once = true
  coroutine.wrap(function()
    local doc, err, code = settings:get()
    log.info("CO GET1", tostring(doc), code, err)
    local res = assert(settings:update { reported = { mode = "normal" } })
    log.info("CO UPDATE", res.version, json.encode(res.state))
    local doc2 = assert(settings:get())
    log.info("CO GET2", doc2.version, doc2.state.reported.mode, settings.version)
    local bad, err2, code2 = settings:update { desired = { mode = "x" }, version = 99 }
    log.info("CO CONFLICT", tostring(bad), code2, err2)
    assert(settings:update { reported = { gone = 1 } })
    assert(settings:update { reported = { gone = json.null } }) -- json.null deletes
    local doc3 = assert(settings:get())
    log.info("CO NULL", tostring(doc3.state.reported.gone), settings.version, tostring(settings.reported.gone))
  end)()
end)
'''


def test_named_shadow_with_coroutine_requests(broker, client, moonwire, service, tmp_path):
    service()
    car = moonwire(NAMED, config=car_config(tmp_path))
    car.wait_for_output(r"CO GET1 nil 404 shadow get \(car-01/settings\) rejected: "
                        r"No shadow exists with name: 'settings' \(404\)")
    car.wait_for_output(r'CO UPDATE 1 \{"reported":\{"mode":"normal"\}\}')
    car.wait_for_output(r"CO GET2 1 normal 1")
    car.wait_for_output(r"CO CONFLICT nil 409 shadow update \(car-01/settings\) rejected: Version conflict \(409\)")
    car.wait_for_output(r"CO NULL nil 3 nil")
    op = Operator(client, base=f"{T}/name/settings")
    op.set_desired({"mode": "eco"})
    car.wait_for_output(r'DELTA v4 delta \{"mode":"eco"\}')
    op.wait_reported("mode", "eco")
    # The classic shadow was never touched.
    classic = Operator(client)
    kind, err = classic.request("get", {})
    assert kind == "rejected" and err["code"] == 404
    assert count(car, r"DELTA ") == 1


# ------------------------------------------------------------------------ timeouts

TIMEOUT = r'''
local shadow = require "moonwire.shadow"
local log = require "moonwire.log"
local mqtt = require "moonwire.mqtt"
local sh = shadow.open()
sh:on_error(function(msg, code, what) log.info("ON_ERROR", code, what, msg) end)
sh.reported.speed = 1
mqtt.on("connect", function()
  sh:get(function(doc, err, code) log.info("GET RESULT", tostring(doc), code, err) end)
end)
'''


def test_requests_time_out_with_a_clear_error_when_no_service_answers(broker, moonwire, tmp_path):
    car = moonwire(TIMEOUT, config=car_config(tmp_path, timeout_ms=500))
    car.wait_for_output(r"GET RESULT nil ETIMEDOUT shadow get \(car-01\): no response within 500 ms "
                        r"\(is the shadow service running\?\)")
    # The reported value waits for the document to be read; it is not lost, and says why.
    car.wait_for_output(r"reading the document failed: shadow get \(car-01\): no response within 500 ms")
    assert "ON_ERROR" not in car.stderr()
    assert car.running


def test_a_refused_subscription_is_named_in_the_timeout(pki, make_broker, moonwire, tmp_path):
    # A policy that lets the car publish its requests but not subscribe to the answers.
    def patch(dyn):
        for role in dyn.get("roles", []):
            role["acls"] = [a for a in role.get("acls", [])
                            if not (a["acltype"] == "subscribePattern" and a["topic"].startswith("$aws"))]
    b = make_broker(dynsec_patch=patch)
    car = moonwire(TIMEOUT, broker=b, config=car_config(tmp_path, timeout_ms=500))
    car.wait_for_output(r"GET RESULT nil ETIMEDOUT .*the broker refused the subscription to the response "
                        r"topics: check the thing's policy")


# ------------------------------------------------------------------------ scripted peer: ordering, 409

SCRIPTED = r'''
local shadow = require "moonwire.shadow"
local json = require "moonwire.json"
local log = require "moonwire.log"
local mqtt = require "moonwire.mqtt"
local sh = shadow.open()
sh:on_delta(function(delta, version, info)
  log.info(("DELTA v%d %s %s"):format(version, info.source, json.encode(delta)))
end)
sh:on_error(function(msg, code, what) log.info("SHADOW ERROR", code, what, msg) end)
mqtt.subscribe("cars/car-01/cmd", function(_, cmd)
  local n = cmd:match("^report (%d+)$")
  if n then sh.reported.x = tonumber(n) end
  if cmd == "dump" then
    log.info(("DUMP version=%d desired=%s"):format(sh.version, json.encode(shadow.copy(sh.desired))))
  end
end, { qos = 1 })
'''


class ScriptedService:
    """paho in the shadow service's place (identity shadow-service), answering by hand."""

    def __init__(self, client, base=T):
        self.base = base
        self.c = client("shadow-service", client_id="scripted-shadow-service")
        self.c.subscribe([f"{base}/get", f"{base}/update", f"{base}/delete"], qos=1)

    def request(self, op, n, timeout=10):
        """The n-th request (1-based) the device sent on base/op, as a dict."""
        msgs = self.c.wait_messages(n, f"{self.base}/{op}", timeout)
        return json.loads(msgs[n - 1].payload)

    def count(self, op):
        return len(self.c.received(f"{self.base}/{op}"))

    def send(self, suffix, payload):
        self.c.publish(f"{self.base}/{suffix}", json.dumps(payload), qos=1)


def doc(desired=None, reported=None, version=1, token=None):
    state = {}
    if desired is not None:
        state["desired"] = desired
    if reported is not None:
        state["reported"] = reported
    d = {"state": state, "metadata": {}, "version": version, "timestamp": 1700000000 + version}
    if token:
        d["clientToken"] = token
    return d


def test_versions_order_deltas_and_documents(broker, client, moonwire, tmp_path):
    svc = ScriptedService(client)
    car = moonwire(SCRIPTED, config=car_config(tmp_path))
    get1 = svc.request("get", 1)
    # The response topics were subscribed before the first request went out.
    log = broker.log_text()
    first_get = log.index(f"Received PUBLISH from car-01 (d0, q1, r0, m")
    for suffix in ("get/accepted", "update/accepted", "update/delta"):
        assert log.index(f"{T}/{suffix}") < first_get, suffix
    svc.send("get/accepted", doc({"a": 1}, {"a": 1}, 5, get1["clientToken"]))

    # /update/accepted first, then the delta with the same version: the delta still counts.
    svc.send("update/accepted", doc({"a": 2}, None, 6))
    svc.send("update/delta", {"state": {"a": 2}, "metadata": {}, "version": 6, "timestamp": 1})
    car.wait_for_output(r'DELTA v6 delta \{"a":2\}')
    # A duplicate and an older delta are dropped.
    svc.send("update/delta", {"state": {"a": 2}, "metadata": {}, "version": 6, "timestamp": 1})
    svc.send("update/delta", {"state": {"a": 0}, "metadata": {}, "version": 4, "timestamp": 1})
    # Version 7 was missed: the car re-reads the document...
    svc.send("update/accepted", doc({"a": 3}, None, 8))
    # ... and a delta older than the document it now holds is dropped.
    svc.send("update/delta", {"state": {"a": "seven"}, "metadata": {}, "version": 7, "timestamp": 1})
    get2 = svc.request("get", 2)
    svc.send("get/accepted", doc({"a": 3}, {"a": 1}, 8, get2["clientToken"]))
    car.wait_for_output(r'DELTA v8 get \{"a":3\}')
    # An /update/accepted older than the document is not applied.
    svc.send("update/accepted", doc({"a": "stale"}, None, 7))
    svc.send("update/delta", {"state": {"a": 4}, "metadata": {}, "version": 9, "timestamp": 1})
    car.wait_for_output(r'DELTA v9 delta \{"a":4\}')
    client("dispatcher").publish("cars/car-01/cmd", "dump", qos=1)
    car.wait_for_output(r'DUMP version=8 desired=\{"a":3\}')
    assert re.findall(r"DELTA v(\d+)", car.stderr()) == ["6", "8", "9"], car.stderr()
    assert svc.count("get") == 2


def test_a_reported_batch_conflict_rereads_and_retries_once(broker, client, moonwire, tmp_path):
    svc = ScriptedService(client)
    car = moonwire(SCRIPTED, config=car_config(tmp_path))
    svc.send("get/accepted", doc({}, {"x": 0}, 5, svc.request("get", 1)["clientToken"]))
    cmd = client("dispatcher")

    # 409 once: the car re-reads and sends the same batch against the new version.
    cmd.publish("cars/car-01/cmd", "report 1", qos=1)
    u1 = svc.request("update", 1)
    assert u1["state"] == {"reported": {"x": 1}} and u1["version"] == 5
    svc.send("update/rejected", {"code": 409, "message": "Version conflict", "timestamp": 1,
                                 "clientToken": u1["clientToken"]})
    g2 = svc.request("get", 2)
    svc.send("get/accepted", doc({}, {"x": 0}, 7, g2["clientToken"]))
    u2 = svc.request("update", 2)
    assert u2["state"] == {"reported": {"x": 1}} and u2["version"] == 7
    assert u2["clientToken"] != u1["clientToken"]
    svc.send("update/accepted", doc(None, {"x": 1}, 8, u2["clientToken"]))

    # 409 twice: reported to on_error, and the value is kept for the next update.
    cmd.publish("cars/car-01/cmd", "report 2", qos=1)
    u3 = svc.request("update", 3)
    assert u3["state"] == {"reported": {"x": 2}} and u3["version"] == 8
    svc.send("update/rejected", {"code": 409, "message": "Version conflict", "clientToken": u3["clientToken"]})
    g3 = svc.request("get", 3)
    svc.send("get/accepted", doc({}, {"x": 1}, 9, g3["clientToken"]))
    u4 = svc.request("update", 4)
    assert u4["version"] == 9
    svc.send("update/rejected", {"code": 409, "message": "Version conflict", "clientToken": u4["clientToken"]})
    car.wait_for_output(r"SHADOW ERROR 409 reported reported state of shadow car-01 not confirmed "
                        r"\(kept for the next update\): shadow update \(car-01\) rejected: Version conflict \(409\)")
    u5 = svc.request("update", 5)
    assert u5["state"] == {"reported": {"x": 2}} and u5["version"] == 9
    svc.send("update/accepted", doc(None, {"x": 2}, 10, u5["clientToken"]))
    assert svc.count("get") == 3
    assert count(car, "SHADOW ERROR") == 1


def test_a_batch_in_flight_at_a_disconnect_is_sent_once(broker, client, moonwire, tmp_path):
    """The outbox carries a reported batch the broker never acknowledged across the reconnect,
    with its clientToken: the module waits for that answer instead of sending the values again
    (they would be applied twice), even past its timeout."""
    from tcpproxy import TcpProxy
    app = SCRIPTED.replace("if n then sh.reported.x = tonumber(n) end", """if n then sh.reported.x = tonumber(n) end
  local later = cmd:match("^later (%d+)$")
  if later then
    require("moonwire.timer").after(300, function() sh.reported.x = tonumber(later); log.info("WROTE") end)
    log.info("ARMED")
  end""")
    svc = ScriptedService(client)
    with TcpProxy(broker.port) as proxy:
        car = moonwire(app, broker=proxy.port, config=car_config(tmp_path, timeout_ms=800))
        svc.send("get/accepted", doc({}, {"x": 0}, 5, svc.request("get", 1)["clientToken"]))
        client("dispatcher").publish("cars/car-01/cmd", "later 1", qos=1)
        car.wait_for_output(r"ARMED")
        proxy.blackhole()  # the batch goes out into nothing: no PUBACK, no answer
        car.wait_for_output(r"WROTE")
        time.sleep(2.0)    # more than twice the request timeout
        proxy.restore()
        proxy.reset()      # the car sees its connection die and reconnects
        wait_count(car, r"connected to 127\.0\.0\.1", 2)
        u1 = svc.request("update", 1)
        assert u1["state"] == {"reported": {"x": 1}} and u1["version"] == 5, u1
        svc.send("update/accepted", doc(None, {"x": 1}, 6, u1["clientToken"]))
        g2 = svc.request("get", 2)
        svc.send("get/accepted", doc({}, {"x": 1}, 6, g2["clientToken"]))
        time.sleep(1.5)    # past another timeout: nothing more goes out
        assert svc.count("update") == 1, [m.payload for m in svc.c.received(f"{T}/update")]
        assert "SHADOW ERROR" not in car.stderr(), car.stderr()


def test_a_batch_the_broker_refuses_is_dropped_and_reported(pki, make_broker, client, moonwire, tmp_path):
    # MQTT 5: mosquitto answers a publish its ACL denies with PUBACK 0x87, so the outbox makes
    # it a dead letter at once. The policy lets the car read its shadow but not update it.
    def patch(dyn):
        for role in dyn.get("roles", []):
            role.setdefault("acls", []).append({"acltype": "publishClientSend", "allow": False, "priority": 100,
                                                "topic": f"{T}/update"})
    b = make_broker(dynsec_patch=patch)
    svc = ScriptedService(lambda *a, **kw: client(*a, broker=b, **kw))
    cfg = car_config(tmp_path)
    cfg["broker"] = {"protocol": "5"}
    car = moonwire(SCRIPTED, broker=b, config=cfg)
    svc.send("get/accepted", doc({}, {"x": 0}, 5, svc.request("get", 1)["clientToken"]))
    client("dispatcher", broker=b).publish("cars/car-01/cmd", "report 1", qos=1)
    car.wait_for_output(r"SHADOW ERROR EREFUSED reported reported state of shadow car-01 dropped: "
                        r"shadow update \(car-01\) refused by the broker \(dead letter \d+: .*Not authorized")
    assert svc.count("update") == 0


# ------------------------------------------------------------------------ configuration

def test_shadow_configuration_is_checked(tmp_path, pki):
    app = tmp_path / "app.lua"
    app.write_text('require "moonwire.shadow"')

    def run(shadow):
        cfg = tmp_path / "config.lua"
        cfg.write_text("return " + mwtest.lua_literal(mwtest._merge(mwtest.default_config(8883, pki),
                                                                     {"shadow": shadow})) + "\n")
        return mwtest.run_moonwire("run", app, "--config", cfg)

    r = run({"debounce_sm": 5})
    assert r.returncode == 1 and "unknown key 'shadow.debounce_sm' (did you mean 'shadow.debounce_ms'?)" in r.stderr
    r = run({"timeout_ms": 10})
    assert r.returncode == 1 and "shadow.timeout_ms: 10 is outside 100..600000" in r.stderr
    r = run({"debounce_ms": 1.5})
    assert r.returncode == 1 and "shadow.debounce_ms: expected an integer" in r.stderr
    r = run({"cache": ""})
    assert r.returncode == 1 and "shadow.cache: empty path" in r.stderr
