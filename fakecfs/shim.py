"""The LD_PRELOAD shim `fakecfs run` gives the C tools: find it, check it, build it once.

The shim (``preload/fakecfs_preload.c``) is shipped as C source inside the package, not as
a compiled library in a platform wheel: it is a few hundred lines that build in well under
a second against the machine's own libc, the wheel stays one pure-Python wheel for every
architecture, and a Debian package builds it at package-build time instead (then it sits
next to its source, where it is found first). Where it is looked for, in order:

0. a shim the installation already names: ``FAKECFS_PRELOAD``, or an ``LD_PRELOAD`` entry
   named ``fakecfs_preload.so`` (the node image preloads the package's everywhere; the
   put_super helper's launcher is told the daemon's this way). Checked like the others.
1. ``preload/fakecfs_preload.so`` next to the source: a checkout's
   ``make -C fakecfs/preload`` or the Debian package's prebuilt copy. Used when it is not
   older than the source; a library there that is not our shim for this machine is an error
   naming the file (a broken install must not be papered over).
2. the per-user cache, ``$XDG_CACHE_HOME/fakecfs/`` (default ``~/.cache/fakecfs/``), a file
   named for the source's hash and the machine, built there with ``cc`` on first use
   (write to a temporary name, then rename: concurrent first runs are safe).

`elf_problem` is the core: given the first bytes of a candidate and of the running
interpreter, it says why the candidate cannot be loaded into the tools, or None.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping

PRELOAD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "preload")
PRELOAD_NAME = "fakecfs_preload.so"
PRELOAD_SOURCE = os.path.join(PRELOAD_DIR, "fakecfs_preload.c")
# Exported by the shim and by nothing else: tells our library from any other .so.
MARKER_SYMBOL = "fakecfs_preload_abi"
CFLAGS = ("-O2", "-Wall", "-fPIC", "-shared")

_ELF_MAGIC = b"\x7fELF"
_ET_DYN = 3
_CLASS_NAMES = {1: "32-bit", 2: "64-bit"}


class ShimError(Exception):
    """The shim cannot be found, checked or built; the message says what to do."""


def elf_problem(candidate: bytes, reference: bytes) -> str | None:
    """Why ``candidate`` (a file's first 64 bytes) is no shared library for the machine of
    ``reference`` (the running interpreter's first 64 bytes); None if it could be."""
    if len(candidate) < 20 or candidate[:4] != _ELF_MAGIC:
        return "not an ELF file"
    if candidate[4] != reference[4]:
        got = _CLASS_NAMES.get(candidate[4], f"class {candidate[4]}")
        want = _CLASS_NAMES.get(reference[4], f"class {reference[4]}")
        return f"a {got} library, this Python is {want}"
    order = "<" if reference[5] == 1 else ">"
    if candidate[5] != reference[5]:
        return "built for the other byte order"
    e_type, e_machine = struct.unpack_from(order + "HH", candidate, 16)
    (own_machine,) = struct.unpack_from(order + "H", reference, 18)
    if e_machine != own_machine:
        return f"built for machine type {e_machine}, this machine is type {own_machine}"
    if e_type != _ET_DYN:
        return "an ELF file but not a shared library"
    return None


def preload_hint(env: Mapping[str, str] = os.environ) -> str | None:
    """A shim already named: ``FAKECFS_PRELOAD``, or an ``LD_PRELOAD`` entry of that name."""
    named = env.get("FAKECFS_PRELOAD")
    if named and os.path.exists(named):
        return named
    for entry in env.get("LD_PRELOAD", "").replace(" ", ":").split(":"):
        if os.path.basename(entry) == PRELOAD_NAME and os.path.exists(entry):
            return entry
    return None


def preload_library() -> str:
    """Path of a checked shim for this machine, built into the cache on first use."""
    hint = preload_hint()
    if hint is not None:
        problem = check(hint)
        if problem:
            raise ShimError(f"{hint} (named by FAKECFS_PRELOAD or LD_PRELOAD) is not a usable "
                            f"fakecfs shim ({problem}): name a working one, or unset it")
        return hint
    beside = os.path.join(PRELOAD_DIR, PRELOAD_NAME)
    if os.path.exists(beside) and _not_older_than_source(beside):
        problem = check(beside)
        if problem:
            raise ShimError(f"{beside} is not a usable fakecfs shim ({problem}): remove it, "
                            f"or rebuild it with 'make -C {PRELOAD_DIR}'")
        return beside
    if not os.path.exists(PRELOAD_SOURCE):
        raise ShimError(f"the statfs shim's source {PRELOAD_SOURCE} is missing: this "
                        "installation is incomplete, reinstall fakecfs-hbctl")
    cached = cache_path()
    if os.path.exists(cached) and check(cached) is None:
        return cached
    build(cached)
    problem = check(cached)
    if problem:
        raise ShimError(f"{cached} was built but cannot be used ({problem})")
    return cached


def check(path: str) -> str | None:
    """Why ``path`` cannot serve as the shim, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
        with open(sys.executable, "rb") as f:
            own = f.read(64)
    except OSError as e:
        return f"cannot read it: {e.strerror}"
    problem = elf_problem(head, own)
    if problem:
        return problem
    try:
        # No constructors in the shim, and RTLD_LOCAL: loading it here interposes nothing.
        lib = ctypes.CDLL(path)
    except OSError as e:
        return f"the dynamic loader refuses it: {e}"
    if not hasattr(lib, MARKER_SYMBOL):
        return f"a shared library, but not fakecfs's (no {MARKER_SYMBOL} symbol)"
    return None


def cache_path() -> str:
    """The per-user cache file for this source on this machine."""
    with open(PRELOAD_SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    name = f"fakecfs_preload-{digest}-{platform.machine() or 'unknown'}.so"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fakecfs", name)


def build(out: str) -> None:
    """Compile the shim to ``out`` with ``$CC`` (default ``cc``)."""
    compiler = os.environ.get("CC", "cc")
    cc = shutil.which(compiler)
    if cc is None:
        raise ShimError(
            f"the statfs shim must be built once for this machine and no C compiler "
            f"({compiler}) was found: install one (Debian: apt-get install gcc), then run "
            f"the command again")
    try:
        os.makedirs(os.path.dirname(out), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=os.path.dirname(out))
    except OSError as e:
        raise ShimError(f"cannot write the shim's cache {os.path.dirname(out)}: {e.strerror} "
                        "(set XDG_CACHE_HOME to a writable folder)") from e
    os.close(fd)
    try:
        proc = subprocess.run([cc, *CFLAGS, "-o", tmp, PRELOAD_SOURCE, "-ldl"],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            hint = ""
            if "No such file" in proc.stderr and ".h" in proc.stderr:
                hint = "\n(the C library headers are missing: Debian: apt-get install libc6-dev)"
            raise ShimError(f"building the statfs shim with {cc} failed:\n"
                            f"{proc.stderr.strip()}{hint}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _not_older_than_source(path: str) -> bool:
    try:
        return os.stat(path).st_mtime >= os.stat(PRELOAD_SOURCE).st_mtime
    except OSError:
        return True  # no source to compare with (an install without it): trust the library
