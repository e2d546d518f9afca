"""A TCP proxy the fault tests put between the runtime and the broker, to break the network
on purpose. It forwards bytes untouched (TLS goes straight through).

    proxy = TcpProxy(target_port)        # listens on 127.0.0.1:proxy.port
    proxy.blackhole()   # existing connections: bytes are read and thrown away in both
                        # directions (nothing arrives, nothing is answered, no error);
                        # new connections are refused, like a network that is gone
    proxy.reset()       # every connection is reset (RST) at once; new ones still accepted
    proxy.restore()     # forward again (new connections only: black-holed ones stay dead)
    proxy.close()

One selector thread does everything. Counters: accepted, bytes_up (runtime -> broker),
bytes_down, dropped_bytes.
"""

import selectors
import socket
import struct
import threading
import time

HOST = "127.0.0.1"


class TcpProxy:
    def __init__(self, target_port, target_host=HOST, port=0):
        self.target = (target_host, target_port)
        self.port = port
        self.mode = "forward"
        self.accepted = 0
        self.bytes_up = self.bytes_down = self.dropped_bytes = 0
        self._sel = selectors.DefaultSelector()
        self._pairs = {}            # socket -> (peer socket, direction "up"/"down")
        self._listener = None
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._pending = []          # callables run on the proxy thread
        self._closed = False
        self._listen()
        self._thread = threading.Thread(target=self._run, name="tcpproxy", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- control (any thread)

    def _call(self, fn):
        done = threading.Event()
        result = []

        def run():
            try:
                result.append(fn())
            finally:
                done.set()
        with self._lock:
            self._pending.append(run)
        self._wake_w.send(b"x")
        if not done.wait(5):
            raise TimeoutError("tcpproxy thread did not answer")
        return result[0] if result else None

    def blackhole(self):
        def f():
            self.mode = "blackhole"
            self._unlisten()
        self._call(f)

    def reset(self):
        def f():
            for s in list(self._pairs):
                self._drop(s, rst=True)
        self._call(f)

    def restore(self):
        def f():
            self.mode = "forward"
            if self._listener is None:
                self._listen()
        self._call(f)

    @property
    def connections(self):
        return self._call(lambda: len(self._pairs) // 2)

    def close(self):
        if self._closed:
            return
        self._closed = True

        def f():
            for s in list(self._pairs):
                self._drop(s, rst=False)
            self._unlisten()
        try:
            self._call(f)
        except TimeoutError:
            pass
        self._wake_w.send(b"q")
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----------------------------------------------------------------- proxy thread

    def _listen(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for attempt in range(50):
            try:
                ls.bind((HOST, self.port))
                break
            except OSError:
                if not self.port or attempt == 49:
                    raise
                time.sleep(0.05)
        self.port = ls.getsockname()[1]
        ls.listen(64)
        ls.setblocking(False)
        self._listener = ls
        self._sel.register(ls, selectors.EVENT_READ, "listen")

    def _unlisten(self):
        if self._listener is not None:
            self._sel.unregister(self._listener)
            self._listener.close()
            self._listener = None

    def _accept(self):
        try:
            c, _ = self._listener.accept()
        except OSError:
            return
        try:
            up = socket.create_connection(self.target, timeout=5)
        except OSError:
            c.close()
            return
        for s in (c, up):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.accepted += 1
        self._pairs[c] = (up, "up")
        self._pairs[up] = (c, "down")
        self._sel.register(c, selectors.EVENT_READ, "data")
        self._sel.register(up, selectors.EVENT_READ, "data")

    def _drop(self, s, rst):
        pair = self._pairs.pop(s, None)
        if pair is None:
            return
        peer = pair[0]
        self._pairs.pop(peer, None)
        for x in (s, peer):
            try:
                self._sel.unregister(x)
            except (KeyError, ValueError):
                pass
            if rst:
                try:
                    x.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            x.close()

    def _data(self, s):
        pair = self._pairs.get(s)
        if pair is None:
            return
        peer, direction = pair
        try:
            data = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(s, rst=False)
            return
        if self.mode == "blackhole":
            self.dropped_bytes += len(data)
            return
        if direction == "up":
            self.bytes_up += len(data)
        else:
            self.bytes_down += len(data)
        view = memoryview(data)
        deadline = time.monotonic() + 5
        while view:
            try:
                n = peer.send(view)
                view = view[n:]
            except (BlockingIOError, InterruptedError):
                if time.monotonic() > deadline:
                    self._drop(s, rst=True)
                    return
                time.sleep(0.001)
            except OSError:
                self._drop(s, rst=True)
                return

    def _run(self):
        while True:
            for key, _ in self._sel.select(0.5):
                if key.data == "wake":
                    msg = self._wake_r.recv(64)
                    with self._lock:
                        todo, self._pending = self._pending, []
                    for fn in todo:
                        fn()
                    if b"q" in msg:
                        return
                elif key.data == "listen":
                    if self._listener is not None and key.fileobj is self._listener:
                        self._accept()
                else:
                    self._data(key.fileobj)
