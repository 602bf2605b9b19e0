"""``ocfs2_dlmfs``, the kernel's file interface to the o2dlm, as a core (no I/O).

What userspace sees (the rules of the kernel's ``fs/ocfs2/dlmfs``, Linux 6.1):

- the root holds one directory per lock *domain*: ``mkdir`` joins the domain (EINVAL for a
  name of 64 bytes or more, or when the local node is not heartbeating: the o2cb stack
  refuses the connection), ``rmdir`` leaves it (ENOTEMPTY while lock files remain);
  regular files cannot be made in the root and directories cannot be made in a domain;
- a domain holds one regular file per *lock*: creating it makes the lock resource (EINVAL
  for a name of 32 bytes or more or one starting with ``$``, the DLM's reserved prefix),
  ``unlink`` destroys it (EBUSY while an open file holds it);
- ``open`` takes the lock: O_RDONLY asks for PR (protected read, shared), O_WRONLY or
  O_RDWR for EX (exclusive); with O_NONBLOCK it is a trylock that fails with ETXTBSY
  (the kernel's deliberately odd errno for "could not be granted now"); ``close`` drops it;
- the file is the 64-byte lock value block: ``read`` gives it (nothing when the DLM marked
  it invalid because an EX holder died), ``write`` stores up to 64 bytes (ENOSPC at offset
  64 and beyond; as in the kernel, the bytes land at the start of the LVB whatever the
  offset).

Locks are cached per node as the kernel's userdlm caches them: all opens of one lock on one
node share the node's cluster-level grant, counted as PR and EX holders. A second EX open
on the node that already holds EX is granted at once (the kernel does no local exclusion);
exclusion is between nodes. :class:`LockRes` decides, for each open and close, whether the
node must ask the cluster for a stronger level (:class:`Acquire`) or may give its level
back (:class:`Release`); the shell (:mod:`fakecfs.dlmlocks`) carries those out with OS
file locks shared by every node on the host.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from .tree import DirEntry, Entry, FileEntry, KernelError

DLMFS_MAGIC = 0x76A9F425  # what statfs reports for an ocfs2_dlmfs mount
LVB_LEN = 64  # DLM_LVB_LEN
GROUP_NAME_MAX = 64  # o2nm's limit on a domain (group) name, terminator included
LOCK_ID_MAX_LEN = 32  # USER_DLM_LOCK_ID_MAX_LEN, terminator included
CAPABILITIES = "bast stackglue"  # /sys/module/ocfs2_dlmfs/parameters/capabilities


class Level(IntEnum):
    """DLM lock modes dlmfs uses, ordered by strength (the DLM's own numbers)."""

    NL = 0  # nothing held
    PR = 3
    EX = 5


def compatible(a: Level, b: Level) -> bool:
    """May two nodes hold ``a`` and ``b`` at once? Only PR with PR (and anything with NL)."""
    return a == Level.NL or b == Level.NL or (a == Level.PR and b == Level.PR)


def open_request(flags: int) -> tuple[Level, bool]:
    """The level and trylock flag an ``open(2)`` on a lock file asks for."""
    level = Level.EX if flags & (os.O_WRONLY | os.O_RDWR) else Level.PR
    return level, bool(flags & os.O_NONBLOCK)


def check_domain_name(name: str) -> None:
    if len(os.fsencode(name)) >= GROUP_NAME_MAX:
        raise KernelError(errno.EINVAL, "invalid domain name for directory.")


def check_lock_name(name: str) -> None:
    if len(os.fsencode(name)) >= LOCK_ID_MAX_LEN or name.startswith("$"):
        raise KernelError(errno.EINVAL, f"invalid lock name, {name}")


# -- one lock resource on one node ---------------------------------------------------------


@dataclass(frozen=True)
class Acquire:
    """The node must get ``level`` from the cluster before the open can hold the lock."""

    level: Level
    trylock: bool


@dataclass(frozen=True)
class Release:
    """The node may keep only ``level`` now; ``lvb`` is published when coming down from EX."""

    level: Level
    lvb: bytes | None


@dataclass
class LockRes:
    """A lock as one node holds it: the cluster grant, local holders and the node's LVB copy."""

    name: str
    level: Level = Level.NL  # what the cluster has granted this node
    ex_holders: int = 0
    pr_holders: int = 0
    lvb: bytearray = field(default_factory=lambda: bytearray(LVB_LEN))
    lvb_valid: bool = True
    unlinked: bool = False

    @property
    def held(self) -> bool:
        return bool(self.ex_holders or self.pr_holders)

    def request(self, level: Level, trylock: bool) -> Acquire | None:
        """An open wants ``level``: None when the node's grant covers it, else what to ask."""
        if level <= self.level:
            return None
        return Acquire(level, trylock)

    def granted(self, level: Level, lvb: bytes | None) -> None:
        """The cluster granted ``level``; ``lvb`` is the cluster's copy (None: invalid)."""
        self.level = level
        if lvb is None:
            self.lvb_valid = False
        else:
            self.lvb[:] = lvb[:LVB_LEN].ljust(LVB_LEN, b"\0")
            self.lvb_valid = True

    def hold(self, level: Level) -> None:
        if level > self.level:
            raise AssertionError(f"hold {level.name} on {self.name} granted {self.level.name}")
        if level == Level.EX:
            self.ex_holders += 1
        else:
            self.pr_holders += 1

    def drop(self, level: Level) -> Release | None:
        """A file holding ``level`` was closed: what the node may give back, if anything.

        The kernel keeps its grant cached until another node asks (a blocking AST) and
        then converts down; with no cross-node callbacks here the node gives back at once
        what no local holder needs, which other nodes observe the same way.
        """
        if level == Level.EX:
            self.ex_holders -= 1
        else:
            self.pr_holders -= 1
        keep = Level.EX if self.ex_holders else Level.PR if self.pr_holders else Level.NL
        if keep >= self.level:
            return None
        lvb = bytes(self.lvb) if self.level == Level.EX else None
        self.level = keep
        return Release(keep, lvb)

    def read_lvb(self, offset: int, size: int) -> bytes:
        if not self.lvb_valid or offset >= LVB_LEN:
            return b""
        return bytes(self.lvb[offset: offset + size])

    def write_lvb(self, offset: int, data: bytes) -> int:
        if offset >= LVB_LEN:
            raise KernelError(errno.ENOSPC)
        count = min(len(data), LVB_LEN - offset)
        # user_dlm_write_lvb copies to the start of the LVB, whatever the file offset.
        self.lvb[:count] = data[:count]
        self.lvb_valid = True
        return count


# -- the tree -----------------------------------------------------------------------------


class LockFile(FileEntry):
    """A lock resource's file: size 64 (the LVB), mode as created."""

    def __init__(self, name: str, mode: int, domain: Domain) -> None:
        super().__init__(name=name, mode=stat.S_IFREG | (mode & 0o7777))
        self.parent = domain
        self.res = LockRes(name)

    @property
    def domain(self) -> Domain:
        assert isinstance(self.parent, Domain)
        return self.parent

    def size(self) -> int:
        return LVB_LEN


class Domain(DirEntry):
    """A lock domain: its lock files. mkdir inside it is refused (EPERM, no ->mkdir)."""

    def __init__(self, name: str, mode: int) -> None:
        super().__init__(name=name, mode=stat.S_IFDIR | (mode & 0o7777))
        self.locks: dict[str, LockFile] = {}

    def children(self) -> list[Entry]:
        return list(self.locks.values())

    def lookup(self, name: str) -> Entry | None:
        return self.locks.get(name)

    def create(self, name: str, mode: int) -> LockFile:
        if name in self.locks:
            raise KernelError(errno.EEXIST)
        check_lock_name(name)
        lock = LockFile(name, mode, self)
        self.locks[name] = lock
        return lock

    def unlink(self, name: str) -> None:
        lock = self.locks.get(name)
        if lock is None:
            raise KernelError(errno.ENOENT)
        if lock.res.held:
            raise KernelError(errno.EBUSY, f"unlink {name}, error {-errno.EBUSY} from destroy")
        del self.locks[name]
        lock.res.unlinked = True
        lock.dead = True


class DlmfsRoot(DirEntry):
    """The dlmfs root: domains only. ``can_join`` says whether the local node heartbeats."""

    def __init__(self, name: str, can_join: Callable[[], bool]) -> None:
        super().__init__(name=name, mode=stat.S_IFDIR | 0o755)
        self.domains: dict[str, Domain] = {}
        self._can_join = can_join

    def children(self) -> list[Entry]:
        return list(self.domains.values())

    def lookup(self, name: str) -> Entry | None:
        return self.domains.get(name)

    def mkdir(self, name: str, mode: int = 0o755) -> Domain:
        if name in self.domains:
            raise KernelError(errno.EEXIST)
        check_domain_name(name)
        if not self._can_join():
            # o2cb_cluster_connect: the local node must be heartbeating somewhere.
            raise KernelError(errno.EINVAL, f'Error -22 could not register domain "{name}"')
        domain = Domain(name, mode)
        domain.parent = self
        self.domains[name] = domain
        return domain

    def rmdir(self, name: str) -> object:
        domain = self.domains.get(name)
        if domain is None:
            raise KernelError(errno.ENOENT)
        if domain.locks:
            raise KernelError(errno.ENOTEMPTY)
        del self.domains[name]
        domain.dead = True
        return None
