"""moonwire se: the OPTIGA Trust M from the command line, against the simulator (state file in a
temp dir); and moonwire.se inside `moonwire run` using the chip from the configuration."""

import subprocess

import mwtest


def se(state, *args, **kw):
    return mwtest.run_moonwire("se", "--sim", state, *args, **kw)


def openssl(*args, input=None):
    return subprocess.run(["openssl", *map(str, args)], input=input, capture_output=True, text=True)


def test_keygen_and_csr_verify_with_openssl(tmp_path):
    state = tmp_path / "chip.state"
    pub = se(state, "keygen", "0xE0F1", "--curve", "P-256", "--usage", "sign,auth")
    assert pub.returncode == 0, pub.stderr
    assert pub.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    r = se(state, "csr", "0xE0F1", "--cn", "car-07", "--o", "Moonwire", "--c", "DE", "--dns", "car-07.local")
    assert r.returncode == 0, r.stderr
    csr = tmp_path / "car-07.csr"
    csr.write_text(r.stdout)
    v = openssl("req", "-in", csr, "-verify", "-noout", "-subject")
    assert v.returncode == 0 and "verify OK" in v.stdout + v.stderr, v.stderr
    assert "CN = car-07" in v.stdout and "O = Moonwire" in v.stdout
    # The request carries the chip's public key, the one keygen printed.
    k = openssl("req", "-in", csr, "-noout", "-pubkey")
    assert k.stdout == pub.stdout
    # pubkey reads it back from the storage object next to the key
    assert se(state, "pubkey", "0xE0F1").stdout == pub.stdout
    # the factory key E0F0 signs too (its public key comes from the E0E0 certificate)
    r = se(state, "csr", "0xE0F0", "--cn", "factory")
    assert r.returncode == 0, r.stderr
    assert openssl("req", "-verify", "-noout", input=r.stdout).returncode == 0


def test_mkpki_signs_the_chip_request(tmp_path):
    """certs/mkpki --csr: a development certificate for a key that exists only in the chip."""
    state = tmp_path / "chip.state"
    pub = se(state, "keygen", "0xE0F1")
    assert pub.returncode == 0, pub.stderr
    csr = tmp_path / "car-09.csr"
    csr.write_text(se(state, "csr", "0xE0F1", "--cn", "car-09").stdout)
    pki = tmp_path / "pki"
    mkpki = [str(mwtest.REPO / "certs" / "mkpki"), "-q", "--out", str(pki)]
    r = subprocess.run(mkpki + ["--csr", f"car-09={csr}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    crt = pki / "car-09.crt"
    assert not (pki / "car-09.key").exists()
    assert openssl("x509", "-in", crt, "-noout", "-pubkey").stdout == pub.stdout
    v = openssl("verify", "-CAfile", pki / "root-ca.crt", "-untrusted", pki / "intermediate-ca.crt",
                "-purpose", "sslclient", crt)
    assert v.returncode == 0, v.stdout + v.stderr
    # A request whose CN is not the name asked for is refused, and nothing is written.
    r = subprocess.run(mkpki + ["--csr", f"car-10={csr}"], capture_output=True, text=True)
    assert r.returncode == 1 and "CN is 'car-09', not 'car-10'" in r.stderr
    assert not (pki / "car-10.crt").exists()


def test_certificates(tmp_path):
    state = tmp_path / "chip.state"
    factory = se(state, "cert", "read", "0xE0E0")
    assert factory.returncode == 0, factory.stderr
    assert factory.stdout.startswith("-----BEGIN CERTIFICATE-----")
    x = openssl("x509", "-noout", "-subject", input=factory.stdout)
    assert x.returncode == 0
    # the factory object is wrapped in the TLS identity-chain tag C0
    assert se(state, "data", "read", "0xE0E0", "--len", "1").stdout.strip() == "c0"
    out = tmp_path / "factory.pem"
    assert se(state, "cert", "read", "0xE0E0", "--out", out).returncode == 0
    assert out.read_text() == factory.stdout
    # stored bare, then with the chain tag; both read back as the same certificate
    w = se(state, "cert", "write", "0xE0E1", out)
    assert w.returncode == 0, w.stderr
    assert se(state, "data", "read", "0xE0E1", "--len", "1").stdout.strip() == "30"
    assert se(state, "cert", "read", "0xE0E1").stdout == factory.stdout
    assert se(state, "cert", "write", "0xE0E1", out, "--chain").returncode == 0
    assert se(state, "data", "read", "0xE0E1", "--len", "1").stdout.strip() == "c0"
    assert se(state, "cert", "read", "0xE0E1").stdout == factory.stdout
    # an empty slot, and a file that is no certificate
    r = se(state, "cert", "read", "0xE0E2")
    assert r.returncode == 1 and "holds no certificate" in r.stderr
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    r = se(state, "cert", "write", "0xE0E1", junk)
    assert r.returncode == 1 and "no PEM certificate" in r.stderr


def test_data_objects_metadata_counters(tmp_path):
    state = tmp_path / "chip.state"
    assert se(state, "data", "write", "0xF1D0", "--hex", "48 65 6c 6c 6f", "--erase").returncode == 0
    assert se(state, "data", "read", "0xF1D0").stdout.strip() == "48656c6c6f"
    assert se(state, "data", "read", "0xF1D0", "--hex").stdout.strip() == "48656c6c6f"
    assert se(state, "data", "read", "0xF1D0", "--raw").stdout == "Hello"
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x00\xffmoon")
    assert se(state, "data", "write", "0xF1D0", blob, "--offset", "2").returncode == 0
    out = tmp_path / "out.bin"
    assert se(state, "data", "read", "0xF1D0", "--out", out).returncode == 0
    assert out.read_bytes() == b"He\x00\xffmoon"
    assert se(state, "data", "read", "0xF1D0", "--offset", "4", "--len", "4", "--raw").stdout == "moon"
    r = se(state, "data", "read", "0xF1D0", "--offset", "100")
    assert r.returncode == 1 and "data object boundary exceeded (chip error 0x08)" in r.stderr
    r = se(state, "data", "read", "0xE0F1")  # private keys are never readable
    assert r.returncode == 1 and "access condition not satisfied (chip error 0x07)" in r.stderr

    md = se(state, "metadata", "0xF1D0")
    assert md.returncode == 0
    assert "used_size     8" in md.stdout and "read          ALW" in md.stdout
    md = se(state, "metadata", "0xF1D0", "--set", "read=LcsO<op", "--set", "change=ALW", "--set", "version=3")
    assert md.returncode == 0, md.stderr
    assert "read          LcsO<op" in md.stdout and "version       3" in md.stdout
    r = se(state, "metadata", "0xF1D0", "--set", "read=maybe")
    assert r.returncode == 2 and "not an access condition" in r.stderr

    c = se(state, "counter", "0xE120")
    assert c.returncode == 0
    value = int(c.stdout.split()[1])
    c = se(state, "counter", "0xE120", "--add", "5")
    assert int(c.stdout.split()[1]) == value + 5


def test_usage_errors_touch_no_chip(tmp_path):
    state = tmp_path / "chip.state"
    for args, text in ((["keygen", "E0F1"], "such as 0xE0F1"),
                       (["keygen", "0xE0F1", "--curve", "P-999"], "unknown curve"),
                       (["csr", "0xE0F1"], "csr needs --cn"),
                       (["cert", "copy", "0xE0E0"], "cert needs read or write"),
                       (["data", "write", "0xF1D0"], "needs OID FILE or --hex"),
                       (["data", "write", "0xF1D0", "--hex", "abc"], "not an even number of hex digits"),
                       (["counter", "0xE120", "--add", "0"], "--add must be 1..255"),
                       (["random", "0"], "between 1 and 1024"),
                       (["frobnicate"], "unknown se command")):
        r = se(state, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert text in r.stderr, (args, r.stderr)
    assert not state.exists()


def test_simulator_is_the_default_without_an_i2c_bus(tmp_path):
    r = mwtest.run_moonwire("se", "info", env={"MOONWIRE_SE_SIM": str(tmp_path / "default.state")})
    assert r.returncode == 0, r.stderr
    assert "no I2C bus here; using the Trust M simulator" in r.stderr
    assert "transport:        simulator" in r.stdout
    assert (tmp_path / "default.state").exists()


def test_lua_uses_the_configured_chip(pki, broker, moonwire, tmp_path):
    state = tmp_path / "chip.state"
    assert se(state, "keygen", "0xE0F2").returncode == 0
    app = moonwire('local se = require "moonwire.se"\n'
                   'print("uid " .. assert(se.uid()))\n'
                   'local csr = assert(se.csr(0xE0F2, { cn = "car-01" }))\n'
                   'print("csr " .. #csr)\n'
                   'local ok, msg, code = se.sign(0xE0F3, string.rep("x", 32))\n'
                   'print("empty slot " .. tostring(code))\n',
                   config={"se": {"sim": str(state)}})
    app.wait_for_output(r"uid cd[0-9a-f]{52}")
    app.wait_for_output(r"csr \d{3}")
    app.wait_for_output(r"empty slot INVALID_METADATA_OF_THE_KEY_DATA_OBJECT")
    uid = se(state, "info").stdout.split("uid:")[1].split()[0]
    assert f"uid {uid}" in app.stdout()
