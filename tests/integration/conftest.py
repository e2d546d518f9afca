"""pytest fixtures for the integration tests; the helpers themselves are in mwtest.py.

Fixtures:
  pki          (session)  mwtest.Pki made once per test process (certs/mkpki in a temp dir)
  broker       (function) a fresh mwtest.Broker (examples/car/policy.json) on its own port
  make_broker  (function) factory: make_broker(start=True, **Broker kwargs) -> another Broker
  client       (function) factory: client(identity, **Client kwargs) -> connected mwtest.Client
                          on `broker` (pass broker=... to use another one)
  moonwire     (function) factory: moonwire(app, thing="car-01", broker=None, **Moonwire kwargs)
                          -> running mwtest.Moonwire; skips when the binary is not built and
                          $MOONWIRE_BIN is not set
Everything is torn down after each test, whatever the outcome.
"""

import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mwtest  # noqa: E402


@pytest.fixture(scope="session")
def pki():
    return mwtest.session_pki()


@pytest.fixture
def make_broker(pki, tmp_path):
    brokers = []

    def make(start=True, **kw):
        kw.setdefault("workdir", tmp_path / f"broker{len(brokers)}")
        b = mwtest.Broker(pki, start=False, **kw)
        brokers.append(b)
        return b.start() if start else b

    yield make
    for b in brokers:
        b.cleanup()


@pytest.fixture
def broker(make_broker):
    return make_broker()


@pytest.fixture
def client(request, pki):
    clients = []

    def make(identity, broker=None, **kw):
        b = broker if broker is not None else request.getfixturevalue("broker")
        c = mwtest.Client(b, identity, pki, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        try:
            c.disconnect()
        except Exception:
            pass


@pytest.fixture
def moonwire(request, pki, tmp_path):
    runs = []
    binary = mwtest.moonwire_bin()
    if not binary.exists():
        if os.environ.get("MOONWIRE_BIN"):
            pytest.fail(f"MOONWIRE_BIN={binary} does not exist")
        pytest.skip(f"moonwire binary not built ({binary})")

    def make(app, thing="car-01", broker=None, **kw):
        b = broker if broker is not None else request.getfixturevalue("broker")
        pki.ensure(thing)
        kw.setdefault("workdir", tmp_path / f"moonwire{len(runs)}")
        m = mwtest.Moonwire(app, broker=b, pki=pki, thing=thing, **kw)
        runs.append(m)
        return m

    yield make
    # A clean SIGTERM exit lets LeakSanitizer run in the ASan build; any sanitizer report
    # in a runtime's output fails the test that started it.
    reports = []
    for m in runs:
        m.terminate(timeout=5)
        err = m.stderr()
        if re.search(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:", err):
            reports.append(f"{m.app_path}:\n{err}")
    if reports:
        pytest.fail("sanitizer report(s) from moonwire:\n" + "\n".join(reports))


@pytest.fixture
def shadow_service(broker, pki, tmp_path):
    """Starts `moonwire shadow-service` instances on one database (call it again to restart);
    each must stop cleanly and without sanitizer reports."""
    started = []

    def start():
        s = mwtest.ShadowService(broker, pki, tmp_path / f"svc{len(started)}", tmp_path / "shadows.db")
        started.append(s)
        return s

    yield start
    for s in started:
        rc = s.stop()
        err = s.stderr()
        assert rc == 0, err
        assert "ERROR: AddressSanitizer" not in err and "runtime error:" not in err, err
