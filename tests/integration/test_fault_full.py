"""Fault test: the outbox at its limit, and the disk under it full. The stated policy must
hold, with a clear error, and nothing accepted may be lost:

- outbox.max_messages reached with when_full = "refuse": new QoS 1 messages are refused
  (nil, "outbox full: ...", "EBUSY"); everything accepted is delivered later, in order;
- with when_full = "drop_oldest": the oldest waiting messages make room, counted;
- the file system full (a small tmpfs): the batch that cannot be committed stays in memory,
  new QoS 1 messages are refused (nil, "the outbox cannot be written (... full ...)", "ENOSPC"),
  and once there is room again the kept messages are stored and everything accepted arrives."""

import os
import re
import subprocess
import time

import pytest

import faultlib
from tcpproxy import TcpProxy

FAST = {"reconnect": {"base_ms": 100, "cap_ms": 400}}


def wait_log(app, pattern, timeout=20):
    return app.wait_for_output(pattern, timeout=timeout)


FULL_APP = r'''
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
local ok_count = 0
for i = 1, 15 do
  local h, err, code = mqtt.publish("cars/car-01/telemetry", "f" .. i, {qos = 1})
  if h then ok_count = ok_count + 1 else log.warn("refused " .. i .. ": " .. err .. " [" .. code .. "]") end
end
local s = mqtt.outbox()
log.info("full accepted=" .. ok_count .. " pending=" .. s.pending .. " refused=" .. s.refused ..
         " dropped=" .. s.dropped)
'''


def test_full_outbox_refuses_with_a_clear_error(broker, client, moonwire):
    peer = client("dispatcher")
    peer.subscribe("cars/car-01/#")
    with TcpProxy(broker.port) as proxy:
        proxy.blackhole()
        app = moonwire(FULL_APP, broker=proxy.port, config=dict(FAST, outbox={"max_messages": 10}))
        wait_log(app, r"full accepted=10 pending=10 refused=5 dropped=0")
        assert re.search(r"refused 11: outbox full: 10 messages \(\d+ bytes\) wait for the broker "
                         r"\(outbox.max_messages = 10, max_bytes = \d+\); message to 'cars/car-01/telemetry' "
                         r"refused \[EBUSY\]", app.stderr())
        proxy.restore()
        msgs = peer.wait_messages(10, timeout=15)
        assert [m.payload for m in msgs] == [b"f%d" % i for i in range(1, 11)]


def test_full_outbox_can_drop_the_oldest_instead(broker, client, moonwire):
    peer = client("dispatcher")
    peer.subscribe("cars/car-01/#")
    with TcpProxy(broker.port) as proxy:
        proxy.blackhole()
        app = moonwire(FULL_APP, broker=proxy.port,
                       config=dict(FAST, outbox={"max_messages": 10, "when_full": "drop_oldest"}))
        wait_log(app, r"full accepted=15 pending=10 refused=0 dropped=5")
        assert "outbox full: dropped the oldest message" in app.stderr()
        proxy.restore()
        msgs = peer.wait_messages(10, timeout=15)
        assert [m.payload for m in msgs] == [b"f%d" % i for i in range(6, 16)]



DISK_APP = r'''
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
local timer = require "moonwire.timer"
local seq, refused = 0, 0
local payload = string.rep("p", 1000)
local t
t = timer.every(5, function()
  seq = seq + 1
  local h, err, code = mqtt.publish("cars/car-01/telemetry", seq .. ":" .. payload, {qos = 1})
  if h then
    log.info("acc " .. seq)
  else
    refused = refused + 1
    if refused <= 3 then log.warn("refused " .. seq .. ": " .. err .. " [" .. code .. "]") end
    if refused == 20 then t:stop(); log.info("stopped at " .. seq) end
  end
end)
timer.every(200, function()
  local s = mqtt.outbox()
  log.info("state pending=" .. s.pending .. " unstored=" .. s.unstored .. " refused=" .. s.refused ..
           " commit_failures=" .. s.commit_failures .. " acked=" .. s.acked)
end)
'''


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_refuses_new_messages_and_keeps_the_accepted_ones(broker, pki, moonwire, small_disk):
    peer = faultlib.SeqPeer(broker, pki, "cars/car-01/telemetry")
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 400_000)
    with TcpProxy(broker.port) as proxy:
        proxy.blackhole()  # offline: everything accumulates in the outbox until the disk is full
        app = moonwire(DISK_APP, broker=proxy.port,
                       config=dict(FAST, outbox={"path": str(small_disk / "outbox.db")}))
        stopped = int(wait_log(app, r"stopped at (\d+)", timeout=60).group(1))
        m = re.search(r"refused (\d+): (.*) \[(\w+)\]", app.stderr())
        assert m, app.stderr()[-3000:]
        assert m.group(3) == "ENOSPC", m.group(0)
        assert "full" in m.group(2) and "refused" in m.group(2), m.group(2)
        assert "new QoS 1 messages are refused until it can be written again" in app.stderr()
        accepted = [int(x) for x in re.findall(r"acc (\d+)", app.stderr())]
        assert accepted and len(accepted) < stopped
        # Room again: what waited in memory is stored, then delivered with everything else.
        filler.unlink()
        wait_log(app, r"can be written again; \d+ write\(s\) kept in memory are stored", timeout=10)
        proxy.restore()
        faultlib.wait_state(app, lambda s: s["pending"] == 0 and s["unstored"] == 0, 60, "an empty outbox")
    peer.wait_for({(0, n) for n in accepted}, timeout=30)
    peer.close()
