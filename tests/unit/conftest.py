"""Real ocfs2 images made by mkfs.ocfs2, shared by the on-disk tests.

Images are sparse 64 MiB files (16 MiB for a heartbeat-only device) made once per
session; mkfs of one takes ~0.1 s. Tests that need them skip when ocfs2-tools is absent.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

# name -> (size, mkfs options). Labels are the variant names.
IMAGE_VARIANTS: dict[str, tuple[str, list[str]]] = {
    "b512": ("64M", ["-b", "512", "-C", "4096", "-N", "4"]),
    "b1024": ("64M", ["-b", "1024", "-C", "4096", "-N", "4"]),
    "b2048": ("64M", ["-b", "2048", "-C", "8192", "-N", "3"]),
    "b4096": ("64M", ["-b", "4096", "-C", "4096", "-N", "4",
                      "--cluster-stack=o2cb", "--cluster-name=webfarm1"]),
    "local": ("64M", ["-b", "1024", "-C", "4096", "-M", "local"]),
    "global": ("64M", ["-b", "4096", "-C", "4096", "-N", "2", "--cluster-stack=o2cb",
                       "--cluster-name=glob", "--global-heartbeat"]),
    "pcmk": ("64M", ["-b", "4096", "-C", "4096", "-N", "2", "--cluster-stack=pcmk",
                     "--cluster-name=mycl"]),
    "classic": ("64M", ["-b", "4096", "-C", "4096", "-N", "2"]),
    "noinline": ("64M", ["-b", "4096", "-C", "16384", "-N", "8",
                         "--fs-features=noinline-data"]),
    "hbdev": ("16M", ["-H", "--cluster-stack=o2cb", "--cluster-name=hbonly"]),
}


def mkfs_ocfs2(path: Path, size: str, options: list[str], label: str) -> Path:
    path.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    journal = [] if "-H" in options else ["-J", "size=4M"]
    subprocess.run(
        ["mkfs.ocfs2", "-q", "-F", *journal, "-L", label, *options, str(path)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )
    return path


@pytest.fixture(scope="session")
def ocfs2_image(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """ocfs2_image(variant) -> path of a fresh-per-session mkfs.ocfs2 image."""
    if shutil.which("mkfs.ocfs2") is None:
        pytest.skip("mkfs.ocfs2 (ocfs2-tools) is not installed")
    folder = tmp_path_factory.mktemp("ocfs2-images")
    made: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in made:
            size, options = IMAGE_VARIANTS[variant]
            made[variant] = mkfs_ocfs2(folder / f"{variant}.img", size, options, variant)
        return made[variant]

    return get
