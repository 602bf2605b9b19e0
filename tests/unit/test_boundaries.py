"""The emulated kernel and the userland meet only at the sysroot contract.

fakecfs must not import hbctl, nor hbctl fakecfs: what both need (the on-disk reader,
sector-size probing, /proc/mounts escaping) lives in ocfs2fmt, which imports neither.
"""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_packages(package: str) -> dict[str, set[str]]:
    """For each module of ``package``: the top-level packages it imports."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize(("package", "forbidden"), [
    ("fakecfs", {"hbctl"}),
    ("hbctl", {"fakecfs"}),
    ("ocfs2fmt", {"fakecfs", "hbctl"}),
])
def test_no_import_across_the_sysroot_contract(package: str, forbidden: set[str]) -> None:
    modules = imported_packages(package)
    assert modules, f"no modules found under {package}/"
    crossing = {mod: names & forbidden for mod, names in modules.items() if names & forbidden}
    assert crossing == {}


def test_an_old_python_is_refused_with_what_to_run() -> None:
    import ocfs2fmt

    assert ocfs2fmt.python_problem((3, 11, 2)) is None
    assert ocfs2fmt.python_problem((3, 13, 0, "final", 0)) is None
    problem = ocfs2fmt.python_problem((3, 9, 2, "final", 0))
    assert problem == ("fakecfs-hbctl needs Python 3.11 or newer, this is 3.9.2: run it with a "
                       "newer python3 (Debian 12's is 3.11)")


def old_pythons() -> list[str]:
    """Python 3 interpreters older than 3.11 on this machine (pyenv's, or on PATH)."""
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
    found += [p for p in map(shutil.which, ("python3.9", "python3.10")) if p]
    out = []
    for path in dict.fromkeys(found):
        ver = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2] < (3, 11))"],
                             capture_output=True, text=True, check=False)
        if ver.stdout.strip() == "True":
            out.append(path)
    return out


def test_old_interpreters_get_the_message_not_a_traceback(tmp_path: Path) -> None:
    pythons = old_pythons()
    if not pythons:
        pytest.skip("no Python older than 3.11 on this machine")
    for python in pythons:
        for module in ("fakecfs.cli", "hbctl.compat"):  # both packages, as their scripts start
            proc = subprocess.run([python, "-c", f"import {module}"], cwd=tmp_path,
                                  env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                  capture_output=True, text=True, check=False)
            assert proc.returncode == 1, (python, proc.stderr)
            assert proc.stderr.startswith("fakecfs-hbctl needs Python 3.11 or newer, this is 3.")
            assert "Traceback" not in proc.stderr
