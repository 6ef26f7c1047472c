"""A loopback TCP relay a test can cut: a network partition between a service and its database.

Cut, it forwards nothing and answers nothing (the peers' sockets stay open, as behind a router
that drops packets); new connections are accepted and left hanging. Mended, it drops every
connection it held (their peers reconnect) and forwards again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class Relay:
    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._cut.set()

    def mend(self) -> None:
        self._drop_all()
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._drop_all()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            if self._cut.is_set():
                continue  # held, never forwarded
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._keep(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not self._cut.is_set():  # cut: what arrives is dropped on the floor
                    dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _keep(self, sock: socket.socket) -> None:
        # As libpq does: without it, Nagle's algorithm meets delayed ACKs and a small message
        # (a notification, an acknowledgement) waits 40 ms in the relay.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets.append(sock)

    def _drop_all(self) -> None:
        with self._lock:
            held, self._sockets = self._sockets, []
        for sock in held:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


@contextlib.contextmanager
def relaying(target_port: int) -> Iterator[Relay]:
    relay = Relay(target_port)
    try:
        yield relay
    finally:
        relay.close()
