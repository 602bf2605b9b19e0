"""The pyfuse3 ``Operations`` over a :class:`~fakecfs.kernel.Kernel` (the FUSE shell).

Every reply is uncached (entry and attribute timeouts 0, direct I/O), so each read shows
the kernel's current state and each write(2) reaches us whole as one store. Errors leave
the handlers only as ``FUSEError(errno)``; anything else is a bug: it is logged and
answered with EIO, and the daemon keeps serving.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pyfuse3

from .dlmfs import Domain, Level, LockFile
from .kernel import Kernel
from .tree import Entry, FileEntry, FileHandle, HandleFile, KernelError

log = logging.getLogger("fakecfs.fuse")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
CONFIGFS_MAGIC = 0x62656570


def _errors(fn: F) -> F:
    """Map KernelError to FUSEError; log and answer EIO for anything unexpected."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except KernelError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception:
            log.exception("bug in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


@dataclass
class OpenFile:
    """configfs's per-open buffer: filled by show() on first read or after a write."""

    entry: FileEntry
    pid: int
    buffer: bytes | None = None
    level: Level | None = None  # the dlmfs lock this open holds (lock files only)
    handle: FileHandle | None = None  # a misc device's per-open state (HandleFile)


class KernelOperations(pyfuse3.Operations):
    """pyfuse3 handlers: thin translations onto the kernel's entries."""

    enable_writeback_cache = False

    def __init__(self, kernel: Kernel) -> None:
        super().__init__()
        self.kernel = kernel
        self._files: dict[int, OpenFile] = {}
        self._next_fh = 1

    # -- attributes -------------------------------------------------------------------

    def _attr(self, entry: Entry) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = entry.ino
        a.st_mode = entry.mode
        a.st_nlink = entry.nlink()
        a.st_uid = entry.uid
        a.st_gid = entry.gid
        a.st_size = entry.size()
        a.st_blksize = 4096
        a.st_blocks = 0
        a.st_atime_ns = entry.times.atime_ns
        a.st_mtime_ns = entry.times.mtime_ns
        a.st_ctime_ns = entry.times.ctime_ns
        a.entry_timeout = 0
        a.attr_timeout = 0
        a.generation = 0
        return a

    @_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        parent = self.kernel.dir(parent_inode)
        entry = parent.lookup(os.fsdecode(name))
        if entry is None:
            raise KernelError(errno.ENOENT)
        return self._attr(self.kernel.register(entry))

    @_errors
    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        return self._attr(self.kernel.entry(inode))

    @_errors
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Any:
        entry = self.kernel.entry(inode)
        # configfs_setattr: mode, owner and times persist; size changes (O_TRUNC) are no-ops.
        if fields.update_mode:
            entry.mode = stat.S_IFMT(entry.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            entry.uid = attr.st_uid
        if fields.update_gid:
            entry.gid = attr.st_gid
        if fields.update_atime:
            entry.times.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            entry.times.mtime_ns = attr.st_mtime_ns
        return self._attr(entry)

    def forget(self, inode_list: Any) -> None:  # type: ignore[override]
        for inode, _ in inode_list:
            self.kernel.forget(inode)

    # -- directories ------------------------------------------------------------------

    @_errors
    async def opendir(self, inode: int, ctx: Any) -> int:
        self.kernel.dir(inode)
        return inode

    @_errors
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self.kernel.dir(fh).children()
        for index in range(start_id, len(entries)):
            entry = self.kernel.register(entries[index])
            if not pyfuse3.readdir_reply(
                token, os.fsencode(entry.name), self._attr(entry), index + 1
            ):
                break

    async def releasedir(self, fh: int) -> None:
        return None

    @_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
        entry = self.kernel.mkdir(self.kernel.dir(parent_inode), os.fsdecode(name))
        return self._attr(entry)

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.kernel.rmdir(self.kernel.dir(parent_inode), os.fsdecode(name))

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        parent = self.kernel.dir(parent_inode)
        if isinstance(parent, Domain):  # dlmfs: destroy the lock resource
            try:
                parent.unlink(os.fsdecode(name))
            except KernelError as exc:
                if exc.errno == errno.EBUSY:
                    log.error("(dlmfs) %s", exc.message)
                raise
            return
        entry = parent.lookup(os.fsdecode(name))
        if entry is None:
            raise KernelError(errno.ENOENT)
        raise KernelError(errno.EISDIR if entry.is_dir else errno.EPERM)

    @_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any) -> Any:
        parent = self.kernel.dir(parent_inode)
        if not isinstance(parent, Domain):
            raise KernelError(errno.EACCES)  # configfs (and dlmfs's root) have no ->create
        # dlmfs: make the lock resource, then open (lock) it; a refused lock leaves the
        # file made, as the kernel's create-then-open does.
        try:
            lock = parent.create(os.fsdecode(name), mode)
        except KernelError as exc:
            if exc.message:
                log.error("(dlmfs) %s", exc.message)  # the kernel's mlog(ML_ERROR, ...)
            raise
        self.kernel.register(lock)
        info = await self._open_lock(lock, flags, ctx.pid)
        return info, self._attr(lock)

    @_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> Any:
        # A regular file goes through vfs_create (configfs has no ->create: EACCES, as the
        # real kernel answers); other types through vfs_mknod (no ->mknod: EPERM).
        if stat.S_IFMT(mode) in (0, stat.S_IFREG):
            raise KernelError(errno.EACCES)
        raise KernelError(errno.EPERM)

    @_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        raise KernelError(errno.EPERM)

    @_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        raise KernelError(errno.EPERM)

    @_errors
    async def rename(self, p_old: int, n_old: bytes, p_new: int, n_new: bytes, flags: int,
                     ctx: Any) -> None:
        raise KernelError(errno.EPERM)

    # -- files ------------------------------------------------------------------------

    @_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        entry = self.kernel.entry(inode)
        if isinstance(entry, LockFile):
            return await self._open_lock(entry, flags, ctx.pid)
        if not isinstance(entry, FileEntry):
            raise KernelError(errno.EISDIR)
        accmode = flags & os.O_ACCMODE
        entry.check_open(read=accmode != os.O_WRONLY, write=accmode != os.O_RDONLY)
        fh = self._new_fh()
        # The writer's pid: a dev store resolves the fd number in this process.
        handle = entry.open_handle() if isinstance(entry, HandleFile) else None
        self._files[fh] = OpenFile(entry, ctx.pid, handle=handle)
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    async def _open_lock(self, lock: LockFile, flags: int, pid: int) -> Any:
        """dlmfs open: take the lock (may wait, in this task; the daemon keeps serving)."""
        level = await self.kernel.dlm.open(lock, flags, pid)
        fh = self._new_fh()
        self._files[fh] = OpenFile(lock, pid, level=level)
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        f = self._files[fh]
        if isinstance(f.entry, LockFile):
            return f.entry.res.read_lvb(off, size)
        if f.entry.dead:
            raise KernelError(errno.ENOENT)
        if f.handle is not None:
            return f.handle.read(off, size)
        if f.buffer is None:
            f.buffer = f.entry.show()
        return f.buffer[off : off + size]

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        f = self._files[fh]
        if isinstance(f.entry, LockFile):
            return f.entry.res.write_lvb(off, bytes(buf))
        if f.entry.dead:
            raise KernelError(errno.ENOENT)
        if f.handle is not None:
            return self.kernel.write_handle(f.entry, f.handle, bytes(buf))
        # The offset is ignored: each write presents a whole value (configfs semantics).
        written = await self.kernel.write(f.entry, bytes(buf), f.pid)
        f.buffer = None
        return written

    async def flush(self, fh: int) -> None:
        return None

    async def release(self, fh: int) -> None:
        f = self._files.pop(fh, None)
        if f is not None and isinstance(f.entry, LockFile) and f.level is not None:
            self.kernel.dlm.close(f.entry, f.level)
        if f is not None and f.handle is not None:
            try:
                f.handle.release()
            except Exception:
                log.exception("bug in release of %s", f.entry.path())

    async def fsync(self, fh: int, datasync: bool) -> None:
        return None

    @_errors
    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        self.kernel.entry(inode)
        return True

    async def statfs(self, ctx: Any) -> Any:
        # simple_statfs; the kernel's FUSE code replaces f_type with FUSE's own magic.
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s
