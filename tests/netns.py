"""Network namespaces for tests, and code run inside them.

``@ocfs2_controld_sock`` and corosync's IPC sockets are abstract, so they exist once per
network namespace: every daemon a test starts, and every client a test runs, lives in a
namespace of its own (held open by an ``unshare --net sleep infinity`` holder), never in
the host's, where other test runs or a real daemon may have theirs. Processes enter it
with ``NetNs.cmd``; the test process runs code there with ``NetNs.call``, on a thread that
has ``setns``-ed into it (``setns`` acts on the calling thread, and a socket stays in the
namespace it was made in, whichever thread uses it later).
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest

from tests.ipcns import wait_for_own_namespace

CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


class NetNs:
    def __init__(self, holder: subprocess.Popen[bytes], mount: bool = False,
                 host: bool = False) -> None:
        self.holder = holder
        self.path = f"/proc/{holder.pid}/ns/net"
        self.mount = mount
        self.host = host

    def cmd(self, *argv: str) -> list[str]:
        """``argv`` run inside this namespace (and the holder's mount, IPC and UTS
        namespaces if it has its own)."""
        pid = self.holder.pid
        extra = [f"--mount=/proc/{pid}/ns/mnt"] if self.mount else []
        if self.host:
            extra += [f"--ipc=/proc/{pid}/ns/ipc", f"--uts=/proc/{pid}/ns/uts"]
        return ["nsenter", f"--net={self.path}", *extra, "--", *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*argv), capture_output=True, text=True, check=check,
                              timeout=60)

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a thread inside this namespace; its result, or its exception."""
        out: list[T] = []
        error: list[BaseException] = []

        def body() -> None:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            target = os.open(self.path, os.O_RDONLY)
            try:
                if _libc.setns(target, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")
                try:
                    out.append(fn())
                finally:
                    _libc.setns(own, CLONE_NEWNET)
            except BaseException as e:  # handed to the caller's thread
                error.append(e)
            finally:
                os.close(own)
                os.close(target)

        t = threading.Thread(target=body, name="netns")
        t.start()
        t.join()
        if error:
            raise error[0]
        return out[0]

    def socket(self, family: int = socket.AF_UNIX,
               kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket created inside this namespace."""
        return self.call(lambda: socket.socket(family, kind))


def wait_unshared(pid: int) -> None:
    wait_for_own_namespace(pid, kind="net")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces and setns need root")


def in_private_netns(fn: Callable[[], T]) -> T:
    """``fn()`` inside a network namespace made for it alone, gone afterwards."""
    with network_namespace() as ns:
        return ns.call(fn)


@contextmanager
def network_namespace(mount: bool = False, host: bool = False) -> Iterator[NetNs]:
    """A new network namespace; with ``mount``, a private mount namespace too, whose
    ``/run`` and ``/dev/shm`` are fresh tmpfs (gone with the namespace: corosync's libqb
    leaves its IPC files in ``/dev/shm`` when killed); with ``host``, IPC and UTS
    namespaces of its own as well (an emulated host's semaphores and hostname)."""
    require_root()
    extra = ["--mount", "--propagation", "private"] if mount else []
    if host:
        extra += ["--ipc", "--uts"]
    holder = subprocess.Popen(["unshare", "--net", *extra, "sleep", "infinity"])
    try:
        wait_unshared(holder.pid)
        ns = NetNs(holder, mount, host)
        if mount:
            ns.run("sh", "-c", "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /dev/shm")
        ns.run("ip", "link", "set", "lo", "up")
        yield ns
    finally:
        holder.kill()
        holder.wait()
