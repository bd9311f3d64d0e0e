"""A pod's way to the API server: 127.0.0.1:<port> inside its network namespace forwarded to
the test API server's loopback port, as the pod network and the service IP would carry it.
`cut()` is a node cut off from the API server (open connections dropped, new ones refused);
`restore()` reconnects it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import yaml

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def listen_in_namespace(namespace: str, port: int) -> socket.socket:
    """A TCP socket listening on 127.0.0.1:`port` inside network namespace `namespace`.

    A socket belongs to the namespace it was created in; the calling thread enters the
    namespace only for the socket() call and returns at once.
    """
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            listener = socket.create_server(("127.0.0.1", port))
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
    return listener


class PortForward:
    """Connections to 127.0.0.1:port inside a namespace reach 127.0.0.1:port here."""

    def __init__(self, namespace: str, port: int) -> None:
        self.port = port
        self.listener = listen_in_namespace(namespace, port)
        self._stop = threading.Event()
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        """The API server becomes unreachable: open connections drop, new ones are refused."""
        self._cut.set()
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def restore(self) -> None:
        self._cut.clear()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                inside, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                _close(inside)
                continue
            try:
                outside = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                inside.close()
                continue
            with self._lock:
                self._open.update((inside, outside))
            threading.Thread(target=self._pipe, args=(inside, outside), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stop.is_set() and not self._cut.is_set():
                for key, _ in selector.select(timeout=0.5):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            selector.close()
            with self._lock:
                self._open.discard(a)
                self._open.discard(b)
            _close(a)
            _close(b)

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self.listener.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def api_port(kubeconfig: Path) -> int:
    """The loopback port of the API server a kubeconfig names."""
    config = yaml.safe_load(kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    parsed = urlparse(server)
    if parsed.hostname not in ("127.0.0.1", "localhost") or parsed.port is None:
        raise ValueError(f"the simulator forwards a loopback API server only, not {server}")
    return parsed.port
