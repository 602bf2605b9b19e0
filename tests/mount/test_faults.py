"""Injected faults on real fakecfs mounts, and the kernel's reactions seen as events.

Two nodes (two daemons) heartbeat on one mkfs.ocfs2 image at a 100 ms period with
dead_threshold 11: peers declare a silent node dead after 11 equal samples (~1.1 s) and a
node without a good write fences after (11 - 1) x 100 = 1000 ms. Every wait is on an
event or on the emulated kernel's state; the timing bounds are derived from the interval
and the threshold, with room for a loaded machine on the slow side only.
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from fakecfs import daemon
from fakecfs.control import Events, FaultRefused, Faults
from fakecfs.hbdisk import decode_block
from tests.fakecfs_fixtures import FAKECFS, fakecfs_mount, read_attr, require_fuse, wait_for
from tests.nodes import Region, configure, livenodes, mkfs, start_region, start_regions

INTERVAL_MS = 100
THRESHOLD = 11
WRITE_TIMEOUT_S = (THRESHOLD - 1) * INTERVAL_MS / 1000
DEAD_S = THRESHOLD * INTERVAL_MS / 1000
I_S = INTERVAL_MS / 1000
SLACK_S = 3.0  # a loaded 2-core machine may be late; never early


@dataclass
class Node:
    num: int
    root: Path
    cdir: Path
    faults: Faults
    events: Events

    def pid(self) -> int:
        pid = daemon.daemon_pid(str(self.root))
        assert pid is not None
        return pid


@contextmanager
def cluster(tmp_path: Path, n: int = 2, *, start: bool = True,
            mode: str | None = None) -> Iterator[tuple[list[Node], Region, Path]]:
    require_fuse()
    image = mkfs(tmp_path / "shared.img")
    region = Region.of(image)
    with ExitStack() as stack:
        nodes = []
        for num in range(n):
            root = stack.enter_context(fakecfs_mount(tmp_path / f"node{num}",
                                                     "--hb-interval-ms", str(INTERVAL_MS)))
            cdir = configure(root, "demo", n, num, THRESHOLD)
            if mode:
                (cdir / "heartbeat/mode").write_text(mode)
            nodes.append(Node(num, root, cdir, Faults(root), Events(root)))
        if start:
            start_regions([(node.cdir, region, image) for node in nodes])
            settle(nodes, region)
        yield nodes, region, image


def settle(nodes: list[Node], region: Region) -> None:
    """Every node sees every node, and its write timeout is armed.

    The kernel arms the write timeout at the first good write *after* steady state (the
    dev write returns just before): a node hung in between would never fence. Waiting for
    a write newer than the start makes every fence in these tests certain.
    """
    started = time.monotonic()
    for node in nodes:
        wait_for(lambda nd=node: livenodes(nd.root, region.uuid) == list(range(len(nodes))),
                 what="all live")
        wait_for(lambda nd=node: elapsed_ms(nd, region) < (time.monotonic() - started) * 1000,
                 what="a good write after steady state")


def prepare(cdir: Path, region: Region) -> Path:
    """A region with its geometry written, not started (it takes faults already)."""
    rdir = cdir / "heartbeat" / region.uuid
    rdir.mkdir()
    for attr, value in (("block_bytes", region.block_bytes),
                        ("start_block", region.start_block), ("blocks", region.blocks)):
        (rdir / attr).write_text(str(value))
    return rdir


def write_dev(rdir: Path, image: Path) -> None:
    """The start: libo2cb writes its descriptor's number to dev (blocks until steady)."""
    fd = os.open(image, os.O_RDWR)
    try:
        dev = os.open(rdir / "dev", os.O_WRONLY)
        try:
            os.write(dev, str(fd).encode())
        finally:
            os.close(dev)
    finally:
        os.close(fd)


def slot_generation(image: Path, region: Region, node: int) -> int:
    with open(image, "rb") as f:
        f.seek((region.start_block + node) * region.block_bytes)
        return decode_block(f.read(region.block_bytes)).generation


def elapsed_ms(node: Node, region: Region) -> int:
    return int(read_attr(node.root / "sys/kernel/debug/o2hb" / region.uuid /
                         "elapsed_time_in_ms"))


def last_write(node: Node, region: Region) -> float:
    """When (time.monotonic()) the node's last good write was, from its debugfs.

    Taken right after a fault is set, it is a lower bound for the write the kernel's timers
    count from (a write still in flight can only make that later), so timing bounds stay
    true on a loaded machine, whose heartbeat may have been late before the fault.
    """
    return time.monotonic() - elapsed_ms(node, region) / 1000


def alive(node: Node) -> bool:
    os.kill(node.pid(), 0)
    return (node.root / "sys").is_dir()


def test_freeze_peers_declare_it_dead_and_thaw_fences(tmp_path: Path) -> None:
    with cluster(tmp_path) as (nodes, region, image):
        a, b = nodes
        b.faults.freeze()
        last = last_write(b, region)
        frozen = b.events.wait_for(kind="fault_set", fault="freeze")
        assert b.faults.active() == ["freeze"]
        down = a.events.wait_for(kind="node_down", node=1, timeout=DEAD_S + 20)
        # a needs THRESHOLD equal samples, a period apart, after the read that saw b's last
        # write: never sooner than (THRESHOLD - 1) periods after it.
        assert down["t"] - last >= DEAD_S - I_S, down["t"] - last
        assert down["t"] - frozen["t"] <= DEAD_S + SLACK_S, down["t"] - frozen["t"]
        assert livenodes(a.root, region.uuid) == [0]
        # Frozen, b's timers stand still; its last good write ages past the write timeout.
        wait_for(lambda: elapsed_ms(b, region) >= WRITE_TIMEOUT_S * 1000 + INTERVAL_MS,
                 what="stall past the write timeout")
        assert not [e for e in b.events.read() if e["kind"] == "fenced"]
        b.faults.thaw()
        thawed = b.events.wait_for(kind="fault_cleared", fault="freeze")
        timeout = b.events.wait_for(kind="write_timeout")
        fenced = b.events.wait_for(kind="fenced")
        assert "Heartbeat write timeout to device shared.img after" in timeout["message"]
        assert "fencing this system" in fenced["message"]
        assert thawed["t"] <= timeout["t"] <= fenced["t"] <= thawed["t"] + SLACK_S
        # Fenced: heartbeat stopped without a generation-0 block; nothing was killed.
        wait_for(lambda: read_attr(b.cdir / "heartbeat" / region.uuid / "pid") == "",
                 what="b's heartbeat stopped")
        assert slot_generation(image, region, 1) != 0
        assert alive(b) and alive(a)
        assert livenodes(a.root, region.uuid) == [0]


def test_short_freeze_is_survived(tmp_path: Path) -> None:
    with cluster(tmp_path) as (nodes, region, _):
        a, b = nodes
        b.faults.freeze()
        b.faults.thaw()
        thawed = time.monotonic()
        # Well within the write timeout: b writes again and does not fence.
        wait_for(lambda: elapsed_ms(b, region) < (time.monotonic() - thawed) * 1000,
                 what="b writing again")
        assert livenodes(a.root, region.uuid) == [0, 1]
        assert read_attr(b.cdir / "heartbeat" / region.uuid / "pid") != ""
        assert not [e for e in b.events.read() if e["kind"] in ("fenced", "write_timeout")]


def test_slow_writes_fence_at_the_write_timeout(tmp_path: Path) -> None:
    with cluster(tmp_path) as (nodes, region, image):
        a, b = nodes
        b.faults.delay(region.uuid, 5000, op="write")
        last = last_write(b, region)
        set_at = b.events.wait_for(kind="fault_set")["t"]
        timeout = b.events.wait_for(kind="write_timeout", timeout=WRITE_TIMEOUT_S + 20)
        fenced = b.events.wait_for(kind="fenced")
        # The timer runs from the last good write (a write in flight at the fault may still
        # be one): the write timeout after it, never sooner.
        assert timeout["t"] - last >= WRITE_TIMEOUT_S - 0.01, timeout["t"] - last
        took = timeout["t"] - set_at
        assert took <= WRITE_TIMEOUT_S + I_S + SLACK_S, took
        assert fenced["t"] >= timeout["t"]
        assert fenced["reason"] == timeout["message"]
        a.events.wait_for(kind="node_down", node=1, timeout=DEAD_S + 20)
        assert slot_generation(image, region, 1) != 0  # no clean leave
        assert alive(b)


def test_eio_at_start_fails_the_dev_write_and_while_running_fences(tmp_path: Path) -> None:
    with cluster(tmp_path, start=False) as (nodes, region, image):
        a, b = nodes
        rdir = prepare(a.cdir, region)
        a.faults.eio(region.uuid, op="read")  # an existing, idle region takes faults
        with pytest.raises(OSError) as exc:
            write_dev(rdir, image)
        assert exc.value.errno == errno.EIO
        aborted = a.events.wait_for(kind="region_aborted")
        assert aborted["region"] == region.uuid
        assert read_attr(rdir / "dev") == ""  # not started: attributes writable again
        rdir.rmdir()
        assert a.faults.active() == []  # the region's faults went with it

        start_regions([(node.cdir, region, image) for node in nodes])
        settle(nodes, region)
        b.faults.eio(region.uuid, op="write")
        last = last_write(b, region)
        set_at = b.events.wait_for(kind="fault_set")["t"]
        err = b.events.wait_for(kind="io_error")
        assert err["message"] == 'Write error -5 on device "shared.img"'
        timeout = b.events.wait_for(kind="write_timeout", timeout=WRITE_TIMEOUT_S + 20)
        assert timeout["t"] - last >= WRITE_TIMEOUT_S - 0.01
        assert timeout["t"] - set_at <= WRITE_TIMEOUT_S + I_S + SLACK_S
        b.events.wait_for(kind="fenced")
        a.events.wait_for(kind="node_down", node=1, timeout=DEAD_S + 20)


def test_corrupt_writes_are_bad_crcs_to_peers(tmp_path: Path) -> None:
    with cluster(tmp_path) as (nodes, region, _):
        a, b = nodes
        b.faults.corrupt(region.uuid)
        set_at = b.events.wait_for(kind="fault_set")["t"]
        bad = a.events.wait_for(kind="bad_crc", node=1)
        assert bad["message"] == "Node 1 has written a bad crc to shared.img"
        down = a.events.wait_for(kind="node_down", node=1, timeout=DEAD_S + 20)
        # Each bad CRC is a miss: dead after THRESHOLD of them.
        assert DEAD_S - 2 * I_S <= down["t"] - set_at <= DEAD_S + SLACK_S
        # b's own slot check compares seq/generation/node, not the CRC: b goes on.
        assert read_attr(b.cdir / "heartbeat" / region.uuid / "pid") != ""
        assert elapsed_ms(b, region) < WRITE_TIMEOUT_S * 1000
        b.faults.clear("corrupt")
        a.events.wait_for(kind="node_up", node=1)  # good blocks again: b comes back


def test_foreign_writer_in_our_slot(tmp_path: Path) -> None:
    with cluster(tmp_path) as (nodes, region, _):
        b = nodes[1]
        b.faults.foreign(region.uuid, node=7)
        conflict = b.events.wait_for(kind="slot_conflict")
        assert conflict["message"].startswith(
            "Another node is heartbeating on device (shared.img): expected(1:")
        assert conflict["node"] == 7 and ", ondisk(7:" in conflict["message"]
        # The write timeout is never re-armed while our slot is not ours: fence.
        b.events.wait_for(kind="write_timeout", timeout=WRITE_TIMEOUT_S + 20)
        b.events.wait_for(kind="fenced")


def test_foreign_writer_at_start_cannot_stabilise(tmp_path: Path) -> None:
    with cluster(tmp_path, n=1, start=False) as (nodes, region, image):
        (a,) = nodes
        rdir = prepare(a.cdir, region)
        a.faults.foreign(region.uuid, node=0)  # our own number: a generation mismatch
        with pytest.raises(OSError) as exc:
            write_dev(rdir, image)
        assert exc.value.errno == errno.EIO
        conflict = a.events.wait_for(kind="slot_conflict")
        assert conflict["message"].startswith(
            "Heartbeat generation mismatch on device (shared.img): expected(0:")
        aborted = a.events.wait_for(kind="region_aborted")
        assert aborted["message"] == (f"o2hb: Unable to stabilize heartbeat on region "
                                      f"{region.uuid} (shared.img)")
        a.faults.clear(region=region.uuid)
        write_dev(rdir, image)  # the same region starts once the writer is gone
        a.events.wait_for(kind="region_started")


def test_dead_ms_mismatch_is_a_warning(tmp_path: Path) -> None:
    with cluster(tmp_path, start=False) as (nodes, region, image):
        a, b = nodes
        rdir = prepare(b.cdir, region)
        b.faults.deadms(region.uuid, 30000)
        t = threading.Thread(target=write_dev, args=(rdir, image))
        t.start()
        start_region(a.cdir, region, image)
        t.join()
        warn = a.events.wait_for(kind="dead_ms_mismatch", node=1)
        assert warn["message"] == (
            f"Node 1 on device shared.img has a dead count of 30000 ms, but our count is "
            f"{THRESHOLD * 2000} ms.\nPlease double check your configuration values for "
            "'O2CB_HEARTBEAT_THRESHOLD'")
        wait_for(lambda: livenodes(a.root, region.uuid) == [0, 1], what="b live all the same")


def test_bad_fault_commands_change_nothing(tmp_path: Path) -> None:
    with cluster(tmp_path, n=1) as (nodes, region, _):
        (a,) = nodes
        ctl = a.root / "fakecfs/faults"
        for command, err in (
            ("explode", errno.EINVAL), ("", errno.EINVAL), ("eio", errno.EINVAL),
            (f"eio region={region.uuid} op=sideways", errno.EINVAL),
            (f"delay region={region.uuid} ms=soon", errno.EINVAL),
            (f"delay region={region.uuid} ms=0", errno.EINVAL),
            (f"delay region={region.uuid} op=read", errno.EINVAL),
            (f"corrupt region={region.uuid} ms=5", errno.EINVAL),
            (f"foreign region={region.uuid} node=255", errno.EINVAL),
            ("eio region=NOSUCHREGION", errno.ENOENT),
            ("thaw", errno.EALREADY),
            ("freeze now", errno.EINVAL),
            ("\xff", errno.EINVAL),
        ):
            fd = os.open(ctl, os.O_WRONLY)
            try:
                with pytest.raises(OSError) as exc:
                    os.write(fd, command.encode("latin-1") or b"\n")
                assert exc.value.errno == err, command
            finally:
                os.close(fd)
        assert a.faults.active() == []
        assert not [e for e in a.events.read() if e["kind"].startswith("fault")]
        a.faults.freeze()
        with pytest.raises(FaultRefused) as refused:
            a.faults.freeze()
        assert refused.value.errno == errno.EALREADY
        a.faults.clear()  # clearing a freeze is a thaw
        assert a.faults.active() == []
        assert alive(a)
        # The CLI says why, exits 1, and the daemon is still there.
        out = subprocess.run([FAKECFS, "fault", str(a.root), "eio", "--region", "NOPE"],
                             capture_output=True, text=True)
        assert out.returncode == 1 and "no such region" in out.stderr, out.stderr
        out = subprocess.run([FAKECFS, "fault", str(a.root), "thaw"], capture_output=True,
                             text=True)
        assert out.returncode == 1 and "not frozen" in out.stderr, out.stderr
        out = subprocess.run([FAKECFS, "fault", str(a.root), "delay", "--region",
                              region.uuid, "--ms", "250", "--op", "read"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        out = subprocess.run([FAKECFS, "fault", str(a.root), "list", "--json"],
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == f'["delay region={region.uuid} op=read ms=250"]'
        assert alive(a)


def test_faults_refused_while_a_region_starts(tmp_path: Path) -> None:
    with cluster(tmp_path, n=1, start=False) as (nodes, region, image):
        (a,) = nodes
        done: list[BaseException | None] = []

        def start() -> None:
            try:
                start_region(a.cdir, region, image)
                done.append(None)
            except BaseException as exc:
                done.append(exc)

        t = threading.Thread(target=start)
        t.start()
        rdir = a.cdir / "heartbeat" / region.uuid
        # dev shows the device from the start of the dev write; pid only once steady.
        wait_for(lambda: rdir.exists() and read_attr(rdir / "dev") != "", what="starting")
        refused = []
        if read_attr(rdir / "pid") == "":
            for fault in (lambda: a.faults.eio(region.uuid), a.faults.freeze):
                with pytest.raises(FaultRefused) as exc:
                    fault()
                refused.append(exc.value.errno)
        t.join()
        assert done == [None]
        assert refused == [errno.EBUSY, errno.EBUSY]
        assert a.faults.active() == []
        a.faults.eio(region.uuid, op="read")  # running now: accepted
        assert a.faults.active() == [f"eio region={region.uuid} op=read"]


def test_global_mode_fences_when_half_the_quorum_regions_failed(tmp_path: Path) -> None:
    require_fuse()
    images = [mkfs(tmp_path / f"disk{i}.img") for i in range(3)]
    regions = [Region.of(img) for img in images]
    with fakecfs_mount(tmp_path / "node0", "--hb-interval-ms", str(INTERVAL_MS)) as root:
        cdir = configure(root, "demo", 1, 0, THRESHOLD)
        (cdir / "heartbeat/mode").write_text("global")
        node = Node(0, root, cdir, Faults(root), Events(root))
        for region, image in zip(regions, images, strict=True):
            start_region(cdir, region, image)
        quorum = {node.events.wait_for(kind="quorum_region")["region"] for _ in regions}
        assert quorum == {r.uuid for r in regions}
        assert read_attr(root / "sys/kernel/debug/o2hb/quorum_regions") == "0 1 2 \n"
        # One of three failed: 2 x 1 < 3, no fence; heartbeat goes on in the others.
        node.faults.eio(regions[0].uuid, op="write")
        first = node.events.wait_for(kind="write_timeout", timeout=WRITE_TIMEOUT_S + 20)
        assert first["region"] == regions[0].uuid
        wait_for(lambda: read_attr(root / "sys/kernel/debug/o2hb/failed_regions") == "0 \n",
                 what="region 0 failed")
        assert not [e for e in node.events.read() if e["kind"] == "fenced"]
        assert elapsed_ms(node, regions[1]) < WRITE_TIMEOUT_S * 1000
        # Two of three: 2 x 2 >= 3, fence, every region stops without a clean leave.
        node.faults.eio(regions[1].uuid, op="write")
        second = node.events.wait_for(kind="write_timeout", timeout=WRITE_TIMEOUT_S + 20)
        assert second["region"] == regions[1].uuid
        fenced = node.events.wait_for(kind="fenced")
        assert fenced["t"] >= second["t"]
        for region in regions:
            wait_for(lambda r=region: read_attr(cdir / "heartbeat" / r.uuid / "pid") == "",
                     what="every region stopped")
        for region, image in zip(regions, images, strict=True):
            assert slot_generation(image, region, 0) != 0


def test_hbctl_events_reads_the_sysroot(tmp_path: Path) -> None:
    with cluster(tmp_path, n=1) as (nodes, region, _):
        (a,) = nodes
        env = {**os.environ, "HBCTL_SYSROOT": str(a.root)}
        hbctl = str(Path(FAKECFS).parent / "hbctl")
        out = subprocess.run([hbctl, "events", "--json", "--kind", "region_started"],
                             capture_output=True, text=True, env=env, check=True)
        (line,) = out.stdout.splitlines()
        assert f'"region": "{region.uuid}"' in line and '"kind": "region_started"' in line
        out = subprocess.run([hbctl, "events"], capture_output=True, text=True, env=env,
                             check=True)
        assert f"region_started {region.uuid}: o2hb: Heartbeat started on region" in out.stdout
        assert "node_up" in out.stdout
        # --follow prints what comes later, as it comes.
        with subprocess.Popen([hbctl, "events", "--follow", "--kind", "fault_set"],
                              stdout=subprocess.PIPE, text=True, env=env) as follow:
            try:
                a.faults.corrupt(region.uuid)
                assert follow.stdout is not None
                ready, _, _ = select.select([follow.stdout], [], [], 20)
                assert ready, "hbctl events --follow printed nothing"
                assert "fault set: corrupt region=" in follow.stdout.readline()
            finally:
                follow.terminate()
