"""The trio task that runs one o2hb heartbeat region against a real device or image file.

This is the thin shell around ``fakecfs.hbdisk.RegionMachine`` (the kernel's o2hb thread,
spec kernel-o2hb.md §5.3, §5.4, §8): it reads the slots, hands them to the machine, writes
the one block the machine returns to our own slot, sleeps for the rest of the period, and
runs the write-timeout watchdog. All decisions are the machine's.

Blocking I/O runs in worker threads (``trio.to_thread``) so a FUSE loop sharing the trio
run never blocks on the disk. Buffers are page-aligned (mmap) and I/O goes through
``os.preadv``/``os.pwritev`` so a descriptor opened with ``O_DIRECT`` works as well as a
buffered one (which gets ``fdatasync`` after every write, like the kernel's REQ_SYNC).
Interval timing uses ``trio.current_time()`` (so ``trio.testing.MockClock`` drives it);
``hb_seq`` uses wall-clock seconds, as the kernel does.

Injected faults (fakecfs.faults) act here, on the I/O: a freeze holds the loop and the
watchdog; EIO and delays wrap each read and write; a corrupt write inverts the CRC; a
foreign writer's block lands in our slot right after ours. The machine then reacts as
the kernel does.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import secrets
import time
from collections.abc import Callable

import trio

from fakecfs.events import Emit
from fakecfs.faults import NO_FAULTS, RegionFaults, corrupt_block, foreign_node_for
from fakecfs.hbdisk import (
    EMULATED_MIN_WRITE_TIMEOUT_MS,
    MAX_NODES,
    IterationResult,
    RegionMachine,
    encode_block,
)

_log = logging.getLogger(__name__)


class HeartbeatStartError(OSError):
    """The region could not start (the baseline read failed): nothing was written."""


class _SlotIO:
    """Aligned reads of a slot range and writes of exactly our own slot, on one descriptor."""

    def __init__(self, fd: int, start_block: int, block_bytes: int, blocks: int, node: int):
        self.fd = fd
        self.start_block = start_block
        self.block_bytes = block_bytes
        self.node = node
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        # O_DSYNC/O_SYNC descriptors are already synchronous; everything else is fdatasync'ed.
        self.sync_each_write = not flags & (os.O_DSYNC | os.O_SYNC)
        page = mmap.PAGESIZE
        size = -(-blocks * block_bytes // page) * page
        self._rbuf = mmap.mmap(-1, size)
        self._wbuf = mmap.mmap(-1, -(-block_bytes // page) * page)

    def close(self) -> None:
        self._rbuf.close()
        self._wbuf.close()

    def read_slots(self, lo: int, hi: int) -> dict[int, bytes]:
        """Slots lo..hi inclusive in one read; a short read (past the end) is EIO."""
        length = (hi - lo + 1) * self.block_bytes
        offset = (self.start_block + lo) * self.block_bytes
        view = memoryview(self._rbuf)[:length]
        try:
            got = os.preadv(self.fd, [view], offset)
            if got != length:
                raise OSError(errno.EIO, f"short read: {got} of {length} bytes at offset {offset}")
            bb = self.block_bytes
            return {lo + i: bytes(view[i * bb : (i + 1) * bb]) for i in range(hi - lo + 1)}
        finally:
            view.release()

    def write_own(self, block: bytes) -> None:
        """Write ``block`` to our slot and nowhere else, then make it durable."""
        if len(block) != self.block_bytes:
            raise ValueError("a heartbeat write is exactly one block")
        offset = (self.start_block + self.node) * self.block_bytes
        view = memoryview(self._wbuf)[: self.block_bytes]
        try:
            view[:] = block
            put = os.pwritev(self.fd, [view], offset)
        finally:
            view.release()
        if put != self.block_bytes:
            raise OSError(errno.EIO, f"short write: {put} of {self.block_bytes} bytes")
        if self.sync_each_write:
            os.fdatasync(self.fd)


def new_generation() -> int:
    """A random non-zero 64-bit heartbeat generation ("Generation of zero is invalid")."""
    while True:
        gen = secrets.randbits(64)
        if gen:
            return gen


def _now_ms() -> int:
    return int(trio.current_time() * 1000)


class HeartbeatRunner:
    """One heartbeat region of this node on an open device or image descriptor.

    ``await nursery.start(runner.run)`` returns once the baseline read of every slot is
    done, or raises HeartbeatStartError (EIO) without having written anything. Then
    ``await runner.wait_steady()`` is the kernel's blocking ``dev`` write: True once steady,
    False if the start was aborted ("Unable to stabilize") or the region stopped first.
    ``await runner.stop()`` is rmdir: it ends the heartbeat with a generation-0 block.
    The descriptor is dup'ed, so the caller may close its own copy once ``run`` started.
    """

    def __init__(
        self,
        *,
        fd: int,
        dev_name: str,
        node_num: int,
        block_bytes: int,
        start_block: int,
        blocks: int,
        dead_threshold: int,
        interval_ms: int,
        configured_nodes: Callable[[], set[int]],
        generation: int | None = None,
        on_fence: Callable[[str], None] | None = None,
        log: logging.Logger | None = None,
        region_name: str = "",
        first_global_region: bool = False,
        min_write_timeout_ms: int = EMULATED_MIN_WRITE_TIMEOUT_MS,
        faults: Callable[[], RegionFaults] | None = None,
        emit: Emit | None = None,
        on_write_timeout: Callable[[str], bool] | None = None,
        on_good_write: Callable[[], None] | None = None,
    ) -> None:
        if not 0 <= node_num < min(blocks, MAX_NODES):
            raise ValueError(f"node {node_num} has no slot in a region of {blocks} blocks")
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        self.fd = fd
        self.dev_name = dev_name
        self.node_num = node_num
        self.block_bytes = block_bytes
        self.start_block = start_block
        self.blocks = blocks
        self.interval_ms = interval_ms
        self.configured_nodes = configured_nodes
        self.on_fence = on_fence
        self.log = log or _log
        self.region_name = region_name
        self.faults = faults or (lambda: NO_FAULTS)
        self._emit = emit
        # Decides whether a write timeout fences (global mode's quorum); default: always.
        self.on_write_timeout = on_write_timeout
        self.on_good_write = on_good_write
        self.machine = RegionMachine(
            node_num,
            blocks,
            block_bytes,
            dead_threshold,
            generation if generation is not None else new_generation(),
            interval_ms=interval_ms,
            first_global_region=first_global_region,
            region_name=region_name,
            dev_name=dev_name,
            min_write_timeout_ms=min_write_timeout_ms,
        )
        self.steady = trio.Event()
        self.finished = trio.Event()
        self.failed: str | None = None
        self.fenced = False
        self.last_result: IterationResult | None = None
        self._settled = trio.Event()
        self._wake = trio.Event()
        self._armed = trio.Event()
        self._stopping = False
        self._started = False
        self._frozen = False
        self._thawed = trio.Event()
        self._thawed.set()
        self._rearmed = trio.Event()  # replaced after every re-arm of the write timeout
        self._beat_scope: trio.CancelScope | None = None
        self._foreign_generation = new_generation()

    # -- what the emulated kernel shows --

    @property
    def generation(self) -> int:
        return self.machine.generation

    @property
    def live_nodes(self) -> list[int]:
        return self.machine.live_nodes

    def livenodes_text(self) -> str:
        return self.machine.livenodes_text()

    def elapsed_ms(self) -> int:
        """debugfs elapsed_time_in_ms (call from inside the trio run)."""
        return self.machine.elapsed_ms(_now_ms())

    async def wait_steady(self) -> bool:
        """Wait like the kernel's dev store: True when steady, False on abort or stop."""
        await self._settled.wait()
        return self.steady.is_set()

    def emit(self, kind: str, message: str, level: int = logging.INFO, **fields: object) -> None:
        if self._emit is not None:
            self._emit(kind, message, level, region=self.region_name, dev=self.dev_name,
                       **fields)

    # -- faults and fencing (called by the kernel) --

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        """A hung machine: no new heartbeat I/O and no timers until thaw()."""
        if not self._frozen:
            self._frozen = True
            self._thawed = trio.Event()

    def thaw(self) -> None:
        """Resume; the watchdog looks first, so a stall past the write timeout fences."""
        self._frozen = False
        self._thawed.set()

    def halt(self, reason: str) -> None:
        """Fencing (o2hb_stop_all_regions): stop now, with no generation-0 block."""
        if self.finished.is_set():
            return
        self.fenced = True
        self.failed = self.failed or reason
        self._stopping = True
        self._wake.set()
        self._thawed.set()
        if self._beat_scope is not None:
            self._beat_scope.cancel()

    # -- running --

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._started:
            raise RuntimeError("a HeartbeatRunner runs once")
        self._started = True
        if self._stopping:  # stopped before it ran: like rmdir before the dev write
            self.failed = "stopped before start"
            self._settled.set()
            self.finished.set()
            task_status.started()
            return
        fd = os.dup(self.fd)
        io: _SlotIO | None = None
        try:
            io = _SlotIO(fd, self.start_block, self.block_bytes, self.blocks, self.node_num)
            try:
                baseline = await self._io("read", self.faults(), io.read_slots, 0,
                                          self.blocks - 1)
            except OSError as exc:
                self.failed = f"baseline read of {self.dev_name} failed: {exc}"
                self.log.error("o2hb: %s", self.failed)
                raise HeartbeatStartError(errno.EIO, self.failed) from exc
            assert isinstance(baseline, dict)
            self.machine.populate(baseline)
            task_status.started()
            async with trio.open_nursery() as nursery:
                self._beat_scope = nursery.cancel_scope
                if self.fenced:  # halted before it began beating
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._watchdog, nursery.cancel_scope)
                await self._beat(io)
                nursery.cancel_scope.cancel()
            # A frozen node's I/O is stuck: a stop while frozen leaves no clean block.
            if not self.fenced and not self.machine.aborted and not self._frozen:
                await self._leave_cleanly(io)
        finally:
            if io is not None:
                io.close()
            os.close(fd)
            self._settled.set()
            self.finished.set()

    async def stop(self) -> None:
        """Stop at once (no waiting out the period), after the I/O in flight finishes."""
        self._stopping = True
        self._wake.set()
        self._thawed.set()  # a stop ends a freeze's wait (without the final write)
        if self._started:
            await self.finished.wait()

    async def _beat(self, io: _SlotIO) -> None:
        while not self._stopping:
            await self._thawed.wait()
            if self._stopping:
                break
            began = trio.current_time()
            armed_before = self.machine.write_timeout_armed_at
            result = await self._iterate(io)
            self.last_result = result
            for line in result.logs:
                self.log.log(line.level, "%s", line.message)
                if line.kind:
                    self.emit(line.kind, line.message, line.level, node=line.node)
            if self.machine.write_deadline_ms is not None:
                self._armed.set()
            if self.machine.write_timeout_armed_at != armed_before:
                self._rearmed.set()
                self._rearmed = trio.Event()
                if self.on_good_write is not None:
                    self.on_good_write()
            if result.became_steady:
                self.steady.set()
                self._settled.set()
            if result.aborted:
                self.failed = result.logs[-1].message if result.logs else "start aborted"
                return
            rest = self.interval_ms / 1000 - (trio.current_time() - began)
            if rest > 0 and not self._stopping:
                with trio.move_on_after(rest):
                    await self._wake.wait()

    async def _io(self, op: str, faults: RegionFaults, fn: Callable[..., object],
                  *args: object) -> object:
        """One read or write, through the faults: a delay, then EIO or the real I/O."""
        delay = faults.delay_ms(op)
        if delay:
            # A slow disk; a stop does not wait it out (rmdir would take as long).
            with trio.move_on_after(delay / 1000):
                await self._wake.wait()
        if faults.eio(op):
            raise OSError(errno.EIO, f"injected {op} error")
        await self._thawed.wait()  # a freeze holds the I/O that was about to start
        return await trio.to_thread.run_sync(fn, *args)

    async def _iterate(self, io: _SlotIO) -> IterationResult:
        machine = self.machine
        faults = self.faults()
        configured = set(self.configured_nodes())
        span = machine.read_range(configured)
        if span is None:
            return machine.no_configured_nodes()
        try:
            raw = await self._io("read", faults, io.read_slots, *span)
        except OSError as exc:
            code = exc.errno or errno.EIO
            # The kernel's lines: the bio's "IO Error 10" (BLK_STS_IOERR), then mlog_errno's.
            self.log.error("status = %d (reading %s)", -code, self.dev_name)
            return machine.fail_iteration(-code, "IO Error 10" if code == errno.EIO
                                          else f"status = {-code}")
        assert isinstance(raw, dict)
        machine.wire_dead_ms = faults.dead_ms
        block = machine.begin_iteration(raw, configured, machine.next_seq(int(time.time())))
        try:
            await self._io("write", faults, io.write_own,
                           corrupt_block(block) if faults.corrupt else block)
            if faults.foreign:
                # The other writer lands after us, so our next read finds its block.
                node = foreign_node_for(self.node_num, self.blocks, faults.foreign_node)
                other = encode_block(self.block_bytes, machine.last_seq + 1, node,
                                     self._foreign_generation, machine.dead_ms)
                await trio.to_thread.run_sync(io.write_own, other)
        except OSError as exc:
            return machine.end_iteration(False, _now_ms(), exc.errno or errno.EIO)
        return machine.end_iteration(True, _now_ms())

    async def _leave_cleanly(self, io: _SlotIO) -> None:
        # Kernel order: local DOWN for every slot first, then the generation-0 block.
        gone = self.machine.shutdown_slots()
        if gone:
            self.log.debug("o2hb: region stopping, nodes down locally: %s", gone)
        block = self.machine.stop_block(self.machine.next_seq(int(time.time())))
        try:
            await trio.to_thread.run_sync(io.write_own, block)
        except OSError as exc:
            self.log.error('o2hb: final write to device "%s" failed: %s', self.dev_name, exc)

    async def _watchdog(self, beat_scope: trio.CancelScope) -> None:
        """The write timeout: fire when no good write happened for the whole timeout.

        A freeze stops this timer with everything else; on thaw it looks before the loop
        does any I/O, so a stall past the deadline fires at once, as after a paused VM.
        When the kernel decides not to fence (global mode, quorum), the timer stays unarmed
        until the next good write, as the kernel's delayed work does.
        """
        fired_for: int | None = None
        while True:
            armed_at = self.machine.write_timeout_armed_at
            deadline = self.machine.write_deadline_ms
            if deadline is None or armed_at == fired_for:
                # Not polling while unarmed keeps a MockClock from jumping during I/O.
                await (self._armed if deadline is None else self._rearmed).wait()
                continue
            await trio.sleep_until(deadline / 1000)
            while self._frozen:
                await self._thawed.wait()
            now = _now_ms()
            if not self.machine.write_timeout_expired(now):
                continue
            fired_for = armed_at
            reason = self.machine.write_timeout_message(now)
            self.log.error("%s", reason)
            self.emit("write_timeout", reason, logging.ERROR)
            if self.on_write_timeout is None or self.on_write_timeout(reason):
                break
        self.fenced = True
        self.failed = reason
        # Like hr_unclean_stop: stop beating and never write the generation-0 block, so peers
        # see us die by silence. Processes are never killed here; on_fence decides the rest.
        beat_scope.cancel()
        if self.on_fence is not None:
            self.on_fence(reason)
        elif self.on_write_timeout is None:
            self.log.critical(
                "*** ocfs2 is very sorry to be fencing this system by restarting *** "
                "(emulated: heartbeat on %s stopped without a clean leave)",
                self.dev_name,
            )
