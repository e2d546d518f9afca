"""The REPL socket's protections: private directory and socket modes, another user refused
(both by the file modes and by the runtime's SO_PEERCRED check), stale sockets of killed
runtimes replaced, a live one never stolen, hostile clients disconnected."""

import os
import shutil
import socket
import struct
import tempfile

import pytest

import mwtest

APP = r'''
local mqtt = require "moonwire.mqtt"
answer = 42
mqtt.subscribe("cars/car-01/cmd", function(topic, payload)
  mqtt.publish("cars/car-01/reply", payload, {qos = 1})
end, {qos = 1})
'''

NOBODY = 65534


def as_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def sock_path(env, name="car-01"):
    return os.path.join(env["XDG_RUNTIME_DIR"], "moonwire", f"{name}.sock")


@pytest.fixture
def public_dir():
    """A directory other users can traverse (pytest's tmp_path is private to root)."""
    d = tempfile.mkdtemp(prefix="mw-repl-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def binary_for_nobody(public_dir):
    """A copy of the binary that nobody may run (the build tree may not be reachable for it)."""
    dst = os.path.join(public_dir, "moonwire")
    shutil.copy(mwtest.moonwire_bin(), dst)
    os.chmod(dst, 0o755)
    return dst


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_other_users_cannot_attach(broker, moonwire, tmp_path, public_dir):
    env = mwtest.repl_env(tmp_path)
    path = os.path.join(public_dir, "car-01.sock")
    m = moonwire(APP, env=env, config={"repl": {"socket": path}})
    m.wait_for_output(r"repl: listening on " + path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    nobody_bin = binary_for_nobody(public_dir)
    nobody_env = dict(env, HOME="/nonexistent")

    # the socket file's mode keeps another user out
    r = mwtest.attach(nobody_env, "--socket", path, "-e", "return answer", binary=nobody_bin,
                      preexec_fn=as_nobody, cwd="/")
    assert r.returncode == 1, r
    assert "permission denied" in r.stderr and "only that user or root may attach" in r.stderr
    assert "42" not in r.stdout

    # even when the file mode lets it through, the runtime checks the peer's uid itself
    os.chmod(path, 0o666)
    r = mwtest.attach(nobody_env, "--socket", path, "-e", "return answer", binary=nobody_bin,
                      preexec_fn=as_nobody, cwd="/")
    assert r.returncode == 1, r
    assert "permission denied: this runtime runs as uid 0" in r.stderr and "you are uid 65534" in r.stderr
    assert "42" not in r.stdout
    m.wait_for_output(r"repl: refused a connection from uid 65534")

    # root may attach, and the runtime is unharmed
    r = mwtest.attach(env, "--socket", path, "-e", "return answer")
    assert (r.returncode, r.stdout) == (0, "42\n")


def test_default_socket_is_private(broker, moonwire, tmp_path):
    env = mwtest.repl_env(tmp_path)
    m = moonwire(APP, env=env)
    m.wait_for_output(r"repl: listening on")
    path = sock_path(env)
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert m.output().count("moonwire attach car-01") == 1


def test_stale_socket_replaced_live_one_refused(broker, client, moonwire, tmp_path):
    env = mwtest.repl_env(tmp_path)
    first = moonwire(APP, env=env)
    first.wait_for_output(r"connected to 127\.0\.0\.1")
    first.wait_for_output(r"repl: listening on")

    # a second runtime for the same thing stops before connecting: the first keeps its socket
    second = moonwire(APP, env=env)
    assert second.wait(15) == 1
    assert "another moonwire is already running with the REPL socket" in second.stderr()
    assert f"(pid {first.pid}, thing car-01, app " in second.stderr()
    assert "connected to" not in second.output()
    assert mwtest.attach(env, "car-01", "-e", "return answer").stdout == "42\n"

    # a killed runtime leaves its socket behind ...
    first.kill()
    assert os.path.exists(sock_path(env))
    r = mwtest.attach(env, "car-01", "-e", "return answer")
    assert r.returncode == 1 and "left over from a runtime that is gone" in r.stderr
    # ... which the next runtime replaces instead of failing
    third = moonwire(APP, env=env)
    third.wait_for_output(r"repl: replaced the stale socket .*car-01\.sock")
    third.wait_for_output(r"connected to 127\.0\.0\.1")
    assert mwtest.attach(env, "car-01", "-e", "return answer").stdout == "42\n"
    watcher = client("dispatcher")
    watcher.subscribe("cars/car-01/reply", qos=1)
    watcher.publish("cars/car-01/cmd", "hi", qos=1)
    assert watcher.wait_message("cars/car-01/reply", timeout=10).payload == b"hi"


def test_not_a_socket_is_left_alone(broker, moonwire, tmp_path):
    env = mwtest.repl_env(tmp_path)
    d = os.path.dirname(sock_path(env))
    os.makedirs(d, mode=0o700)
    with open(sock_path(env), "w") as fh:
        fh.write("precious")
    m = moonwire(APP, env=env)
    assert m.wait(15) == 1
    assert "is not a socket; not touching it" in m.stderr()
    assert open(sock_path(env)).read() == "precious"


def test_unsafe_directory_refused(broker, moonwire, tmp_path, public_dir):
    env = mwtest.repl_env(tmp_path)
    os.chmod(public_dir, 0o777)  # writable by anyone, no sticky bit: someone could swap the socket
    m = moonwire(APP, env=env, config={"repl": {"socket": os.path.join(public_dir, "car-01.sock")}})
    assert m.wait(15) == 1
    assert "is writable by other users" in m.stderr()


def test_disabled_and_configuration_errors(broker, moonwire, tmp_path):
    env = mwtest.repl_env(tmp_path)
    m = moonwire(APP, env=env, config={"repl": {"enabled": False}})
    m.wait_for_output(r"connected to 127\.0\.0\.1")
    assert "repl: listening" not in m.output()
    assert not os.path.exists(sock_path(env))
    r = mwtest.attach(env, "car-01", "-e", "return 1")
    assert r.returncode == 1 and "no runtime is listening" in r.stderr
    m.terminate()

    bad = moonwire(APP, env=env, config={"repl": {"socket": "relative.sock"}})
    assert bad.wait(15) == 1
    assert "repl.socket: 'relative.sock' must be an absolute path" in bad.stderr()
    typo = moonwire(APP, env=env, config={"repl": {"enable": False}})
    assert typo.wait(15) == 1
    assert "unknown key 'repl.enable' (did you mean 'repl.enabled'?)" in typo.stderr()


def frame(kind, payload=b""):
    return kind + struct.pack(">I", len(payload)) + payload


def read_frame(s):
    hdr = b""
    while len(hdr) < 5:
        chunk = s.recv(5 - len(hdr))
        if not chunk:
            return None, None
        hdr += chunk
    n = struct.unpack(">I", hdr[1:])[0]
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return hdr[:1], data


def test_hostile_clients_are_disconnected(broker, moonwire, tmp_path):
    env = mwtest.repl_env(tmp_path)
    m = moonwire(APP, env=env)
    m.wait_for_output(r"repl: listening on")
    path = sock_path(env)

    def session():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        kind, hello = read_frame(s)
        assert kind == b"H" and b"proto=1\n" in hello and b"thing=car-01\n" in hello
        return s

    # an unknown frame type
    s = session()
    s.sendall(b"Zgarbage")
    kind, msg = read_frame(s)
    assert kind == b"X" and b"protocol error: unknown frame type 0x5a" in msg
    assert read_frame(s) == (None, None)  # closed
    s.close()
    # a frame announcing more than the limit
    s = session()
    s.sendall(b"E" + struct.pack(">I", 64 << 20))
    kind, msg = read_frame(s)
    assert kind == b"X" and b"larger than the limit" in msg
    s.close()
    # an E frame without its flags
    s = session()
    s.sendall(frame(b"E"))
    kind, msg = read_frame(s)
    assert kind == b"X" and b"without its flags" in msg
    s.close()
    # half a frame, then gone
    s = session()
    s.sendall(b"E\x00\x00\x01\x00partial")
    s.close()
    # a well-behaved client still works, byte by byte
    s = session()
    for b in frame(b"E", b"\x01\x00return answer + 1"):
        s.sendall(bytes([b]))
    assert read_frame(s) == (b"R", b"43")
    s.sendall(frame(b"C", b"ans"))
    assert read_frame(s) == (b"P", b"answer")
    s.close()
    assert m.running
    assert "protocol error" in m.output()
