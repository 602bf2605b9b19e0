"""The user-stack plugin of stackglue (``ocfs2_stack_user``) as a core: ocfs2_control.

A user cluster stack (pcmk, cman: any ``cluster_stack`` label but ``o2cb``) leaves
membership to a userspace daemon, ``ocfs2_controld``, which talks to the kernel through
the misc device ``/dev/misc/ocfs2_control`` in the "T01" text protocol:

* every open starts INVALID; reading gives ``T01\\n`` (the one protocol offered), and a
  read that reaches its end moves the open to READ; later reads are EOF. A read that
  starts over at offset 0 moves it back to READ, whatever its state, as the kernel does;
* in READ the only accepted write is exactly ``T01\\n`` (4 bytes) -> PROTOCOL;
* in PROTOCOL, ``SETN %08X\\n`` (14 bytes: this node's number) and ``SETV %02X %02X\\n``
  (11 bytes: the locking protocol, at most 1.0, so only ``SETV 01 00``) in either order;
  with both, the open becomes VALID and counts as a control daemon;
* in VALID, ``DOWN <32-char UUID> %08X\\n`` (47 bytes) asks the filesystem with that UUID
  to recover that node (an unknown UUID is silently ignored). Debian's 6.1 oopses here
  instead (a fortified strlen traps on the unterminated UUID field; recorded by the
  kernel lane): fakecfs does what the source means;
* each write(2) is exactly one message; a wrong length, tag, separator or state is EINVAL,
  a number out of range ERANGE; success returns the byte count;
* releasing the last VALID open while filesystems are mounted is a lost cluster
  connection: the kernel prints a warning and restarts the machine at once.

Mounts of user-stack volumes attach a *live connection* here (WITH_CONTROLD mode: only
while a control daemon is open, else ESRCH). No I/O: the device file (fakecfs/misc.py) and
the kernel shell (fakecfs/kernel.py) turn the effects into log lines and dropped mounts.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from enum import IntEnum

from .kparse import _digits, _fixup_radix
from .tree import KernelError

PROTOCOL_LIST = b"T01\n"
MAX_PROTO = (1, 0)  # OCFS2_LOCKING_PROTOCOL_MAJOR/MINOR: max_locking_protocol's "1.0"
SETN_LEN = 14
SETV_LEN = 11
DOWN_LEN = 47
LONGEST_MESSAGE = DOWN_LEN  # the message union's size: longer writes are EINVAL
INT_MAX = (1 << 31) - 1

RESTART_MESSAGE = ("ocfs2: Unexpected release of ocfs2_control!\n"
                   "       Loss of cluster connection requires an emergency restart!")
NO_DAEMON_MESSAGE = "ocfs2: Userspace control daemon is not present"


class Handshake(IntEnum):
    """The state of one open of the device."""

    INVALID = 0
    READ = 1
    PROTOCOL = 2
    VALID = 3


@dataclass(eq=False)
class ControlOpen:
    """One open file of ``ocfs2_control`` (the kernel's ocfs2_control_private)."""

    state: Handshake = Handshake.INVALID
    this_node: int = -1
    proto: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class NodeDown:
    """Effect of a matched DOWN: the filesystem ``uuid`` recovers ``node``."""

    uuid: str
    node: int


@dataclass(frozen=True)
class EmergencyRestart:
    """Effect of the last valid release with live connections: the machine restarts."""

    live: tuple[str, ...]


def _node_number(raw: bytes, verb: str) -> int:
    """A node number field of SETN or DOWN: hex, EINVAL if not a number, ERANGE past INT_MAX."""
    node = _strtol16(_field(raw))
    if node is None:
        raise KernelError(errno.EINVAL, f"{verb}: not a hex number")
    if not 0 <= node <= INT_MAX:
        raise KernelError(errno.ERANGE, f"{verb}: node number out of range")
    return node


def _strtol16(text: str) -> int | None:
    """``simple_strtol(text, &end, 16)`` that must consume everything; None if not."""
    negative = text.startswith("-")
    body, base = _fixup_radix(text[1:] if negative else text, 16)
    value, used, _ = _digits(body, base)  # 8 hex digits at most: no overflow
    if used != len(body):
        return None
    return -value if negative else value


@dataclass
class UserStack:
    """The module's globals: open daemons, this node, the running protocol, live mounts."""

    opened: int = 0  # VALID opens (ocfs2_control_opened)
    this_node: int = -1
    running_proto: tuple[int, int] = (0, 0)
    live: list[str] = field(default_factory=list)  # live connections (mounted UUIDs)

    # -- the device ------------------------------------------------------------------------

    def open(self) -> ControlOpen:
        return ControlOpen()

    def read(self, handle: ControlOpen, offset: int, size: int) -> bytes:
        """``simple_read_from_buffer`` of the protocol list; the end of it means READ."""
        chunk = PROTOCOL_LIST[offset:offset + size] if offset >= 0 else b""
        if chunk and offset + len(chunk) >= len(PROTOCOL_LIST):
            handle.state = Handshake.READ
        return chunk

    def write(self, handle: ControlOpen, data: bytes) -> tuple[int, NodeDown | None]:
        """One write(2): (bytes accepted, effect); KernelError for a refused message."""
        if handle.state is Handshake.INVALID:
            raise KernelError(errno.EINVAL, "write before the protocol list was read")
        if handle.state is Handshake.READ:
            if data != PROTOCOL_LIST:
                raise KernelError(errno.EINVAL, "the handshake must be exactly 'T01\\n'")
            handle.state = Handshake.PROTOCOL
            return len(data), None
        count = len(data)
        if count > LONGEST_MESSAGE:
            raise KernelError(errno.EINVAL, "one message per write, at most 47 bytes")
        tag = data[:4]
        if count == SETN_LEN and tag == b"SETN":
            self._setn(handle, data)
            return count, None
        if count == SETV_LEN and tag == b"SETV":
            self._setv(handle, data)
            return count, None
        if count == DOWN_LEN and tag == b"DOWN":
            return count, self._down(handle, data)
        raise KernelError(errno.EINVAL, f"unknown message {data[:4]!r} of {count} bytes")

    def release(self, handle: ControlOpen) -> EmergencyRestart | None:
        """Close of one open; the last VALID one resets the node number and protocol."""
        if handle.state is not Handshake.VALID:
            return None
        self.opened -= 1
        if self.opened:
            return None
        effect = EmergencyRestart(tuple(self.live)) if self.live else None
        self.this_node = -1
        # The kernel clears pv_major twice and never pv_minor; only the major is looked at.
        self.running_proto = (0, self.running_proto[1])
        return effect

    def _setn(self, handle: ControlOpen, data: bytes) -> None:
        if handle.state is not Handshake.PROTOCOL:
            raise KernelError(errno.EINVAL, "SETN after the handshake completed")
        if data[4:5] != b" " or data[13:14] != b"\n":
            raise KernelError(errno.EINVAL, "SETN: bad separators")
        handle.this_node = _node_number(data[5:13], "SETN")
        self._install(handle)

    def _setv(self, handle: ControlOpen, data: bytes) -> None:
        if handle.state is not Handshake.PROTOCOL:
            raise KernelError(errno.EINVAL, "SETV after the handshake completed")
        if data[4:5] != b" " or data[7:8] != b" " or data[10:11] != b"\n":
            raise KernelError(errno.EINVAL, "SETV: bad separators")
        major = _strtol16(_field(data[5:7]))
        minor = _strtol16(_field(data[8:10]))
        if major is None or minor is None:
            raise KernelError(errno.EINVAL, "SETV: not a hex number")
        if not 1 <= major <= 255 or not 0 <= minor <= 255:
            raise KernelError(errno.ERANGE, "SETV: version out of range")
        if major != MAX_PROTO[0] or minor > MAX_PROTO[1]:
            raise KernelError(errno.EINVAL, f"SETV: {major}.{minor} is above the maximum 1.0")
        handle.proto = (major, minor)
        self._install(handle)

    def _install(self, handle: ControlOpen) -> None:
        """With both SETN and SETV given, make this open a control daemon (VALID)."""
        complete = True
        if handle.this_node < 0:
            complete = False
        elif self.this_node >= 0 and self.this_node != handle.this_node:
            raise KernelError(errno.EINVAL, f"node number {self.this_node} is already set")
        if not handle.proto[0]:
            complete = False
        elif self.live and self.running_proto != handle.proto:
            raise KernelError(errno.EINVAL, "a different locking protocol is running")
        if complete:
            self.this_node = handle.this_node
            self.running_proto = handle.proto
            self.opened += 1
            handle.state = Handshake.VALID

    def _down(self, handle: ControlOpen, data: bytes) -> NodeDown | None:
        if handle.state is not Handshake.VALID:
            raise KernelError(errno.EINVAL, "DOWN before the handshake completed")
        if data[4:5] != b" " or data[37:38] != b" " or data[46:47] != b"\n":
            raise KernelError(errno.EINVAL, "DOWN: bad separators")
        node = _node_number(data[38:46], "DOWN")
        uuid = _field(data[5:37])
        return NodeDown(uuid, node) if uuid in self.live else None

    # -- the filesystem side -----------------------------------------------------------------

    def attach(self, uuid: str, controld: bool) -> None:
        """A mount's live connection; in controld mode only while a daemon is open."""
        if controld and not self.opened:
            raise KernelError(errno.ESRCH, NO_DAEMON_MESSAGE)
        self.live.insert(0, uuid)

    def detach(self, uuid: str) -> None:
        if uuid in self.live:
            self.live.remove(uuid)

    def status(self) -> str:
        """fakecfs's view of the module's state (not a kernel file)."""
        proto = f"{self.running_proto[0]}.{self.running_proto[1]}" if self.running_proto[0] \
            else "none"
        return (f"control_daemons {self.opened}\nthis_node {self.this_node}\n"
                f"running_proto {proto}\nlive_connections {' '.join(self.live) or '-'}\n")


def _field(raw: bytes) -> str:
    """A fixed-width field as the kernel's string functions see it (up to a NUL)."""
    nul = raw.find(b"\0")
    return (raw if nul < 0 else raw[:nul]).decode("latin-1")
