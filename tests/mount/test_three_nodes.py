"""Three emulated nodes (three fakecfs daemons) heartbeating on one mkfs.ocfs2 image.

What a cluster operator relies on: everyone sees everyone; a node that dies (kill -9 of its
daemon) is declared dead after dead_threshold intervals; a clean stop is noticed at the next
read; the image is only written inside the heartbeat slots, and debugfs.ocfs2 decodes them.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from fakecfs import daemon
from tests.fakecfs_fixtures import fakecfs_mount, require_fuse, wait_for
from tests.nodes import Region, configure, livenodes, mkfs, start_regions

INTERVAL_MS = 100
DEAD_THRESHOLD = 5


def outside_heartbeat_digest(image: Path, region: Region) -> str:
    """sha256 of every byte of the image except the 255 heartbeat slots."""
    lo = region.start_block * region.block_bytes
    hi = lo + region.blocks * region.block_bytes
    h = hashlib.sha256()
    with open(image, "rb") as f:
        h.update(f.read(lo))
        f.seek(hi)
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_three_nodes_see_each_other_die_and_leave(tmp_path: Path) -> None:
    require_fuse()
    image = mkfs(tmp_path / "shared.img")
    region = Region.of(image)
    before = outside_heartbeat_digest(image, region)
    with ExitStack() as stack:
        roots = [
            stack.enter_context(fakecfs_mount(tmp_path / f"node{n}",
                                              "--hb-interval-ms", str(INTERVAL_MS)))
            for n in range(3)
        ]
        cdirs = [configure(root, "demo", 3, n, DEAD_THRESHOLD) for n, root in enumerate(roots)]
        start_regions([(cdir, region, image) for cdir in cdirs])
        for root in roots:
            wait_for(lambda r=root: livenodes(r, region.uuid) == [0, 1, 2], what="all live")

        # kill -9 node 2's daemon: no clean leave; the others count equal samples.
        pid = daemon.daemon_pid(str(roots[2]))
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        for root in roots[:2]:
            wait_for(lambda r=root: livenodes(r, region.uuid) == [0, 1], what="death noticed")
        noticed = time.monotonic() - killed
        intervals = noticed * 1000 / INTERVAL_MS
        # Declared dead after dead_threshold equal samples: never sooner than threshold-1
        # intervals after the last write; the upper bound leaves room for a loaded machine.
        assert DEAD_THRESHOLD - 1 <= intervals <= DEAD_THRESHOLD + 4, intervals

        # Clean stop of node 1: its generation-0 block is seen at node 0's next read.
        (cdir1 := cdirs[1] / "heartbeat" / region.uuid).rmdir()
        assert not cdir1.exists()
        left = time.monotonic()
        wait_for(lambda: livenodes(roots[0], region.uuid) == [0], what="clean leave noticed")
        assert (time.monotonic() - left) * 1000 / INTERVAL_MS <= 3

    assert outside_heartbeat_digest(image, region) == before
    out = subprocess.run(["debugfs.ocfs2", "-R", "hb", str(image)], check=True,
                         capture_output=True, text=True).stdout
    rows = {int(m[0]): m for m in re.findall(
        r"^\s*(\d+):\s+(\d+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+(\d+)", out, re.M)}
    assert set(rows) == {0, 1, 2}, out
    for node, row in rows.items():
        assert int(row[1]) == node
        assert int(row[5]) == DEAD_THRESHOLD * 2000  # hb_dead_ms is threshold * 2000
    assert int(rows[1][3], 16) == 0  # node 1 left cleanly: generation 0
    assert int(rows[2][3], 16) != 0  # node 2 died: its last block stays
    assert int(rows[0][3], 16) == 0  # node 0 stopped cleanly at umount


@pytest.mark.parametrize("strict", [True])
def test_strict_refuses_image_files(tmp_path: Path, strict: bool) -> None:
    require_fuse()
    image = mkfs(tmp_path / "img")
    region = Region.of(image)
    with fakecfs_mount(tmp_path / "m", "--strict", "--hb-interval-ms", "50") as root:
        cdir = configure(root, "demo", 1, 0)
        with pytest.raises(OSError) as exc:
            start_regions([(cdir, region, image)])
        assert exc.value.errno == 22
        assert (cdir / "heartbeat" / region.uuid / "dev").read_text() == ""
