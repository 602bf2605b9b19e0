"""libo2cb's user-stack operations: group join and leave through ocfs2_controld.

On a user cluster stack (any ``cluster_stack`` label but ``o2cb``: pcmk, cman) heartbeat
and membership belong to the cluster stack; what ``ocfs2_hb_ctl -S/-K`` and mount.ocfs2 do
is register a *service* (a mount, a tool) for the volume with ``ocfs2_controld``, over the
abstract socket ``@ocfs2_controld_sock`` in 256-byte records (:mod:`hbctl.controld.proto`).
This module does what Debian's libo2cb (built with the fs/dlm and cmap options) does, in
the same order and with the same use of connections:

* :func:`begin_group_join`: for ``pcmk`` only, first the DLM probe (``/proc/misc`` names
  ``dlm-control``; ``/dev/misc/dlm-control`` with that minor, polled 10 x 1 s; a 12-byte
  version read, 5.0.0 if the read fails). If ``/sys/fs/ocfs2/dlm_recover_callback_support``
  is readable and not empty the kernel needs no controld: done (DLM major < 6 is
  INTERNAL_FAILURE). Otherwise connect, send ``MOUNT ocfs2 UUID CLUSTER DEVICE SERVICE``
  and read one record: ``STATUS 0`` or ``STATUS 114`` (already joined) keep the connection
  open for the result; another status is CONFIGURATION_ERROR;
* :func:`complete_group_join`: ``MRESULT ocfs2 UUID RESULT SERVICE`` on the *same*
  connection, then close it. A non-zero answer is ignored, as in libo2cb;
* :func:`group_leave`: a new connection, ``UNMOUNT ocfs2 UUID SERVICE``, one answer;
* with the recover-callback file, complete and leave do nothing on *any* user stack (so a
  cman volume sends MOUNT and never MRESULT or UNMOUNT: libo2cb's asymmetry, kept so that
  C and Python clients leave one daemon in the same state).

Errors are libo2cb's codes (hbctl.errors): connect EACCES/EPERM -> PERMISSION_DENIED, any
other connect failure (no daemon) -> SERVICE_UNAVAILABLE, send/receive failures, an EOF and
malformed records -> IO, a reply that is not STATUS -> INTERNAL_FAILURE. There are no
timeouts: a daemon that never answers blocks the caller, as it blocks the C tools.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from hbctl.controld import proto
from hbctl.errors import Code, O2cbError
from hbctl.sysroot import Sysroot

PCMK = "pcmk"
RECOVER_CALLBACK_FILE = "sys/fs/ocfs2/dlm_recover_callback_support"
PROC_MISC = "proc/misc"
DLM_CONTROL = "dev/misc/dlm-control"
DLM_CONTROL_NAME = "dlm-control"
DLM_PROBE_TRIES = 10  # libdlm: stat the device, sleep(1), ten times
FALLBACK_DLM_VERSION = (5, 0, 0)  # what libdlm assumes when the version read fails
RECOVER_CALLBACK_MIN_MAJOR = 6


# -- pure helpers ---------------------------------------------------------------------------


def misc_minor(proc_misc: str, name: str) -> int | None:
    """The minor of ``name`` in ``/proc/misc`` ("%d %s" per line), or None."""
    for line in proc_misc.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1] == name:
            try:
                return int(fields[0])
            except ValueError:
                return None  # fscanf stops at the first line it cannot match
    return None


def join_reply(msg: proto.Message) -> None:
    """The answer to MOUNT: return to keep the connection, raise O2cbError otherwise."""
    if msg.verb != proto.STATUS:
        raise O2cbError(Code.INTERNAL_FAILURE, f"unexpected {msg.verb} from ocfs2_controld")
    err, text = _status(msg)
    if err not in (0, proto.EALREADY):
        raise O2cbError(Code.CONFIGURATION_ERROR, f"ocfs2_controld: {err} {text}")


def leave_reply(msg: proto.Message) -> None:
    """The answer to UNMOUNT: STATUS 0, else an O2cbError."""
    if msg.verb != proto.STATUS:
        raise O2cbError(Code.INTERNAL_FAILURE, f"unexpected {msg.verb} from ocfs2_controld")
    err, text = _status(msg)
    if err:
        raise O2cbError(Code.CONFIGURATION_ERROR, f"ocfs2_controld: {err} {text}")


def result_reply(msg: proto.Message) -> None:
    """The answer to MRESULT: only its form matters; a non-zero status is ignored."""
    if msg.verb != proto.STATUS:
        raise O2cbError(Code.INTERNAL_FAILURE, f"unexpected {msg.verb} from ocfs2_controld")
    _status(msg)


def _status(msg: proto.Message) -> tuple[int, str]:
    try:
        return proto.parse_status(msg)
    except proto.ProtocolError as e:
        raise O2cbError(Code.IO, f"bad STATUS from ocfs2_controld: {e}") from e


# -- the kernel side: the DLM probe and the recover-callback gate ---------------------------


def recover_callbacks(sysroot: Sysroot) -> bool:
    """Whether the kernel drives recovery itself (the file is readable and not empty)."""
    try:
        with open(sysroot.path(RECOVER_CALLBACK_FILE), "rb") as f:
            return bool(f.readline(2))  # fgets(buf, 3): at most two characters
    except OSError:
        return False


def dlm_kernel_version(sysroot: Sysroot,
                       sleep: Callable[[float], None] = time.sleep) -> tuple[int, int, int]:
    """libdlm's ``dlm_kernel_version``: SERVICE_UNAVAILABLE when fs/dlm is not there."""
    try:
        with open(sysroot.path(PROC_MISC), encoding="latin-1") as f:
            minor = misc_minor(f.read(), DLM_CONTROL_NAME)
    except OSError:
        minor = None
    if minor is None:
        raise O2cbError(Code.SERVICE_UNAVAILABLE, f"no {DLM_CONTROL_NAME} in /proc/misc "
                        "(is fs/dlm loaded?)")
    device = sysroot.path(DLM_CONTROL)
    for _ in range(DLM_PROBE_TRIES):
        try:
            if os.minor(os.stat(device).st_rdev) == minor:
                break
        except OSError:
            pass
        sleep(1)
    else:
        raise O2cbError(Code.SERVICE_UNAVAILABLE, f"{device}: no device with minor {minor}")
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise O2cbError(Code.SERVICE_UNAVAILABLE, f"{device}: {e.strerror}") from e
    try:
        data = os.read(fd, 12)
    except OSError:
        return FALLBACK_DLM_VERSION
    finally:
        os.close(fd)
    if len(data) != 12:
        return FALLBACK_DLM_VERSION
    major, minor_v, patch = struct.unpack("=3I", data)
    return major, minor_v, patch


# -- the client connection -------------------------------------------------------------------


def connect() -> socket.socket:
    """Connect to ``@ocfs2_controld_sock`` in this network namespace."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(proto.SOCKET_ADDRESS)
    except OSError as e:
        sock.close()
        code = (Code.PERMISSION_DENIED if e.errno in (errno.EACCES, errno.EPERM)
                else Code.SERVICE_UNAVAILABLE)
        raise O2cbError(code, f"connect @{proto.SOCKET_NAME}: {e.strerror} "
                        "(is ocfs2_controld running in this network namespace?)") from e
    return sock


def send(sock: socket.socket, record: Callable[[], bytes]) -> None:
    """Build and send one record (a record that cannot be built is an I/O error, as E2BIG
    is in libo2cb)."""
    try:
        data = record()
    except proto.ProtocolError as e:
        raise O2cbError(Code.IO, f"cannot send to ocfs2_controld: {e}") from e
    try:
        sock.sendall(data)
    except OSError as e:
        raise O2cbError(Code.IO, f"send to ocfs2_controld: {e.strerror}") from e


def receive(sock: socket.socket) -> proto.Message:
    """Read exactly one record; EOF, a short record or a malformed one are I/O errors."""
    data = b""
    while len(data) < proto.MAXLINE:
        try:
            chunk = sock.recv(proto.MAXLINE - len(data))
        except OSError as e:
            raise O2cbError(Code.IO, f"receive from ocfs2_controld: {e.strerror}") from e
        if not chunk:
            raise O2cbError(Code.IO, "ocfs2_controld closed the connection")
        data += chunk
    try:
        return proto.decode(data)
    except proto.ProtocolError as e:
        raise O2cbError(Code.IO, f"malformed record from ocfs2_controld: {e}") from e


# -- the operations ---------------------------------------------------------------------------


@dataclass
class Join:
    """A join in progress: the connection MOUNT was sent on (None: no daemon involved)."""

    uuid: str
    service: str
    sock: socket.socket | None


def begin_group_join(sysroot: Sysroot, stack: str, uuid: str, cluster: str, device: str,
                     service: str) -> Join:
    """``user_begin_group_join``: the DLM gate (pcmk), then MOUNT."""
    if stack == PCMK:
        major = dlm_kernel_version(sysroot)[0]
        if recover_callbacks(sysroot):
            if major < RECOVER_CALLBACK_MIN_MAJOR:
                raise O2cbError(Code.INTERNAL_FAILURE, f"fs/dlm device version {major} < 6")
            return Join(uuid, service, None)
    sock = connect()
    try:
        send(sock, lambda: proto.mount(uuid, cluster, device, service))
        join_reply(receive(sock))
    except BaseException:
        sock.close()
        raise
    return Join(uuid, service, sock)


def complete_group_join(sysroot: Sysroot, join: Join, result: int) -> None:
    """``user_complete_group_join``: MRESULT on the join's connection, then close it."""
    sock, join.sock = join.sock, None
    try:
        if recover_callbacks(sysroot):
            return
        if sock is None:
            raise O2cbError(Code.SERVICE_UNAVAILABLE, "no join in progress")
        send(sock, lambda: proto.mresult(join.uuid, result, join.service))
        result_reply(receive(sock))
    finally:
        if sock is not None:
            sock.close()


def group_leave(sysroot: Sysroot, uuid: str, service: str) -> None:
    """``user_group_leave``: UNMOUNT on a connection of its own."""
    if recover_callbacks(sysroot):
        return
    sock = connect()
    try:
        send(sock, lambda: proto.unmount(uuid, service))
        leave_reply(receive(sock))
    finally:
        sock.close()


def start(sysroot: Sysroot, stack: str, uuid: str, cluster: str, device: str,
          service: str) -> None:
    """``ocfs2_hb_ctl -S`` on a user stack: join, and report success on the same connection."""
    join = begin_group_join(sysroot, stack, uuid, cluster, device, service)
    complete_group_join(sysroot, join, 0)
