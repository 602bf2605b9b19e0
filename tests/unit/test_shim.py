"""fakecfs.shim: the LD_PRELOAD shim found, checked and built on first use.

`elf_problem` is a core (bytes in, reason out). The rest builds the real shim with the
machine's compiler into a temporary cache (a fraction of a second each) and loads it.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import struct
import sys
from pathlib import Path

import pytest

from fakecfs import shim

OWN = Path(sys.executable).read_bytes()[:64]
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc)")


def with_fields(head: bytes, **fields: int) -> bytes:
    """``head`` with ELF header bytes replaced: cls (4), data (5), type (16), machine (18)."""
    out = bytearray(head)
    order = "<" if head[5] == 1 else ">"
    for name, value in fields.items():
        if name == "cls":
            out[4] = value
        elif name == "data":
            out[5] = value
        else:
            struct.pack_into(order + "H", out, {"type": 16, "machine": 18}[name], value)
    return bytes(out)


def test_elf_problem_accepts_a_shared_library_for_this_machine() -> None:
    assert shim.elf_problem(with_fields(OWN, type=3), OWN) is None


@pytest.mark.parametrize(("candidate", "reason"), [
    (b"", "not an ELF file"),
    (b"#!/bin/sh\necho not a library\n", "not an ELF file"),
    (with_fields(OWN, cls=1 if OWN[4] == 2 else 2, type=3), "library, this Python is"),
    (with_fields(OWN, data=2 if OWN[5] == 1 else 1, type=3), "other byte order"),
    (with_fields(OWN, machine=183 if OWN[18] != 183 else 62, type=3), "machine type"),
    (with_fields(OWN, type=2), "not a shared library"),
])
def test_elf_problem_names_what_is_wrong(candidate: bytes, reason: str) -> None:
    problem = shim.elf_problem(candidate, OWN)
    assert problem is not None and reason in problem


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shim's source alone in a folder, and the cache in a fresh XDG_CACHE_HOME."""
    src_dir = tmp_path / "preload"
    src_dir.mkdir()
    shutil.copy(shim.PRELOAD_SOURCE, src_dir / "fakecfs_preload.c")
    monkeypatch.setattr(shim, "PRELOAD_DIR", str(src_dir))
    monkeypatch.setattr(shim, "PRELOAD_SOURCE", str(src_dir / "fakecfs_preload.c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FAKECFS_PRELOAD", raising=False)  # no shim named by the caller
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    return tmp_path


@needs_cc
def test_first_use_builds_into_the_user_cache_once(isolated: Path) -> None:
    built = shim.preload_library()
    assert built == shim.cache_path()
    assert Path(built).parent == isolated / "cache" / "fakecfs"
    assert shim.check(built) is None
    mtime = os.stat(built).st_mtime_ns
    assert shim.preload_library() == built and os.stat(built).st_mtime_ns == mtime
    assert [p.name for p in Path(built).parent.iterdir()] == [Path(built).name]  # no temp left
    # A changed source is a different cache file: an old build is never used for it.
    with open(shim.PRELOAD_SOURCE, "a") as f:
        f.write("\n/* changed */\n")
    assert shim.preload_library() != built


@needs_cc
def test_a_library_next_to_the_source_wins_and_is_checked(isolated: Path) -> None:
    beside = Path(shim.PRELOAD_DIR) / shim.PRELOAD_NAME
    shim.build(str(beside))
    assert shim.preload_library() == str(beside)
    assert not (isolated / "cache").exists()
    # A new file, not the loaded one truncated (that would SIGBUS this process later).
    beside.unlink()
    beside.write_bytes(b"\x7fELF garbage, truncated by a failed copy")
    with pytest.raises(shim.ShimError, match=r"fakecfs_preload.so is not a usable fakecfs "
                       r"shim \(.*\): remove it, or rebuild it with 'make -C"):
        shim.preload_library()


def test_a_foreign_library_is_recognised() -> None:
    libc = ctypes.util.find_library("c")
    path = next((p for p in ("/lib/x86_64-linux-gnu/" + str(libc), "/usr/lib/" + str(libc))
                 if os.path.exists(p)), None)
    if path is None:
        pytest.skip("libc's path not found")
    problem = shim.check(path)
    assert problem is not None and "not fakecfs's" in problem


def test_garbage_in_the_cache_is_rebuilt_or_reported(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = Path(shim.cache_path())
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a library")
    monkeypatch.setenv("CC", "no-such-compiler-here")
    with pytest.raises(shim.ShimError, match=r"no C compiler \(no-such-compiler-here\) was "
                       r"found: install one \(Debian: apt-get install gcc\)"):
        shim.preload_library()
    if shutil.which("cc"):
        monkeypatch.delenv("CC")
        assert shim.preload_library() == str(cached)
        assert shim.check(str(cached)) is None


@needs_cc
def test_a_broken_source_reports_the_compiler_error(isolated: Path) -> None:
    Path(shim.PRELOAD_SOURCE).write_text("#error this source is broken\n")
    with pytest.raises(shim.ShimError, match=r"building the statfs shim with .* failed:\n"
                       r".*this source is broken"):
        shim.preload_library()
    assert list((isolated / "cache" / "fakecfs").iterdir()) == []


def test_a_missing_source_says_the_install_is_incomplete(isolated: Path) -> None:
    os.unlink(shim.PRELOAD_SOURCE)
    with pytest.raises(shim.ShimError, match="installation is incomplete, reinstall"):
        shim.preload_library()


@needs_cc
def test_a_shim_the_installation_names_is_used_and_checked(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = isolated / "elsewhere" / shim.PRELOAD_NAME
    named.parent.mkdir()
    shim.build(str(named))
    monkeypatch.setenv("LD_PRELOAD", f"/lib/other.so:{named}")
    assert shim.preload_hint() == str(named)
    assert shim.preload_library() == str(named)
    assert not (isolated / "cache").exists()  # nothing built
    garbage = isolated / "garbage.so"
    garbage.write_bytes(b"not a library")
    monkeypatch.setenv("FAKECFS_PRELOAD", str(garbage))  # wins over LD_PRELOAD
    with pytest.raises(shim.ShimError, match=r"garbage.so \(named by FAKECFS_PRELOAD or "
                       r"LD_PRELOAD\) is not a usable fakecfs shim \(not an ELF file\)"):
        shim.preload_library()
