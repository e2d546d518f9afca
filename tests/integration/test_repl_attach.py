"""moonwire attach: a prompt inside a running `moonwire run`, typed at through a real
pseudo-terminal (pexpect) as a person would, and driven by scripts through a pipe.

Each test gets its own socket directory (mwtest.repl_env), so tests run in parallel."""

import os
import re
import signal
import subprocess
import time

import pytest

import mwtest

# Echoes cmd to reply (the runtime answering MQTT), and has globals to poke at.
APP = r'''
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
device_state = { temperature = 21, mode = "eco", limits = { max = 90 } }
counter = 0
mqtt.subscribe("cars/car-01/cmd", function(topic, payload)
  counter = counter + 1
  mqtt.publish("cars/car-01/reply", payload, {qos = 1})
  log.info("echoed " .. payload)
end, {qos = 1})
'''

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x07")


def clean(text):
    return ESCAPES.sub("", text).replace("\r", "")


class Prompt:
    """A pexpect child at a `NAME> ` prompt: type a line, get what was printed before the next prompt."""

    def __init__(self, child, name="car-01"):
        self.c = child
        self.p1 = f"{name}> "
        self.p2 = f"{name}>> "

    def wait(self, cont=False):
        self.c.expect_exact(self.p2 if cont else self.p1)
        return clean(self.c.before)

    def enter(self, line, cont=False):
        """Type line + Enter; return the output up to the next prompt, without the echoed line."""
        self.c.send(line + "\r")
        out = self.wait(cont)
        # the terminal echoes what was typed: drop it (the first line)
        return out.split("\n", 1)[1] if "\n" in out else ""

    def close(self):
        self.c.close(force=True)


def start(moonwire, tmp_path, config=None, app=APP):
    env = mwtest.repl_env(tmp_path)
    m = moonwire(app, env=env, config=config or {})
    m.wait_for_output(r"connected to 127\.0\.0\.1")
    m.wait_for_output(r"repl: listening on")
    return m, env


def entry_started(m, send):
    """Calls send() and waits until the runtime (log level debug) starts one more entry."""
    seen = len(re.findall(r"session \d+: evaluating", m.output()))
    send()
    mwtest.wait_until(lambda: len(re.findall(r"session \d+: evaluating", m.output())) > seen, 10,
                      message="the runtime to start the entry")


def check_clean_exit(child):
    report = mwtest.sanitizer_report(child.before if isinstance(child.before, str) else "")
    assert report is None, report


def test_interactive_multiline_completion_interrupt_commands(broker, client, moonwire, tmp_path):
    m, env = start(moonwire, tmp_path, config={"log": {"level": "debug"}})
    watcher = client("dispatcher")
    watcher.subscribe("cars/car-01/reply", qos=1)
    p = Prompt(mwtest.spawn_prompt(["attach", "car-01"], env))
    try:
        banner = p.wait()
        assert "attached to car-01" in banner and f"pid {m.pid}" in banner

        # expressions print their values; =expr too; statements print nothing
        assert p.enter("1+1").strip() == "2"
        assert p.enter("=counter").strip() == "0"
        assert p.enter("x = 40").strip() == ""
        assert p.enter("x + 2").strip() == "42"
        # the app's globals, pretty-printed (keys sorted, nested tables, cycles)
        assert p.enter("device_state").strip() == '{limits = {max = 90}, mode = "eco", temperature = 21}'
        assert p.enter("t = {name = 'loop'}; t.self = t; return t").strip() == \
            '<1>{name = "loop", self = <cycle: table 1>}'
        # print() output of the session comes here, not to the runtime's stdout
        assert p.enter('print("hello", 1, nil)').strip() == "hello\t1\tnil"
        assert "hello" not in m.stdout()
        # errors: message with file:line, and a traceback only when it says something
        assert p.enter('error("boom")').strip() == "repl:1: boom"
        out = p.enter("function f() error('deep') end; f()")
        # (f is a global of the app's version environment: Lua names it "global 'f'"; a global of
        # _G would be "function 'f'")
        assert "repl:1: deep" in out and ("in global 'f'" in out or "in function 'f'" in out)

        # multi-line: the continuation prompt until the chunk is complete, as lua.c does
        assert p.enter("function add(a, b)", cont=True) == ""
        assert p.enter("  local s = a + b", cont=True) == ""
        assert p.enter("  return s", cont=True) == ""
        assert p.enter("end").strip() == ""
        assert p.enter("add(2, 3)").strip() == "5"
        # tab completion of globals and table fields, answered by the runtime
        # (libedit redraws only what the completion added: expect the added text)
        p.c.send("device_st\t")
        p.c.expect_exact("ate")
        p.c.send(".te\t")
        p.c.expect_exact("mperature")
        assert p.enter("").strip() == "21"
        p.c.send("add(device_s\t")
        p.c.expect_exact("tate")
        p.c.send(".limits.m\t")
        p.c.expect_exact("ax")
        assert p.enter(", 1)").strip() == "91"
        # methods after ':' and the moonwire modules by short name
        p.c.send("mqtt.subscript\t")
        p.c.expect_exact("ions(")
        assert "cars/car-01/cmd" in p.enter(")")
        # Ctrl-C at the prompt abandons the line (and a pending multi-line chunk)
        # (wait for the echo first: the terminal discards input not yet read when Ctrl-C comes,
        # as it would a fast typist's typeahead)
        p.c.send("this is not lua")
        p.c.expect_exact("not lua")
        p.c.sendintr()
        p.c.expect_exact("^C")
        p.wait()
        p.enter("function broken(", cont=True)
        p.c.sendintr()
        p.wait()
        assert p.enter("1+1").strip() == "2"

        # Ctrl-C interrupts an infinite loop; MQTT that arrived meanwhile is answered after
        entry_started(m, lambda: p.c.send("while true do end\r"))
        watcher.publish("cars/car-01/cmd", "during", qos=1)
        broker.wait_for_log(r"Sending PUBLISH to car-01 .*cars/car-01/cmd")
        p.c.sendintr()
        out = p.wait()
        assert "repl:1: interrupted" in out
        assert watcher.wait_message("cars/car-01/reply", timeout=10).payload == b"during"
        watcher.clear()
        watcher.publish("cars/car-01/cmd", "after", qos=1)
        assert watcher.wait_message("cars/car-01/reply", timeout=10).payload == b"after"
        # a pcall in the entry cannot swallow the interrupt
        entry_started(m, lambda: p.c.send("while true do pcall(function() while true do end end) end\r"))
        p.c.sendintr()
        assert "interrupted" in p.wait()
        assert p.enter("counter").strip() == "2"

        # commands
        subs = p.enter(".subs")
        assert re.search(r"cars/car-01/cmd\s+1\s+2\b", subs), subs
        stats = p.enter(".stats")
        assert re.search(r"messages\s+in 2, out 2", stats), stats
        assert "connected to 127.0.0.1" in stats and "uptime" in stats
        assert re.search(r"repl sessions\s+1\b", stats), stats
        assert ".reload" in p.enter(".help")
        assert "no shadow open" in p.enter(".shadow")
        out = p.enter(".reload")
        assert re.search(r"reloaded .*: version 2", out), out
        assert p.enter("=require('moonwire.app').version").strip() == "2"
        assert "unknown command '.nope'" in p.enter(".nope")

        # .log on follows the runtime's log live, above the prompt
        assert "following the runtime's log" in p.enter(".log on")
        watcher.publish("cars/car-01/cmd", "logged", qos=1)
        p.c.expect("echoed logged")
        p.wait()
        assert "no longer" in p.enter(".log off")

        p.c.send(".quit\r")
        p.c.expect(mwtest_eof())
        check_clean_exit(p.c)
        p.c.close()
        assert p.c.exitstatus == 0
    finally:
        p.close()
    # the runtime is still serving, and logged the session
    assert m.running
    assert re.search(r"repl: session \d+ attached \(uid 0, pid \d+\)", m.output())
    assert re.search(r"repl: session \d+ detached", m.output())
    # history was saved, owner-only
    hist = tmp_path / "history"
    assert hist.exists() and (hist.stat().st_mode & 0o077) == 0
    assert "add(2" in hist.read_text(errors="replace")


def mwtest_eof():
    import pexpect
    return pexpect.EOF


def test_piped_use_and_exit_codes(broker, moonwire, tmp_path):
    m, env = start(moonwire, tmp_path)
    r = mwtest.attach(env, "car-01", input="return 1+1\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, "2\n", "")
    # a bare expression, several results, strings as they are (for scripts), tables pretty
    r = mwtest.attach(env, "car-01", input="1+1, 'a b', device_state.limits")
    assert (r.returncode, r.stdout) == (0, "2\ta b\t{max = 90}\n")
    # a whole script: statements, print, a result
    r = mwtest.attach(env, "car-01", input="local t = {}\nfor i = 1, 3 do t[i] = i * i end\n"
                                           "print('squares')\nreturn table.concat(t, ',')\n")
    assert (r.returncode, r.stdout) == (0, "squares\n1,4,9\n")
    # globals set by one script are there for the next (the app's environment)
    assert mwtest.attach(env, "car-01", input="piped_global = 7").returncode == 0
    assert mwtest.attach(env, "car-01", "-e", "return piped_global * 6").stdout == "42\n"
    # log lines of the entry go to stderr, results to stdout
    r = mwtest.attach(env, "car-01", input="log.warn('careful'); return true")
    assert r.returncode == 0 and r.stdout == "true\n" and "careful" in r.stderr
    # errors: non-zero, the message on stderr
    r = mwtest.attach(env, "car-01", input="error('boom')")
    assert r.returncode == 1 and r.stdout == "" and "repl:1: boom" in r.stderr
    r = mwtest.attach(env, "car-01", input="return nosuch.field")
    assert r.returncode == 1 and "attempt to index a nil value (global 'nosuch')" in r.stderr
    r = mwtest.attach(env, "car-01", input="x = = 1")
    assert r.returncode == 1 and "unexpected symbol" in r.stderr
    r = mwtest.attach(env, "car-01", input="function f()\n  return 1\n")
    assert r.returncode == 1 and "incomplete chunk" in r.stderr and "'end' expected" in r.stderr
    # os.exit() at an attached prompt would stop the device: refused (the rest of os works)
    r = mwtest.attach(env, "car-01", input="os.exit(0)")
    assert r.returncode == 1 and "os.exit() would stop the runtime" in r.stderr
    assert m.running
    assert mwtest.attach(env, "car-01", "-e", "return type(os.time())").stdout == "number\n"
    r = mwtest.attach(env, "car-01", input="error({code = 42})")
    assert r.returncode == 1 and "error object: {code = 42}" in r.stderr
    # dot commands work from scripts too
    r = mwtest.attach(env, "car-01", input=".subs\n")
    assert r.returncode == 0 and "cars/car-01/cmd" in r.stdout
    r = mwtest.attach(env, "car-01", input=".nope")
    assert r.returncode == 1 and "unknown command" in r.stderr
    # nothing to do is fine
    assert mwtest.attach(env, "car-01", input="").returncode == 0
    # without NAME: the only runtime of this user
    assert mwtest.attach(env, input="return device_state.mode").stdout == "eco\n"
    # the socket given explicitly
    sock = os.path.join(env["XDG_RUNTIME_DIR"], "moonwire", "car-01.sock")
    assert mwtest.attach(env, "--socket", sock, "-e", "return 3").stdout == "3\n"
    # usage and lookup errors
    r = mwtest.attach(env, "car-02", input="return 1")
    assert r.returncode == 1 and "no runtime is listening" in r.stderr
    r = mwtest.attach(env, "car-01", "--bogus")
    assert r.returncode == 2
    # none of this disturbed the runtime, and no REPL typo counts as a handler error
    assert m.running
    assert mwtest.attach(env, "car-01", "-e", "return mqtt.stats().handler_errors").stdout == "0\n"
    assert "repl failed" not in m.output()


def test_piped_interrupt_and_vanishing_client(broker, client, moonwire, tmp_path):
    m, env = start(moonwire, tmp_path, config={"log": {"level": "debug"}})
    watcher = client("dispatcher")
    watcher.subscribe("cars/car-01/reply", qos=1)
    # Ctrl-C (SIGINT) to a piped client interrupts its entry: exit 1, the reason on stderr
    procs = []

    def spawn(**kw):
        procs.append(subprocess.Popen([str(mwtest.moonwire_bin()), "attach", "car-01", "-e", "while true do end"],
                                      env=dict(os.environ, **env), **kw))
        return procs[-1]

    try:
        entry_started(m, lambda: spawn(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        proc = procs[0]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if procs[0].poll() is None:
            procs[0].kill()
    assert proc.returncode == 1 and "interrupted" in err, (out, err)
    watcher.publish("cars/car-01/cmd", "one", qos=1)
    assert watcher.wait_message("cars/car-01/reply", timeout=10).payload == b"one"

    # a client killed in the middle of an entry interrupts it: the runtime carries on
    entry_started(m, lambda: spawn(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    proc = procs[1]
    proc.kill()
    proc.wait(5)
    watcher.clear()
    watcher.publish("cars/car-01/cmd", "two", qos=1)
    assert watcher.wait_message("cars/car-01/reply", timeout=10).payload == b"two"
    assert mwtest.attach(env, "car-01", "-e", "return counter").stdout == "2\n"


def test_several_sessions_at_once(broker, client, moonwire, tmp_path):
    m, env = start(moonwire, tmp_path)
    watcher = client("dispatcher")
    a = Prompt(mwtest.spawn_prompt(["attach", "car-01"], env))
    b = Prompt(mwtest.spawn_prompt(["attach", "car-01"], env))
    try:
        a.wait()
        b.wait()
        a.enter("shared = 'from a'")
        assert b.enter("shared").strip() == '"from a"'
        assert "following" in a.enter(".log on")
        # idle prompts do not stop the device from working
        watcher.publish("cars/car-01/cmd", "ping", qos=1)
        a.c.expect("echoed ping")
        a.wait()
        assert b.enter("counter").strip() == "1"
        # b does not follow the log: it saw no log line
        assert "echoed" not in clean(b.c.before or "")
        assert re.search(r"repl sessions\s+2\b", b.enter(".stats"))
        # a piped client meanwhile
        assert mwtest.attach(env, "car-01", "-e", "return counter + 1").stdout == "2\n"
    finally:
        a.close()
        b.close()
    mwtest.wait_until(lambda: len(re.findall(r"session \d+ detached", m.output())) >= 3, 10,
                      message="sessions to detach")
    assert m.running


def test_runtime_going_away_ends_the_session(broker, moonwire, tmp_path):
    m, env = start(moonwire, tmp_path)
    p = Prompt(mwtest.spawn_prompt(["attach", "car-01"], env))
    try:
        p.wait()
        m.terminate()
        p.c.expect("the runtime closed the connection")
        p.c.expect(mwtest_eof())
        p.c.close()
        assert p.c.exitstatus == 1
    finally:
        p.close()
    # a clean exit removes the socket
    assert not os.path.exists(os.path.join(env["XDG_RUNTIME_DIR"], "moonwire", "car-01.sock"))


def test_entry_stopped_by_the_time_budget(broker, client, moonwire, tmp_path):
    m, env = start(moonwire, tmp_path)
    watcher = client("dispatcher")
    watcher.subscribe("cars/car-01/reply", qos=1)
    t0 = time.monotonic()
    r = mwtest.attach(env, "car-01", "-e", "while true do end", timeout=60)
    assert r.returncode == 1 and "repl:1: time limit exceeded (200 ms)" in r.stderr, r
    assert time.monotonic() - t0 < 30
    watcher.publish("cars/car-01/cmd", "still here", qos=1)
    assert watcher.wait_message("cars/car-01/reply", timeout=10).payload == b"still here"
