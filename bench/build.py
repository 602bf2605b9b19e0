"""Builds the C pieces of the bench (attrfs, hammer) into bench/build/, which git ignores.

A binary is rebuilt only when its source is newer, so a repeated run costs nothing here.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SOURCES = BENCH_DIR / "cfuse"
BUILD_DIR = BENCH_DIR / "build"


class BuildError(Exception):
    """A C piece did not compile; str() says which and why."""


def build(name: str, *, fuse: bool = False) -> Path:
    """Compile ``cfuse/NAME.c`` to ``build/NAME`` (with libfuse3 when ``fuse``); its path."""
    src = SOURCES / f"{name}.c"
    out = BUILD_DIR / name
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    BUILD_DIR.mkdir(exist_ok=True)
    flags: list[str] = []
    if fuse:
        try:
            pc = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"],
                                check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise BuildError(f"pkg-config fuse3 failed ({exc}): install libfuse3-dev "
                             "and pkg-config (make setup does)") from exc
        flags = shlex.split(pc.stdout)
    cmd = ["cc", "-O2", "-Wall", "-Wextra", "-o", str(out), str(src), *flags]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildError(f"{shlex.join(cmd)} failed:\n{res.stderr}")
    return out
