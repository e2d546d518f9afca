"""moonwire repl: the local prompt, with no broker and connected as a configured thing,
typed at through a pseudo-terminal and driven through a pipe."""

import os
import re
import subprocess

import pexpect
import pytest

import mwtest

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x07")


def clean(text):
    return ESCAPES.sub("", text).replace("\r", "")


def repl(env, *args, input="", timeout=30):
    return subprocess.run([str(mwtest.moonwire_bin()), "repl", *map(str, args)], input=input,
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **env))


@pytest.fixture
def env(tmp_path):
    if not mwtest.moonwire_bin().exists():
        pytest.skip("moonwire binary not built")
    return mwtest.repl_env(tmp_path)


def test_piped_without_broker(env, tmp_path):
    r = repl(env, input="return 1+1\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, "2\n", "")
    r = repl(env, "-e", "return json.encode({a = {1, 2}}), inspect({b = true})")
    assert (r.returncode, r.stdout) == (0, '{"a":[1,2]}\t{b = true}\n')
    r = repl(env, input="error('local boom')")
    assert r.returncode == 1 and "repl:1: local boom" in r.stderr
    r = repl(env, input="for i = 1, 3 do")
    assert r.returncode == 1 and "incomplete chunk" in r.stderr
    assert "no broker configured" in repl(env, "-e", ".stats").stdout
    # an app file runs first; the prompt sees its globals
    app = tmp_path / "app.lua"
    app.write_text("greeting = 'hello from the app'\nfunction double(x) return 2 * x end\n")
    r = repl(env, app, "-e", "return greeting, double(21)")
    assert (r.returncode, r.stdout) == (0, "hello from the app\t42\n")
    bad = tmp_path / "bad.lua"
    bad.write_text("error('app fails')\n")
    r = repl(env, bad, "-e", "return 1")
    assert r.returncode == 1 and "app fails" in r.stderr
    assert repl(env, "--config").returncode == 2
    assert repl(env, "--thing", "x").returncode == 2


def test_interactive_without_broker(env, tmp_path):
    child = mwtest.spawn_prompt(["repl"], env)
    try:
        child.expect_exact("no broker")
        child.expect_exact("moonwire> ")
        child.send("1+1\r")
        child.expect(r"\r\n2\r\n")
        child.expect_exact("moonwire> ")
        # the event loop runs while the prompt waits: a timer prints above it
        child.send("timer.after(50, function() print('tick from a timer'); log.info('and a log line') end)\r")
        child.expect_exact("tick from a timer")
        child.expect_exact("and a log line")
        child.expect_exact("moonwire> ")
        child.send("json.enc\t")
        child.expect_exact("ode(")
        child.send("{1})\r")
        child.expect_exact('\r\n"[1]"\r\n')  # strings are quoted at the prompt
        child.expect_exact("moonwire> ")
        # Ctrl-C stops a runaway entry, the prompt stays
        child.send("n = 0; while true do n = n + 1 end\r")
        child.expect_exact("while true")
        child.expect(r"\r\n")
        child.sendintr()
        child.expect_exact("interrupted")
        child.expect_exact("moonwire> ")
        child.send("n > 0\r")
        child.expect(r"\r\ntrue\r\n")
        child.expect_exact("moonwire> ")
        # ... even one that catches errors
        child.send("while true do pcall(function() while true do end end) end\r")
        child.expect_exact("end) end")
        child.expect(r"\r\n")
        child.sendintr()
        child.expect_exact("interrupted")
        child.expect_exact("moonwire> ")
        child.send(".log on\r")
        child.expect_exact("shown here already")
        child.expect_exact("moonwire> ")
        child.sendeof()
        child.expect(pexpect.EOF)
        assert mwtest.sanitizer_report(child.before) is None, child.before
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)
    assert "json.encode({1})" in (tmp_path / "history").read_text(errors="replace")


def config_file(tmp_path, broker, pki):
    path = tmp_path / "config.lua"
    path.write_text("return " + mwtest.lua_literal(mwtest.default_config(broker, pki, "car-01")) + "\n")
    return path


def test_connected_to_the_broker(env, tmp_path, broker, client, pki):
    cfg = config_file(tmp_path, broker, pki)
    watcher = client("dispatcher")
    watcher.subscribe("cars/car-01/#", qos=1)
    # a script waits for the connection, publishes, and leaves cleanly
    r = repl(env, "--config", cfg, "-e",
             "assert(mqtt.connected()); return mqtt.publish('cars/car-01/status', 'from a script', {qos = 1})")
    assert r.returncode == 0, r.stderr
    assert watcher.wait_message("cars/car-01/status", timeout=10).payload == b"from a script"

    # interactively, handlers run while the prompt waits
    child = mwtest.spawn_prompt(["repl", "--config", cfg], env)
    try:
        child.expect_exact("car-01> ")
        child.expect_exact("connected to 127.0.0.1")
        child.send("mqtt.subscribe('cars/car-01/cmd', function(t, p) print('got ' .. p) end, {qos = 1})\r")
        child.expect_exact("car-01> ")
        broker.wait_for_log(r"car-01 1 cars/car-01/cmd")
        watcher.publish("cars/car-01/cmd", "hello prompt", qos=1)
        child.expect_exact("got hello prompt")
        child.send(".subs\r")
        child.expect(r"cars/car-01/cmd\s+1\s+1")
        child.send(".quit\r")
        child.expect(pexpect.EOF)
        assert mwtest.sanitizer_report(child.before) is None, child.before
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)
