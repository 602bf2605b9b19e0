"""fakecfs under the faults the kernel lane recorded (tests/catalogue/kernel-faults.json),
compared reaction by reaction with the real o2hb's: the same outcome (fence, the peer
declaring the node dead, a rejoin, the dev write's errno), the same log lines modulo
numbers and names, and the fence at the same moment counted in heartbeat intervals.

The kernel ran at its fixed 2000 ms period with dead_threshold 4 (write timeout 6000 ms);
here two fakecfs nodes run at 500 ms with dead_threshold 4, so every timeout is the same
number of intervals (the write timeout three, death by silence four). Node 0 is the node
under test, as the guest's kernel was; node 1 is its peer.
"""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from fakecfs.control import Faults
from tests.fakecfs_fixtures import fakecfs_mount, read_attr, require_fuse, wait_for
from tests.kernel.faultreactions import BY_NAME, RECORDING, SCENARIOS, compare, distinct
from tests.nodes import Region, configure, dev_write_errno, livenodes, mkfs, start_regions

INTERVAL_MS = 500
THRESHOLD = 4
I_S = INTERVAL_MS / 1000
WRITE_TIMEOUT_S = (THRESHOLD - 1) * I_S
SLACK_S = 2.0  # a loaded 2-core machine is late, never early
# The fence is timed from the fault; the last good write was up to one interval before it.
TOLERANCE = 1.0 + SLACK_S / I_S
# Where fakecfs differs on purpose: the exact differences, so that any other change (in
# either direction) fails the test. docs/kernel-lane.md explains each.
KNOWN: dict[str, list[str]] = {
    # The lane freezes a whole VM: its clocks stop with it, so on `cont` its write timeout
    # has not passed; it does not fence and its peer sees it live again. fakecfs's freeze is
    # a hung machine whose clocks run on (the issue's "its write timeout has passed: it
    # fences"), which the kernel lane cannot produce.
    "freeze": ["outcome fenced: kernel False, fakecfs True",
               "outcome live again after thaw: kernel True, fakecfs False",
               "lines only fakecfs logs: ['Heartbeat write timeout to device DEV after N "
               "milliseconds', 'stopping heartbeat on all active regions.', '*** ocfs2 is "
               "very sorry to be fencing this system by restarting ***']"],
}


def recording() -> dict[str, Any]:
    return json.loads(RECORDING.read_text(encoding="utf-8"))


class Node:
    def __init__(self, num: int, root: Path, cdir: Path) -> None:
        self.num, self.root, self.cdir = num, root, cdir
        self.faults = Faults(root)

    def events(self) -> list[dict[str, Any]]:
        text = (self.root / "fakecfs/events").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def first(self, kind: str, after: float = 0.0, **fields: Any) -> dict[str, Any] | None:
        for e in self.events():
            if e["kind"] == kind and e["t"] >= after and all(
                    e.get(k) == v for k, v in fields.items()):
                return e
        return None

    def until(self, kind: str, timeout: float, after: float = 0.0,
              **fields: Any) -> dict[str, Any]:
        wait_for(lambda: self.first(kind, after, **fields), timeout=timeout,
                 what=f"{kind} {fields}")
        found = self.first(kind, after, **fields)
        assert found is not None
        return found

    def elapsed_ms(self, region: Region) -> int:
        return int(read_attr(self.root / "sys/kernel/debug/o2hb" / region.uuid /
                             "elapsed_time_in_ms"))


@contextmanager
def two_nodes(tmp_path: Path, start: bool = True) -> Iterator[tuple[Node, Node, Region, Path]]:
    require_fuse()
    image = mkfs(tmp_path / "shared.img")
    region = Region.of(image)
    with ExitStack() as stack:
        nodes = []
        for num in range(2):
            root = stack.enter_context(fakecfs_mount(tmp_path / f"node{num}",
                                                     "--hb-interval-ms", str(INTERVAL_MS)))
            nodes.append(Node(num, root, configure(root, "demo", 2, num, THRESHOLD)))
        if start:
            start_regions([(n.cdir, region, image) for n in nodes])
            began = time.monotonic()
            wait_for(lambda: all(livenodes(n.root, region.uuid) == [0, 1] for n in nodes),
                     what="all live")
            # Writes after steady state, as in the lane: node 0's write timeout is armed
            # (the first write after both starts returned may still be node 0's last
            # unsteady one while node 1 was starting).
            wait_for(lambda: nodes[0].elapsed_ms(region)
                     < (time.monotonic() - began - I_S) * 1000,
                     what="a good write after steady state")
        yield nodes[0], nodes[1], region, image


def reaction_lines(node: Node, since: float, until: float | None = None) -> list[str]:
    """What the node logged from ``since``, as the kernel prints it by default: no debug
    lines (o2hb's node up/down need its HEARTBEAT log mask) and no fault bookkeeping."""
    return distinct([e["message"] for e in node.events()
                     if e["t"] >= since and (until is None or e["t"] <= until)
                     and e["level"] != "debug" and e["kind"] not in ("fault_set",
                                                                     "fault_cleared")])


def command(template: str, region: Region) -> str:
    return f"{template.format(DELAY=int(5 * WRITE_TIMEOUT_S * 1000))} region={region.uuid}"


def run_table_fault(tmp_path: Path, name: str) -> dict[str, Any]:
    """A fault on node 0's disk while running (the lane's dm tables)."""
    with two_nodes(tmp_path) as (a, b, region, _):
        a.faults.command(command(BY_NAME[name].fakecfs or "", region))
        set_at = a.until("fault_set", 10)["t"]
        limit = WRITE_TIMEOUT_S + (THRESHOLD + 2) * I_S + 2 * SLACK_S
        fenced = dead = None
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and (fenced is None or dead is None):
            fenced = fenced or a.first("fenced", set_at)
            dead = dead or b.first("node_down", set_at, node=0)
            time.sleep(0.02)
        out: dict[str, Any] = {
            "outcome": {"fenced": fenced is not None, "peer declared dead": dead is not None},
            "lines": reaction_lines(a, set_at, fenced["t"] if fenced else None),
            "intervals": {}}
        if fenced:
            out["intervals"]["fence after the fault"] = round((fenced["t"] - set_at) / I_S, 1)
        return out


def run_freeze(tmp_path: Path) -> dict[str, Any]:
    with two_nodes(tmp_path) as (a, b, region, _):
        started = time.monotonic()
        a.faults.freeze()
        set_at = a.until("fault_set", 10)["t"]
        b.until("node_down", (THRESHOLD + 3) * I_S + SLACK_S, set_at, node=0)
        # Stopped as long as the lane stopped the guest: the write timeout and two periods.
        wait_for(lambda: time.monotonic() - set_at >= WRITE_TIMEOUT_S + 2 * I_S, what="stall")
        a.faults.thaw()
        thawed = time.monotonic()
        limit = WRITE_TIMEOUT_S + 3 * I_S + SLACK_S
        back = None
        while time.monotonic() < thawed + limit and a.first("fenced", set_at) is None:
            if back is None and 0 in livenodes(b.root, region.uuid):
                back = time.monotonic()
            time.sleep(0.02)
        return {"outcome": {"peer declared dead": True,
                            "fenced": a.first("fenced", set_at) is not None,
                            "live again after thaw": back is not None},
                "lines": reaction_lines(a, started), "intervals": {}}


def run_peer_corrupt(tmp_path: Path) -> dict[str, Any]:
    with two_nodes(tmp_path) as (a, b, region, _):
        started = time.monotonic()
        b.faults.corrupt(region.uuid)
        set_at = b.until("fault_set", 10)["t"]
        a.until("node_down", (THRESHOLD + 3) * I_S + SLACK_S, set_at, node=1)
        b.faults.clear("corrupt", region.uuid)
        b.faults.deadms(region.uuid, 9000)
        cleared = time.monotonic()
        wait_for(lambda: 1 in livenodes(a.root, region.uuid), timeout=6 * I_S + SLACK_S,
                 what="the peer live again")
        # The warning is printed as the peer turns live: give the event a moment to land.
        wait_for(lambda: a.first("dead_ms_mismatch", cleared) is not None, timeout=SLACK_S,
                 what="dead count warning")
        return {"outcome": {"peer declared dead": True, "peer live again": True,
                            "fenced": a.first("fenced") is not None},
                "lines": reaction_lines(a, started), "intervals": {}}


def run_eio_start(tmp_path: Path) -> dict[str, Any]:
    with two_nodes(tmp_path, start=False) as (a, _, region, image):
        rdir = a.cdir / "heartbeat" / region.uuid
        rdir.mkdir()
        for attr, value in (("block_bytes", region.block_bytes),
                            ("start_block", region.start_block), ("blocks", region.blocks)):
            (rdir / attr).write_text(str(value))
        a.faults.command(command(BY_NAME["eio-start"].fakecfs or "", region))
        set_at = a.until("fault_set", 10)["t"]
        err = dev_write_errno(rdir, image)
        return {"outcome": {"dev_errno": err}, "lines": reaction_lines(a, set_at),
                "intervals": {}}


RUNNERS = {"freeze": run_freeze, "peer-corrupt": run_peer_corrupt,
           "eio-start": run_eio_start}


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_fakecfs_reacts_like_the_recorded_kernel(
        name: str, tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    kernel = recording()["scenarios"][name]  # a KeyError: record it (docs/kernel-lane.md)
    runner = RUNNERS.get(name)
    got = runner(tmp_path) if runner else run_table_fault(tmp_path, name)
    diffs = compare(kernel, got, TOLERANCE)
    if name in KNOWN:
        record_property("known_difference", True)
    assert diffs == KNOWN.get(name, []), f"{name}: fakecfs differs from the recorded kernel"


def test_recording_is_complete() -> None:
    """Every scenario recorded, at the settings this module scales from."""
    rec = recording()
    assert set(rec["scenarios"]) == set(BY_NAME)
    assert rec["interval_ms"] == 2000 and rec["dead_threshold"] == THRESHOLD
    fences = [n for n, r in rec["scenarios"].items() if r["outcome"].get("fenced")]
    assert all("fence after the fault" in rec["scenarios"][n]["intervals"] for n in fences)
    assert rec["scenarios"]["eio-start"]["outcome"]["dev_errno"] == errno.EIO
