"""fakecfs's o2hb debugfs and /sys/fs/{o2cb,ocfs2} files against the real kernel's.

kernel-surfaces.json was recorded by the real-kernel lane (tests/kernel, hbctl task) with
one local node (num 0 of 2) heartbeating one region; the same state is built here on a
fakecfs mount and every file's mode and content compared (elapsed_time_in_ms: mode only).
Debian's 6.1 has ``dlm_recover_callback_support`` (the post-2014 mode), which fakecfs shows
only with ``--dlm-recover-callbacks``: the mount here asks for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.catalogue.recorded import SURFACES, load_recording
from tests.fakecfs_fixtures import fakecfs_mount, require_fuse
from tests.nodes import Region, configure, mkfs, start_region

# Kernel files fakecfs does not provide, with the reason (docs/kernel-lane.md).
MAY_BE_MISSING = {
    "sys/fs/o2cb/logmask/": "o2cb's masklog switches: no tool of the heartbeat stack reads them",
}


def fakecfs_surfaces(sysroot: Path, uuid: str) -> dict[str, list[str | None]]:
    out: dict[str, list[str | None]] = {}
    for top in ("sys/kernel/debug/o2hb", "sys/fs/o2cb", "sys/fs/ocfs2"):
        for dirpath, _, files in os.walk(sysroot / top):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                mode = f"{os.stat(path).st_mode & 0o7777:04o}"
                text = None
                if name != "elapsed_time_in_ms":
                    with open(path, encoding="latin-1") as f:
                        text = f.read()
                rel = os.path.relpath(path, sysroot).replace(uuid, "UUID")
                out[rel] = [mode, text]
    return out


def test_o2hb_and_o2cb_files_match_the_recorded_kernel(tmp_path: Path) -> None:
    require_fuse()
    with fakecfs_mount(tmp_path / "sysroot", "--hb-interval-ms", "50",
                       "--dlm-recover-callbacks") as sysroot:
        compare(sysroot, tmp_path)


def compare(sysroot: Path, tmp_path: Path) -> None:
    kernel = load_recording(SURFACES)["files"]
    image = mkfs(tmp_path / "vol.img")
    region = Region.of(image)
    cdir = configure(sysroot, "demo", nodes=2, local=0)
    start_region(cdir, region, image)
    try:
        ours = fakecfs_surfaces(sysroot, region.uuid)
    finally:
        os.rmdir(cdir / "heartbeat" / region.uuid)
    problems = []
    for path, want in sorted(kernel.items()):
        got = ours.get(path)
        if got is None and any(path.startswith(p) for p in MAY_BE_MISSING):
            continue
        if got != want:
            problems.append(f"{path}: kernel {want}, fakecfs {got}")
    problems += [f"{path}: fakecfs only" for path in sorted(set(ours) - set(kernel))]
    assert problems == []
