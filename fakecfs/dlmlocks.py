"""The dlmfs shell: cluster-wide lock grants as OS file locks shared by the nodes of one host.

The emulated nodes of a host are separate fakecfs daemons. A lock's cluster grant is an
open-file-description lock (``F_OFD_SETLK``: a read lock for PR, a write lock for EX) on
``DLM_DIR/DOMAIN/LOCK``, a small file every node on the host reaches. The kernel releases
such a lock when the daemon that holds it exits, however it exits, so a node that dies
gives its locks back, as the DLM's recovery does for a dead node. The file also carries the
lock value block: byte 0 is 1 while an EX holder may be changing it (a holder that dies
leaves it set, which the next holder reads as "LVB invalid", as the DLM marks it), bytes
1-64 the last LVB an EX holder published on giving EX back.

What it cannot do: nodes on different hosts (the files are local), nodes whose daemons do
not see the same DLM_DIR (containers need it bind mounted, like the image), blocking ASTs
(a holder is never asked to give a lock back early: it keeps it until it closes the file),
and fairness (a waiting EX polls; a steady stream of PR holders can keep it waiting).
Waiting opens poll every few milliseconds in a trio task, so the FUSE daemon keeps serving.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
from collections.abc import Awaitable, Callable

import trio

from .dlmfs import LVB_LEN, Level, LockFile, Release, open_request
from .tree import KernelError

log = logging.getLogger("fakecfs.dlmfs")

POLL_MIN_S = 0.002
POLL_MAX_S = 0.05
_FLOCK = "hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len, l_pid (+ padding)
_LOCK_TYPE = {Level.PR: fcntl.F_RDLCK, Level.EX: fcntl.F_WRLCK, Level.NL: fcntl.F_UNLCK}


class ClusterLocks:
    """One node's view of the host-wide lock files: grant, give back, LVB in and out."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._fds: dict[tuple[str, str], int] = {}

    def _fd(self, domain: str, name: str) -> int:
        key = (domain, name)
        fd = self._fds.get(key)
        if fd is None:
            path = os.path.join(self.directory, domain)
            os.makedirs(path, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(path, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fds[key] = fd
        return fd

    def _setlk(self, fd: int, level: Level) -> bool:
        arg = struct.pack(_FLOCK, _LOCK_TYPE[level], os.SEEK_SET, 0, 0, 0)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, arg)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def try_grant(self, domain: str, name: str, level: Level) -> tuple[bool, bytes | None]:
        """Try to get ``level`` now: (False, None) if another node holds an incompatible
        level, else (True, the cluster's LVB, or None when a dead EX holder left it invalid)."""
        fd = self._fd(domain, name)
        if not self._setlk(fd, level):
            return False, None
        record = os.pread(fd, 1 + LVB_LEN, 0).ljust(1 + LVB_LEN, b"\0")
        valid = record[0] == 0
        if level == Level.EX:
            os.pwrite(fd, b"\1", 0)  # cleared when EX is given back cleanly
        return True, (record[1:] if valid else None)

    def give_back(self, domain: str, name: str, release: Release) -> None:
        fd = self._fd(domain, name)
        if release.lvb is not None:
            os.pwrite(fd, b"\0" + release.lvb, 0)
        self._setlk(fd, release.level)

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


class DlmfsShell:
    """Opens and closes of lock files, with the waits they need, for one emulated node."""

    def __init__(self, locks: ClusterLocks,
                 signalled: Callable[[int], Awaitable[None]]) -> None:
        self.locks = locks
        self._signalled = signalled
        self._busy: dict[int, trio.Lock] = {}  # per lock file: one cluster request at a time

    async def open(self, lock: LockFile, flags: int, pid: int) -> Level:
        """Take the lock an open with ``flags`` asks for; return the level it holds."""
        level, trylock = open_request(flags)
        res = lock.res
        if res.request(level, trylock) is None:  # the node's grant covers it: no waiting
            res.hold(level)
            return level
        # USER_LOCK_BUSY: a request that needs the cluster waits for the one in flight.
        busy = self._busy.setdefault(lock.ino, trio.Lock())
        async with busy:
            if res.unlinked:
                raise KernelError(errno.ENOENT)
            if res.request(level, trylock) is None:  # granted meanwhile by the one in flight
                res.hold(level)
                return level
            domain = lock.domain.name
            ok, lvb = self.locks.try_grant(domain, res.name, level)
            if not ok:
                if trylock:
                    raise KernelError(errno.ETXTBSY)
                lvb = await self._wait_grant(domain, res.name, level, pid)
            res.granted(level, lvb)
            res.hold(level)
            return level

    async def _wait_grant(self, domain: str, name: str, level: Level,
                          pid: int) -> bytes | None:
        got: list[bytes | None] = []

        async def poll() -> None:
            delay = POLL_MIN_S
            while True:
                ok, lvb = self.locks.try_grant(domain, name, level)
                if ok:
                    got.append(lvb)
                    return
                await trio.sleep(delay)
                delay = min(delay * 2, POLL_MAX_S)

        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await self._signalled(pid)
                nursery.cancel_scope.cancel()

            async def wait() -> None:
                await poll()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            nursery.start_soon(wait)
        if got:
            return got[0]
        # The opener has a signal the kernel's wait would end for (-ERESTARTSYS): nothing
        # was granted, so nothing can leak.
        log.info("dlmfs: open of %s/%s interrupted by a signal to pid %d", domain, name, pid)
        raise KernelError(errno.EINTR)

    def close(self, lock: LockFile, level: Level) -> None:
        release = lock.res.drop(level)
        if release is not None:
            self.locks.give_back(lock.domain.name, lock.res.name, release)

    def shutdown(self) -> None:
        self.locks.close()
