"""Network namespaces for user-stack tests, and sockets opened inside them.

``@ocfs2_controld_sock`` and corosync's IPC sockets are abstract, so they exist once per
network namespace: every daemon a test starts lives in a namespace of its own (held open by
an ``unshare --net sleep infinity`` holder), never in the host's, where other test runs may
have theirs. The test process reaches a daemon by opening its socket from a thread that
has ``setns``-ed into the namespace (a socket stays in the namespace it was made in).
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.ipcns import wait_for_own_namespace

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetNs:
    def __init__(self, holder: subprocess.Popen[bytes], mount: bool = False) -> None:
        self.holder = holder
        self.path = f"/proc/{holder.pid}/ns/net"
        self.mount = mount

    def cmd(self, *argv: str) -> list[str]:
        """``argv`` run inside this namespace (and the holder's mount namespace if it has
        one of its own)."""
        extra = [f"--mount=/proc/{self.holder.pid}/ns/mnt"] if self.mount else []
        return ["nsenter", f"--net={self.path}", *extra, "--", *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*argv), capture_output=True, text=True, check=check,
                              timeout=60)

    def socket(self, family: int = socket.AF_UNIX,
               kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket created inside this namespace."""
        result: list[socket.socket | BaseException] = []

        def make() -> None:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            target = os.open(self.path, os.O_RDONLY)
            try:
                if _libc.setns(target, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
                try:
                    result.append(socket.socket(family, kind))
                finally:
                    _libc.setns(own, CLONE_NEWNET)
            except BaseException as e:
                result.append(e)
            finally:
                os.close(own)
                os.close(target)

        t = threading.Thread(target=make)
        t.start()
        t.join()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]


def wait_unshared(pid: int) -> None:
    wait_for_own_namespace(pid, kind="net")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces and setns need root")


@contextmanager
def network_namespace(mount: bool = False) -> Iterator[NetNs]:
    """A new network namespace; with ``mount``, a private mount namespace too, whose
    ``/run`` and ``/dev/shm`` are fresh tmpfs (gone with the namespace: corosync's libqb
    leaves its IPC files in ``/dev/shm`` when killed)."""
    require_root()
    extra = ["--mount", "--propagation", "private"] if mount else []
    holder = subprocess.Popen(["unshare", "--net", *extra, "sleep", "infinity"])
    try:
        wait_unshared(holder.pid)
        ns = NetNs(holder, mount)
        if mount:
            ns.run("sh", "-c", "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /dev/shm")
        ns.run("ip", "link", "set", "lo", "up")
        yield ns
    finally:
        holder.kill()
        holder.wait()
