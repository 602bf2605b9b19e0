"""The emulated sysroot as a tree of entries: directories and files with inode numbers.

Everything fakecfs presents — configfs items and attributes, sysfs/proc/debugfs files —
is an :class:`Entry`. The FUSE shell only knows this protocol; the kernel rules live in
the subclasses (configfs.py, sysfiles.py). No I/O here.
"""

from __future__ import annotations

import errno
import itertools
import stat
from dataclasses import dataclass, field

ROOT_INO = 1
_next_ino = itertools.count(ROOT_INO + 1)


class KernelError(Exception):
    """An operation failed with ``errno``; the FUSE shell turns it into FUSEError(errno)."""

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(err, message or errno.errorcode.get(err, str(err)))
        self.errno = err
        self.message = message


@dataclass
class Times:
    """Timestamps in nanoseconds; set from the shell's clock at creation."""

    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0


@dataclass(eq=False)
class Entry:
    """One inode of the emulated sysroot."""

    name: str
    mode: int
    parent: DirEntry | None = None
    uid: int = 0
    gid: int = 0
    times: Times = field(default_factory=Times)
    ino: int = field(default_factory=lambda: next(_next_ino))
    dead: bool = False

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def size(self) -> int:
        return 0

    def nlink(self) -> int:
        return 1

    def path(self) -> str:
        parts = []
        node: Entry | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/" + "/".join(reversed(parts))


class DirEntry(Entry):
    """A directory. Subclasses decide what mkdir/rmdir mean; the default refuses."""

    def children(self) -> list[Entry]:
        raise NotImplementedError

    def lookup(self, name: str) -> Entry | None:
        for child in self.children():
            if child.name == name:
                return child
        return None

    def mkdir(self, name: str) -> Entry:
        raise KernelError(errno.EPERM, "mkdir not allowed here")

    def rmdir(self, name: str) -> object:
        """Remove a child directory; may return an effect for the shell to carry out."""
        child = self.lookup(name)
        if child is None:
            raise KernelError(errno.ENOENT)
        if not child.is_dir:
            raise KernelError(errno.ENOTDIR)
        raise KernelError(errno.EPERM, "rmdir not allowed here")

    def nlink(self) -> int:
        return 2 + sum(1 for c in self.children() if c.is_dir)


class FileEntry(Entry):
    """A file whose contents are computed (``show``) and whose writes are stores."""

    def check_open(self, read: bool, write: bool) -> None:
        """Raise EACCES the way the kernel's open does for this kind of file."""

    def show(self) -> bytes:
        raise KernelError(errno.EACCES)

    def store(self, data: bytes) -> object:
        """Apply one write(2); returns the byte count, or an effect for the shell."""
        raise KernelError(errno.EACCES)


class FileHandle:
    """One open of a :class:`HandleFile`: state that lives from open(2) to close(2)."""

    def read(self, offset: int, size: int) -> bytes:
        raise KernelError(errno.EINVAL)

    def write(self, data: bytes) -> int:
        raise KernelError(errno.EINVAL)

    def release(self) -> None:
        """The last close of this open file."""


class HandleFile(FileEntry):
    """A file whose reads and writes depend on the open (a misc device's private data)."""

    def open_handle(self) -> FileHandle:
        raise NotImplementedError


class StaticDir(DirEntry):
    """A directory whose children are fixed by the kernel (sys/, sys/fs/, ...)."""

    def __init__(self, name: str, parent: DirEntry | None = None) -> None:
        super().__init__(name=name, mode=stat.S_IFDIR | 0o755, parent=parent)
        self._children: dict[str, Entry] = {}

    def add(self, entry: Entry) -> Entry:
        entry.parent = self
        self._children[entry.name] = entry
        return entry

    def remove(self, name: str) -> None:
        entry = self._children.pop(name, None)
        if entry is not None:
            entry.dead = True

    def subdir(self, name: str) -> StaticDir:
        existing = self._children.get(name)
        if isinstance(existing, StaticDir):
            return existing
        return self.add(StaticDir(name))  # type: ignore[return-value]

    def children(self) -> list[Entry]:
        return list(self._children.values())

    def lookup(self, name: str) -> Entry | None:
        return self._children.get(name)


def walk(root: DirEntry, path: str) -> Entry:
    """Resolve a slash-separated path below ``root`` (for tests and the shell)."""
    node: Entry = root
    for part in [p for p in path.split("/") if p]:
        if not isinstance(node, DirEntry):
            raise KernelError(errno.ENOTDIR, path)
        child = node.lookup(part)
        if child is None:
            raise KernelError(errno.ENOENT, path)
        node = child
    return node
