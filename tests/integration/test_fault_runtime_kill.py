"""Fault test: the runtime is killed with SIGKILL 10 times while it publishes, and started
again on the same outbox each time. Everything it accepted before a kill must arrive after
the restart.

"Accepted" is what the app can know: mqtt.publish returned a handle, and the loop turn in
which it did has ended (the outbox commits its batch before the event loop waits again,
see docs/RELIABILITY.md). The app logs the highest such sequence number at the start of
each tick, i.e. for the messages of the previous tick. Messages of the very tick the kill
interrupts may or may not survive; nothing logged as accepted may be missing."""

import random
import re
import time

import faultlib

PUBLISHER = r'''
local mqtt = require "moonwire.mqtt"
local log = require "moonwire.log"
local timer = require "moonwire.timer"
local app = require("moonwire.device").config.app
local seq, last_tick = 0, 0
timer.every(10, function()
  -- The previous tick's messages are committed: the loop has waited since.
  if last_tick > 0 then log.info("accepted run=" .. app.run .. " upto=" .. last_tick) end
  for _ = 1, app.per_tick do
    seq = seq + 1
    assert(mqtt.publish("cars/car-01/telemetry", app.run .. ":" .. seq, {qos = 1}))
  end
  last_tick = seq
end)
timer.every(100, function()
  local s = mqtt.outbox()
  log.info("state pending=" .. s.pending .. " inflight=" .. s.inflight .. " resent=" .. s.resent ..
           " acked=" .. s.acked)
end)
'''


def test_runtime_killed_10_times_loses_nothing_it_accepted(broker, pki, moonwire, tmp_path):
    peer = faultlib.SeqPeer(broker, pki, "cars/car-01/telemetry")
    cfg = {"reconnect": {"base_ms": 50, "cap_ms": 200}, "outbox": {"path": str(tmp_path / "outbox.db")}}
    rng = random.Random(11)
    accepted = {}
    resent = 0
    for run in range(1, 11):
        app = moonwire(PUBLISHER, broker=broker, config=dict(cfg, app={"run": run, "per_tick": 5}))
        app.wait_for_output(r"accepted run=%d upto=\d+" % run, timeout=15)
        time.sleep(rng.uniform(0.2, 0.8))
        app.kill()  # SIGKILL, mid-stream
        ups = [int(x) for x in re.findall(r"accepted run=%d upto=(\d+)" % run, app.stderr())]
        accepted[run] = max(ups)
        resent += sum(int(x) for x in re.findall(r"(\d+) unacknowledged message\(s\) will be sent again",
                                                 app.stderr()))
    # One more start drains what the last kill left behind.
    final = moonwire(PUBLISHER, broker=broker, config=dict(cfg, app={"run": 99, "per_tick": 0}))
    faultlib.wait_state(final, lambda s: s["pending"] == 0 and s["inflight"] == 0, 30, "an empty outbox")
    resent += sum(int(x) for x in re.findall(r"(\d+) unacknowledged message\(s\) will be sent again", final.stderr()))
    expected = {(run, n) for run, top in accepted.items() for n in range(1, top + 1)}
    peer.wait_for(expected, timeout=30)
    # Per run, first deliveries keep the publishing order.
    for run in accepted:
        seqs = [n for r, n in peer.first_delivery_order() if r == run]
        assert seqs == sorted(seqs), f"run {run} delivered out of order"
    dups = peer.duplicates()
    assert dups - peer.dup_flagged <= resent, (dups, peer.dup_flagged, resent)
    peer.close()
    print(f"\nkills: 10; accepted {len(expected)} messages; all arrived; duplicates {dups} "
          f"(runtime resends with DUP {resent})")
