"""The generated broker (certs/mkpki + tools/mkbroker + mosquitto) enforces mutual TLS and the
AWS-IoT-like policy of examples/car/policy.json. Peers are paho clients only."""

import pytest

import mwtest
from mwtest import Client, ConnectError

FAILURE = Client.SUBACK_FAILURE  # 0x80


# ---------------------------------------------------------------- mutual TLS

def test_car_with_valid_certificate_connects(client):
    c = client("car-01")
    assert c.connected


def test_no_client_certificate_is_refused(broker, pki):
    with pytest.raises(ConnectError):
        Client(broker, None, pki, client_id="car-01", timeout=3)


def test_certificate_from_rogue_ca_is_refused(broker, pki):
    assert pki.has("car-01.rogue")
    with pytest.raises(ConnectError):
        Client(broker, "car-01.rogue", pki, timeout=3)


def test_expired_client_certificate_is_refused(broker, pki):
    assert pki.has("car-01.expired")
    with pytest.raises(ConnectError):
        Client(broker, "car-01.expired", pki, timeout=3)


def test_client_rejects_broker_with_rogue_server_certificate(make_broker, pki):
    b = make_broker(server_cert="server.rogue")
    with pytest.raises(ConnectError, match="(?i)certificate verify failed"):
        Client(b, "car-01", pki, timeout=3)


def test_username_in_connect_is_ignored_identity_comes_from_certificate(broker, pki):
    # The CN is the username (use_identity_as_username): a car that claims to be the dispatcher
    # in CONNECT still only gets the car's rights, and no password is checked.
    c = Client(broker, "car-01", pki, connect=False)
    c._c.username_pw_set("dispatcher", "not-checked")
    c.connect()
    try:
        assert c.subscribe("cars/#") == [FAILURE]
        assert c.subscribe("cars/car-01/#") == [1]
        broker.wait_for_log(r"as car-01 \(p2, c1, k60, u'car-01'\)")
    finally:
        c.disconnect()


# ---------------------------------------------------------------- subscribe (literal filters)

def test_car_may_subscribe_to_its_own_topics(client):
    c = client("car-01")
    assert c.subscribe(["cars/car-01/cmd", "cars/car-01/#", "$aws/things/car-01/shadow/#",
                        "$aws/things/car-01/jobs/notify"], qos=1) == [1, 1, 1, 1]


def test_car_may_subscribe_to_telemetry_of_all_cars_as_literal_filter(client):
    c = client("car-01")
    assert c.subscribe("cars/+/telemetry", qos=1) == [1]


def test_car_is_refused_subscribing_outside_its_policy(client):
    c = client("car-01")
    # Each refusal is a SUBACK failure (0x80) for that filter; the connection stays up.
    assert c.subscribe("cars/car-02/cmd") == [FAILURE]
    assert c.subscribe(["cars/#", "#", "cars/+/cmd", "cars/car-02/telemetry",
                        "$aws/things/car-02/shadow/#", "$aws/things/+/shadow/#", "$SYS/#"]) \
        == [FAILURE] * 7
    # A wider filter that would cover cars/+/telemetry is not the literal filter allowed.
    assert c.subscribe("cars/+/+") == [FAILURE]
    assert c.connected
    assert c.subscribe("cars/car-01/cmd") == [1]


def test_refused_subscribe_is_reason_0x87_with_mqtt5(client):
    c = client("car-01", protocol=5)
    assert c.subscribe("cars/car-02/cmd") == [Client.V5_NOT_AUTHORIZED]
    assert c.subscribe("cars/car-01/cmd") == [1]


def test_identity_not_in_policy_connects_but_may_do_nothing(client):
    # Gap vs AWS (documented in docs/policies.md): mosquitto cannot refuse the CONNECT of a
    # certificate whose CN has no policy; it just gets default-deny on everything.
    s = client("stranger")
    assert s.subscribe(["cars/stranger/x", "cars/+/telemetry", "#"]) == [FAILURE] * 3


# ---------------------------------------------------------------- publish / receive

def test_car_publishes_own_topics_and_dispatcher_receives(client):
    d = client("dispatcher")
    assert d.subscribe("cars/#") == [1]
    car = client("car-01")
    car.publish("cars/car-01/telemetry", b'{"speed":10}', qos=1)
    car.publish("cars/car-01/status", b"online", qos=0)
    got = d.wait_messages(2)
    assert {(m.topic, m.payload) for m in got} == {
        ("cars/car-01/telemetry", b'{"speed":10}'), ("cars/car-01/status", b"online")}


def test_car_publish_to_other_car_topic_is_dropped(broker, client):
    d = client("dispatcher")
    assert d.subscribe("cars/#") == [1]
    car = client("car-01")
    # MQTT 3.1.1: the broker still PUBACKs the forbidden QoS 1 publish (publish() returns),
    # keeps the connection, and drops the message. Only the broker log says so.
    car.publish("cars/car-02/telemetry", b"forged", qos=1)
    car.publish("cars/car-02/cmd", b"forged0", qos=0)
    # A permitted message published afterwards arrives, so the forged ones are not in flight.
    car.publish("cars/car-01/telemetry", b"real", qos=1)
    assert d.wait_message("cars/car-01/telemetry").payload == b"real"
    assert d.received("cars/car-02/#") == []
    assert car.connected
    broker.wait_for_log(r"Denied PUBLISH from car-01 .*'cars/car-02/telemetry'")


def test_car_receives_other_cars_telemetry_via_wildcard(client):
    c1 = client("car-01")
    assert c1.subscribe("cars/+/telemetry") == [1]
    c2 = client("car-02")
    c2.publish("cars/car-02/telemetry", b'{"speed":42}', qos=1)
    m = c1.wait_message("cars/car-02/telemetry")
    assert m.payload == b'{"speed":42}' and m.qos == 1


def test_dispatcher_commands_reach_the_car_only_on_its_cmd_topic(client):
    c1 = client("car-01")
    assert c1.subscribe("cars/car-01/#") == [1]
    d = client("dispatcher")
    d.publish("cars/car-01/cmd", b'{"cmd":"stop"}', qos=1)
    d.publish("cars/car-01/telemetry", b"forged by dispatcher", qos=1)   # not allowed
    assert c1.wait_message("cars/car-01/cmd").payload == b'{"cmd":"stop"}'
    c1.expect_no_message("cars/car-01/telemetry", within=0.3)


def test_device_shadow_topics_between_car_and_shadow_service(client):
    svc = client("shadow-service")
    assert svc.subscribe("$aws/things/+/shadow/#") == [1]
    car = client("car-01")
    assert car.subscribe("$aws/things/car-01/shadow/update/accepted") == [1]
    car.publish("$aws/things/car-01/shadow/update", b'{"state":{"reported":{"v":1}}}', qos=1)
    assert svc.wait_message("$aws/things/car-01/shadow/update").payload.startswith(b'{"state"')
    svc.publish("$aws/things/car-01/shadow/update/accepted", b'{"version":1}', qos=1)
    assert car.wait_message("$aws/things/car-01/shadow/update/accepted").payload == b'{"version":1}'
    # car-01 cannot touch car-02's shadow
    car.publish("$aws/things/car-02/shadow/update", b"{}", qos=1)
    svc.expect_no_message("$aws/things/car-02/#", within=0.3)


def test_added_identity_gets_the_car_policy(make_broker, pki):
    b = make_broker(add=["car-03=car"])
    with Client(b, "car-03", pki) as c3, Client(b, "car-01", pki) as c1:
        assert c3.subscribe(["cars/car-03/cmd", "cars/car-01/cmd"]) == [1, FAILURE]
        assert c1.subscribe("cars/+/telemetry") == [1]
        c3.publish("cars/car-03/telemetry", b"3", qos=1)
        assert c1.wait_message().topic == "cars/car-03/telemetry"


# ---------------------------------------------------------------- broker lifecycle (fixtures)

def test_broker_restart_keeps_port_and_clients_can_reconnect(broker, pki):
    port = broker.port
    c = Client(broker, "car-01", pki)
    broker.kill()
    assert c.wait_disconnect(5) != 0
    c.disconnect()
    broker.restart()
    assert broker.port == port
    with Client(broker, "car-01", pki) as c2:
        assert c2.subscribe("cars/car-01/cmd") == [1]
    assert broker.log_text().count(" running") == 2


def test_lua_literal_writes_a_config_table(pki):
    cfg = mwtest.default_config(18883, pki, "car-01")
    text = mwtest.lua_literal(mwtest._merge(cfg, {"will": {"topic": "cars/car-01/status",
                                                           "retain": True, "qos": 1}}))
    assert 'thing = "car-01"' in text and "port = 18883" in text and "retain = true" in text
    assert mwtest.lua_literal({"end": 'a"b\n'}) == '{\n  ["end"] = "a\\"b\\010",\n}'


def test_force_clientid_binds_client_id_to_certificate(make_broker, pki):
    # Without it any client id is accepted (gap vs AWS iot:Connect); with --force-clientid the
    # broker renames the session to the certificate CN.
    b = make_broker(mkbroker_args=["--force-clientid"])
    with Client(b, "car-01", pki, client_id="pretends-to-be-car-02") as c:
        assert c.subscribe("cars/car-01/cmd") == [1]
    b.wait_for_log(r"New client connected from \S+ as car-01 \(")


# ---------------------------------------------------------------- the tools themselves

def test_mkpki_chain_modes_and_idempotence(tmp_path):
    import os
    import stat
    import subprocess
    d = tmp_path / "pki"
    run = [str(mwtest.MKPKI), "-q", "--out", str(d)]
    subprocess.run(run + ["car-01"], check=True)
    files = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    for k in ("root-ca.key", "intermediate-ca.key", "server.key", "car-01.key"):
        assert stat.S_IMODE(os.stat(d / k).st_mode) == 0o600, k
    # device and server certs are issued by the intermediate, never by the root alone
    ca = str(d / "ca-chain.pem")
    for crt in ("server.crt", "car-01.crt"):
        subprocess.run(["openssl", "verify", "-CAfile", ca, str(d / crt)], check=True,
                       capture_output=True)
        r = subprocess.run(["openssl", "verify", "-CAfile", str(d / "root-ca.crt"), str(d / crt)],
                           capture_output=True)
        assert r.returncode != 0, f"{crt} verifies against the root alone"
    subj = subprocess.run(["openssl", "x509", "-in", str(d / "car-01.crt"), "-noout", "-subject"],
                          capture_output=True, text=True, check=True).stdout
    assert "CN = car-01" in subj
    # second run: nothing changes; adding a name adds only that name
    subprocess.run(run + ["car-01"], check=True)
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == files
    subprocess.run(run + ["car-01", "car-02"], check=True)
    after = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert set(after) - set(files) == {"car-02.crt", "car-02.key"}
    assert all(after[k] == v for k, v in files.items())
    # usage errors
    r = subprocess.run(run + ["bad name"], capture_output=True, text=True)
    assert r.returncode == 2 and "bad NAME" in r.stderr


def test_mkbroker_rejects_bad_description_with_its_path(tmp_path, pki):
    import json
    import subprocess
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"policies": {"p": {"publish": ["a/#/b"]}},
                               "identities": [{"name": "x", "policies": ["p"]}]}))
    r = subprocess.run([mwtest.SYS_PYTHON, str(mwtest.MKBROKER), "--policy", str(bad),
                        "--pki", str(pki.dir), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "policies.p.publish[0]" in r.stderr and "'#'" in r.stderr
    bad.write_text(json.dumps({"policies": {"p": {"publsh": []}},
                               "identities": [{"name": "x", "policies": ["p"]}]}))
    r = subprocess.run([mwtest.SYS_PYTHON, str(mwtest.MKBROKER), "--policy", str(bad),
                        "--list-identities"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown key 'publsh'" in r.stderr


def test_mkbroker_writes_aws_policy_json(tmp_path, pki):
    import json
    import subprocess
    out = tmp_path / "o"
    subprocess.run([mwtest.SYS_PYTHON, str(mwtest.MKBROKER), "--pki", str(pki.dir),
                    "--out", str(out), "--aws-json", "--aws-region", "eu-west-1",
                    "--aws-account", "123456789012"], check=True)
    conf = (out / "mosquitto.conf").read_text()
    assert conf.index("\nlistener ") > conf.index("\nplugin ")
    assert "require_certificate true" in conf and "use_identity_as_username true" in conf
    doc = json.loads((out / "aws-policies" / "car-01.json").read_text())
    by_action = {s["Action"]: s["Resource"] for s in doc["Statement"] if s["Effect"] == "Allow"}
    arn = "arn:aws:iot:eu-west-1:123456789012"
    assert by_action["iot:Connect"] == [f"{arn}:client/${{iot:Connection.Thing.ThingName}}"]
    assert f"{arn}:topicfilter/cars/+/telemetry" in by_action["iot:Subscribe"]
    assert f"{arn}:topic/cars/${{iot:Connection.Thing.ThingName}}/*" in by_action["iot:Publish"]
    assert f"{arn}:topic/cars/*/telemetry" in by_action["iot:Receive"]
    disp = json.loads((out / "aws-policies" / "dispatcher.json").read_text())
    assert {"Effect": "Allow", "Action": "iot:Publish",
            "Resource": [f"{arn}:topic/cars/*/cmd"]} in disp["Statement"]
