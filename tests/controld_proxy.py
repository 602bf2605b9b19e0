"""A recording proxy for ``@ocfs2_controld_sock`` (run as a script, standard library only).

    controld_proxy.py LOG UPSTREAM_NETNS

It listens on the abstract socket in its own network namespace (the node's, where the
tools and the emulated kernel's helper connect), then moves into UPSTREAM_NETNS (a
``/proc/PID/ns/net`` where the real daemon listens on the same name) and forwards every
connection there, byte for byte. Each whole 256-byte record is appended to LOG as a JSON
line ``{"conn": N, "dir": "C>D" | "D>C", "text": ...}`` before it is passed on, so a test
sees exactly what went over which connection, in order. It prints "ready" once listening.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import sys
import threading

ADDRESS = b"\0ocfs2_controld_sock"
RECORD = 256
CLONE_NEWNET = 0x40000000


class Recorder:
    def __init__(self, path: str) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the process
        self.lock = threading.Lock()

    def record(self, conn: int, direction: str, raw: bytes) -> None:
        text = raw[: RECORD - 1].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        with self.lock:
            self.file.write(json.dumps({"conn": conn, "dir": direction, "text": text}) + "\n")
            self.file.flush()


def pump(src: socket.socket, dst: socket.socket, conn: int, direction: str,
         rec: Recorder) -> None:
    buf = b""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            buf += data
            while len(buf) >= RECORD:
                rec.record(conn, direction, buf[:RECORD])
                dst.sendall(buf[:RECORD])
                buf = buf[RECORD:]
        if buf:  # a record cut short: pass the bytes on as they came
            dst.sendall(buf)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                s.shutdown(how)


def main() -> int:
    log, upstream_ns = sys.argv[1], sys.argv[2]
    rec = Recorder(log)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(ADDRESS)
    server.listen(16)
    fd = os.open(upstream_ns, os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:  # sockets made from now on are upstream's
        print(f"setns: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    os.close(fd)
    print("ready", flush=True)
    number = 0
    while True:
        client, _ = server.accept()
        number += 1
        daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            daemon.connect(ADDRESS)
        except OSError:
            client.close()  # no daemon: the client sees an EOF
            daemon.close()
            continue
        for args in ((client, daemon, number, "C>D"), (daemon, client, number, "D>C")):
            threading.Thread(target=pump, args=(*args, rec), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
