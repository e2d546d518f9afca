"""Mutual TLS to mosquitto with the device key inside a PKCS#11 token (SoftHSM2).

The key pair is generated inside the token by `moonwire pkcs11 keygen` (sensitive, not
extractable), the certificate comes from the development intermediate CA through a CSR the
token signed, and the TLS handshake's signature is made by the token (C_Sign)."""

import subprocess

import pytest

import mwtest

pytestmark = pytest.mark.skipif(not mwtest.SoftHsm.available(), reason="SoftHSM2 is not installed")


def p11(hsm, *args):
    return mwtest.run_moonwire("pkcs11", *args, env=hsm.env, timeout=30)


def sign_csr(pki, csr_pem, tmp_path, name):
    csr = tmp_path / f"{name}.csr"
    csr.write_text(csr_pem)
    subprocess.run(["openssl", "req", "-in", str(csr), "-verify", "-noout"], check=True, capture_output=True)
    cert = tmp_path / f"{name}.crt"
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki.intermediate_ca),
                    "-CAkey", str(pki.dir / "intermediate-ca.key"), "-days", "2", "-out", str(cert)],
                   check=True, capture_output=True)
    chain = tmp_path / f"{name}.chain.pem"
    chain.write_text(cert.read_text() + pki.intermediate_ca.read_text())
    return chain


@pytest.fixture
def hsm(tmp_path):
    return mwtest.SoftHsm(tmp_path / "hsm")


def token_identity(hsm, pki, tmp_path, thing, object="device"):
    r = p11(hsm, "keygen", hsm.uri(object), "--curve", "P-256")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    r = p11(hsm, "csr", hsm.uri(object), "--cn", thing, "--o", "Moonwire test")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    return sign_csr(pki, r.stdout, tmp_path, thing)


def test_key_generated_in_the_token_never_leaves_it(hsm):
    r = p11(hsm, "keygen", hsm.uri("device"))
    assert r.returncode == 0, r.stderr
    # What the token itself reports about the new private key (C_GetAttributeValue).
    for line in ("sensitive:         yes", "extractable:       no", "never extractable: yes",
                 "made in the token: yes", "private value:     not readable"):
        assert line in r.stderr, r.stderr
    info = p11(hsm, "info", hsm.uri("device"))
    assert info.returncode == 0, info.stderr
    assert "extractable:       no" in info.stdout and "private value:     not readable" in info.stdout
    assert "type:              EC P-256" in info.stdout
    # The public key printed at generation is the one the token keeps.
    pub = p11(hsm, "pubkey", hsm.uri("device"))
    assert pub.returncode == 0 and pub.stdout == r.stdout
    # Generating over an existing key is refused, naming it.
    again = p11(hsm, "keygen", hsm.uri("device"))
    assert again.returncode == 1 and "already has a private key" in again.stderr
    objs = p11(hsm, "objects", hsm.uri(None))
    assert objs.returncode == 0
    assert objs.stdout.count("object=device") == 2  # the private and the public key, nothing else
    # No PIN in any output.
    for out in (r.stdout, r.stderr, info.stdout, info.stderr, objs.stdout):
        assert hsm.pin not in out.replace("pkcs11:", "")


def test_connect_and_publish_with_the_key_in_the_token(hsm, pki, make_broker, client, moonwire, tmp_path):
    broker = make_broker(add=["car-04=car"])
    chain = token_identity(hsm, pki, tmp_path, "car-04")
    pin_file = tmp_path / "pin"
    pin_file.write_text(hsm.pin + "\n")
    watcher = client("dispatcher", broker=broker)
    watcher.subscribe("cars/car-04/#")
    app = moonwire('local mqtt = require "moonwire.mqtt"\n'
                   'mqtt.on("connect", function() mqtt.publish("cars/car-04/status", "key in token") end)\n',
                   thing="car-04", broker=broker, env=hsm.env,
                   config={"tls": {"cert": str(chain), "key": hsm.uri("device", pin_source=pin_file)},
                           "pkcs11": {"module": mwtest.SOFTHSM_MODULE}})
    app.wait_for_output(r"TLS key in PKCS#11 token 'moonwire'")
    app.wait_for_output(r"connected to 127\.0\.0\.1:\d+ as car-04", timeout=20)
    assert watcher.wait_message("cars/car-04/status", timeout=10).payload == b"key in token"
    assert not list(tmp_path.glob("*.key"))  # no private key file anywhere


def test_pin_value_in_the_uri_is_never_printed(hsm, pki, make_broker, client, moonwire, tmp_path):
    broker = make_broker(add=["car-05=car"])
    chain = token_identity(hsm, pki, tmp_path, "car-05")
    watcher = client("dispatcher", broker=broker)
    watcher.subscribe("cars/car-05/#")
    app = moonwire('local mqtt = require "moonwire.mqtt"\n'
                   'mqtt.on("connect", function() mqtt.publish("cars/car-05/status", "ok") end)\n',
                   thing="car-05", broker=broker, env=hsm.env, args=["--log-level", "debug"],
                   config={"tls": {"cert": str(chain), "key": hsm.uri("device")}})  # default module
    assert watcher.wait_message("cars/car-05/status", timeout=20).payload == b"ok"
    app.terminate()
    assert "pin-value=1234" not in app.output()


def test_wrong_pin(hsm, pki, moonwire, tmp_path):
    chain = token_identity(hsm, pki, tmp_path, "car-01")
    app = moonwire('print("never")', env=hsm.env,
                   config={"tls": {"cert": str(chain), "key": hsm.uri("device", pin="987654")}})
    assert app.wait(timeout=20) == 1
    err = app.stderr()
    assert "login to token 'moonwire' failed: CKR_PIN_INCORRECT (wrong PIN)" in err, err
    assert "987654" not in err and "pin-value=***" in err


def test_missing_object(hsm, pki, moonwire, tmp_path):
    chain = token_identity(hsm, pki, tmp_path, "car-01")
    app = moonwire('print("never")', env=hsm.env,
                   config={"tls": {"cert": str(chain), "key": hsm.uri("no-such-key")}})
    assert app.wait(timeout=20) == 1
    assert "no private key with object='no-such-key' in token 'moonwire'" in app.stderr()


def test_key_that_does_not_match_the_certificate(hsm, pki, moonwire, tmp_path):
    chain = token_identity(hsm, pki, tmp_path, "car-01")
    r = p11(hsm, "keygen", hsm.uri("other"))
    assert r.returncode == 0, r.stderr
    app = moonwire('print("never")', env=hsm.env,
                   config={"tls": {"cert": str(chain), "key": hsm.uri("other")}})
    assert app.wait(timeout=20) == 1
    assert "the key in PKCS#11 token 'moonwire' does not match the public key in tls.cert" in app.stderr()


def test_bad_uris_are_refused_at_configuration(hsm, pki, moonwire, tmp_path):
    app = moonwire('print("never")', env=hsm.env,
                   config={"tls": {"key": "pkcs11:token=moonwire;objekt=device?pin-value=1234"}})
    assert app.wait(timeout=20) == 1
    err = app.stderr()
    assert "unknown attribute 'objekt'" in err and "1234" not in err
    app = moonwire('print("never")', env=hsm.env, config={"tls": {"key": "pkcs11:token=nosuch;object=device"}})
    assert app.wait(timeout=20) == 1
    assert "no token 'nosuch'" in app.stderr() and "'moonwire'" in app.stderr()
    app = moonwire('print("never")', env=hsm.env,
                   config={"tls": {"key": hsm.uri("device")}, "pkcs11": {"module": "/nonexistent/libp11.so"}})
    assert app.wait(timeout=20) == 1
    assert "cannot load the PKCS#11 module /nonexistent/libp11.so" in app.stderr()


def test_cli_errors(hsm):
    r = p11(hsm, "keygen", hsm.uri("k"), "--curve", "P-999")
    assert r.returncode == 1 and "unknown curve 'P-999'" in r.stderr
    r = p11(hsm, "csr", hsm.uri("k"))
    assert r.returncode == 2 and "csr needs --cn" in r.stderr
    r = p11(hsm, "frobnicate")
    assert r.returncode == 2
    r = p11(hsm, "tokens")
    assert r.returncode == 0 and "token 'moonwire'" in r.stdout
    r = p11(hsm, "keygen", hsm.uri("rsa"), "--rsa", "2048")
    assert r.returncode == 0, r.stderr
    assert "type:              RSA 2048 bits" in r.stderr and "private value:     not readable" in r.stderr
    r = p11(hsm, "csr", hsm.uri("rsa"), "--cn", "rsa-device")
    assert r.returncode == 0, r.stderr
    v = subprocess.run(["openssl", "req", "-verify", "-noout"], input=r.stdout, text=True, capture_output=True)
    assert v.returncode == 0, v.stderr
