"""The daemon's side of the kernel's ``ocfs2_control`` misc device (T01 protocol).

ocfs2_stack_user's control device (``/dev/misc/ocfs2_control``, spec user-stacks.md §5.9,
§6.3): the daemon reads the versions the kernel offers (``T01\\n``, 4 bytes per read, until
EOF), writes the one it speaks, then ``SETN <nodeid %08X>`` and ``SETV <major> <minor>`` —
one message per ``write()``, exact lengths — and keeps the file open for its whole life
(the kernel reboots the machine when the last valid handle closes with mounts live). When a
peer dies it writes ``DOWN <UUID> <nodeid %08X>`` for each filesystem the peer had joined.

The path is ``/dev/misc/ocfs2_control`` on a host, or the same path under ``HBCTL_SYSROOT``
(fakecfs emulates the device there).
"""

from __future__ import annotations

import errno
import os

from hbctl.errors import Code, O2cbError

CONTROL_DEVICE = "dev/misc/ocfs2_control"
PROTOCOL = b"T01\n"
LOCKING_PROTOCOL = (1, 0)
"""``/sys/fs/ocfs2/max_locking_protocol`` of every kernel: 1.0; SETV accepts only that."""


def setn(nodeid: int) -> bytes:
    return b"SETN %08X\n" % nodeid


def setv(major: int, minor: int) -> bytes:
    return b"SETV %02X %02X\n" % (major, minor)


def down(uuid: str, nodeid: int) -> bytes:
    return b"DOWN %.32s %08X\n" % (uuid.encode(), nodeid)


class ControlDevice:
    """One open, handshaken ``ocfs2_control`` handle."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def open(self, nodeid: int, version: tuple[int, int] = LOCKING_PROTOCOL) -> None:
        """Open and do the handshake; O2cbError with libo2cb's code when it fails."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
                raise O2cbError(Code.SERVICE_UNAVAILABLE, f"{self.path}: {e.strerror}") from e
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise O2cbError(Code.PERMISSION_DENIED, f"{self.path}: {e.strerror}") from e
            raise O2cbError(Code.INTERNAL_FAILURE, f"{self.path}: {e.strerror}") from e
        try:
            found = False
            while True:
                chunk = os.read(fd, len(PROTOCOL))
                if not chunk:
                    break
                if len(chunk) != len(PROTOCOL):
                    raise O2cbError(Code.IO, f"{self.path}: short read {chunk!r}")
                found |= chunk == PROTOCOL
            if not found:
                raise O2cbError(Code.SERVICE_UNAVAILABLE,
                                f"{self.path} does not offer protocol T01")
            for message in (PROTOCOL, setn(nodeid), setv(*version)):
                self._write(fd, message)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    @staticmethod
    def _write(fd: int, message: bytes) -> None:
        try:
            n = os.write(fd, message)
        except OSError as e:
            raise O2cbError(Code.IO, f"writing {message!r}: {e.strerror}") from e
        if n != len(message):
            raise O2cbError(Code.IO, f"short write of {message!r}: {n}")

    def node_down(self, uuid: str, nodeid: int) -> None:
        if self.fd is None:
            raise O2cbError(Code.INTERNAL_FAILURE, "ocfs2_control is not open")
        self._write(self.fd, down(uuid, nodeid))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
