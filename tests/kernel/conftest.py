"""The kernel lane's fixtures: the built guest (or a skip saying why qemu cannot run), and a
summary printed at the end of the run (catalogue N/N, interop times)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel import lane

SUMMARY: list[str] = []


@pytest.fixture(scope="session")
def artefacts() -> lane.Artefacts:
    """Debian's 6.1 kernel and the lane's initramfs; skip only if qemu cannot run here."""
    try:
        qemu = lane.ensure_qemu()
        art = lane.build()
    except lane.LaneUnavailable as exc:
        pytest.skip(f"real-kernel lane unavailable: {exc}")
    proc = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"real-kernel lane unavailable: {qemu} does not run: {proc.stderr[-200:]}")
    return art


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """Scratch space not on a tmpfs: qemu opens the disks with cache=none (O_DIRECT)."""
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True,
                          text=True, check=False).stdout.strip()
    if kind != "tmpfs":
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="fakecfs-kernel-lane-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("real-kernel lane")
        for line in SUMMARY:
            terminalreporter.write_line(line)
