"""The emulated kernel and the userland meet only at the sysroot contract.

fakecfs must not import hbctl, nor hbctl fakecfs: what both need (the on-disk reader,
sector-size probing, /proc/mounts escaping) lives in ocfs2fmt, which imports neither.
"""

from __future__ import annotations

import ast
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
