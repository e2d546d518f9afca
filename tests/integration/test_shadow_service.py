"""moonwire shadow-service end to end: paho as the device, over the real broker and policies."""

import json
import time

import pytest

import mwtest

T = "$aws/things/car-01/shadow"


@pytest.fixture
def service(shadow_service):
    return shadow_service


def request(dev, op, body, base=T, timeout=5):
    """Publishes a request and returns (suffix, payload dict) of its answer.

    Only /accepted and /rejected answer a request: a late /update/documents or /update/delta
    of the previous update must not be taken for it."""
    dev.clear()
    dev.publish(f"{base}/{op}", json.dumps(body), qos=1)

    def answers():
        return [m for m in dev.received(f"{base}/{op}/+") if m.topic.rsplit("/", 1)[1] in ("accepted", "rejected")]

    end = time.monotonic() + timeout
    while not answers():
        if time.monotonic() > end:
            raise TimeoutError(f"no answer to {base}/{op} within {timeout}s; got {dev.received()!r}")
        time.sleep(0.01)
    m = answers()[0]
    return m.topic.rsplit("/", 1)[1], json.loads(m.payload)


def test_update_delta_get_delete_classic(broker, client, service):
    service()
    dev = client("car-01")
    dev.subscribe([f"{T}/get/+", f"{T}/update/+", f"{T}/delete/+"], qos=1)
    kind, doc = request(dev, "update", {"state": {"desired": {"speed": 30, "lights": {"front": "on"}}},
                                        "clientToken": "t1"})
    assert kind == "accepted" and doc["version"] == 1 and doc["clientToken"] == "t1"
    assert doc["state"]["desired"] == {"speed": 30, "lights": {"front": "on"}}
    assert isinstance(doc["metadata"]["desired"]["lights"]["front"]["timestamp"], int)
    delta = json.loads(dev.wait_message(f"{T}/update/delta").payload)
    assert delta["state"] == {"speed": 30, "lights": {"front": "on"}} and delta["version"] == 1
    docs = json.loads(dev.wait_message(f"{T}/update/documents").payload)
    assert docs["current"]["version"] == 1 and docs["current"]["state"]["desired"]["speed"] == 30

    # Reported catches up: no delta for the matched keys.
    kind, doc = request(dev, "update", {"state": {"reported": {"speed": 30, "lights": {"front": "on"}}}})
    assert kind == "accepted" and doc["version"] == 2
    dev.expect_no_message(f"{T}/update/delta", within=0.3)

    kind, doc = request(dev, "get", {"clientToken": "g1"})
    assert kind == "accepted" and doc["version"] == 2 and doc["clientToken"] == "g1"
    assert doc["state"]["desired"]["speed"] == 30 and doc["state"]["reported"]["speed"] == 30
    assert "delta" not in doc["state"]

    # Version conflict and malformed JSON are rejected with AWS's codes.
    kind, err = request(dev, "update", {"state": {"desired": {"speed": 1}}, "version": 1})
    assert kind == "rejected" and err["code"] == 409 and err["message"] == "Version conflict"
    dev.clear()
    dev.publish(f"{T}/update", "{not json", qos=1)
    m = dev.wait_message(f"{T}/update/rejected")
    assert json.loads(m.payload)["code"] == 400

    kind, doc = request(dev, "delete", {})
    assert kind == "accepted"
    kind, err = request(dev, "get", {})
    assert kind == "rejected" and err["code"] == 404


def test_named_shadow_is_separate(broker, client, service):
    service()
    dev = client("car-01")
    named = f"{T}/name/settings"
    dev.subscribe([f"{named}/update/+", f"{named}/get/+", f"{T}/get/+"], qos=1)
    kind, doc = request(dev, "update", {"state": {"reported": {"mode": "eco"}}}, base=named)
    assert kind == "accepted" and doc["version"] == 1
    kind, doc = request(dev, "get", {}, base=named)
    assert doc["state"]["reported"] == {"mode": "eco"}
    kind, err = request(dev, "get", {})
    assert kind == "rejected" and err["code"] == 404


def test_shadows_survive_a_service_restart(broker, client, service):
    svc = service()
    dev = client("car-01")
    dev.subscribe([f"{T}/update/+", f"{T}/get/+"], qos=1)
    request(dev, "update", {"state": {"reported": {"battery": 87}}})
    request(dev, "update", {"state": {"reported": {"battery": 86}}})
    assert svc.stop() == 0
    service()
    kind, doc = request(dev, "get", {})
    assert kind == "accepted" and doc["version"] == 2 and doc["state"]["reported"]["battery"] == 86


def test_a_car_cannot_touch_another_cars_shadow(broker, client, service):
    service()
    dev = client("car-01")
    assert dev.subscribe("$aws/things/car-02/shadow/get/accepted", qos=1) == [0x80]
