"""The packaging lane: the project as its users install it, built once per input.

- `python -m build` makes the sdist and, from that sdist, the wheel (so the sdist is
  proved complete); the wheel is installed, not editable, into a fresh venv made from
  Debian's ``/usr/bin/python3``, which then has every console script.
- ``pipx install`` of the sdist gives every command too.
- `make deb` (debhelper + dh-python from the sdist, lintian) makes the Debian package.
- The .deb's files are unpacked and the suite's fast part runs with them on Debian's own
  python3-pyfuse3/-trio/-pyudev/-sysv-ipc (a ``--system-site-packages`` venv holding only
  the test tools), which are the minimum versions pyproject names.

Everything slow is cached under ``$FAKECFS_PACKAGING_CACHE`` (default
``/var/cache/fakecfs-packaging``) in a folder named for the hash of the inputs (the
files the sdist is made of); a new key removes older folders. The venvs holding only
tools (pipx; the test tools over Debian's packages) do not depend on the inputs and
are kept across keys. The first build needs
PyPI (through pip's configuration) for pyfuse3's sdist and the build backend; where
there is none, the lane skips and says so.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("FAKECFS_PACKAGING_CACHE", "/var/cache/fakecfs-packaging"))
SYSTEM_PYTHON = "/usr/bin/python3"
# What the sdist is made of (MANIFEST.in + the packages): any change makes a new key.
INPUTS = ("pyproject.toml", "MANIFEST.in", "README.md", "Makefile", "fakecfs", "hbctl",
          "ocfs2fmt", "debian", "docs", "tests", "container")
_SKIP_PARTS = {"__pycache__", ".pytest_cache", ".hypothesis"}
TEST_TOOLS = ("pytest>=7", "pytest-trio>=0.8", "hypothesis>=6")
# Debian 12's versions, pyproject's minimums: the suite's fast part runs on exactly these.
BOOKWORM = {"pyfuse3": "3.2.1", "trio": "0.22.0", "pyudev": "0.24.0", "sysv_ipc": "1.0.0"}


# Tools that do not depend on the inputs: kept across keys, next to the key folders.
SHARED = ("system-venv", "pipx-tool")


class Unavailable(Exception):
    """The lane cannot run here (no network for the first build, not root...): skip."""


def input_key() -> str:
    h = hashlib.sha256()
    for name in INPUTS:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            rel = f.relative_to(ROOT)
            if _SKIP_PARTS & set(rel.parts) or f.suffix in (".so", ".o", ".pyc"):
                continue
            h.update(str(rel).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@contextmanager
def locked_workdir() -> Iterator[Path]:
    """This input's cache folder, held exclusively (two runs must not build into one)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    key = input_key()
    with open(CACHE / "lane.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for old in CACHE.iterdir():
            if old.is_dir() and old.name not in (key, *SHARED):
                shutil.rmtree(old, ignore_errors=True)
        work = CACHE / key
        work.mkdir(exist_ok=True)
        yield work


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload,no-any-return]


def _need(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode == 0:
        return
    text = proc.stdout[-3000:] + proc.stderr[-3000:]
    offline = ("Could not find a version", "No matching distribution", "Network is unreachable",
               "Temporary failure in name resolution", "Failed to establish a new connection")
    if any(s in text for s in offline):
        raise Unavailable(f"{what} needs PyPI and it cannot be reached (no network?):\n{text}")
    raise AssertionError(f"{what} failed (exit {proc.returncode}):\n{text}")


def python_dist(work: Path) -> tuple[Path, Path]:
    """(sdist, wheel), built once for this input."""
    out = work / "python"
    if not list(out.glob("*.whl")):
        shutil.rmtree(out, ignore_errors=True)
        _need(run([sys.executable, "-m", "build", "-o", str(out), str(ROOT)]), "python -m build")
    return next(out.glob("*.tar.gz")), next(out.glob("*.whl"))


def wheel_venv(work: Path, wheel: Path) -> Path:
    """A fresh venv from /usr/bin/python3 with the wheel installed (not editable)."""
    venv = work / "wheel-venv"
    if not (venv / ".ok").exists():
        shutil.rmtree(venv, ignore_errors=True)
        _need(run([SYSTEM_PYTHON, "-m", "venv", str(venv)]), "venv")
        _need(run([str(venv / "bin/pip"), "install", "-q", str(wheel)]), "pip install the wheel")
        (venv / ".ok").touch()
    return venv


def pipx_install(work: Path, sdist: Path) -> Path:
    """``pipx install`` of the sdist (pipx itself from PyPI, in its own venv); returns the
    folder pipx puts the commands in."""
    tool, home = work.parent / "pipx-tool", work / "pipx"
    if not (home / ".ok").exists():
        shutil.rmtree(home, ignore_errors=True)
        if not (tool / ".ok").exists():
            shutil.rmtree(tool, ignore_errors=True)
            _need(run([SYSTEM_PYTHON, "-m", "venv", str(tool)]), "venv for pipx")
            _need(run([str(tool / "bin/pip"), "install", "-q", "pipx"]), "pip install pipx")
            (tool / ".ok").touch()
        env = dict(os.environ, PIPX_HOME=str(home), PIPX_BIN_DIR=str(home / "bin"),
                   PIPX_MAN_DIR=str(home / "man"))
        _need(run([str(tool / "bin/pipx"), "install", "--python", SYSTEM_PYTHON, str(sdist)],
                  env=env, cwd=work), "pipx install the sdist")
        (home / ".ok").touch()
    return home / "bin"


def deb(work: Path) -> Path:
    """The .deb that `make deb` builds (with lintian), once for this input."""
    out = work / "deb"
    if not list(out.glob("fakecfs-hbctl_*.deb")):
        if os.geteuid() != 0:
            raise Unavailable("make deb here needs root (it installs debhelper, dh-python, "
                              "lintian when missing)")
        _need(run(["make", "-s", "-C", str(ROOT), "deb", f"DIST={work}"]), "make deb")
    return next(out.glob("fakecfs-hbctl_*.deb"))


def unpacked(work: Path, package: Path) -> Path:
    """The .deb's files under a private root; returns its dist-packages folder."""
    root = work / "deb-root"
    if not (root / ".ok").exists():
        shutil.rmtree(root, ignore_errors=True)
        _need(run(["dpkg-deb", "-x", str(package), str(root)]), "dpkg-deb -x")
        (root / ".ok").touch()
    return root / "usr/lib/python3/dist-packages"


def system_venv(work: Path) -> Path:
    """Debian's python3 and its packages, plus only the test tools (never the project's
    dependencies from PyPI: they are already satisfied by Debian's)."""
    venv = work.parent / "system-venv"
    if not (venv / ".ok").exists():
        shutil.rmtree(venv, ignore_errors=True)
        _need(run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)]), "venv")
        _need(run([str(venv / "bin/pip"), "install", "-q", *TEST_TOOLS]), "pip install test tools")
        (venv / ".ok").touch()
    return venv
