"""moonwire provision end to end: fleet provisioning by claim with the key in a fresh
(simulated) chip, failures at every step leaving the old identity working, rotation, own CA,
dry runs, cancelling; against the real broker, the local provisioning and shadow services."""

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

import mwtest
import provtest

FLOWS = Path(__file__).resolve().parent / "flows"

SHADOW_APP = """
local mqtt = require "moonwire.mqtt"
local device = require "moonwire.device"
local json = require "moonwire.json"
local timer = require "moonwire.timer"
local base = "$aws/things/" .. device.thing .. "/shadow/update"
mqtt.subscribe(base .. "/accepted", function(_, p) print("SHADOW " .. json.decode(p).version) end, { qos = 1 })
mqtt.subscribe(base .. "/rejected", function(_, p) print("REJECTED " .. p) end, { qos = 1 })
local n = 0
local function report()
  n = n + 1
  mqtt.publish(base, json.encode({ state = { reported = { battery = 80 + n } } }), { qos = 1 })
end
mqtt.on("connect", report)
timer.every(300, function() if mqtt.connected() then report() end end)
"""


@pytest.fixture
def stand(pki, make_broker, tmp_path):
    s = provtest.Stand(pki, make_broker, tmp_path)
    yield s
    s.close()


def shadow_versions(app):
    return [int(v) for v in re.findall(r"^SHADOW (\d+)$", app.stdout(), re.M)]


def test_fleet_provisioning_with_the_key_in_a_fresh_chip(stand, moonwire, tmp_path):
    stand.start_services()
    chip = tmp_path / "chip.state"
    assert not chip.exists()
    claim = stand.config("fleet-claim", se={"sim": str(chip)})
    out = tmp_path / "device" / "device.lua"
    out.parent.mkdir()
    r = stand.provision("fleet-claim", claim, {"serial": "0042", "out": out})
    assert r.returncode == 0, r.stderr
    assert "step 9 verify: connected as car-0042" in r.stderr
    cfg = provtest.read_config(out)
    assert cfg["thing"] == "car-0042" and "client_id" not in cfg
    assert cfg["tls"]["key"] == "trustm:0xE0F1" and cfg["se"] == {"sim": str(chip)}
    assert cfg["app"]["device_configuration"] == {"Fleet": "moonwire-demo", "Location": "factory"}
    assert cfg["app"]["provisioning"]["template"] == "moonwire-fleet"
    cert = Path(cfg["tls"]["cert"])
    assert cert.parent == out.parent and cert.name.startswith("car-0042-")

    # The certificate is for the key in the chip's slot E0F1, and a copy sits in E0E1.
    assert provtest.public_key_of_cert(cert) == provtest.chip_public_key(chip, "0xE0F1")
    probe = tmp_path / "probe.lua"
    probe.write_text(f'local se = require "moonwire.se"\n'
                     f'local chip = assert(se.open{{ sim = {str(chip)!r} }})\n'
                     f'io.write(assert(chip:cert("0xE0E1")))\n')
    r2 = mwtest.run_moonwire("script", probe)
    assert r2.returncode == 0, r2.stderr
    assert provtest.public_key_of_cert(cert) in subprocess.run(
        ["openssl", "x509", "-noout", "-pubkey"], input=r2.stdout, capture_output=True, text=True).stdout

    # The device runs with its new identity, the key in the chip, and updates its shadow.
    app = moonwire(SHADOW_APP, thing="car-0042", broker=stand.broker, config_text=out.read_text())
    app.wait_for_output(r"using the OPTIGA Trust M simulator")
    app.wait_for_output(r"(?m)^SHADOW \d+$", timeout=20)

    # The private key never left the chip: no file the flow, the services or the device
    # wrote holds a private key (the chip's own state file aside).
    assert provtest.files_containing(tmp_path, b"PRIVATE KEY", skip=[chip]) == []
    assert not list(tmp_path.rglob("*.key"))
    assert b"PRIVATE KEY" not in (tmp_path / "provisioning.db").read_bytes()

    # The broker knows the new thing: a client named by the certificate's CN with the role of
    # policy fleet-device, expanded exactly as tools/mkbroker expands it for a static thing.
    cn = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-subject", "-nameopt", "multiline"],
                        capture_output=True, text=True).stdout
    cn = re.search(r"commonName\s*=\s*(\S+)", cn).group(1)
    assert cn.startswith("0042.")
    dyn = stand.dynsec()
    client = next(c for c in dyn["clients"] if c["username"] == cn)
    assert client["textname"] == "thing car-0042"
    assert client["roles"] == [{"rolename": "provisioned/car-0042"}]
    role = next(x for x in dyn["roles"] if x["rolename"] == "provisioned/car-0042")
    ref = tmp_path / "mkbroker-ref"
    subprocess.run([mwtest.SYS_PYTHON, str(mwtest.MKBROKER), "--policy", str(provtest.FLEET_POLICY),
                    "--pki", str(stand.pki.dir), "--out", str(ref), "--add", "car-0042=fleet-device"],
                   check=True, capture_output=True)
    expected = json.loads((ref / "dynamic-security.json").read_text())
    expected_role = next(x for x in expected["roles"] if x["rolename"] == "car-0042")
    assert role["acls"] == expected_role["acls"]


def test_csr_from_the_chip_key_verifies_with_openssl(tmp_path):
    chip = tmp_path / "chip.state"
    csr = tmp_path / "client1.csr"
    script = tmp_path / "csr.lua"
    script.write_text(
        'local pki = require "moonwire.pki"\n'
        'local se = require "moonwire.se"\n'
        f'assert(pki.se_open{{ sim = {str(chip)!r} }})  -- the runtime chip, as provisioning opens it\n'
        'local pub = assert(se.gen_key("0xE0F1"))\n'
        'local csr = assert(se.csr("0xE0F1", { cn = "TrustM_Client1", o = "Moonwire" }))\n'
        'assert(pki.csr("trustm:0xE0F1", { cn = "x" }))  -- the same key through moonwire.pki\n'
        f'assert(pki.write_file({str(csr)!r}, csr))\n'
        'io.write(pub)\n')
    r = mwtest.run_moonwire("script", script)
    assert r.returncode == 0, r.stderr
    v = subprocess.run(["openssl", "req", "-verify", "-in", str(csr), "-noout", "-subject"],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    assert "verify OK" in v.stdout + v.stderr
    assert "CN = TrustM_Client1" in v.stdout
    pub = subprocess.run(["openssl", "req", "-in", str(csr), "-noout", "-pubkey"], capture_output=True,
                         text=True).stdout
    assert pub == r.stdout == provtest.chip_public_key(chip)
    # A damaged request does not verify.
    lines = csr.read_text().splitlines()
    lines[-2] = lines[-2][:5] + ("A" if lines[-2][5] != "A" else "B") + lines[-2][6:]
    bad = tmp_path / "bad.csr"
    bad.write_text("\n".join(lines) + "\n")
    # (OpenSSL 3.0's `req -verify` exits 0 either way: its verdict is the message.)
    b = subprocess.run(["openssl", "req", "-verify", "-in", str(bad), "-noout"], capture_output=True, text=True)
    assert "verify OK" not in b.stdout + b.stderr


def old_identity_works(stand, cfg):
    """Connects with the configuration's certificate and key (paho) and reads its shadow."""
    thing = cfg["thing"]
    c = mwtest.Client(stand.broker, None, stand.pki, client_id=thing + "-check", cert=cfg["tls"]["cert"],
                      key=cfg["tls"]["key"])
    try:
        base = f"$aws/things/{thing}/shadow/get"
        assert c.subscribe([base + "/accepted", base + "/rejected"]) == [1, 1]
        c.publish(base, "{}", qos=1)
        m = c.wait_message(base + "/+", timeout=10)
        assert m.topic.endswith("/accepted"), m
    finally:
        c.disconnect()


def listing(d):
    return sorted(p.name for p in Path(d).iterdir())


def test_failures_at_each_step_leave_the_old_identity_working(stand, pki, tmp_path):
    stand.start_services()
    dev = tmp_path / "device"
    dev.mkdir()
    out = dev / "device.lua"
    claim = stand.config("fleet-claim")
    r = stand.provision("fleet-claim", claim, {"serial": "0042", "out": out, "key": "file"})
    assert r.returncode == 0, r.stderr
    cfg = provtest.read_config(out)
    # Give the thing a shadow, so "works" means reading it back.
    c = mwtest.Client(stand.broker, None, pki, client_id="car-0042", cert=cfg["tls"]["cert"], key=cfg["tls"]["key"])
    c.subscribe("$aws/things/car-0042/shadow/update/accepted")
    c.publish("$aws/things/car-0042/shadow/update", '{"state":{"reported":{"ok":1}}}', qos=1)
    c.wait_message("$aws/things/car-0042/shadow/update/accepted", timeout=10)
    c.disconnect()
    before_text, before_files = out.read_text(), listing(dev)

    def fails(flow, config, params, step_text):
        r = stand.provision(flow, config, dict(params, out=out))
        assert r.returncode == 1, r.stderr
        assert step_text in r.stderr, r.stderr
        assert "the previous identity is untouched" in r.stderr
        assert out.read_text() == before_text
        assert listing(dev) == before_files, "nothing of the failed attempt may stay behind"
        old_identity_works(stand, cfg)
        return r

    # 1. A claim certificate the broker refuses (expired).
    bad_claim = stand.config("fleet-claim", tmp_path / "bad-claim.lua",
                             tls={"cert": str(pki.cert("car-01.expired")), "key": str(pki.key("car-01.expired"))})
    # (The reason is the TLS layer's: usually the broker's "certificate expired" alert, but the
    # alert can be lost when the broker closes first, so only the step is checked.)
    fails("fleet-claim", bad_claim, {"serial": "0043", "key": "file"}, "step connect failed: EREFUSED: ")
    # 2. The service refuses the CSR (made elsewhere, with a 1024-bit RSA key).
    weak = tmp_path / "weak.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:1024", "-noenc", "-keyout", str(tmp_path / "weak.pem"),
                    "-subj", "/CN=0666", "-out", str(weak)], check=True, capture_output=True)
    fails(FLOWS / "broken.lua", claim, {"mode": "csr", "dir": dev, "csr_file": weak},
          "step create_certificate_from_csr failed: InvalidCsr: Invalid certificate signing request: "
          "the request's RSA key has 1024 bits; at least 2048 are required")
    # 3. A forged ownership token.
    fails(FLOWS / "broken.lua", claim, {"mode": "token", "dir": dev},
          "step register_thing failed: InvalidCertificateOwnershipToken: Certificate ownership token is invalid.")
    # 4. The template refuses the parameters.
    fails("fleet-claim", claim, {"serial": "bad serial!", "key": "file"},
          "step register_thing failed: InvalidParameters: Parameter SerialNumber value 'bad serial!' "
          "does not match AllowedPattern")
    # 5. A template that does not exist.
    fails("fleet-claim", claim, {"serial": "0044", "key": "file", "template": "nope"},
          "step register_thing failed: ResourceNotFound: Template nope not found")
    # 6. A key slot/file the current identity uses is never overwritten.
    fails("fleet-claim", claim, {"serial": "0045", "key": "file", "key_file": cfg["tls"]["key"]},
          "step keygen failed: EBUSY: ")
    # 7. The broker refuses the new identity: the service signs with a CA the broker does not trust.
    stand.prov.stop()
    stand.start_services(ca=pki.dir / "rogue-ca", db=tmp_path / "rogue.db")
    fails("fleet-claim", claim, {"serial": "0046", "key": "file"},
          "step verify failed: EREFUSED: the new identity cannot connect: ")


def test_rotation_keeps_the_old_identity_until_the_switch(stand, moonwire, tmp_path):
    stand.start_services()
    chip = tmp_path / "chip.state"
    dev = tmp_path / "device"
    dev.mkdir()
    out = dev / "device.lua"
    r = stand.provision("fleet-claim", stand.config("fleet-claim", se={"sim": str(chip)}),
                        {"serial": "0077", "out": out})
    assert r.returncode == 0, r.stderr
    old_text = out.read_text()
    old = provtest.read_config(out)
    old_pub = provtest.chip_public_key(chip, "0xE0F1")

    # The device keeps running on its old identity during the rotation.
    running = moonwire(SHADOW_APP, thing="car-0077", broker=stand.broker, config_text=old_text)
    running.wait_for_output(r"(?m)^SHADOW \d+$", timeout=20)

    # A rotation that fails (unknown template) changes nothing.
    r = stand.provision("rotate", out, {"template": "nope", "client_id": "car-0077-rotation"})
    assert r.returncode == 1 and "step register_thing failed: ResourceNotFound" in r.stderr, r.stderr
    assert out.read_text() == old_text

    r = stand.provision("rotate", out, {"client_id": "car-0077-rotation"})
    assert r.returncode == 0, r.stderr
    new = provtest.read_config(out)
    assert new["thing"] == "car-0077"
    assert new["tls"]["key"] == "trustm:0xE0F2", "the new key goes to the next slot"
    assert new["tls"]["cert"] != old["tls"]["cert"]
    assert new["app"]["provisioning"]["flow"] == "rotate"
    assert new["app"]["provisioning"]["previous_certificate_id"] == old["app"]["provisioning"]["certificate_id"]
    assert Path(str(out) + ".previous").read_text() == old_text
    # Both keys are in the chip, each matching its certificate.
    assert provtest.chip_public_key(chip, "0xE0F1") == old_pub == provtest.public_key_of_cert(old["tls"]["cert"])
    assert provtest.chip_public_key(chip, "0xE0F2") == provtest.public_key_of_cert(new["tls"]["cert"])

    # The running device was never disturbed, and keeps reporting on the old identity.
    n = len(shadow_versions(running))
    mwtest.wait_until(lambda: len(shadow_versions(running)) >= n + 2, timeout=15, message="more shadow updates")
    assert "disconnected" not in running.stderr()
    running.terminate()

    # After the switch the device starts with the new identity.
    fresh = moonwire(SHADOW_APP, thing="car-0077", broker=stand.broker, config_text=out.read_text())
    fresh.wait_for_output(r"(?m)^SHADOW \d+$", timeout=20)
    assert "does not match" not in fresh.stderr()


def test_own_ca_flow_registers_with_the_local_service(stand, moonwire, tmp_path):
    stand.start_services()
    chip = tmp_path / "chip.state"
    out = tmp_path / "device.lua"
    station = stand.config("factory-station", se={"sim": str(chip)})
    r = stand.provision("own-ca", station, {"thing": "car-0099", "out": out, "ca": stand.pki.dir})
    assert r.returncode == 0, r.stderr
    cfg = provtest.read_config(out)
    assert cfg["thing"] == "car-0099"
    subj = subprocess.run(["openssl", "x509", "-in", cfg["tls"]["cert"], "-noout", "-subject", "-issuer"],
                          capture_output=True, text=True).stdout
    assert "CN = car-0099" in subj and "Moonwire Dev Intermediate CA" in subj
    dyn = stand.dynsec()
    assert any(c["username"] == "car-0099" and c["textname"] == "thing car-0099" for c in dyn["clients"])
    app = moonwire(SHADOW_APP, thing="car-0099", broker=stand.broker, config_text=out.read_text())
    app.wait_for_output(r"(?m)^SHADOW \d+$", timeout=20)
    # The station may register, not take over a service identity: a certificate with the
    # CN of an existing service is refused by the service.
    r = stand.provision("own-ca", station, {"thing": "shadow-service", "out": tmp_path / "evil.lua",
                                             "ca": stand.pki.dir, "key": "file"})
    assert r.returncode == 1
    assert "step register_certificate failed: AccessDenied: " in r.stderr and "already a broker identity" in r.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(stand, tmp_path):
    chip = tmp_path / "chip.state"
    out = tmp_path / "device.lua"
    r = stand.provision("fleet-claim", stand.config("fleet-claim", se={"sim": str(chip)}),
                        {"serial": "0042", "out": out}, dry_run=True)
    assert r.returncode == 0, r.stderr
    assert "plan:" in r.stdout and "dry run: nothing was changed" in r.stdout
    for step in ("keygen", "csr", "connect", "create_certificate_from_csr", "register_thing", "disconnect",
                 "store_certificate", "write_config", "verify", "commit"):
        assert re.search(rf"^\s+\d+\. {step}\b", r.stdout, re.M), step
    assert 'slot="0xE0F1"' in r.stdout
    assert not chip.exists() and not out.exists() and not Path(str(out) + ".new").exists()


def test_usage_errors_and_cancelling(stand, tmp_path):
    claim = stand.config("fleet-claim")
    r = stand.provision("fleet-claim", claim, {"serial": "1"})
    assert r.returncode == 2 and "needs parameter(s): out" in r.stderr
    r = stand.provision("no-such-flow", claim, {})
    assert r.returncode == 2 and "not a shipped flow" in r.stderr
    r = mwtest.run_moonwire("provision", "--list")
    assert r.returncode == 0 and "fleet-claim" in r.stdout and "rotate" in r.stdout
    r = mwtest.run_moonwire("provision", "rotate", "--describe")
    assert r.returncode == 0 and "template" in r.stdout
    # No provisioning service: the flow waits for CreateCertificateFromCsr; SIGINT ends it.
    out = tmp_path / "device.lua"
    p = subprocess.Popen([str(mwtest.moonwire_bin()), "provision", "fleet-claim", "--config", str(claim),
                          "--param", "serial=0042", "--param", f"out={out}", "--param", "key=file"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = ""
    deadline = time.monotonic() + 20
    while "create_certificate_from_csr ..." not in err and time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        err += line
    assert "create_certificate_from_csr ..." in err, err
    p.send_signal(signal.SIGINT)
    rest = p.communicate(timeout=20)[1]
    assert p.returncode == 1
    assert "step create_certificate_from_csr failed: ECANCELED: interrupted" in rest, rest
    assert not out.exists() and not list(tmp_path.glob("*.key"))
    provtest.check_clean(err + rest, "cancelled flow")


def test_flows_from_lua_code(stand, tmp_path):
    """What the REPL or an app does: prov.run with a shipped flow, and a flow of its own."""
    stand.start_services()
    claim = stand.config("fleet-claim")
    out = tmp_path / "device.lua"
    script = tmp_path / "provision.lua"
    script.write_text(f"""
local prov = require "moonwire.provision"
local claim = assert(prov.read_config({str(claim)!r}))
local done = 0
local function report(t)
  print(t.ok and ("DONE " .. t.name .. " " .. (t.result.path or t.result.thing_name)) or ("FAILED " .. tostring(t.error)))
  done = done + 1
end
assert(prov.run("fleet-claim", {{ serial = "0500", out = {str(out)!r}, key = "file" }},
                {{ config = claim, config_path = {str(claim)!r}, on_done = report }}))
-- A flow of its own: the steps recombined (no chip, no config written).
assert(prov.run(function(f)
  local key = f.keygen {{ backend = "file", path = {str(tmp_path / 'own.key')!r} }}
  local conn = f.connect(claim)
  local cert = f.create_certificate_from_csr(conn, f.csr(key, {{ cn = "0501" }}))
  local thing = f.register_thing(conn, "moonwire-fleet", {{ token = cert.ownership_token,
                                                          parameters = {{ SerialNumber = "0501" }} }})
  f.disconnect(conn)
  return thing
end, nil, {{ on_done = report }}))
""")
    r = mwtest.run_moonwire("script", script, timeout=60)
    provtest.check_clean(r.stdout + r.stderr, "moonwire script")
    assert r.returncode == 0, r.stderr
    assert f"DONE fleet-claim {out}" in r.stdout, r.stdout + r.stderr
    assert "DONE inline car-0501" in r.stdout, r.stdout + r.stderr
    assert provtest.read_config(out)["thing"] == "car-0500"


def test_a_factory_line_provisions_devices_at_the_same_time(stand, tmp_path):
    """Devices sharing one claim certificate see each other's answers on a plain broker; each
    must still get its own certificate and thing."""
    stand.start_services()
    claim = stand.config("fleet-claim")
    procs = []
    for n in range(3):
        d = tmp_path / f"dev{n}"
        d.mkdir()
        procs.append(subprocess.Popen(
            [str(mwtest.moonwire_bin()), "provision", "fleet-claim", "--config", str(claim), "--param",
             f"serial=07{n}", "--param", f"out={d / 'device.lua'}", "--param", "key=file"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for n, p in enumerate(procs):
        out, err = p.communicate(timeout=90)
        provtest.check_clean(out + err, f"device {n}")
        assert p.returncode == 0, err
        cfg = provtest.read_config(tmp_path / f"dev{n}" / "device.lua")
        assert cfg["thing"] == f"car-07{n}"
        assert provtest.public_key_of_cert(cfg["tls"]["cert"]) == subprocess.run(
            ["openssl", "pkey", "-in", cfg["tls"]["key"], "-pubout"], capture_output=True, text=True).stdout


@pytest.mark.skipif(not mwtest.SoftHsm.available(), reason="SoftHSM2 is not installed")
def test_fleet_provisioning_and_rotation_with_the_key_in_a_pkcs11_token(stand, moonwire, tmp_path):
    stand.start_services()
    hsm = mwtest.SoftHsm(tmp_path / "hsm")
    out = tmp_path / "device.lua"
    uri = hsm.uri("device-0600")
    r = stand.provision("fleet-claim", stand.config("fleet-claim"),
                        {"serial": "0600", "out": out, "key": "pkcs11", "key_uri": uri}, env=hsm.env)
    assert r.returncode == 0, r.stderr
    assert "1234" not in r.stderr, "the PIN is never printed"
    cfg = provtest.read_config(out)
    assert cfg["thing"] == "car-0600" and cfg["tls"]["key"] == uri
    # The token made the key and keeps it: sensitive, never extractable.
    info = mwtest.run_moonwire("pkcs11", "info", uri, env=hsm.env)
    assert info.returncode == 0, info.stderr
    assert "extractable:       no" in info.stdout and "made in the token: yes" in info.stdout
    pub = mwtest.run_moonwire("pkcs11", "pubkey", uri, env=hsm.env).stdout
    assert pub == provtest.public_key_of_cert(cfg["tls"]["cert"])
    assert provtest.files_containing(tmp_path, b"PRIVATE KEY", skip=[tmp_path / "hsm"]) == []
    app = moonwire(SHADOW_APP, thing="car-0600", broker=stand.broker, config_text=out.read_text(), env=hsm.env)
    app.wait_for_output(r"(?m)^SHADOW \d+$", timeout=20)
    app.terminate()
    # Rotation makes a second key object in the token and switches to it once verified.
    r = stand.provision("rotate", out, {}, env=hsm.env)
    assert r.returncode == 0, r.stderr
    new = provtest.read_config(out)
    assert new["tls"]["key"] != uri and ";object=device-0600-r" in new["tls"]["key"]
    assert provtest.read_config(str(out) + ".previous")["tls"]["key"] == uri


def test_rotation_started_from_an_attached_prompt(stand, moonwire, tmp_path):
    """`moonwire attach` into the running device, and rotate from its prompt: the flow runs in
    the device's loop while it keeps working, then switches its configuration file."""
    stand.start_services()
    out = tmp_path / "device.lua"
    r = stand.provision("fleet-claim", stand.config("fleet-claim"), {"serial": "0800", "out": out, "key": "file"})
    assert r.returncode == 0, r.stderr
    env = mwtest.repl_env(tmp_path)
    m = moonwire(SHADOW_APP, thing="car-0800", broker=stand.broker, config_text=out.read_text(), env=env)
    m.wait_for_output(r"(?m)^SHADOW \d+$", timeout=20)
    before = m.config_path.read_text()
    r = mwtest.attach(env, "car-0800", input=(
        'local prov = require "moonwire.provision"\n'
        f'ROTATION = assert(prov.run("rotate", {{ client_id = "car-0800-rotation" }},\n'
        f'  {{ config = device.config, config_path = {str(m.config_path)!r} }}))\n'
        'return "started"\n'))
    assert r.returncode == 0 and r.stdout == "started\n", r.stderr
    state = mwtest.wait_until(lambda: (lambda s: s if s.strip() != "nil" else None)(
        mwtest.attach(env, "car-0800", "-e", "return ROTATION.ok").stdout), timeout=30, message="the rotation")
    assert state.strip() == "true", mwtest.attach(env, "car-0800", "-e", "return tostring(ROTATION.error)").stdout
    after = provtest.read_config(m.config_path)
    assert m.config_path.read_text() != before
    assert Path(str(m.config_path) + ".previous").read_text() == before
    assert after["app"]["provisioning"]["flow"] == "rotate" and after["thing"] == "car-0800"
    n = len(shadow_versions(m))
    mwtest.wait_until(lambda: len(shadow_versions(m)) >= n + 2, timeout=15, message="the device carrying on")
