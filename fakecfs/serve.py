"""The daemon's trio main: mount a Kernel with pyfuse3, serve, stop cleanly on signals.

Imported only by the processes that serve (it pulls in pyfuse3 and trio).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

import pyfuse3
import trio

from .fuse import KernelOperations
from .kernel import Kernel, KernelOptions

log = logging.getLogger("fakecfs.serve")


def fuse_options(allow_other: bool) -> set[str]:
    opts = {"fsname=fakecfs", "subtype=fakecfs", "default_permissions"}
    if allow_other:
        opts.add("allow_other")
    return opts


async def _serve(
    kernel: Kernel, mountpoint: str, ready: Callable[[], None] | None
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(kernel.run)

        async def stop_on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
                async for signum in sigs:
                    log.info("signal %d: stopping heartbeat and unmounting", signum)
                    await kernel.shutdown()
                    pyfuse3.terminate()
                    return

        async def announce_ready() -> None:
            # The mount answers only once pyfuse3.main() serves: stat it from a thread.
            await trio.to_thread.run_sync(os.stat, os.path.join(mountpoint, "sys"))
            if ready is not None:
                ready()

        nursery.start_soon(stop_on_signals)
        nursery.start_soon(announce_ready)
        await pyfuse3.main(min_tasks=4, max_tasks=64)
        # Unmounted from outside (fakecfs umount, fusermount3 -u) or terminated by a signal:
        # stop heartbeat cleanly so peers see a clean leave.
        await kernel.shutdown()
        nursery.cancel_scope.cancel()


def serve(
    mountpoint: str,
    options: KernelOptions,
    *,
    allow_other: bool,
    ready: Callable[[], None] | None = None,
) -> None:
    """Mount, serve until unmounted or signalled, then unmount. Blocks."""
    kernel = Kernel(options)
    ops = KernelOperations(kernel)
    pyfuse3.init(ops, mountpoint, fuse_options(allow_other))
    try:
        trio.run(_serve, kernel, mountpoint, ready)
    finally:
        pyfuse3.close(unmount=True)
