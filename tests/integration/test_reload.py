"""Hot reload and budgets of `moonwire run` against a real mosquitto (mutual TLS), paho-mqtt as
the peer: exactly-once delivery across reloads under load, broken versions changing nothing,
app.state and migrate, subscription diffs seen at the broker, runaway and memory-hungry
handlers stopped and quarantined while the others keep answering, saves by rename and in
place, SIGHUP, app.reload() from a handler, automatic rollback, app-folder modules."""

import collections
import json
import os
import re
import signal
import threading
import time

import mwtest

REPLY = "cars/car-01/reply"

# A version of an echo app: answers every command with the tag written into its source and
# the version number the runtime gives it. shape 1 also subscribes an extra filter, so
# alternating shapes also changes the broker subscriptions under load.
ECHO = r'''
local mqtt = require "moonwire.mqtt"
local app = require "moonwire.app"
local log = require "moonwire.log"
local TAG = %(tag)d
local opts = {qos = 1}
mqtt.subscribe("cars/car-01/cmd", function(_, payload)
  local ok, err = mqtt.publish("cars/car-01/reply", payload .. " " .. TAG .. " " .. app.version, opts)
  if not ok then log.error("reply failed: " .. tostring(err)) end
end, {qos = 1})
if %(shape)d == 1 then mqtt.subscribe("cars/car-01/extra", function() end) end
'''


def write_app(path, text, in_place=False):
    """Save like an editor: write a temporary file and rename it over (default), or in place."""
    if in_place:
        with open(path, "w") as fh:
            fh.write(text)
        return
    tmp = f"{path}.swp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.rename(tmp, path)


def app_file(tmp_path, text, name="app.lua"):
    d = tmp_path / "app"
    d.mkdir(exist_ok=True)
    p = d / name
    write_app(p, text)
    return p


def live_lines(m):
    return re.findall(r"version (\d+) \(hash \w+\) live", m.output())


def wait_live(m, version, timeout=10.0):
    return m.wait_for_output(rf"version {version} \(hash \w+\) live", timeout)


def ping(peer, text="ping", timeout=5.0):
    """Send a command and return the app's reply to it (the first reply carrying text)."""
    peer.publish("cars/car-01/cmd", text, qos=1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for msg in peer.received(REPLY):
            if msg.payload.decode().split(" ")[0] == text:
                return msg.payload.decode()
        time.sleep(0.01)
    raise TimeoutError(f"no reply to {text!r}; got {peer.received(REPLY)!r}")


def ready_peer(client, broker, m, name="dispatcher"):
    """A peer subscribed to the replies, once the app answers (its SUBACK has been seen)."""
    m.wait_for_output("connected to")
    peer = client(name, broker=broker)
    peer.subscribe(REPLY, qos=1)
    mwtest.wait_until(lambda: _probe(peer), timeout=10, interval=0.2, message="the app to answer")
    peer.clear()
    return peer


def _probe(peer):
    peer.publish("cars/car-01/cmd", "probe", qos=1)
    time.sleep(0.05)
    return any(m.payload.startswith(b"probe") for m in peer.received(REPLY))


# ------------------------------------------------------------------------------ under load

def test_reload_under_load_exactly_once(make_broker, client, moonwire, tmp_path):
    """2,000 QoS 1 messages/s to an echo app while its file is rewritten 100 times: every
    message is answered exactly once, by the version that was live when it arrived."""
    broker = make_broker(debug_log=False)  # a debug log of every packet would slow the broker
    path = app_file(tmp_path, ECHO % {"tag": 0, "shape": 0})
    m = moonwire(str(path), broker=broker, config={"limits": {"max_inflight": 2000},
                                                   "lua": {"debounce_ms": 10}})
    peer = ready_peer(client, broker, m)
    peer._c.max_inflight_messages_set(2000)
    sent = []
    stop = threading.Event()

    def sender():
        # 2,000/s in bursts of 10 every 5 ms (paced on the clock, so a stall catches up).
        start, n = time.monotonic(), 0
        while not stop.is_set():
            due = int((time.monotonic() - start) * 2000)
            while n < due:
                peer.publish("cars/car-01/cmd", str(n), qos=1, wait=False)
                sent.append(n)
                n += 1
            time.sleep(0.005)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        time.sleep(0.2)
        for k in range(1, 101):
            write_app(path, ECHO % {"tag": k, "shape": k % 2})
            wait_live(m, k + 1, timeout=20)
            time.sleep(0.02)  # pacing: let each version answer some of the traffic
        time.sleep(0.2)
    finally:
        stop.set()
        t.join(10)
    total = len(sent)
    mwtest.wait_until(lambda: sum(r.payload[:1].isdigit() for r in peer.received(REPLY)) >= total,
                      timeout=60, interval=0.1, message=f"{total} replies")
    time.sleep(0.5)  # any duplicate would arrive by now
    replies = [r.payload.decode().split(" ") for r in peer.received(REPLY)]
    replies = [r for r in replies if r[0].isdigit()]  # not the readiness probes
    seqs = collections.Counter(int(r[0]) for r in replies)
    assert len(replies) == total, f"{len(replies)} replies to {total} messages"
    assert set(seqs) == set(range(total)) and max(seqs.values()) == 1, "lost or duplicated"
    # The tag comes from the source of the handler that answered, the number from the
    # runtime: they always agree (tag k is version k + 1), so no message reached code of one
    # version while the runtime considered another live...
    by_seq = sorted((int(s), int(tag), int(ver)) for s, tag, ver in replies)
    assert all(ver == tag + 1 for _, tag, ver in by_seq)
    # ...and the broker delivers one publisher's QoS 1 messages in order, so "the version
    # live when it arrived" means the versions never go backwards along the sequence.
    versions = [ver for _, _, ver in by_seq]
    assert versions == sorted(versions)
    assert versions[0] == 1 and versions[-1] == 101
    assert len(set(versions)) > 40, f"only {len(set(versions))} versions answered"
    out = m.output()
    assert len(live_lines(m)) == 100
    assert "failed" not in out and "reply failed" not in out, out[-3000:]
    print(f"{total} messages, {len(set(versions))} versions answered, "
          f"{total / max(1, len(set(versions))):.0f} messages per version")


# ------------------------------------------------------------------------------ broken versions

BROKEN = {
    "syntax": ("local mqtt = require 'moonwire.mqtt'\nlocal x = = 1\n", r"app\.lua:2: unexpected symbol"),
    "raises": ("local mqtt = require 'moonwire.mqtt'\nmqtt.subscribe('cars/car-01/cmd', print)\n"
               "error('refusing to start')\n", r"app\.lua:3: refusing to start"),
    "loops": ("local mqtt = require 'moonwire.mqtt'\nmqtt.subscribe('cars/car-01/cmd', print)\n"
              "while true do pcall(function() while true do end end) end\n",
              r"app\.lua:3: time limit exceeded \(300 ms\)"),
}


def test_broken_versions_leave_the_old_one_serving(broker, client, moonwire, tmp_path):
    path = app_file(tmp_path, ECHO % {"tag": 7, "shape": 0})
    m = moonwire(str(path), config={"lua": {"load_budget_ms": 300}})
    peer = ready_peer(client, broker, m)
    for i, (name, (src, where)) in enumerate(BROKEN.items()):
        write_app(path, src)
        line = m.wait_for_output(rf"app\.lua: reload \(app\.lua changed\) failed, version 1 keeps running: "
                                 rf"\S*{where}")
        assert line, name
        assert ping(peer, f"after-{name}") == f"after-{name} 7 1"
    assert live_lines(m) == []
    # The broker never saw the broken versions' subscription (they were staged, not live).
    assert len(re.findall(r"car-01 1 cars/car-01/cmd", broker.log_text())) == 1
    write_app(path, ECHO % {"tag": 8, "shape": 0})
    wait_live(m, 2)
    assert ping(peer, "fixed") == "fixed 8 2"


# ------------------------------------------------------------------------------ state

STATEFUL = r'''
local mqtt = require "moonwire.mqtt"
local app = require "moonwire.app"
local json = require "moonwire.json"
app.state.count = app.state.count or 0
%(migrate)s
mqtt.subscribe("cars/car-01/cmd", function(_, payload)
  app.state.count = app.state.count + 1
  mqtt.publish("cars/car-01/reply", payload .. " " .. json.encode({count = app.state.count,
    version = app.version, migrations = app.state.migrations, from = app.state.from,
    shape = app.state.shape}), {qos = 1})
end, {qos = 1})
'''

MIGRATE = r'''
app.migrate(function(state, from_version)
  state.migrations = (state.migrations or 0) + 1
  state.from = from_version
  state.shape = "v" .. (from_version + 1)
end)
'''


def test_state_survives_reload_and_migrate_runs_once(broker, client, moonwire, tmp_path):
    path = app_file(tmp_path, STATEFUL % {"migrate": ""})
    m = moonwire(str(path))
    peer = ready_peer(client, broker, m)
    first = json.loads(ping(peer, "a0").split(" ", 1)[1])["count"]
    for i in range(1, 3):
        ping(peer, f"a{i}")
    write_app(path, STATEFUL % {"migrate": MIGRATE})
    wait_live(m, 2)
    got = json.loads(ping(peer, "b").split(" ", 1)[1])
    # The count went on from where version 1 left it; migrate ran once, from version 1.
    assert got == {"count": first + 3, "version": 2, "migrations": 1, "from": 1, "shape": "v2"}
    m.send_signal(signal.SIGHUP)
    wait_live(m, 3)
    got = json.loads(ping(peer, "c").split(" ", 1)[1])
    assert got == {"count": first + 4, "version": 3, "migrations": 2, "from": 2, "shape": "v3"}
    assert "(SIGHUP)" in m.output()


# ------------------------------------------------------------------------------ subscriptions

SUBS = r'''
local mqtt = require "moonwire.mqtt"
for _, f in ipairs{%(filters)s} do
  mqtt.subscribe("cars/car-01/" .. f, function(topic, payload)
    if topic ~= "cars/car-01/cmd" then return end  -- "+" and "#" also see the replies
    mqtt.publish("cars/car-01/reply", payload .. " " .. f .. " %(tag)s", {qos = 1})
  end, {qos = 1})
end
'''
# Four filters the car may subscribe to, all matching cars/car-01/cmd (which the peer may publish).
A, B, C, D = "cmd", "+", "#", "cmd/#"


def subs_text(filters, tag):
    return SUBS % {"filters": ", ".join(f'"{f}"' for f in filters), "tag": tag}


def broker_sub_events(broker):
    """(SUBSCRIBE filters, UNSUBSCRIBE filters) of car-01 in the broker's log, in order."""
    log = broker.log_text()
    subs = re.findall(r": car-01 [01] cars/car-01/(\S+)$", log, re.M)
    unsubs = re.findall(r": car-01 cars/car-01/(\S+)$", log, re.M)
    return subs, unsubs


def test_broker_sees_only_changed_filters(broker, client, moonwire, tmp_path):
    path = app_file(tmp_path, subs_text([A, B, C], "v1"))
    m = moonwire(str(path))
    m.wait_for_output("connected to")
    broker.wait_for_log(r"car-01 1 cars/car-01/#")
    peer = client("dispatcher")
    peer.subscribe(REPLY, qos=1)
    write_app(path, subs_text([B, C, D], "v2"))
    wait_live(m, 2)
    broker.wait_for_log(r"car-01 1 cars/car-01/cmd/#")
    broker.wait_for_log(re.compile(r"car-01 cars/car-01/cmd$", re.M))
    # Same filters, different handlers: the broker sees nothing at all.
    write_app(path, subs_text([B, C, D], "v3"))
    wait_live(m, 3)
    peer.publish("cars/car-01/cmd", "x", qos=1)
    peer.wait_messages(3, REPLY)
    time.sleep(0.3)  # nothing more comes
    got = sorted(r.payload.decode() for r in peer.received(REPLY))
    assert got == ["x # v3", "x + v3", "x cmd/# v3"]
    subs, unsubs = broker_sub_events(broker)
    assert subs == [A, B, C, D] and unsubs == [A], (subs, unsubs)
    assert "subscriptions +1 -1" in m.output() and "subscriptions +0 -0" in m.output()


# ------------------------------------------------------------------------------ budgets

# The peer may only publish to cars/car-01/cmd: each handler has its own filter matching it
# and acts on its own payload.
GUARDED = r'''
local mqtt = require "moonwire.mqtt"
local json = require "moonwire.json"
local function reply(p, s) mqtt.publish("cars/car-01/reply", p .. " " .. s, {qos = 1}) end
mqtt.subscribe("cars/car-01/cmd", function(_, p)
  if p == "subs" then
    local out = {}
    for _, s in ipairs(mqtt.subscriptions()) do
      out[#out + 1] = {filter = s.filter, quarantined = s.quarantined, errors = s.errors}
    end
    reply(p, json.encode(out))
  elseif p ~= "spin" and p ~= "bomb" then
    reply(p, "pong")
  end
end, {qos = 1})
mqtt.subscribe("cars/car-01/+", function(_, p)
  if p ~= "spin" then return end
  while true do pcall(function() while true do end end) end
end, {qos = 1})
mqtt.subscribe("cars/car-01/#", function(_, p)
  if p ~= "bomb" then return end
  local t, s = {}, "x"
  while true do s = s .. s t[#t + 1] = s end
end, {qos = 1})
'''
SPIN, BOMB = "cars/car-01/+", "cars/car-01/#"


def test_runaway_and_memory_bomb_are_stopped_and_quarantined(broker, client, moonwire, tmp_path):
    path = app_file(tmp_path, GUARDED)
    m = moonwire(str(path), config={"lua": {"budget_ms": 100, "quarantine_after": 3},
                                    "limits": {"lua_memory": 16 << 20}})
    peer = ready_peer(client, broker, m)
    for i in range(3):
        peer.publish("cars/car-01/cmd", "spin", qos=1)
        assert ping(peer, f"p{i}") == f"p{i} pong"
        peer.publish("cars/car-01/cmd", "bomb", qos=1)
        assert ping(peer, f"q{i}") == f"q{i} pong"
    m.wait_for_output(r"handler for 'cars/car-01/\+' quarantined")
    m.wait_for_output(r"handler for 'cars/car-01/#' quarantined")
    out = m.output()
    assert len(re.findall(r"handler for 'cars/car-01/\+' failed: \S*app\.lua:18: time limit exceeded "
                          r"\(100 ms\)", out)) == 3, out
    assert len(re.findall(r"handler for 'cars/car-01/#' failed: memory limit exceeded "
                          r"\(limits\.lua_memory = 16384 KiB\)", out)) == 3, out
    # Quarantined: unsubscribed at the broker, still listed (and flagged) for the REPL.
    broker.wait_for_log(re.compile(r"car-01 cars/car-01/\+$", re.M))
    broker.wait_for_log(re.compile(r"car-01 cars/car-01/#$", re.M))
    subs = {s["filter"]: s for s in json.loads(ping(peer, "subs").split(" ", 1)[1])}
    assert subs[SPIN]["quarantined"] is True and subs[SPIN]["errors"] == 3
    assert subs[BOMB]["quarantined"] is True and subs[BOMB]["errors"] == 3
    assert subs["cars/car-01/cmd"]["quarantined"] is False and subs["cars/car-01/cmd"]["errors"] == 0
    # More offending messages reach nobody now.
    peer.publish("cars/car-01/cmd", "spin", qos=1)
    assert ping(peer, "still") == "still pong"
    assert len(re.findall(r"time limit exceeded", m.output())) == 3
    # A reload gives the handlers a fresh start.
    write_app(path, GUARDED + "\n-- v2\n")
    wait_live(m, 2)
    mwtest.wait_until(lambda: len(re.findall(r"car-01 1 cars/car-01/\+$", broker.log_text(), re.M)) == 2,
                      message="the spin filter subscribed again")
    assert ping(peer, "after") == "after pong"
    assert m.running


# ------------------------------------------------------------------------------ saves, signals

def test_saving_by_rename_and_in_place_each_reload_once(broker, client, moonwire, tmp_path):
    path = app_file(tmp_path, ECHO % {"tag": 1, "shape": 0})
    m = moonwire(str(path))
    peer = ready_peer(client, broker, m)
    write_app(path, ECHO % {"tag": 2, "shape": 0})
    wait_live(m, 2)
    time.sleep(0.5)  # a second reload for the same save would happen within the debounce
    assert live_lines(m) == ["2"]
    write_app(path, ECHO % {"tag": 3, "shape": 0}, in_place=True)
    wait_live(m, 3)
    time.sleep(0.5)
    assert live_lines(m) == ["2", "3"]
    # Touching the file or saving the same text reloads nothing.
    os.utime(path)
    write_app(path, ECHO % {"tag": 3, "shape": 0})
    time.sleep(0.5)
    assert live_lines(m) == ["2", "3"]
    assert ping(peer, "x") == "x 3 3"


RELOADER = r'''
local mqtt = require "moonwire.mqtt"
local app = require "moonwire.app"
local TAG = "%(tag)s"
mqtt.subscribe("cars/car-01/cmd", function(_, p)
  if p == "reload" then
    local v, err, code = app.reload()
    local ok, why = pcall(mqtt.subscribe, "cars/car-01/late", print)
    mqtt.publish("cars/car-01/reply", p .. " " .. tostring(v) .. " " .. tostring(code) .. " " .. TAG ..
      " " .. tostring(ok) .. " " .. tostring(why):gsub(" ", "_"), {qos = 1})
  else
    mqtt.publish("cars/car-01/reply", p .. " " .. TAG .. " " .. app.version, {qos = 1})
  end
end, {qos = 1})
'''


def test_app_reload_from_a_handler(broker, client, moonwire, tmp_path):
    path = app_file(tmp_path, RELOADER % {"tag": "A"})
    m = moonwire(str(path), config={"lua": {"watch": False}})
    peer = ready_peer(client, broker, m)
    write_app(path, RELOADER % {"tag": "B"})
    time.sleep(0.3)
    assert ping(peer, "before") == "before A 1"  # not watching: nothing reloaded by itself
    got = ping(peer, "reload").split(" ")
    # The message that asked for the reload is finished by the version it arrived for (A);
    # that version can no longer register handlers once B is live.
    assert got[1:5] == ["2", "nil", "A", "false"], got
    assert "no_longer_live" in got[5]
    assert ping(peer, "after") == "after B 2"


def test_automatic_rollback(broker, client, moonwire, tmp_path):
    good = ECHO % {"tag": 1, "shape": 0}
    path = app_file(tmp_path, good)
    m = moonwire(str(path), config={"lua": {"rollback": {"errors": 2, "within_s": 30}}})
    peer = ready_peer(client, broker, m)
    write_app(path, "local mqtt = require 'moonwire.mqtt'\n"
                    "mqtt.subscribe('cars/car-01/cmd', function() error('broken handler') end, {qos = 1})\n")
    wait_live(m, 2)
    for i in range(3):
        peer.publish("cars/car-01/cmd", f"e{i}", qos=1)
    m.wait_for_output(r"version 2 raised 3 errors within [\d.]+ s of going live \(lua\.rollback\.errors = 2\): "
                      r"rolling back to version 1")
    m.wait_for_output(r"version 1 \(hash \w+\) live again \(automatic rollback\)")
    assert ping(peer, "back") == "back 1 1"


def test_app_folder_modules_reload_with_the_app(broker, client, moonwire, tmp_path):
    app_file(tmp_path, 'return {word = "one"}\n', name="words.lua")
    path = app_file(tmp_path, r'''
local mqtt = require "moonwire.mqtt"
local words = require "words"
mqtt.subscribe("cars/car-01/cmd", function(_, p)
  mqtt.publish("cars/car-01/reply", p .. " " .. words.word, {qos = 1})
end, {qos = 1})
''')
    m = moonwire(str(path))
    peer = ready_peer(client, broker, m)
    assert ping(peer, "a") == "a one"
    write_app(tmp_path / "app" / "words.lua", 'return {word = "two"}\n')
    m.wait_for_output(r"version 2 \(hash \w+\) live \(module words changed\)")
    assert ping(peer, "b") == "b two"
    write_app(tmp_path / "app" / "words.lua", 'return {word = }\n')
    m.wait_for_output(r"reload \(module words changed\) failed, version 2 keeps running: .*error loading module "
                      r"'words'")
    assert re.search(r"words\.lua:1: unexpected symbol near '}'", m.output())
    assert ping(peer, "c") == "c two"
