"""A private IPC namespace that outlives single commands (semaphores are per namespace).

Tests that take heartbeat references run their commands inside one, so the host's
semaphore sets are never touched and every set the test makes is gone with the namespace.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


class IpcNamespace:
    def __init__(self, holder: subprocess.Popen[bytes]) -> None:
        self.holder = holder

    def run(self, *cmd: str, env: dict[str, str] | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        full = ["nsenter", "--ipc", "--target", str(self.holder.pid), *cmd]
        return subprocess.run(full, env=env, capture_output=True, text=True, check=check,
                              timeout=120)

    def semaphore_sets(self) -> list[str]:
        """The data lines of /proc/sysvipc/sem inside the namespace."""
        out = self.run("cat", "/proc/sysvipc/sem", check=True).stdout.splitlines()
        return [line for line in out[1:] if line.strip()]


def wait_for_own_namespace(pid: int, timeout: float = 10.0, kind: str = "ipc") -> None:
    """Until ``pid`` (an ``unshare --ipc``, or ``--net`` for ``kind="net"``, just started)
    is in a new namespace of that kind.

    Until unshare(2) has run, nsenter --target would enter the host's namespace.
    """
    ours = os.readlink(f"/proc/self/ns/{kind}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.readlink(f"/proc/{pid}/ns/{kind}") != ours:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} never left our {kind} namespace")
        time.sleep(0.005)


@contextmanager
def ipc_namespace() -> Iterator[IpcNamespace]:
    if os.geteuid() != 0:
        pytest.skip("an IPC namespace needs root (or a user namespace)")
    holder = subprocess.Popen(["unshare", "--ipc", "sleep", "infinity"])
    try:
        wait_for_own_namespace(holder.pid)
        yield IpcNamespace(holder)
    finally:
        holder.kill()
        holder.wait()
