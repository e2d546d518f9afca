"""Shared pieces of the fault tests (test_fault_*.py): a peer that checks every message by
sequence number, and readers for the runtime's outbox counters.

SeqPeer(broker, pki, topic_filter, client_id="dispatcher")
    A paho subscriber (QoS 1, persistent session so a broker restart loses nothing of its
    queue, reconnecting within a second). Payloads are "<seq>" or "<run>:<seq>".
    .received       {key: count}        key = (run, seq)
    .dup_flagged    number of deliveries the broker marked DUP (its own resends to us)
    .missing(expected_keys), .duplicates(), .wait_for(keys, timeout)
"""

import re
import ssl
import threading
import time

import paho.mqtt.client as mqtt

HOST = "127.0.0.1"


class SeqPeer:
    def __init__(self, broker, pki, topic_filter, client_id="dispatcher", identity="dispatcher", timeout=10):
        self.filter = topic_filter
        self.received = {}
        self.order = []
        self.dup_flagged = 0
        self.connects = 0
        self._cond = threading.Condition()
        self._port = broker if isinstance(broker, int) else broker.port
        c = mqtt.Client(client_id=client_id, clean_session=False, protocol=mqtt.MQTTv311)
        cert, key = pki.pair(identity)
        c.tls_set(ca_certs=str(pki.ca), certfile=str(cert), keyfile=str(key), cert_reqs=ssl.CERT_REQUIRED,
                  tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.reconnect_delay_set(min_delay=0.1, max_delay=1)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self._c = c
        self._stop = False
        c.connect(HOST, self._port, keepalive=60)
        self._thread = threading.Thread(target=self._run, name="seqpeer", daemon=True)
        self._thread.start()
        with self._cond:
            if not self._cond.wait_for(lambda: self.connects > 0, timeout):
                raise TimeoutError("SeqPeer: no CONNACK")

    def _run(self):
        # paho 1.6's network loop dies on an SSL EOF during a write (the broker went away
        # mid-packet); restart it and reconnect by hand, the way a sturdy client would.
        while not self._stop:
            try:
                self._c.loop_forever(retry_first_connection=True)
                if self._stop:
                    return
            except Exception:  # noqa: BLE001
                pass
            while not self._stop:
                try:
                    self._c.reconnect()
                    break
                except Exception:  # noqa: BLE001
                    time.sleep(0.1)

    def _on_connect(self, c, u, flags, rc):
        if rc == 0:
            # With a persistent session the broker remembers the subscription; asking again
            # is harmless and covers a broker that lost its state.
            c.subscribe(self.filter, qos=1)
        with self._cond:
            self.connects += 1
            self._cond.notify_all()

    def _on_message(self, c, u, m):
        text = m.payload.decode(errors="replace")
        head, _, tail = text.partition(":")
        # "<run>:<seq>", or "<seq>" optionally followed by ":<padding>"
        key = (int(head), int(tail)) if tail.isdigit() else (0, int(head))
        with self._cond:
            self.received[key] = self.received.get(key, 0) + 1
            self.order.append(key)
            if m.dup:
                self.dup_flagged += 1
            self._cond.notify_all()

    def missing(self, expected):
        with self._cond:
            return sorted(k for k in expected if k not in self.received)

    def duplicates(self):
        with self._cond:
            return sum(n - 1 for n in self.received.values())

    def wait_for(self, expected, timeout):
        expected = set(expected)
        with self._cond:
            ok = self._cond.wait_for(lambda: expected.issubset(self.received), timeout)
        if not ok:
            miss = self.missing(expected)
            raise AssertionError(f"{len(miss)} message(s) never arrived, e.g. {miss[:20]}")

    def first_delivery_order(self):
        """Keys in the order of their first delivery."""
        seen, out = set(), []
        with self._cond:
            for k in self.order:
                if k not in seen:
                    seen.add(k)
                    out.append(k)
        return out

    def close(self):
        self._stop = True
        try:
            self._c.disconnect()
        except Exception:  # noqa: BLE001
            pass
        self._thread.join(5)


def outbox_state(text):
    """The last 'state k=v ...' line the fault apps log, as a dict of ints."""
    lines = re.findall(r"state ((?:\w+=-?\d+ ?)+)", text)
    if not lines:
        return {}
    return {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", lines[-1])}


def wait_state(app, pred, timeout, what="state"):
    deadline = time.monotonic() + timeout
    while True:
        st = outbox_state(app.stderr())
        if st and pred(st):
            return st
        if not app.running:
            raise AssertionError(f"moonwire exited ({app.returncode}); output:\n{app.output()[-4000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout}s; last state {st}; output tail:\n{app.output()[-3000:]}")
        time.sleep(0.05)
