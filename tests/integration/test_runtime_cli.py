"""Command line, configuration errors and broken scripts: clear reasons, right exit codes."""

import re

import mwtest


def run_with(tmp_path, config_text, app_text='print("app")', extra=()):
    cfg = tmp_path / "config.lua"
    cfg.write_text(config_text)
    app = tmp_path / "app.lua"
    app.write_text(app_text)
    return mwtest.run_moonwire("run", app, "--config", cfg, *extra)


def good_config(pki, port=8883, **over):
    base = mwtest.default_config(port, pki)
    return "return " + mwtest.lua_literal(mwtest._merge(base, over)) + "\n"


def test_help_version_and_usage_errors():
    r = mwtest.run_moonwire("--version")
    assert r.returncode == 0 and re.match(r"moonwire \d+\.\d+\.\d+", r.stdout)
    r = mwtest.run_moonwire("--help")
    assert r.returncode == 0 and "run" in r.stdout and "Exit status" in r.stdout
    r = mwtest.run_moonwire("run", "--help")
    assert r.returncode == 0 and "--config" in r.stdout
    r = mwtest.run_moonwire()
    assert r.returncode == 2
    r = mwtest.run_moonwire("fly")
    assert r.returncode == 2 and "unknown command 'fly'" in r.stderr
    r = mwtest.run_moonwire("run", "app.lua")
    assert r.returncode == 2 and "no configuration given" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = mwtest.run_moonwire("run", "app.lua", "--config", "c.lua", "--frobnicate")
    assert r.returncode == 2 and "unknown option '--frobnicate'" in r.stderr


def test_unknown_key_is_named_with_a_suggestion(tmp_path, pki):
    r = run_with(tmp_path, good_config(pki, broker={"prot": 1}))
    assert r.returncode == 1
    assert "unknown key 'broker.prot' (did you mean 'broker.port'?)" in r.stderr


def test_wrong_types_and_ranges_are_named(tmp_path, pki):
    r = run_with(tmp_path, good_config(pki, broker={"port": "8883"}))
    assert r.returncode == 1 and "broker.port: expected an integer, got string" in r.stderr
    r = run_with(tmp_path, good_config(pki, broker={"keepalive": 5}))
    assert r.returncode == 1 and "broker.keepalive: 5 is outside 30..1200" in r.stderr
    r = run_with(tmp_path, good_config(pki, will={"topic": "cars/+/x", "payload": "x"}))
    assert r.returncode == 1 and "will.topic: wildcards" in r.stderr
    r = run_with(tmp_path, good_config(pki, tls={"key": "trustm:0x1234"}))
    assert r.returncode == 1 and "tls.key" in r.stderr and "not a Trust M key object" in r.stderr
    r = run_with(tmp_path, good_config(pki, thing="car 01"))
    assert r.returncode == 1 and "is not a valid AWS IoT thing name" in r.stderr


def test_missing_required_keys(tmp_path, pki):
    r = run_with(tmp_path, good_config(pki, tls=mwtest.DELETE))
    assert r.returncode == 1 and "tls.ca is required" in r.stderr
    r = run_with(tmp_path, 'return { broker = { host = "127.0.0.1" } }')
    assert r.returncode == 1 and "'thing' is required" in r.stderr


def test_configuration_syntax_error_has_file_and_line(tmp_path):
    r = run_with(tmp_path, 'return {\n  thing = "car-01",\n  broker = { host = }\n}\n')
    assert r.returncode == 1
    assert re.search(r"config\.lua:3: unexpected symbol", r.stderr)


def test_missing_certificate_file_is_reported(tmp_path, pki):
    r = run_with(tmp_path, good_config(pki, tls={"ca": "/nonexistent/ca.pem"}))
    assert r.returncode == 1 and "tls.ca: cannot load CA certificates from '/nonexistent/ca.pem'" in r.stderr


def test_broken_app_script_fails_with_file_and_line(tmp_path, pki):
    r = run_with(tmp_path, good_config(pki), app_text='local x = 1\nlocal y = = 2\n')
    assert r.returncode == 1 and re.search(r"app\.lua:2: unexpected symbol near '='", r.stderr)
    r = run_with(tmp_path, good_config(pki), app_text='local t = nil\nprint(t.field)\n')
    assert r.returncode == 1 and re.search(r"app\.lua:2: attempt to index a nil value", r.stderr)


def test_broker_and_thing_overrides(broker, pki, tmp_path, moonwire):
    # The file points at a closed port; --broker redirects to the live broker.
    app = moonwire('local d = require "moonwire.device"\n'
                   'require "moonwire.log".info("thing=" .. d.thing .. " client=" .. d.client_id)',
                   config={"broker": {"port": 1}}, args=["--broker", f"127.0.0.1:{broker.port}"])
    app.wait_for_output(rf"connected to 127\.0\.0\.1:{broker.port} as car-01")
    app.wait_for_output("thing=car-01 client=car-01")


def test_script_mode_reports_callback_errors(tmp_path):
    s = tmp_path / "s.lua"
    s.write_text('local timer = require "moonwire.timer"\n'
                 'timer.after(1, function() error("late failure") end)\n'
                 'timer.after(5, function() print("second timer ran") end)\n')
    r = mwtest.run_moonwire("script", s)
    assert r.returncode == 1
    assert re.search(r"timer callback failed: \S*s\.lua:2: late failure", r.stderr)
    assert "second timer ran" in r.stdout
