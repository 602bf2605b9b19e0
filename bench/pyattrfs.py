"""The pyfuse3 floor: attrfs's static tree served by the least pyfuse3 + trio code possible.

    python -m bench.pyattrfs MOUNTPOINT [--min-tasks N] [--max-tasks N] [--asyncio]

Same shape, same answers and same mount options as the C attrfs (and as fakecfs), handlers
that only look a name up in a dict. Measured beside fakecfs and the C server, it splits
fakecfs's cost into what pyfuse3 + trio cost per request whatever the handlers do, and what
fakecfs's own handlers and kernel model add. Serves until unmounted or SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
import time
from typing import Any

import pyfuse3
import trio

ROOT = pyfuse3.ROOT_INODE
# (parent inode, name, contents or None for a directory); inode = index + ROOT.
TREE: list[tuple[int, str, bytes | None]] = [
    (0, "", None),
    (1, "sys", None), (2, "kernel", None), (3, "config", None), (4, "cluster", None),
    (5, "c1", None),
    (6, "idle_timeout_ms", b"30000\n"), (6, "keepalive_delay_ms", b"2000\n"),
    (6, "reconnect_delay_ms", b"2000\n"), (6, "fence_method", b"reset\n"),
    (6, "node", None), (6, "heartbeat", None),
    (12, "dead_threshold", b"31\n"), (12, "mode", b"local\n"),
    (2, "fs", None), (15, "ocfs2", None), (16, "cluster_stack", b"o2cb\n"),
    (15, "o2cb", None), (18, "interface_revision", b"5\n"),
]


class StaticOperations(pyfuse3.Operations):
    """Uncached (timeouts 0), direct_io, 4096-byte attribute sizes: fakecfs's answers."""

    def __init__(self) -> None:
        super().__init__()
        self.children = {(parent, name.encode()): i + ROOT
                         for i, (parent, name, _) in enumerate(TREE) if i}
        self.now = time.time_ns()

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        contents = TREE[ino - ROOT][2]
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        if contents is None:
            a.st_mode = stat.S_IFDIR | 0o755
            a.st_nlink = 2
        else:
            a.st_mode = stat.S_IFREG | 0o644
            a.st_nlink = 1
            a.st_size = 4096
        a.st_blksize = 4096
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.now
        a.entry_timeout = 0
        a.attr_timeout = 0
        return a

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        ino = self.children.get((parent_inode, name))
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(ino)

    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        return self._attr(inode)

    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        if TREE[inode - ROOT][2] is None:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=inode, direct_io=True, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        contents = TREE[fh - ROOT][2] or b""
        return contents[off:off + size]

    async def release(self, fh: int) -> None:
        return None

    async def flush(self, fh: int) -> None:
        return None


async def _serve(min_tasks: int, max_tasks: int) -> None:
    async with trio.open_nursery() as nursery:

        async def stop_on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                async for _ in sigs:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(stop_on_signals)
        await pyfuse3.main(min_tasks=min_tasks, max_tasks=max_tasks)
        nursery.cancel_scope.cancel()


def _serve_asyncio(min_tasks: int, max_tasks: int) -> None:
    import asyncio

    import pyfuse3.asyncio as pyfuse3_asyncio

    pyfuse3_asyncio.enable()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, pyfuse3.terminate)
        await pyfuse3.main(min_tasks=min_tasks, max_tasks=max_tasks)

    asyncio.run(serve())


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pyattrfs", description=__doc__)
    p.add_argument("mountpoint")
    p.add_argument("--min-tasks", type=int, default=4, help="pyfuse3.main (fakecfs: 4)")
    p.add_argument("--max-tasks", type=int, default=64, help="pyfuse3.main (fakecfs: 64)")
    p.add_argument("--asyncio", action="store_true",
                   help="run pyfuse3 on asyncio (pyfuse3.asyncio) instead of trio")
    args = p.parse_args()
    opts = {"fsname=pyattrfs", "subtype=pyattrfs", "default_permissions"}
    if os.geteuid() == 0:
        opts.add("allow_other")
    pyfuse3.init(StaticOperations(), args.mountpoint, opts)
    try:
        if args.asyncio:
            _serve_asyncio(args.min_tasks, args.max_tasks)
        else:
            trio.run(_serve, args.min_tasks, args.max_tasks)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
