"""Helpers for the provisioning tests: a stand with a broker on the fleet policy, the local
provisioning and shadow services, identity configurations, and `moonwire provision` runs.

Stand(pki, make_broker, tmp_path, **service_options)
  .broker                   mwtest.Broker on examples/fleet/policy.json
  .config(name, path=None, **over) -> path of a configuration for identity `name` (merged over)
  .start_services(...)       moonwire provisioning-service + shadow-service, waits until both are
                             connected and the provisioning service can administer the broker
  .provision(flow, config, params, timeout=90) -> CompletedProcess of `moonwire provision`
  .dynsec()                 the broker's dynamic-security configuration (JSON) as it is now
  .close()                  stops everything; fails on sanitizer reports in any output
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import mwtest

REPO = mwtest.REPO
FLEET_POLICY = REPO / "examples" / "fleet" / "policy.json"
TEMPLATES = REPO / "examples" / "fleet" / "templates"
IDENTITIES = ("fleet-claim", "factory-station", "provisioning-service", "shadow-service")
SANITIZER = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")


def check_clean(text, what):
    assert not SANITIZER.search(text), f"sanitizer report from {what}:\n{text}"


class Service:
    """`moonwire <command> --config CFG ...` in the background, output in a file."""

    def __init__(self, args, log_path, ready=r"connected to"):
        self.log_path = Path(log_path)
        self.out = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(mwtest.moonwire_bin()), *map(str, args)], stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=self.out, start_new_session=True)
        mwtest._register(self.proc)
        if ready:
            self.wait_for(ready)

    def text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, pattern, timeout=20):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.text())
            if m:
                return m
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited ({self.proc.returncode}):\n{self.text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"service did not log {pattern!r}:\n{self.text()}")
            time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        mwtest._unregister(self.proc)
        self.out.close()
        check_clean(self.text(), self.log_path.name)
        return self.proc.returncode


class Stand:
    def __init__(self, pki, make_broker, tmp_path, policy=FLEET_POLICY, **broker_kw):
        self.pki = pki
        pki.ensure(*IDENTITIES)
        self.dir = Path(tmp_path)
        self.broker = make_broker(policy=policy, **broker_kw)
        self.services = []
        self.prov = None
        self.shadow = None

    def config(self, name, path=None, **over):
        cfg = mwtest._merge(mwtest.default_config(self.broker, self.pki, name), over)
        path = Path(path or self.dir / f"{name}.lua")
        path.write_text("return " + mwtest.lua_literal(cfg) + "\n")
        return path

    def start_services(self, ca=None, db=None, extra=(), shadow=True, wait_admin=True):
        cfg = self.config("provisioning-service")
        args = ["provisioning-service", "--config", cfg, "--ca", ca or self.pki.dir, "--templates", TEMPLATES,
                "--policy", FLEET_POLICY, "--db", db or self.dir / "provisioning.db",
                "--jitp-template", "moonwire-jitp", *extra]
        self.prov = Service(args, self.dir / f"provisioning-service{len(self.services)}.log")
        self.services.append(self.prov)
        if wait_admin:
            self.prov.wait_for(r"dynamic-security plugin answers")
        if shadow and not self.shadow:
            self.shadow = Service(["shadow-service", "--config", self.config("shadow-service"),
                                   "--db", self.dir / "shadows.db"], self.dir / "shadow-service.log")
            self.services.append(self.shadow)
        return self.prov

    def provision(self, flow, config, params, timeout=90, dry_run=False, env=None):
        args = [str(mwtest.moonwire_bin()), "provision", str(flow), "--config", str(config)]
        for k, v in params.items():
            args += ["--param", f"{k}={v}"]
        if dry_run:
            args.append("--dry-run")
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                           env=dict(os.environ, **(env or {})))
        check_clean(r.stdout + r.stderr, f"moonwire provision {flow}")
        return r

    def dynsec(self):
        return json.loads((self.broker.dir / "dynamic-security.json").read_text())

    def close(self):
        for s in self.services:
            s.stop()


def public_key_of_cert(path):
    return subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-pubkey"], check=True,
                          capture_output=True, text=True).stdout


def chip_public_key(state, slot="0xE0F1"):
    r = mwtest.run_moonwire("se", "--sim", state, "pubkey", slot)
    assert r.returncode == 0, r.stderr
    return r.stdout


def read_config(path):
    """A written device configuration as a dict (through the same Lua reader the flows use)."""
    script = Path(str(path) + ".dump.lua")
    script.write_text(
        'local prov = require "moonwire.provision"\n'
        'local json = require "moonwire.json"\n'
        f'local cfg = assert(prov.read_config({json.dumps(str(path))}))\n'
        'print(json.encode(cfg))\n')
    r = mwtest.run_moonwire("script", script)
    assert r.returncode == 0, r.stderr
    script.unlink()
    return json.loads(r.stdout)


def files_containing(root, needle, skip=()):
    """Files under root whose content contains needle (bytes), except those under skip."""
    found = []
    for p in Path(root).rglob("*"):
        if not p.is_file() or any(str(p).startswith(str(s)) for s in skip):
            continue
        try:
            if needle in p.read_bytes():
                found.append(p)
        except OSError:
            pass
    return found
