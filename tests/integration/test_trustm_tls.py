"""Mutual TLS to mosquitto with the device key inside the (simulated) OPTIGA Trust M."""

import subprocess

import mwtest


def make_chip_identity(pki, tmp_path, thing):
    """Key generated in the chip, certificate from the development intermediate CA."""
    state = tmp_path / "chip.state"
    r = mwtest.run_moonwire("se", "--sim", state, "keygen", "0xE0F1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    pub = tmp_path / "pub.pem"
    pub.write_text(r.stdout)
    cert = tmp_path / f"{thing}.crt"
    subprocess.run(["openssl", "x509", "-new", "-subj", f"/CN={thing}", "-force_pubkey", str(pub),
                    "-CA", str(pki.intermediate_ca), "-CAkey", str(pki.dir / "intermediate-ca.key"),
                    "-days", "2", "-out", str(cert)], check=True, capture_output=True)
    # The chain file the device presents: its certificate plus the intermediate.
    chain = tmp_path / f"{thing}.chain.pem"
    chain.write_text(cert.read_text() + pki.intermediate_ca.read_text())
    return state, chain, r.stdout


def test_connect_and_publish_with_the_key_in_the_chip(pki, make_broker, client, moonwire, tmp_path):
    broker = make_broker(add=["car-03=car"])
    state, chain, pub_pem = make_chip_identity(pki, tmp_path, "car-03")
    watcher = client("dispatcher", broker=broker)
    watcher.subscribe("cars/car-03/#")
    app = moonwire('local mqtt = require "moonwire.mqtt"\n'
                   'mqtt.on("connect", function() mqtt.publish("cars/car-03/status", "key in chip") end)\n',
                   thing="car-03", broker=broker,
                   config={"tls": {"cert": str(chain), "key": "trustm:0xE0F1"}, "se": {"sim": str(state)}})
    app.wait_for_output(r"using the OPTIGA Trust M simulator")
    app.wait_for_output(r"connected to 127\.0\.0\.1:\d+ as car-03")
    assert watcher.wait_message("cars/car-03/status").payload == b"key in chip"
    # The chip's public key is what the broker saw; no private key file was involved.
    assert not list(tmp_path.glob("*.key"))


def test_vendor_key_form_and_missing_se_config(pki, broker, moonwire, tmp_path):
    state, chain, _ = make_chip_identity(pki, tmp_path, "car-01")
    app = moonwire('print("never")', config={"tls": {"cert": str(chain), "key": "0xe0f1:^"}})
    assert app.wait() == 1
    assert "is in an OPTIGA Trust M: configure se.device" in app.stderr()


def test_key_in_chip_that_does_not_match_the_certificate(pki, broker, moonwire, tmp_path):
    state, chain, _ = make_chip_identity(pki, tmp_path, "car-01")
    r = mwtest.run_moonwire("se", "--sim", state, "keygen", "0xE0F1")  # replace the key
    assert r.returncode == 0
    app = moonwire('print("never")', config={"tls": {"cert": str(chain), "key": "trustm:0xE0F1"},
                                             "se": {"sim": str(state)}})
    assert app.wait() == 1
    assert "does not match the public key in tls.cert" in app.stderr()


def test_se_cli_errors(tmp_path):
    state = tmp_path / "c.state"
    r = mwtest.run_moonwire("se", "--sim", state, "pubkey", "0xE0F2")
    assert r.returncode == 1 and "pubkey" in r.stderr
    r = mwtest.run_moonwire("se", "--sim", state, "keygen", "E0F1")
    assert r.returncode == 2 and "such as 0xE0F1" in r.stderr
    r = mwtest.run_moonwire("se", "--sim", state, "random", "16")
    assert r.returncode == 0 and len(r.stdout.strip()) == 32
    r = mwtest.run_moonwire("se", "--sim", state, "frobnicate")
    assert r.returncode == 2
