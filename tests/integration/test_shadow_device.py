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
def service(broker, pki, tmp_path):
    started = []

    def start():
        s = mwtest.ShadowService(broker, pki, tmp_path / f"svc{len(started)}", tmp_path / "shadows.db")
        started.append(s)
        return s

    yield start
    for s in started:
        rc = s.stop()
        err = s.stderr()
        assert rc == 0, err
        assert "ERROR: AddressSanitizer" not in err and "runtime error:" not in err, err


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
