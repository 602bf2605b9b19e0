"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakecfs_fixtures import fakecfs_mount, require_fuse


@pytest.fixture
def sysroot(tmp_path: Path) -> Iterator[Path]:
    """A fresh fakecfs mount with a 50 ms heartbeat; its root is the sysroot."""
    require_fuse()
    with fakecfs_mount(tmp_path / "sysroot", "--hb-interval-ms", "50") as mnt:
        yield mnt


@pytest.fixture(scope="module")
def shared_sysroot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One fakecfs mount for a whole module (tests must leave it clean)."""
    require_fuse()
    with fakecfs_mount(tmp_path_factory.mktemp("mnt") / "sysroot",
                       "--hb-interval-ms", "50") as mnt:
        yield mnt
