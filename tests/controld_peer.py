"""A scripted peer on ``@ocfs2_controld_sock``, for the client's fault paths.

The real daemon (hbctl.controld) never sends a malformed STATUS, a reply that is not
STATUS, or an EOF in the middle of a join; libo2cb's client has an answer for each of them
(spec user-stacks.md §2.3-2.6), so these tests play the daemon's side with a script. Every
record received is logged as (connection number, text) so a test can check which records
went over which connection. Create it inside the network namespace it must listen in.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

from hbctl.controld import proto

# Records to send (one shorter than 256 bytes is followed by a hang-up); None: hang up.
Answer = Callable[[proto.Message], list[bytes] | None]


def ok(_msg: proto.Message) -> list[bytes] | None:
    return [proto.status(0, "OK")]


class ScriptedPeer:
    """Listens on the controld socket; answers each record with ``answer(message)``."""

    def __init__(self, answer: Answer = ok) -> None:
        self.answer = answer
        self.log: list[tuple[int, str]] = []
        self.connections = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(proto.SOCKET_ADDRESS)
        self._server.listen(5)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._client, args=(conn, self.connections),
                             daemon=True).start()

    def _client(self, conn: socket.socket, number: int) -> None:
        splitter = proto.RecordSplitter()
        with conn:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                for record in splitter.feed(data):
                    msg = proto.decode(record)
                    self.log.append((number, " ".join([msg.verb, *msg.args])))
                    replies = self.answer(msg)
                    if replies is None:
                        return
                    for reply in replies:
                        conn.sendall(reply)
                    if any(len(r) != proto.MAXLINE for r in replies):
                        return  # a cut record: the EOF comes right after it

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
