"""The trio heartbeat shell on real files: several runners heartbeating on one image.

Short periods (30 ms) and small dead thresholds keep this file fast; every wait is on a
condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from fakecfs.hbdisk import decode_block, verify_block
from fakecfs.heartbeat import HeartbeatRunner, HeartbeatStartError

BB = 512
START = 8
BLOCKS = 255
INTERVAL = 30
THRESHOLD = 6


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))

    def has(self, text: str) -> bool:
        return any(text in msg for _, msg in self.lines)


@pytest.fixture
def records() -> Iterator[Records]:
    rec = Records()
    logger = logging.getLogger("test.heartbeat")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(rec)
    yield rec
    logger.removeHandler(rec)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A 1 MiB file full of random bytes: anything we must not touch is distinguishable."""
    path = tmp_path / "shared.img"
    data = bytearray(os.urandom(1 << 20))
    # the heartbeat area starts zeroed, as mkfs leaves it
    data[START * BB : (START + BLOCKS) * BB] = bytes(BLOCKS * BB)
    path.write_bytes(bytes(data))
    return path


def outside_slots_digest(path: Path, nodes: set[int]) -> str:
    data = bytearray(path.read_bytes())
    for n in nodes:
        off = (START + n) * BB
        data[off : off + BB] = bytes(BB)
    return hashlib.sha256(data).hexdigest()


def slot(path: Path, node: int, start: int = START) -> bytes:
    with path.open("rb") as f:
        f.seek((start + node) * BB)
        return f.read(BB)


async def until(cond: Callable[[], bool], timeout: float = 3.0, poll: float = 0.005) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(poll)


def runner(fd: int, node: int, configured: set[int], **kw: object) -> HeartbeatRunner:
    args: dict[str, object] = dict(
        fd=fd,
        dev_name="img0",
        node_num=node,
        block_bytes=BB,
        start_block=START,
        blocks=BLOCKS,
        dead_threshold=THRESHOLD,
        interval_ms=INTERVAL,
        configured_nodes=lambda: configured,
        log=logging.getLogger("test.heartbeat"),
    )
    args.update(kw)
    return HeartbeatRunner(**args)  # type: ignore[arg-type]


async def test_three_runners_crash_and_clean_stop(image: Path, records: Records) -> None:
    nodes = {0, 1, 2}
    before = outside_slots_digest(image, nodes)
    fd = os.open(image, os.O_RDWR)
    try:
        runners = {n: runner(fd, n, nodes) for n in sorted(nodes)}
        scopes = {n: trio.CancelScope() for n in nodes}

        async def run_scoped(n: int, task_status: trio.TaskStatus[None]) -> None:
            with scopes[n]:
                await runners[n].run(task_status=task_status)

        async with trio.open_nursery() as nursery:
            for n in sorted(nodes):
                await nursery.start(run_scoped, n)
            with trio.fail_after(3):
                assert all([await r.wait_steady() for r in runners.values()])
            await until(lambda: all(r.live_nodes == [0, 1, 2] for r in runners.values()))
            assert runners[0].livenodes_text() == "0 1 2 \n"
            assert 0 <= runners[0].elapsed_ms() <= 10 * INTERVAL

            # what is on disk is what the kernel would write
            for n, r in runners.items():
                raw = slot(image, n)
                assert verify_block(raw)
                blk = decode_block(raw)
                assert (blk.node, blk.generation) == (n, r.generation)
                assert blk.dead_ms == THRESHOLD * 2000  # kernel units, not the test's period
                assert raw[28:] == bytes(BB - 28)

            # a crash: node 2 stops writing with no last block
            scopes[2].cancel()
            crashed_at = trio.current_time()
            await runners[2].finished.wait()
            await until(lambda: 2 not in runners[0].live_nodes)
            took_ms = (trio.current_time() - crashed_at) * 1000
            await until(lambda: 2 not in runners[1].live_nodes)
            # THRESHOLD equal samples, one per period (the first read after the crash may
            # still see the last block as a change)
            assert (THRESHOLD - 2) * INTERVAL <= took_ms <= (THRESHOLD + 8) * INTERVAL
            assert decode_block(slot(image, 2)).generation == runners[2].generation

            # a clean stop: a generation-0 block, and node 0 drops node 1 at its next read
            with trio.fail_after(1):
                await runners[1].stop()
            stopped_at = trio.current_time()
            blk = decode_block(slot(image, 1))
            assert blk.generation == 0 and verify_block(slot(image, 1))
            await until(lambda: 1 not in runners[0].live_nodes)
            assert (trio.current_time() - stopped_at) * 1000 <= 3 * INTERVAL

            with trio.fail_after(1):
                await runners[0].stop()
            assert runners[0].live_nodes == []
            nursery.cancel_scope.cancel()
    finally:
        os.close(fd)
    assert outside_slots_digest(image, nodes) == before
    assert decode_block(slot(image, 0)).generation == 0
    assert all(r.failed is None for r in runners.values())


async def test_region_past_end_of_file_fails_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "short.img"
    path.write_bytes(os.urandom(64 * BB))  # ends inside the heartbeat area
    before = path.read_bytes()
    fd = os.open(path, os.O_RDWR)
    try:
        r = runner(fd, 0, {0})
        async with trio.open_nursery() as nursery:
            with pytest.raises(HeartbeatStartError) as err:
                await nursery.start(r.run)
        assert err.value.errno == 5
        assert "short read" in str(err.value)
        assert r.failed and not await r.wait_steady()
    finally:
        os.close(fd)
    assert path.read_bytes() == before


async def test_read_only_descriptor_never_stabilises(image: Path, records: Records) -> None:
    before = image.read_bytes()
    fd = os.open(image, os.O_RDONLY)
    try:
        r = runner(fd, 3, {3})
        async with trio.open_nursery() as nursery:
            await nursery.start(r.run)
            with trio.fail_after(3):
                assert not await r.wait_steady()
        assert r.failed == "o2hb: Unable to stabilize heartbeat on region  (img0)"
        assert records.has('Write error -9 on device "img0"')
    finally:
        os.close(fd)
    assert image.read_bytes() == before  # and no generation-0 block after an abort


async def test_o_direct_descriptor(image: Path) -> None:
    try:
        fd = os.open(image, os.O_RDWR | os.O_DIRECT)
    except OSError:
        pytest.skip("O_DIRECT not supported here")
    try:
        r = runner(fd, 7, {7})
        async with trio.open_nursery() as nursery:
            await nursery.start(r.run)
            with trio.fail_after(3):
                assert await r.wait_steady()
            await r.stop()
    finally:
        os.close(fd)
    blk = decode_block(slot(image, 7))
    assert blk.node == 7 and blk.generation == 0 and verify_block(slot(image, 7))


async def test_contested_slot_fences_after_write_timeout(image: Path, records: Records) -> None:
    fences: list[str] = []
    fd = os.open(image, os.O_RDWR)
    try:
        # No floor: two writers in one slot must fence within a few periods.
        first = runner(fd, 4, {4}, on_fence=fences.append, min_write_timeout_ms=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            with trio.fail_after(3):
                assert await first.wait_steady()
            await until(lambda: first.machine.write_deadline_ms is not None)
            # a second node configured with the same number starts writing our slot
            second = runner(fd, 4, {4})
            await nursery.start(second.run)
            with trio.fail_after(3):
                await first.finished.wait()
            assert first.fenced
            # The kernel prints the time since the last good write: the timeout, or a little
            # more on a loaded machine.
            (fence,) = fences
            m = re.fullmatch(r"Heartbeat write timeout to device img0 after (\d+) milliseconds",
                             fence)
            assert m and int(m[1]) >= (THRESHOLD - 1) * INTERVAL, fence
            assert records.has("Heartbeat generation mismatch on device (img0)")
            # the fenced node left no clean-leave block: the slot is the other writer's
            with trio.fail_after(3):
                assert await second.wait_steady()
            await second.stop()
    finally:
        os.close(fd)
    assert decode_block(slot(image, 4)).generation == 0  # second's clean stop


async def test_default_fence_logs_critical(image: Path, records: Records) -> None:
    fd = os.open(image, os.O_RDWR)
    try:
        first = runner(fd, 5, {5}, min_write_timeout_ms=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            with trio.fail_after(3):
                assert await first.wait_steady()
            await until(lambda: first.machine.write_deadline_ms is not None)
            second = runner(fd, 5, {5})
            await nursery.start(second.run)
            with trio.fail_after(3):
                await first.finished.wait()
            await second.stop()
    finally:
        os.close(fd)
    crit = [msg for level, msg in records.lines if level == logging.CRITICAL]
    assert crit and crit[0].startswith("*** ocfs2 is very sorry to be fencing this system")


async def test_kernel_timing_under_mock_clock(
    image: Path, mock_clock: trio.testing.MockClock
) -> None:
    """At the kernel's 2000 ms period and threshold 31, in virtual time: a fresh start is
    steady after 4 sleeps (~8 s) and a crashed peer is dead ~62 s after its last write."""
    # jump only when idle for a while in real time, so disk I/O in threads is not "idle"
    mock_clock.autojump_threshold = 0.01
    fd = os.open(image, os.O_RDWR)
    try:
        a = runner(fd, 0, {0, 1}, interval_ms=2000, dead_threshold=31)
        b = runner(fd, 1, {0, 1}, interval_ms=2000, dead_threshold=31)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            t0 = trio.current_time()
            assert await a.wait_steady()
            assert 7.9 <= trio.current_time() - t0 <= 8.5
            crash = trio.CancelScope()

            async def run_b(task_status: trio.TaskStatus[None]) -> None:
                with crash:
                    await b.run(task_status=task_status)

            await nursery.start(run_b)
            await until(lambda: a.live_nodes == [0, 1], timeout=30, poll=1)
            crash.cancel()
            await b.finished.wait()
            t1 = trio.current_time()
            await until(lambda: 1 not in a.live_nodes, timeout=100, poll=1)
            # Not before 31 periods; a loaded machine can only make it later (a slow I/O
            # looks idle to the clock, which then jumps), so the upper bound is loose.
            assert 58 <= trio.current_time() - t1 <= 80
            await a.stop()
    finally:
        os.close(fd)
    assert decode_block(slot(image, 0)).dead_ms == 62000


DEBUGFS = shutil.which("debugfs.ocfs2")
MKFS = shutil.which("mkfs.ocfs2")


@pytest.mark.skipif(not (DEBUGFS and MKFS), reason="ocfs2-tools not installed")
async def test_debugfs_ocfs2_reads_our_heartbeat(tmp_path: Path) -> None:
    assert DEBUGFS and MKFS
    img = tmp_path / "real.img"
    with img.open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(
        [MKFS, "-q", "-F", "-b", "4096", "-C", "4096", "-N", "4", "-J", "size=4M",
         "-L", "HBTEST", "--cluster-stack=o2cb", "--cluster-name=hbtest", str(img)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )  # fmt: skip
    stat = subprocess.run(
        [DEBUGFS, "-R", "stat //heartbeat", str(img)], check=True, capture_output=True, text=True
    ).stdout
    # the extent table: "0  0  256  273  0x0" = index, offset, clusters, block#, flags
    rec = re.search(r"^\s*0\s+0\s+\d+\s+(\d+)\s+0x", stat, re.M)
    assert rec, stat
    start_block = int(rec.group(1)) * 4096 // BB
    fd = os.open(img, os.O_RDWR)
    try:
        a = runner(fd, 1, {1, 2}, start_block=start_block, generation=0x1122334455667788)
        b = runner(fd, 2, {1, 2}, start_block=start_block, generation=0xAABBCCDDEEFF0011)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            with trio.fail_after(3):
                assert await a.wait_steady() and await b.wait_steady()
            await b.stop()
            nursery.cancel_scope.cancel()  # a "crashes": its last block stays
    finally:
        os.close(fd)
    out = subprocess.run(
        [DEBUGFS, "-R", "hb", str(img)], check=True, capture_output=True, text=True
    ).stdout
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\d+):\s+(\d+)\s+([0-9a-fA-Fx]+)\s+([0-9a-fA-Fx]+)\s+(\w+)\s+(\d+)", line)
        if m:
            rows[int(m.group(2))] = m.groups()
    assert set(rows) == {1, 2}, out
    assert int(rows[1][3], 16) == 0x1122334455667788
    assert int(rows[2][3], 16) == 0
    assert rows[1][5] == rows[2][5] == str(THRESHOLD * 2000)
    raw1 = slot(img, 1, start_block)
    assert int(rows[1][4], 16) == decode_block(raw1).cksum
    assert int(rows[1][2], 16) == decode_block(raw1).seq


async def test_stop_before_run_writes_nothing(image: Path) -> None:
    before = image.read_bytes()
    fd = os.open(image, os.O_RDWR)
    try:
        r = runner(fd, 0, {0})
        with trio.fail_after(1):
            await r.stop()
            async with trio.open_nursery() as nursery:
                await nursery.start(r.run)
            assert not await r.wait_steady()
        assert r.failed == "stopped before start"
    finally:
        os.close(fd)
    assert image.read_bytes() == before


class Emitted:
    """Collects a runner's events as (kind, message, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, object]]] = []

    def __call__(self, kind: str, message: str, level: int = logging.INFO,
                 **fields: object) -> None:
        self.events.append((kind, message, fields))

    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.events]


async def test_freeze_past_the_write_timeout_fences_on_thaw(image: Path) -> None:
    from fakecfs.faults import RegionFaults

    emitted = Emitted()
    fd = os.open(image, os.O_RDWR)
    try:
        r = runner(fd, 2, {2}, emit=emitted, min_write_timeout_ms=0, region_name="R",
                   faults=lambda: RegionFaults())
        async with trio.open_nursery() as nursery:
            await nursery.start(r.run)
            with trio.fail_after(3):
                assert await r.wait_steady()
            await until(lambda: r.machine.write_deadline_ms is not None)
            r.freeze()
            frozen_at = trio.current_time()
            timeout_s = r.machine.write_timeout_ms / 1000
            await until(lambda: trio.current_time() - frozen_at > 2 * timeout_s)
            assert not r.fenced  # timers stand still while frozen
            r.thaw()
            with trio.fail_after(3):
                await r.finished.wait()
        assert r.fenced and emitted.kinds()[-1] == "write_timeout"
        assert emitted.events[-1][2] == {"region": "R", "dev": "img0"}
        assert decode_block(slot(image, 2)).generation != 0  # no clean leave
    finally:
        os.close(fd)


async def test_slow_writes_and_eio(image: Path) -> None:
    from fakecfs.faults import RegionFaults

    fd = os.open(image, os.O_RDWR)
    try:
        # EIO on the baseline read: the start fails before anything is written.
        failing = runner(fd, 3, {3}, faults=lambda: RegionFaults(read_eio=True))
        async with trio.open_nursery() as nursery:
            with pytest.raises(HeartbeatStartError):
                await nursery.start(failing.run)
        assert slot(image, 3) == bytes(BB)
        # Writes slower than the write timeout: it fires while a write hangs.
        faults = RegionFaults()
        emitted = Emitted()
        slow = runner(fd, 3, {3}, emit=emitted, min_write_timeout_ms=0,
                      faults=lambda: faults)
        async with trio.open_nursery() as nursery:
            await nursery.start(slow.run)
            with trio.fail_after(3):
                assert await slow.wait_steady()
            await until(lambda: slow.machine.write_deadline_ms is not None)
            faults = RegionFaults(write_delay_ms=60_000)
            with trio.fail_after(5):
                await slow.finished.wait()
        assert slow.fenced and "write_timeout" in emitted.kinds()
    finally:
        os.close(fd)
