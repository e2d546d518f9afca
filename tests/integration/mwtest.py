"""Helpers for Moonwire's integration tests (importable; pytest fixtures live in conftest.py).

What is here:
  free_port()                  a free TCP port on 127.0.0.1
  Pki                          a directory made by certs/mkpki (CA chain, server and identity certs)
  session_pki()                one Pki per test process, in a temp dir, made once and reused
  Broker                       a real mosquitto configured by tools/mkbroker (mutual TLS + dynsec
                               policy), on its own port and temp dir; stop/kill/restart
  Client                       a paho-mqtt client with mutual TLS: CONNACK wait, SUBACK codes,
                               PUBACK wait, received messages with wait-with-timeout helpers
  Moonwire                     runs `moonwire run APP.lua --config CFG.lua` as a subprocess with a
                               generated configuration; output captured to files; wait_for_output
  lua_literal()                Python value -> Lua source (for configuration files)
  ShadowService                `moonwire shadow-service` as a subprocess on a Broker (SQLite db)
  TcpProxy                     a loopback TCP relay that can cut and refuse connections, to take
                               one client offline while the broker keeps running
  repl_env(), attach(), spawn_prompt(), sanitizer_report()
                               the REPL: a private socket directory, `moonwire attach` piped or
                               in a pseudo-terminal (pexpect), sanitizer reports in its output

Everything talks to 127.0.0.1 only. Every process started here is registered and killed at exit
even when a test forgets to.

Run under Debian's /usr/bin/python3 (it has python3-paho-mqtt and python3-pytest).
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections import namedtuple
from pathlib import Path

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[2]
MKPKI = REPO / "certs" / "mkpki"
MKBROKER = REPO / "tools" / "mkbroker"
DEFAULT_POLICY = REPO / "examples" / "car" / "policy.json"
SYS_PYTHON = "/usr/bin/python3"
HOST = "127.0.0.1"

# Identities the session PKI has from the start (more are added on demand by Pki.ensure()).
DEFAULT_IDENTITIES = ("car-01", "car-02", "car-03", "dispatcher", "shadow-service",
                      "provisioning-service", "stranger")

_live = set()           # processes to kill at exit
_temp_dirs = []         # our own temp dirs, removed at exit (after the processes are gone)
_live_lock = threading.Lock()


def _register(proc):
    with _live_lock:
        _live.add(proc)


def _unregister(proc):
    with _live_lock:
        _live.discard(proc)


@atexit.register
def _kill_leftovers():
    with _live_lock:
        procs = list(_live)
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass
    for d in _temp_dirs:
        shutil.rmtree(d, ignore_errors=True)


def _temp_dir(prefix):
    """A private temp dir, removed at interpreter exit."""
    d = tempfile.mkdtemp(prefix=prefix)
    with _live_lock:
        _temp_dirs.append(d)
    return d


# Durable outboxes of runtimes started outside Moonwire (run_moonwire, plain Popen) go to a
# private folder of this test process, never to /var/lib/moonwire.
os.environ.setdefault("MOONWIRE_STATE_DIR", _temp_dir("mw-state-"))


def free_port(host=HOST):
    """A TCP port that is free on host right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=5.0, interval=0.01, message="condition"):
    """Poll predicate() until it returns a truthy value (returned) or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------ PKI

class Pki:
    """A PKI directory made by certs/mkpki.

    Files (see certs/README.md): ca-chain.pem, root-ca.crt, intermediate-ca.crt, server.crt,
    NAME.crt/NAME.key per identity, and for negative tests NAME.expired.*, NAME.rogue.*,
    server.wronghost.*.
    """

    def __init__(self, directory, names=(), test_certs=False, expired=(), rogue=()):
        self.dir = Path(directory)
        self._lock = threading.Lock()
        self.ensure(*names, test_certs=test_certs, expired=expired, rogue=rogue)

    @property
    def ca(self):
        """The trust bundle (intermediate + root) clients and the broker verify against."""
        return self.dir / "ca-chain.pem"

    @property
    def root_ca(self):
        return self.dir / "root-ca.crt"

    @property
    def intermediate_ca(self):
        return self.dir / "intermediate-ca.crt"

    @property
    def rogue_ca(self):
        return self.dir / "rogue-ca.crt"

    def cert(self, stem):
        """Path of STEM.crt (stem: a name, 'server', 'car-01.expired', 'server.rogue', ...)."""
        return self.dir / f"{stem}.crt"

    def key(self, stem):
        return self.dir / f"{stem}.key"

    def pair(self, stem):
        return self.cert(stem), self.key(stem)

    def has(self, stem):
        return self.cert(stem).exists() and self.key(stem).exists()

    def ensure(self, *names, test_certs=False, expired=(), rogue=()):
        """Make whatever is missing (mkpki is idempotent; a no-op call costs no process)."""
        args = []
        names = [n for n in names if not self.has(n)]
        args += names
        for n in expired:
            if not self.has(f"{n}.expired"):
                args += ["--expired", n]
        for n in rogue:
            if not self.has(f"{n}.rogue"):
                args += ["--rogue", n]
        if test_certs and not all(self.has(s) for s in
                                  ("server.expired", "server.rogue", "server.wronghost")):
            args.append("--test-certs")
        if args or not self.has("server"):
            with self._lock:
                subprocess.run([str(MKPKI), "--quiet", "--out", str(self.dir), *args],
                               check=True, timeout=60)
        return self


_session_pki = None
_session_pki_lock = threading.Lock()


def session_pki(names=DEFAULT_IDENTITIES):
    """The PKI of this test process: made once in a temp dir (or in $MW_TEST_PKI_DIR, which may
    be shared between processes: mkpki locks it), removed at exit when it is a temp dir.
    Includes the negative-test certificates (expired/rogue/wrong-host server, expired/rogue car-01)."""
    global _session_pki
    with _session_pki_lock:
        if _session_pki is None:
            d = os.environ.get("MW_TEST_PKI_DIR")
            if not d:
                d = _temp_dir("mw-pki-")
            _session_pki = Pki(d, names, test_certs=True, expired=("car-01",), rogue=("car-01",))
        else:
            _session_pki.ensure(*names)
        return _session_pki


# ------------------------------------------------------------------------------------ broker

class BrokerError(RuntimeError):
    pass


class Broker:
    """A mosquitto broker on 127.0.0.1 configured by tools/mkbroker.

    Broker(pki, workdir=None, policy=DEFAULT_POLICY, port=None, add=(), server_cert="server",
           debug_log=True, extra_conf=(), mkbroker_args=(), start=True)

    - workdir: where mosquitto.conf, dynamic-security.json and mosquitto.log go (a fresh temp dir
      removed by cleanup() when not given).
    - add: extra thing identities, e.g. ["car-03=car"] (NAME=POLICY[,POLICY]); their certificates
      are made in the PKI if missing.
    - server_cert: "server", or "server.expired" / "server.wronghost" / "server.rogue" to make
      the broker present a bad certificate (negative tests of a client).
    - extra_conf: extra mosquitto.conf lines, appended after the listener section.
    - mkbroker_args: extra tools/mkbroker options, e.g. ["--force-clientid"].
    Attributes: host, port, dir, conf_path, log_path, proc. Use as a context manager or call
    cleanup(); all brokers are also killed at interpreter exit.
    """

    def __init__(self, pki, workdir=None, policy=DEFAULT_POLICY, port=None, add=(),
                 server_cert="server", debug_log=True, extra_conf=(), mkbroker_args=(), start=True,
                 dynsec_patch=None):
        self.pki = pki
        self.dynsec_patch = dynsec_patch  # fn(dict) applied to dynamic-security.json after generation
        self.host = HOST
        self.policy = Path(policy)
        self._own_dir = workdir is None
        self.dir = Path(workdir or _temp_dir("mw-broker-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.add = list(add)
        self.server_cert = server_cert
        self.debug_log = debug_log
        self.extra_conf = list(extra_conf)
        self.mkbroker_args = [str(x) for x in mkbroker_args]
        self.proc = None
        self._stderr = None
        pki.ensure(*self.identities())
        if server_cert != "server" and not pki.has(server_cert):
            pki.ensure(test_certs=True)
        if start:
            self.start()

    def identities(self):
        """Names of the identities in the policy description (plus those added with add=)."""
        with open(self.policy) as fh:
            doc = json.load(fh)
        return [i["name"] for i in doc.get("identities", [])] + [a.partition("=")[0] for a in self.add]

    def _generate(self):
        cmd = [SYS_PYTHON, str(MKBROKER), "--policy", str(self.policy), "--pki", str(self.pki.dir),
               "--out", str(self.dir), "--port", str(self.port), "--server-cert", self.server_cert]
        for a in self.add:
            cmd += ["--add", a]
        if self.debug_log:
            cmd.append("--debug-log")
        cmd += self.mkbroker_args
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise BrokerError(f"mkbroker failed: {r.stderr.strip()}")
        if self.extra_conf:
            with open(self.conf_path, "a") as fh:
                fh.write("\n".join(self.extra_conf) + "\n")

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=5.0):
        """Generate the configuration, start mosquitto, return once it accepts connections."""
        if self.running:
            return self
        for attempt in range(5):
            self._generate()
            if self.dynsec_patch:
                dyn = self.dir / "dynamic-security.json"
                data = json.loads(dyn.read_text())
                self.dynsec_patch(data)
                dyn.write_text(json.dumps(data))
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._stderr = open(self.dir / "mosquitto.stderr", "ab")
            self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf_path)],
                                         stdin=subprocess.DEVNULL, stdout=self._stderr,
                                         stderr=self._stderr, start_new_session=True)
            _register(self.proc)
            try:
                self._wait_ready(offset, timeout)
                return self
            except BrokerError as e:
                self._reap()
                if "Address already in use" in str(e) and not self._fixed_port and attempt < 4:
                    self.port = free_port()
                    continue
                if "Address already in use" in str(e) and attempt < 4:
                    time.sleep(0.2)  # restart on a fixed port: give the old socket a moment
                    continue
                raise
        raise BrokerError("could not start mosquitto")

    def _wait_ready(self, offset, timeout):
        deadline = time.monotonic() + timeout
        while True:
            text = self._log_from(offset)
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self.proc.returncode} on port {self.port}:\n"
                                  f"{text}{self._stderr_text()}")
            # mosquitto logs "running" after its listener is bound and listening (a TCP probe
            # would only add a "connection failed" line to the log).
            if re.search(r"mosquitto version \S+ running", text):
                return
            if time.monotonic() >= deadline:
                raise BrokerError(f"mosquitto not ready after {timeout}s on port {self.port}:\n{text}")
            time.sleep(0.01)

    def _log_from(self, offset):
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _stderr_text(self):
        try:
            return (self.dir / "mosquitto.stderr").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _reap(self, timeout=5.0):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout)
            finally:
                _unregister(self.proc)
        if self._stderr:
            self._stderr.close()
            self._stderr = None

    def stop(self, timeout=5.0):
        """SIGTERM (clients see a closed connection, no DISCONNECT), wait; SIGKILL if stuck."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._reap()
        return self

    def kill(self):
        """SIGKILL: the broker vanishes at once (sockets reset by the kernel)."""
        self._reap()
        return self

    def restart(self, down_seconds=0.0, timeout=5.0):
        """Stop (if running), optionally stay down for down_seconds, start again on the same port."""
        self.stop()
        if down_seconds:
            time.sleep(down_seconds)
        self._fixed_port = True
        return self.start(timeout)

    def log_text(self):
        """The whole broker log so far (all runs of this broker)."""
        return self._log_from(0)

    def wait_for_log(self, pattern, timeout=5.0):
        """Wait until the log matches pattern (regex string or compiled); return the match."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        return wait_until(lambda: rx.search(self.log_text()), timeout,
                          message=f"broker log to match {rx.pattern!r}")

    def cleanup(self):
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def __repr__(self):
        return f"<Broker {self.host}:{self.port} {'running' if self.running else 'stopped'}>"


# ------------------------------------------------------------------------------------ client

Message = namedtuple("Message", "topic payload qos retain")


class _Paho(mqtt.Client):
    """paho's client whose network thread reports exceptions (e.g. a TLS alert raised by
    recv when the broker rejects the client certificate) instead of dying noisily."""

    on_thread_error = None

    def _thread_main(self):
        try:
            super()._thread_main()
        except Exception as e:  # noqa: BLE001 - reported to the owner
            if self.on_thread_error:
                self.on_thread_error(e)
            else:
                raise


class ConnectError(RuntimeError):
    """Connection refused or failed: .rc is the CONNACK code (None for a TLS/socket failure)."""

    def __init__(self, message, rc=None):
        super().__init__(message)
        self.rc = rc


class Client:
    """A paho-mqtt client speaking mutual TLS to a Broker.

    Client(broker_or_port, identity, pki, client_id=None, protocol=4 (3.1.1) | 5, clean=True,
           keepalive=60, cert=None, key=None, ca=None, connect=True, timeout=5)

    identity names the certificate (pki.cert(identity)); client_id defaults to the identity's
    base name. cert/key/ca override the files (cert=None with identity=None: no client cert).

    Notes: after a lost connection paho reconnects by itself (1 s, doubling) with the same
    clean-session flag but does NOT resubscribe; see wait_connected(). keepalive=0 does not
    work with paho 1.6.1 over TLS (it makes the socket non-blocking during the handshake).
    """

    SUBACK_FAILURE = 0x80         # MQTT 3.1.1 SUBACK failure code
    V5_NOT_AUTHORIZED = 0x87      # MQTT 5 reason code

    def __init__(self, broker_or_port, identity, pki, client_id=None, protocol=4, clean=True,
                 keepalive=60, cert=None, key=None, ca=None, connect=True, timeout=5.0):
        self.port = broker_or_port if isinstance(broker_or_port, int) else broker_or_port.port
        self.host = HOST
        self.identity = identity
        self.protocol = mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311
        self.client_id = client_id if client_id is not None else (identity or "anonymous").split(".")[0]
        self.keepalive = keepalive
        self.messages = []
        self._cond = threading.Condition()
        self._connack = None
        self._suback = {}
        self._puback = set()
        self._disconnects = []
        self.connected = False
        kw = {"client_id": self.client_id, "protocol": self.protocol}
        if self.protocol != mqtt.MQTTv5:
            kw["clean_session"] = clean
        self._clean = clean
        self.error = None          # exception that ended the network thread, if any
        self._c = _Paho(**kw)
        self._c.on_thread_error = self._on_thread_error
        if cert is None and identity is not None:
            cert, key = pki.pair(identity)
        self._c.tls_set(ca_certs=str(ca or pki.ca), certfile=str(cert) if cert else None,
                        keyfile=str(key) if key else None, cert_reqs=ssl.CERT_REQUIRED,
                        tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._c.on_connect = self._on_connect
        self._c.on_subscribe = self._on_subscribe
        self._c.on_publish = self._on_publish
        self._c.on_message = self._on_message
        self._c.on_disconnect = self._on_disconnect
        self._loop = False
        if connect:
            self.connect(timeout)

    # paho callbacks (network thread)
    def _on_connect(self, c, u, flags, rc, props=None):
        with self._cond:
            self._connack = (getattr(rc, "value", rc), flags)
            self.connected = self._connack[0] == 0
            self._cond.notify_all()

    def _on_subscribe(self, c, u, mid, granted, props=None):
        with self._cond:
            self._suback[mid] = [getattr(g, "value", g) for g in granted]
            self._cond.notify_all()

    def _on_publish(self, c, u, mid):
        with self._cond:
            self._puback.add(mid)
            self._cond.notify_all()

    def _on_message(self, c, u, m):
        with self._cond:
            self.messages.append(Message(m.topic, m.payload, m.qos, bool(m.retain)))
            self._cond.notify_all()

    def _on_disconnect(self, c, u, rc, props=None):
        with self._cond:
            self.connected = False
            self._disconnects.append(getattr(rc, "value", rc))
            self._cond.notify_all()

    def _on_thread_error(self, e):
        with self._cond:
            self.error = e
            self.connected = False
            self._disconnects.append(mqtt.MQTT_ERR_CONN_LOST)
            self._cond.notify_all()

    def _wait(self, pred, timeout, what):
        with self._cond:
            if not self._cond.wait_for(pred, timeout):
                raise TimeoutError(f"{self.client_id}: no {what} within {timeout:g}s")

    # API
    def connect(self, timeout=5.0, check=True):
        """Connect and wait for CONNACK; return its code. A refusal (check=True), a TLS failure or
        a connection closed before CONNACK raises ConnectError."""
        with self._cond:
            self._connack = None
            n_disc = len(self._disconnects)
        try:
            kw = {"clean_start": self._clean} if self.protocol == mqtt.MQTTv5 else {}
            self._c.connect(self.host, self.port, self.keepalive, **kw)
        except (ssl.SSLError, OSError) as e:
            raise ConnectError(f"{self.client_id}: TLS/socket failure: {e}") from e
        if not self._loop:
            self._c.loop_start()
            self._loop = True
        with self._cond:
            ok = self._cond.wait_for(lambda: self._connack is not None
                                     or len(self._disconnects) > n_disc, timeout)
            connack, error = self._connack, self.error
        if connack is None:
            self._stop_loop()
            why = "connection closed" if ok else f"timeout after {timeout:g}s"
            if error is not None:
                why += f": {error}"
            raise ConnectError(f"{self.client_id}: no CONNACK ({why})")
        rc = connack[0]
        if rc != 0 and check:
            self._stop_loop()
            raise ConnectError(f"{self.client_id}: CONNACK refused with code {rc}", rc)
        return rc

    @property
    def session_present(self):
        return bool(self._connack and self._connack[1].get("session present"))

    def subscribe(self, filters, qos=1, timeout=5.0):
        """Subscribe to one filter or a list; wait for SUBACK; return the list of return codes
        (granted QoS 0/1, 0x80 failure for 3.1.1; reason codes for MQTT 5, e.g. 0x87)."""
        if isinstance(filters, str):
            filters = [filters]
        rc, mid = self._c.subscribe([(f, qos) for f in filters])
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"subscribe failed locally: {mqtt.error_string(rc)}")
        self._wait(lambda: mid in self._suback, timeout, f"SUBACK for {filters}")
        return self._suback[mid]

    def unsubscribe(self, filters, timeout=5.0):
        if isinstance(filters, str):
            filters = [filters]
        done = threading.Event()
        self._c.on_unsubscribe = lambda *a: done.set()
        self._c.unsubscribe(filters)
        if not done.wait(timeout):
            raise TimeoutError(f"{self.client_id}: no UNSUBACK within {timeout:g}s")

    def publish(self, topic, payload=b"", qos=0, retain=False, wait=True, timeout=5.0):
        """Publish; with qos 1 and wait, block until PUBACK (TimeoutError otherwise).
        With MQTT 3.1.1 a publish the policy forbids is still PUBACKed (and dropped)."""
        if isinstance(payload, str):
            payload = payload.encode()
        info = self._c.publish(topic, payload, qos, retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed locally: {mqtt.error_string(info.rc)}")
        if qos and wait:
            self._wait(lambda: info.mid in self._puback, timeout, f"PUBACK for {topic}")
        elif wait:
            info.wait_for_publish(timeout)
        return info.mid

    def received(self, topic_filter=None):
        """Messages received so far, optionally only those matching an MQTT filter."""
        with self._cond:
            return [m for m in self.messages
                    if topic_filter is None or mqtt.topic_matches_sub(topic_filter, m.topic)]

    def wait_messages(self, count=1, topic_filter=None, timeout=5.0):
        """Wait until at least count messages (matching topic_filter) arrived; return them."""
        def enough():
            return len([m for m in self.messages if topic_filter is None
                        or mqtt.topic_matches_sub(topic_filter, m.topic)]) >= count
        with self._cond:
            if not self._cond.wait_for(enough, timeout):
                raise TimeoutError(f"{self.client_id}: {count} message(s) on {topic_filter or '#'} "
                                   f"not received within {timeout:g}s; got {self.messages!r}")
        return self.received(topic_filter)

    def wait_message(self, topic_filter=None, timeout=5.0):
        """The first message matching topic_filter (waiting for it)."""
        return self.wait_messages(1, topic_filter, timeout)[0]

    def expect_no_message(self, topic_filter=None, within=0.5):
        """Assert nothing (matching) arrives within `within` seconds."""
        time.sleep(within)
        got = self.received(topic_filter)
        assert not got, f"{self.client_id}: unexpected message(s): {got!r}"

    def clear(self):
        with self._cond:
            self.messages.clear()

    def wait_connected(self, timeout=5.0):
        """Wait until the client is connected (again, after a paho auto-reconnect)."""
        self._wait(lambda: self.connected, timeout, "connection")
        return self

    def wait_disconnect(self, timeout=5.0):
        """Wait until the connection is lost/closed; return the paho rc of that disconnect."""
        self._wait(lambda: self._disconnects, timeout, "disconnect")
        return self._disconnects[-1]

    def _stop_loop(self):
        if self._loop:
            self._c.loop_stop()
            self._loop = False

    def disconnect(self):
        """Send DISCONNECT (if connected) and stop the network thread."""
        try:
            if self.connected:
                self._c.disconnect()
                try:
                    self._wait(lambda: self._disconnects, 2.0, "disconnect")
                except TimeoutError:
                    pass
        finally:
            self._stop_loop()

    close = disconnect

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.disconnect()


# ------------------------------------------------------------------------------------ moonwire

class LuaRaw(str):
    """A string written verbatim into Lua source (an expression, not a quoted string)."""


_LUA_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LUA_KEYWORDS = set("and break do else elseif end false for function goto if in local nil not "
                    "or repeat return then true until while".split())


def lua_literal(v, indent=""):
    """Python value -> Lua source: None/bool/int/float/str, lists -> sequences, dicts -> tables."""
    if isinstance(v, LuaRaw):
        return str(v)
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (str, bytes)):
        b = v.encode() if isinstance(v, str) else v
        out = []
        for ch in b:
            c = chr(ch)
            if c in '"\\':
                out.append("\\" + c)
            elif 32 <= ch < 127:
                out.append(c)
            else:
                out.append(f"\\{ch:03d}")
        return '"' + "".join(out) + '"'
    inner = indent + "  "
    if isinstance(v, (list, tuple)):
        if not v:
            return "{}"
        return "{\n" + "".join(f"{inner}{lua_literal(x, inner)},\n" for x in v) + indent + "}"
    if isinstance(v, dict):
        if not v:
            return "{}"
        parts = []
        for k, x in v.items():
            if isinstance(k, str) and _LUA_IDENT.match(k) and k not in _LUA_KEYWORDS:
                key = k
            else:
                key = f"[{lua_literal(k)}]"
            parts.append(f"{inner}{key} = {lua_literal(x, inner)},\n")
        return "{\n" + "".join(parts) + indent + "}"
    raise TypeError(f"cannot write {type(v).__name__} as Lua")


def moonwire_bin():
    """$MOONWIRE_BIN, else <repo>/build/bin/moonwire."""
    return Path(os.environ.get("MOONWIRE_BIN") or REPO / "build" / "bin" / "moonwire")


def default_config(broker, pki, thing="car-01"):
    """The configuration table for one thing on broker (a dict; see docs/configuration.md)."""
    port = broker if isinstance(broker, int) else broker.port
    return {
        "thing": thing,
        "broker": {"host": HOST, "port": port},
        "tls": {"ca": str(pki.ca), "cert": str(pki.cert(thing)), "key": str(pki.key(thing))},
    }


def _merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        elif v is _DELETE:
            out.pop(k, None)
        else:
            out[k] = v
    return out


_DELETE = object()
DELETE = _DELETE   # use as a value in Moonwire(config={...}) to drop a default key


class Moonwire:
    """`moonwire run APP --config CFG` as a subprocess.

    Moonwire(app, broker=None, pki=None, thing="car-01", workdir=None, config=None,
             config_text=None, args=(), env=None, binary=None, start=True)

    - app: path of a Lua script, or Lua source text (written to workdir/app.lua when it
      contains a newline or does not exist as a file).
    - config: dict merged (deeply) over default_config(broker, pki, thing); a value
      mwtest.DELETE removes a key. config_text: raw Lua written as the config instead.
    - args: extra command-line arguments (after `run APP --config CFG`).
    - env: extra environment; without XDG_RUNTIME_DIR in it, each runtime gets a private one
      (a fresh temp dir), so its REPL socket is its own.
    Output goes to workdir/stdout.txt and workdir/stderr.txt.
    """

    def __init__(self, app, broker=None, pki=None, thing="car-01", workdir=None, config=None,
                 config_text=None, args=(), env=None, binary=None, start=True):
        self.binary = Path(binary) if binary else moonwire_bin()
        self._own_dir = workdir is None
        self.dir = Path(workdir or _temp_dir("mw-run-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        app = str(app)
        if "\n" in app or not os.path.exists(app):
            self.app_path = self.dir / "app.lua"
            self.app_path.write_text(app)
        else:
            self.app_path = Path(app).resolve()
        self.config_path = self.dir / "config.lua"
        if config_text is not None:
            self.config = None
            self.config_path.write_text(config_text)
        else:
            base = default_config(broker, pki, thing) if broker is not None else {"thing": thing}
            self.config = _merge(base, config or {})
            self.config_path.write_text("return " + lua_literal(self.config) + "\n")
        self.stdout_path = self.dir / "stdout.txt"
        self.stderr_path = self.dir / "stderr.txt"
        self.args = [str(a) for a in args]
        self.env = dict(os.environ, **(env or {}))
        # Each runtime keeps its durable outbox in its own folder unless told otherwise, so a
        # test never inherits another test's unsent messages.
        if not (env and "MOONWIRE_STATE_DIR" in env):
            self.env["MOONWIRE_STATE_DIR"] = str(self.dir)
        if "XDG_RUNTIME_DIR" not in (env or {}):
            # A private REPL socket directory (docs/repl.md): runtimes of the same thing in
            # parallel tests must not meet at /run/moonwire/THING.sock.
            self.env["XDG_RUNTIME_DIR"] = _temp_dir("mw-xdg-")
        self.proc = None
        if start:
            self.start()

    @property
    def command(self):
        return [str(self.binary), "run", str(self.app_path), "--config", str(self.config_path),
                *self.args]

    def start(self):
        if not self.binary.exists():
            raise FileNotFoundError(f"moonwire binary not found: {self.binary} (set MOONWIRE_BIN)")
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=self.env, cwd=self.dir,
                                     start_new_session=True)
        _register(self.proc)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    def stdout(self):
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self):
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def output(self):
        return self.stdout() + self.stderr()

    def wait_for_output(self, pattern, timeout=10.0, stream="any"):
        """Wait until stdout/stderr/either ("stdout"|"stderr"|"any") matches the regex; return
        the match. Fails early, with the output, if the process exits first."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        text = {"stdout": self.stdout, "stderr": self.stderr, "any": self.output}[stream]
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(text())
            if m:
                return m
            if not self.running:
                m = rx.search(text())
                if m:
                    return m
                raise AssertionError(f"moonwire exited ({self.returncode}) before printing "
                                     f"{rx.pattern!r}; output:\n{self.output()}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"moonwire did not print {rx.pattern!r} within {timeout:g}s; "
                                   f"output:\n{self.output()}")
            time.sleep(0.02)

    def wait(self, timeout=10.0):
        """Wait for exit; return the exit code (TimeoutError if still running)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"moonwire still running after {timeout:g}s; output:\n{self.output()}")
        self._close()
        return rc

    def send_signal(self, sig):
        if self.running:
            self.proc.send_signal(sig)

    def terminate(self, timeout=10.0, sig=signal.SIGTERM):
        """Send SIGTERM (or sig) and wait; SIGKILL after timeout. Return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close()
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._close()
        return self.proc.returncode if self.proc else None

    def _close(self):
        if self.proc is not None:
            _unregister(self.proc)
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f and not f.closed:
                f.close()

    def cleanup(self):
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


def run_moonwire(*args, timeout=10.0, env=None, binary=None):
    """Run the binary with plain arguments (e.g. "--version"); return CompletedProcess (text)."""
    b = Path(binary) if binary else moonwire_bin()
    return subprocess.run([str(b), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})),
                          stdin=subprocess.DEVNULL)


# ------------------------------------------------------------------------------------ shadow service

class ShadowService:
    """`moonwire shadow-service` on broker, as identity "shadow-service", database db.

    ShadowService(broker, pki, workdir, db): starts and waits until it is connected.
    stop() -> exit code (SIGTERM); stderr() -> its log. Raises AssertionError if it exits early.
    """

    def __init__(self, broker, pki, workdir, db, binary=None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = default_config(broker, pki, "shadow-service")
        cfg["limits"] = {"max_inflight": 1000}
        self.config = self.dir / "config.lua"
        self.config.write_text("return " + lua_literal(cfg) + "\n")
        self.db = db
        self.err = open(self.dir / "stderr.txt", "ab")
        self.proc = subprocess.Popen([str(Path(binary) if binary else moonwire_bin()), "shadow-service",
                                      "--config", str(self.config), "--db", str(db)],
                                     stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err)
        _register(self.proc)
        wait_until(lambda: "connected to" in self.stderr() or self.proc.poll() is not None,
                   timeout=10, message="shadow-service connected")
        assert self.proc.poll() is None, self.stderr()

    def stderr(self):
        return (self.dir / "stderr.txt").read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        _unregister(self.proc)
        if not self.err.closed:
            self.err.close()
        return self.proc.returncode


# ------------------------------------------------------------------------------------ TCP proxy

class TcpProxy:
    """A TCP relay on 127.0.0.1 in front of a broker: clients connect to proxy.port and their bytes
    are copied both ways (TLS passes through untouched). cut() closes every relayed connection
    (both ends see it drop); block() refuses new connections (accepted, then closed at once)
    until unblock(). With it a test takes one client offline while the broker and every other
    client keep running.

    TcpProxy(upstream_port) starts at once; close() (or the context manager) stops it.
    """

    def __init__(self, upstream_port, host=HOST):
        self.upstream = (host, upstream_port)
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind((host, 0))
        self._srv.listen(16)
        self.port = self._srv.getsockname()[1]
        self._lock = threading.Lock()
        self._conns = []          # (client socket, upstream socket)
        self._blocked = False
        self._closed = False
        self.accepted = 0         # connections relayed so far
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self):
        while True:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            with self._lock:
                refuse = self._blocked or self._closed
            if refuse:
                c.close()
                continue
            try:
                u = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                c.close()
                continue
            for s in (c, u):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.append((c, u))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        """Close every relayed connection now."""
        with self._lock:
            conns, self._conns = self._conns, []
        for pair in conns:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        return len(conns)

    def block(self):
        """Refuse new connections (and cut the current ones)."""
        with self._lock:
            self._blocked = True
        return self.cut()

    def unblock(self):
        with self._lock:
            self._blocked = False

    def close(self):
        with self._lock:
            self._closed = True
        try:
            self._srv.close()
        except OSError:
            pass
        self.cut()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------------------------ REPL

def repl_env(base):
    """Environment for `moonwire run`, `attach` and `repl` with a private socket directory
    ($XDG_RUNTIME_DIR = a fresh temp dir, mode 0700) and history file (base/history), so tests
    running in parallel never meet each other's sockets and never touch the user's history."""
    base = Path(base)
    xdg = _temp_dir("mw-xdg-")  # short: a socket path must fit in 108 bytes
    return {"XDG_RUNTIME_DIR": xdg, "MOONWIRE_HISTORY": str(base / "history"),
            "TERM": "xterm", "LANG": "C.UTF-8"}


def attach(env, *args, input=None, timeout=20.0, binary=None, **kw):
    """`moonwire attach ARGS` with stdin from input (text) -> CompletedProcess (text)."""
    b = Path(binary) if binary else moonwire_bin()
    return subprocess.run([str(b), "attach", *map(str, args)], input=input if input is not None else "",
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **env), **kw)


def spawn_prompt(args, env, timeout=15.0, binary=None):
    """`moonwire ARGS` (attach or repl) in a pseudo-terminal, as a person would use it: a pexpect
    child with a wide window (no line wrapping in the output to match)."""
    import pexpect  # Debian python3-pexpect
    b = Path(binary) if binary else moonwire_bin()
    child = pexpect.spawn(str(b), [str(a) for a in args], env=dict(os.environ, **env), encoding="utf-8",
                          dimensions=(50, 220), timeout=timeout)
    return child


def sanitizer_report(text):
    """The AddressSanitizer/LeakSanitizer/UBSan report in text, or None."""
    m = re.search(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:", text or "")
    return text if m else None


# ------------------------------------------------------------------------------------ PKCS#11

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


class SoftHsm:
    """A SoftHSM2 token store of its own: softhsm2.conf and the token directory in `directory`,
    one initialised token. Pass `env` to every process that should see it (SOFTHSM2_CONF).

    SoftHsm(directory, label="moonwire", pin="1234", so_pin="5678")
      .uri(object="device", pin=None|str, pin_source=None|path, **attrs) -> "pkcs11:token=...;object=..."
      .env                                  {"SOFTHSM2_CONF": ...}
    """

    def __init__(self, directory, label="moonwire", pin="1234", so_pin="5678"):
        self.dir = Path(directory)
        (self.dir / "tokens").mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "softhsm2.conf"
        self.conf.write_text(f"directories.tokendir = {self.dir / 'tokens'}\n"
                             "objectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n")
        self.env = {"SOFTHSM2_CONF": str(self.conf)}
        self.label, self.pin = label, pin
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
                        "--so-pin", so_pin], check=True, capture_output=True, timeout=30,
                       env=dict(os.environ, **self.env))

    @staticmethod
    def available():
        return os.path.exists(SOFTHSM_MODULE) and shutil.which("softhsm2-util") is not None

    def uri(self, object="device", pin=None, pin_source=None, **attrs):
        parts = [f"token={self.label}"]
        if object is not None:
            parts.append(f"object={object}")
        parts += [f"{k.replace('_', '-')}={v}" for k, v in attrs.items()]
        uri = "pkcs11:" + ";".join(parts)
        if pin_source is not None:
            uri += f"?pin-source={pin_source}"
        elif pin is not False:
            uri += f"?pin-value={self.pin if pin is None else pin}"
        return uri
