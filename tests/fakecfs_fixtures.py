"""Shared helpers for tests that mount fakecfs for real (a FUSE mount per test or module)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Where the console scripts are: the venv running the tests, or (packaging lane) the
# unpacked .deb's usr/bin, named by FAKECFS_TEST_BIN.
VENV_BIN = Path(os.environ.get("FAKECFS_TEST_BIN") or Path(sys.executable).parent)
FAKECFS = str(VENV_BIN / "fakecfs")


def fuse_usable() -> str | None:
    """None when this process can mount FUSE, else why not."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not accessible (make setup chmods it as udev would)"
    return None


def require_fuse() -> None:
    why = fuse_usable()
    if why:
        pytest.skip(why)


@contextmanager
def fakecfs_mount(
    mountpoint: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Path]:
    """Mount fakecfs in the background at ``mountpoint``; unmount (cleanly) on exit."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [FAKECFS, "mount", "--background", *args, str(mountpoint)],
        check=True, capture_output=True, text=True, env=env,
    )
    try:
        yield mountpoint
    finally:
        subprocess.run([FAKECFS, "umount", str(mountpoint)], check=False,
                       capture_output=True, env=env)


def wait_for(predicate: Callable[[], object], timeout: float = 20.0,
             interval: float = 0.01, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy (conditions, not sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def write_attr(path: Path | str, value: str) -> None:
    """One write(2) of ``value`` without O_TRUNC/O_CREAT, like libo2cb."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read_attr(path: Path | str) -> str:
    with open(path, encoding="latin-1") as f:
        return f.read()
