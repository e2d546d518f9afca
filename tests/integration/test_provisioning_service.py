"""moonwire provisioning-service on the wire, with paho as the device: the Fleet Provisioning
MQTT API (payload shapes, error payloads, certificates as AWS IoT issues them), the broker's
policy for a registered thing, state across restarts, a service without broker rights."""

import hashlib
import json
import re
import signal
import shutil
import subprocess
from pathlib import Path

import pytest

import mwtest
import provtest

CSR = "$aws/certificates/create-from-csr/json"
KEYS = "$aws/certificates/create/json"
FLEET = "$aws/provisioning-templates/moonwire-fleet/provision/json"


@pytest.fixture
def stand(pki, make_broker, tmp_path):
    s = provtest.Stand(pki, make_broker, tmp_path)
    yield s
    s.close()


def claim_client(stand):
    c = mwtest.Client(stand.broker, "fleet-claim", stand.pki)
    assert c.subscribe([CSR + "/+", KEYS + "/+", FLEET + "/+"]) == [1, 1, 1]
    return c


def ask(c, topic, payload, timeout=10):
    c.clear()
    c.publish(topic, payload if isinstance(payload, str) else json.dumps(payload), qos=1)
    m = c.wait_message(topic + "/+", timeout=timeout)
    return m.topic.rsplit("/", 1)[1], json.loads(m.payload)


def make_csr(tmp_path, cn, key="dev.key"):
    key = tmp_path / key
    csr = subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc",
                          "-keyout", str(key), "-subj", f"/CN={cn}"], capture_output=True, text=True, check=True).stdout
    return csr, key


def test_fleet_provisioning_api(stand, tmp_path):
    stand.start_services(shadow=False)
    c = claim_client(stand)
    csr, key = make_csr(tmp_path, "0100")
    kind, acc = ask(c, CSR, {"certificateSigningRequest": csr})
    assert kind == "accepted", acc
    assert set(acc) == {"certificateId", "certificatePem", "certificateOwnershipToken", "moonwireRequestId"}
    # Moonwire's extra field names the request answered (every claim client sees the answer).
    assert acc["moonwireRequestId"] == hashlib.sha256(csr.encode()).hexdigest()[:16]
    cert = tmp_path / "dev.crt"
    cert.write_text(acc["certificatePem"])
    # The certificate id is the SHA-256 of the DER, as in AWS IoT.
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"], capture_output=True, check=True).stdout
    assert acc["certificateId"] == hashlib.sha256(der).hexdigest()
    # Issued by the development intermediate, for client authentication, with the CSR's key.
    v = subprocess.run(["openssl", "verify", "-CAfile", str(stand.pki.ca), "-purpose", "sslclient", str(cert)],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-text"], capture_output=True,
                          text=True).stdout
    assert "TLS Web Client Authentication" in text and "CA:FALSE" in text
    assert "Subject Key Identifier" in text and "Authority Key Identifier" in text
    cn = re.search(r"Subject: CN = (\S+)", text).group(1)
    assert re.fullmatch(r"0100\.[0-9a-f]{12}", cn)
    # Registered with a valid certificate but no thing yet: the broker gives it no rights.
    dev = mwtest.Client(stand.broker, None, stand.pki, client_id="car-0100", cert=cert, key=key)
    assert dev.subscribe("$aws/things/car-0100/shadow/get/accepted") == [0x80]
    dev.disconnect()

    # RegisterThing: the AWS error payload, then success.
    kind, rej = ask(c, FLEET, {"certificateOwnershipToken": "", "parameters": {"SerialNumber": "0100"}})
    assert kind == "rejected"
    assert rej == {"statusCode": 400, "errorCode": "InvalidCertificateOwnershipToken",
                   "errorMessage": "Certificate ownership token cannot be empty."}
    token = acc["certificateOwnershipToken"]
    kind, reg = ask(c, FLEET, {"certificateOwnershipToken": token,
                               "parameters": {"SerialNumber": "0100", "Location": "hall-3"}})
    assert kind == "accepted", reg
    assert reg == {"deviceConfiguration": {"Fleet": "moonwire-demo", "Location": "hall-3"}, "thingName": "car-0100",
                   "moonwireRequestId": hashlib.sha256(token.encode()).hexdigest()[:16]}
    kind, rej = ask(c, FLEET, {"certificateOwnershipToken": token, "parameters": {"SerialNumber": "0100"}})
    assert rej["errorCode"] == "InvalidCertificateOwnershipToken" and "already been used" in rej["errorMessage"]

    # Now the certificate is thing car-0100 with policy fleet-device, and only that.
    dev = mwtest.Client(stand.broker, None, stand.pki, client_id="car-0100", cert=cert, key=key)
    assert dev.subscribe(["$aws/things/car-0100/shadow/get/accepted", "cars/car-0100/cmd"]) == [1, 1]
    assert dev.subscribe("$aws/things/car-0101/shadow/get/accepted") == [0x80]
    dev.disconnect()


def test_create_keys_and_certificate_and_bad_requests(stand, tmp_path):
    svc = stand.start_services(shadow=False)
    c = claim_client(stand)
    kind, acc = ask(c, KEYS, "")
    assert kind == "accepted"
    assert set(acc) == {"certificateId", "certificatePem", "privateKey", "certificateOwnershipToken"}
    # (CreateKeysAndCertificate has nothing in its request to name it by.)
    (tmp_path / "k.crt").write_text(acc["certificatePem"])
    (tmp_path / "k.pem").write_text(acc["privateKey"])
    pub_cert = provtest.public_key_of_cert(tmp_path / "k.crt")
    pub_key = subprocess.run(["openssl", "pkey", "-in", str(tmp_path / "k.pem"), "-pubout"], capture_output=True,
                             text=True).stdout
    assert pub_cert == pub_key
    kind, rej = ask(c, CSR, "{not json")
    assert (kind, rej["statusCode"], rej["errorCode"]) == ("rejected", 400, "InvalidPayload")
    kind, rej = ask(c, CSR, {"certificateSigningRequest": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"})
    assert rej["errorCode"] == "InvalidCsr"
    kind, rej = ask(c, FLEET, {"certificateOwnershipToken": acc["certificateOwnershipToken"],
                               "parameters": {"SerialNumber": "has space"}})
    assert rej["statusCode"] == 400 and rej["errorCode"] == "InvalidParameters"
    assert "AllowedPattern" in rej["errorMessage"]
    c.subscribe("$aws/provisioning-templates/nope/provision/json/+")
    kind, rej = ask(c, "$aws/provisioning-templates/nope/provision/json", {"certificateOwnershipToken": "x"})
    assert (rej["statusCode"], rej["errorCode"]) == (404, "ResourceNotFound")
    # CBOR is not spoken: no answer, a warning, and the service carries on. (The claim
    # policy only allows the json topics, so a broader identity sends it.)
    other = mwtest.Client(stand.broker, "provisioning-service", stand.pki, client_id="cbor-sender")
    other.publish("$aws/certificates/create-from-csr/cbor", b"\xa0", qos=1)
    other.disconnect()
    svc.wait_for(r"speaks JSON only")
    kind, acc2 = ask(c, KEYS, "{}")
    assert kind == "accepted"


def test_state_survives_a_restart_and_is_listed(stand, tmp_path):
    stand.start_services(shadow=False)
    c = claim_client(stand)
    csr, _ = make_csr(tmp_path, "0200")
    _, acc = ask(c, CSR, {"certificateSigningRequest": csr})
    token = acc["certificateOwnershipToken"]
    _, pending = ask(c, CSR, {"certificateSigningRequest": make_csr(tmp_path, "0201", "other.key")[0]})
    kind, _ = ask(c, FLEET, {"certificateOwnershipToken": token, "parameters": {"SerialNumber": "0200"}})
    assert kind == "accepted"
    c.disconnect()
    assert stand.prov.stop() == 0
    r = mwtest.run_moonwire("provisioning-service", "--list", "--db", tmp_path / "provisioning.db")
    assert r.returncode == 0, r.stderr
    assert re.search(r"car-0200\s+ACTIVE\s+" + acc["certificateId"], r.stdout), r.stdout
    assert re.search(r"-\s+PENDING_ACTIVATION\s+" + pending["certificateId"], r.stdout), r.stdout
    stand.start_services(shadow=False)
    c = claim_client(stand)
    kind, rej = ask(c, FLEET, {"certificateOwnershipToken": token, "parameters": {"SerialNumber": "0200"}})
    assert "already been used" in rej["errorMessage"]
    # The pending one still registers after the restart.
    kind, reg = ask(c, FLEET, {"certificateOwnershipToken": pending["certificateOwnershipToken"],
                               "parameters": {"SerialNumber": "0201"}})
    assert kind == "accepted" and reg["thingName"] == "car-0201"


def test_templates_reload_on_sighup(stand, tmp_path):
    tdir = tmp_path / "templates"
    shutil.copytree(provtest.TEMPLATES, tdir)
    svc = provtest.Service(["provisioning-service", "--config", stand.config("provisioning-service"),
                            "--ca", stand.pki.dir, "--templates", tdir, "--policy", provtest.FLEET_POLICY,
                            "--db", tmp_path / "p.db"], tmp_path / "svc.log")
    stand.services.append(svc)
    svc.wait_for(r"dynamic-security plugin answers")
    c = claim_client(stand)
    c.subscribe("$aws/provisioning-templates/lab/provision/json/+")
    t = json.loads((tdir / "moonwire-fleet.json").read_text())
    t["Resources"]["thing"]["Properties"]["ThingName"] = {"Fn::Sub": "lab-${SerialNumber}"}
    (tdir / "lab.json").write_text(json.dumps(t))
    (tdir / "broken.json").write_text("{")
    svc.proc.send_signal(signal.SIGHUP)
    svc.wait_for(r"reload failed, keeping the previous templates")
    (tdir / "broken.json").unlink()
    svc.proc.send_signal(signal.SIGHUP)
    svc.wait_for(r"templates and policies reloaded")
    csr, _ = make_csr(tmp_path, "0300")
    _, acc = ask(c, CSR, {"certificateSigningRequest": csr})
    kind, reg = ask(c, "$aws/provisioning-templates/lab/provision/json",
                    {"certificateOwnershipToken": acc["certificateOwnershipToken"], "parameters": {"SerialNumber": "7"}})
    assert kind == "accepted" and reg["thingName"] == "lab-7"


def test_service_without_broker_rights_says_so(pki, make_broker, tmp_path):
    # examples/car/policy.json gives provisioning-service no access to $CONTROL.
    s = provtest.Stand(pki, make_broker, tmp_path, policy=mwtest.DEFAULT_POLICY)
    try:
        pki.ensure("fleet-claim")
        svc = s.start_services(shadow=False, wait_admin=False, extra=["--admin-timeout", "1"])
        svc.wait_for(r"dynamic-security plugin did not answer: this identity needs publish on "
                     r"\$CONTROL/dynamic-security/v1")
        # The car policy's provisioning identity may serve the API itself; the device uses it
        # through a client with that identity here (the car policy has no claim identity).
        c = mwtest.Client(s.broker, "provisioning-service", pki, client_id="claim-check")
        c.subscribe([CSR + "/+", FLEET + "/+"])
        csr, _ = make_csr(tmp_path, "0400")
        _, acc = ask(c, CSR, {"certificateSigningRequest": csr})
        kind, rej = ask(c, FLEET, {"certificateOwnershipToken": acc["certificateOwnershipToken"],
                                   "parameters": {"SerialNumber": "0400"}})
        assert kind == "rejected" and rej["statusCode"] == 500 and rej["errorCode"] == "InternalFailure"
        assert "$CONTROL/dynamic-security/v1" in rej["errorMessage"]
        c.disconnect()
    finally:
        s.close()


def test_usage_errors():
    r = mwtest.run_moonwire("provisioning-service", "--config", "x.lua")
    assert r.returncode == 2 and "no signing CA given" in r.stderr
    r = mwtest.run_moonwire("provisioning-service", "--config", "x.lua", "--ca", "/nonexistent")
    assert r.returncode == 1 and "/nonexistent.crt" in r.stderr
    r = mwtest.run_moonwire("provisioning-service", "--cert-days", "0", "--config", "x.lua", "--ca", "x")
    assert r.returncode == 2 and "--cert-days needs a number" in r.stderr
