"""The fidelity catalogue replayed with real syscalls on a real fakecfs FUSE mount."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.catalogue.catalogue import Case, SyscallReplay, cleanup, load, replay

# Cases tagged blockdev need a block device for IMAGE: tests/catalogue/
# test_catalogue_recorded.py replays them on a loop device.
CASES = [c for c in load() if "blockdev" not in c.tags]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "hb.img"
    subprocess.run(["truncate", "-s", "1M", str(path)], check=True)
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_catalogue_case(case: Case, shared_sysroot: Path, image: Path) -> None:
    configfs = shared_sysroot / "sys/kernel/config"
    try:
        problems = replay(case, SyscallReplay(str(configfs), str(image)))
    finally:
        cleanup(str(configfs))
    assert problems == []
