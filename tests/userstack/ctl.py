"""A small ocfs2_controld client for tests, built on the codec: one connection, records."""

from __future__ import annotations

import socket
import time

from hbctl.controld import proto

TIMEOUT_S = 60.0
"""No test waits forever on a daemon: a reply missing this long fails the test."""


class Conn:
    """One client connection (MOUNT and its MRESULT share one, as in libo2cb)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(TIMEOUT_S)
        self.splitter = proto.RecordSplitter()
        self.records: list[bytes] = []

    def send(self, record: bytes) -> None:
        self.sock.sendall(record)

    def recv(self) -> proto.Message:
        """The next reply; EOFError when the daemon closed the connection."""
        while not self.records:
            data = self.sock.recv(4096)
            if not data:
                raise EOFError("daemon closed the connection")
            self.records += self.splitter.feed(data)
        return proto.decode(self.records.pop(0))

    def status(self) -> tuple[int, str]:
        return proto.parse_status(self.recv())

    def call(self, record: bytes) -> tuple[int, str]:
        self.send(record)
        return self.status()

    def listing(self, record: bytes) -> list[str]:
        self.send(record)
        r = proto.ListReceiver()
        while not r.feed(self.recv()):
            pass
        return r.items

    def closed_by_daemon(self) -> bool:
        """True once the daemon hung up (EOF), without sending anything else first."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def connect(sock: socket.socket, timeout: float = 20.0) -> Conn:
    """Connect to @ocfs2_controld_sock, retrying while the daemon is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(proto.SOCKET_ADDRESS)
            return Conn(sock)
        except (ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() > deadline:
                sock.close()
                raise
            time.sleep(0.02)
