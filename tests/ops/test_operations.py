"""The pyfuse3 Operations called directly, without a mount (S3QL's middle test layer).

Fast checks of the FUSE adapter's own rules: errno mapping, per-open read buffers, uncached
attributes, setattr persistence, readdir order, and that a bug in a handler is answered
with EIO instead of killing the daemon.
"""

from __future__ import annotations

import errno
import os
import stat
from types import SimpleNamespace
from typing import Any

import pyfuse3
import pytest

from fakecfs.fuse import KernelOperations
from fakecfs.kernel import Kernel, writer_interrupted
from fakecfs.tree import ROOT_INO, FileEntry

CTX = SimpleNamespace(pid=os.getpid(), uid=0, gid=0, umask=0o022)


async def walk(ops: KernelOperations, path: str) -> Any:
    ino = ROOT_INO
    attr = None
    for part in path.strip("/").split("/"):
        attr = await ops.lookup(ino, part.encode(), CTX)
        ino = attr.st_ino
    return attr


async def errno_of(coro: Any) -> int:
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await coro
    return exc.value.errno


@pytest.fixture
def ops() -> KernelOperations:
    return KernelOperations(Kernel())


async def mkdir(ops: KernelOperations, path: str) -> Any:
    """mkdir -p below sys/kernel/config/cluster."""
    base = "sys/kernel/config/cluster"
    attr = await walk(ops, base)
    for part in path[len(base) + 1:].split("/"):
        try:
            attr = await ops.lookup(attr.st_ino, part.encode(), CTX)
        except pyfuse3.FUSEError:
            attr = await ops.mkdir(attr.st_ino, part.encode(), 0o700, CTX)
    return attr


async def test_attributes_are_uncached_with_configfs_sizes(ops: KernelOperations) -> None:
    d = await mkdir(ops, "sys/kernel/config/cluster/c1")
    assert stat.S_IMODE(d.st_mode) == 0o755  # the mkdir mode is ignored
    a = await walk(ops, "sys/kernel/config/cluster/c1/idle_timeout_ms")
    assert (a.st_size, stat.S_IMODE(a.st_mode), a.attr_timeout, a.entry_timeout) == (
        4096, 0o644, 0, 0)


async def test_read_buffer_is_filled_once_per_open_and_refreshed_by_a_write(
        ops: KernelOperations) -> None:
    await mkdir(ops, "sys/kernel/config/cluster/c1")
    attr = await walk(ops, "sys/kernel/config/cluster/c1/reconnect_delay_ms")
    reader = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
    writer = await ops.open(attr.st_ino, os.O_RDWR, CTX)
    assert reader.direct_io
    assert await ops.read(reader.fh, 0, 4096) == b"2000\n"
    assert await ops.write(writer.fh, 0, b"5") == 1
    # configfs keeps the first show() for the life of the open file...
    assert await ops.read(reader.fh, 0, 4096) == b"2000\n"
    # ...and refills after a write on the same handle; the offset does not shift the value.
    assert await ops.write(writer.fh, 100, b"7") == 1
    assert await ops.read(writer.fh, 0, 4096) == b"7\n"


async def test_store_sees_at_most_4095_bytes(ops: KernelOperations) -> None:
    await mkdir(ops, "sys/kernel/config/cluster/c1")
    attr = await walk(ops, "sys/kernel/config/cluster/c1/reconnect_delay_ms")
    fh = (await ops.open(attr.st_ino, os.O_WRONLY, CTX)).fh
    assert await ops.write(fh, 0, b"9" + b"\0" * 5000) == 4095  # a short write, as configfs


async def test_open_rules(ops: KernelOperations) -> None:
    await mkdir(ops, "sys/kernel/config/cluster/c1/heartbeat/R1")
    pid = await walk(ops, "sys/kernel/config/cluster/c1/heartbeat/R1/pid")
    assert await errno_of(ops.open(pid.st_ino, os.O_WRONLY, CTX)) == errno.EACCES
    assert await errno_of(ops.open(pid.st_ino, os.O_RDWR, CTX)) == errno.EACCES
    hb = await walk(ops, "sys/kernel/config/cluster/c1/heartbeat")
    assert await errno_of(ops.open(hb.st_ino, os.O_RDONLY, CTX)) == errno.EISDIR
    assert await errno_of(ops.create(hb.st_ino, b"x", 0o644, os.O_WRONLY, CTX)) == errno.EACCES


async def test_open_file_of_removed_item_answers_enoent(ops: KernelOperations) -> None:
    await mkdir(ops, "sys/kernel/config/cluster/c1/node/n1")
    num = await walk(ops, "sys/kernel/config/cluster/c1/node/n1/num")
    fh = (await ops.open(num.st_ino, os.O_RDONLY, CTX)).fh
    node = await walk(ops, "sys/kernel/config/cluster/c1/node")
    await ops.rmdir(node.st_ino, b"n1", CTX)
    assert await errno_of(ops.read(fh, 0, 10)) == errno.ENOENT
    assert await errno_of(ops.getattr(num.st_ino, CTX)) == errno.ENOENT


async def test_name_operations_are_refused(ops: KernelOperations) -> None:
    c = await mkdir(ops, "sys/kernel/config/cluster/c1")
    assert await errno_of(ops.unlink(c.st_ino, b"fence_method", CTX)) == errno.EPERM
    assert await errno_of(ops.unlink(c.st_ino, b"node", CTX)) == errno.EISDIR
    assert await errno_of(ops.unlink(c.st_ino, b"nope", CTX)) == errno.ENOENT
    assert await errno_of(ops.symlink(c.st_ino, b"l", b"/x", CTX)) == errno.EPERM
    assert await errno_of(ops.rename(c.st_ino, b"node", c.st_ino, b"n", 0, CTX)) == errno.EPERM
    # As recorded from the real kernel: a regular mknod is vfs_create (EACCES), a fifo EPERM.
    assert await errno_of(ops.mknod(c.st_ino, b"x", 0o644, 0, CTX)) == errno.EACCES
    assert await errno_of(ops.mknod(c.st_ino, b"x", stat.S_IFIFO | 0o644, 0, CTX)) == errno.EPERM


async def test_setattr_mode_owner_times_persist_and_size_is_ignored(
        ops: KernelOperations) -> None:
    await mkdir(ops, "sys/kernel/config/cluster/c1")
    a = await walk(ops, "sys/kernel/config/cluster/c1/fence_method")
    new = pyfuse3.EntryAttributes()
    new.st_mode = stat.S_IFREG | 0o600
    new.st_uid, new.st_gid, new.st_size = 7, 8, 0
    fields = SimpleNamespace(update_mode=True, update_uid=True, update_gid=True,
                             update_atime=False, update_mtime=False, update_size=True)
    got = await ops.setattr(a.st_ino, new, fields, None, CTX)
    assert (stat.S_IMODE(got.st_mode), got.st_uid, got.st_gid, got.st_size) == (
        0o600, 7, 8, 4096)
    assert stat.S_ISREG(got.st_mode)


async def test_readdir_lists_newest_first_like_6_1(ops: KernelOperations) -> None:
    c = await mkdir(ops, "sys/kernel/config/cluster/c1")
    names: list[str] = []
    fh = await ops.opendir(c.st_ino, CTX)
    for entry in ops.kernel.dir(fh).children():
        names.append(entry.name)
    assert names == ["heartbeat", "node", "fence_method", "reconnect_delay_ms",
                     "keepalive_delay_ms", "idle_timeout_ms"]


async def test_a_bug_in_a_handler_is_eio_not_a_dead_daemon(
        ops: KernelOperations, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FileEntry):
        def show(self) -> bytes:
            raise ZeroDivisionError("boom")

    broken = Broken(name="broken", mode=stat.S_IFREG | 0o444)
    ops.kernel.root.add(broken)  # type: ignore[attr-defined]
    attr = await ops.lookup(ROOT_INO, b"broken", CTX)
    fh = (await ops.open(attr.st_ino, os.O_RDONLY, CTX)).fh
    assert await errno_of(ops.read(fh, 0, 10)) == errno.EIO
    assert "bug in read" in caplog.text and "ZeroDivisionError" in caplog.text
    # ...and the next request is served as usual.
    assert (await walk(ops, "sys/fs/o2cb/interface_revision")).st_size == 4096


async def test_statfs_is_simple_statfs(ops: KernelOperations) -> None:
    s = await ops.statfs(CTX)
    assert (s.f_bsize, s.f_namemax) == (4096, 255)


@pytest.mark.parametrize(
    ("pending", "shd", "blocked", "interrupted"),
    [
        ("0000000000000000", "0000000000000000", "0000000000000000", False),
        ("0000000000000100", "0000000000000000", "fffffffffffbfeff", True),   # SIGKILL
        ("0000000000000000", "0000000000000100", "fffffffffffbfeff", True),   # group SIGKILL
        ("0000000000000002", "0000000000000000", "0000000000000000", True),   # SIGINT
        ("0000000000000002", "0000000000000000", "0000000000000002", False),  # blocked SIGINT
    ],
)
def test_writer_interrupted_reads_proc_status(pending: str, shd: str, blocked: str,
                                              interrupted: bool) -> None:
    status = f"Name:\tx\nSigPnd:\t{pending}\nShdPnd:\t{shd}\nSigBlk:\t{blocked}\n"
    assert writer_interrupted(status) is interrupted
