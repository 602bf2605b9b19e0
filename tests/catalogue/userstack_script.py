"""The user-stack surfaces as a script of syscalls, run on the real kernel and on fakecfs.

The real-kernel lane (tests/kernel, task ``userstack``) loads Debian's ``dlm`` and
``ocfs2_stack_user`` and runs :func:`run_script` on the kernel's own files; the result is
``kernel-userstack.json``. Every ``make test`` runs the same script on a fakecfs mount
(tests/catalogue/test_userstack_recorded.py) and requires the same answers: the
``cluster_stack`` store (good and bad labels, read back after each), the plugin files,
``ocfs2_control``'s T01 handshake with its errnos for good and bad writes on several open
files, and the version read of ``dlm-control``.

The *down phase* (:func:`down_phase`) is separate, and last: on Debian's 6.1 a well-formed
DOWN from a valid handle oopses the kernel ("detected buffer overflow in __fortify_strlen":
the UUID field is not NUL-terminated inside its 32 bytes, and the fortified strlen of the
connection lookup traps), killing the writer with ocfs2_control's mutex held. The guest runs
it in a child process and records how the child ended.

No mount of a user-stack volume is made (the kernel would need dlm_controld), so the last
close of a valid ocfs2_control handle is safe here: with no live connection it only resets
the node number. Standard library only: the guest imports it too.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

USERSTACK_RECORDING = Path(__file__).with_name("kernel-userstack.json")
UUID = "1431E6308F3E4C30B5A4906741DD1C4D"  # no volume has it: DOWN matches nothing

STACK_WRITES = [b"pcmk", b"cman\n", b"pcm", b"pcmkx", b"pc\0k", b"pcmk\n\n", b"abcd",
                b"o2cb\n"]
FILES = ["loaded_cluster_plugins", "active_cluster_plugin", "cluster_stack",
         "max_locking_protocol", "dlm_recover_callback_support"]


def _result(fn: object) -> str:
    try:
        out = fn()  # type: ignore[operator]
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))
    if isinstance(out, bytes):
        return "data:" + out.decode("latin-1")
    return f"ok:{out}"


def _write(path: str, data: bytes) -> str:
    def go() -> int:
        fd = os.open(path, os.O_WRONLY)
        try:
            return os.write(fd, data)
        finally:
            os.close(fd)
    return _result(go)


def _read(path: str) -> str:
    def go() -> bytes:
        with open(path, "rb") as f:
            return f.read()
    return _result(go)


def down(uuid: str, node: str) -> bytes:
    return f"DOWN {uuid} {node}\n".encode()


def run_script(ocfs2_dir: str, control: str, dlm_control: str,
               proc_misc: str) -> list[list[str]]:
    """Every step as ``[what, result]``; results are "ok:N", "data:TEXT" or an errno name."""
    out: list[list[str]] = []

    def step(what: str, result: str) -> None:
        out.append([what, result])

    stack = os.path.join(ocfs2_dir, "cluster_stack")
    for data in STACK_WRITES:
        step(f"write cluster_stack {data!r}", _write(stack, data))
        step("read cluster_stack", _read(stack))
    for name in FILES:
        step(f"read {name}", _read(os.path.join(ocfs2_dir, name)))
    with open(proc_misc, encoding="latin-1") as f:
        names = sorted(line.split()[1] for line in f if line.split()[1:2]
                       and line.split()[1] in ("ocfs2_control", "dlm-control"))
    step("proc/misc names", "data:" + " ".join(names))

    handles: dict[str, int] = {}

    def op(name: str, what: str, fn: object) -> None:
        step(f"{name}: {what}", _result(fn))

    def wr(name: str, data: bytes) -> None:
        op(name, f"write {data!r}", lambda: os.write(handles[name], data))

    def rd(name: str, size: int) -> None:
        op(name, f"read {size}", lambda: os.read(handles[name], size))

    handles["A"] = os.open(control, os.O_RDWR)
    wr("A", b"T01\n")  # before the protocol list was read
    rd("A", 4)
    rd("A", 4)
    for data in (b"T01", b"T02\n", b"T01\n\0", b"T01\n", b"T01\n",
                 b"SETN 00000001\nSETV 01 00\n", b"X" * 48, down(UUID, "00000002"),
                 b"SETN 0000000G\n", b"SETN FFFFFFFF\n", b"SETN -0000001\n",
                 b"SETN 0000 001\n", b"SETNX00000001\n", b"SETV 02 00\n", b"SETV 01 01\n",
                 b"SETV 00 00\n", b"SETV 01-00\n", b"SETV 1G 00\n", b"NOPE\n",
                 b"SETV 01 00\n", b"SETN 0x00001f\n", b"SETN 00000001\n"):
        wr("A", data)
    # SETV came first, so "SETN 0x00001f" completed the handshake: A is the daemon of
    # node 31, and the later SETN is refused.
    # A well-formed DOWN is the down phase's (below); these fail before the UUID is read.
    for data in (b"SETN 00000001\n", b"SETV 01 00\n", down(UUID, "8000000F"),
                 down(UUID, "-0000002"), down(UUID, "0000000Z")):
        wr("A", data)
    handles["B"] = os.open(control, os.O_RDWR)
    for _ in range(5):
        rd("B", 1)
    for data in (b"T01\n", b"SETV 01 00\n", b"SETN 00000002\n", b"SETN 0000001F\n"):
        wr("B", data)
    op("B", "lseek 0", lambda: os.lseek(handles["B"], 0, os.SEEK_SET))
    rd("B", 4)
    wr("B", b"SETN 0000001F\n")  # B went back to READ: only "T01\n" is taken
    wr("B", b"T01\n")
    # B is no longer VALID, so its close does not count it off: the kernel keeps one
    # daemon (and node 31) with no handle left, and C cannot name another node.
    for name in ("A", "B"):
        op(name, "close", lambda n=name: os.close(handles.pop(n)))  # type: ignore[misc]
    handles["C"] = os.open(control, os.O_RDWR)
    rd("C", 4)
    for data in (b"T01\n", b"SETN 00000005\n", b"SETV 01 00\n", b"SETN 0000001F\n"):
        wr("C", data)
    op("C", "close", lambda: os.close(handles.pop("C")))

    handles["D"] = os.open(dlm_control, os.O_RDWR)
    op("D", "read 12", lambda: os.read(handles["D"], 12).hex().encode())
    rd("D", 4)
    op("D", "close", lambda: os.close(handles.pop("D")))
    return out


def down_phase(control: str, report: object = None) -> list[list[str]]:
    """A new control daemon (node 31, which the main script left installed) sends DOWN for a
    UUID no volume has. ``report(step, None)`` is called before each step is tried and
    ``report(step, result)`` after it, so a caller whose process dies in a step still has
    the steps before it and knows which one it was."""
    out: list[list[str]] = []
    fd = os.open(control, os.O_RDWR)
    try:
        for what, fn in (("E: read 4", lambda: os.read(fd, 4)),
                         ("E: write b'T01\\n'", lambda: os.write(fd, b"T01\n")),
                         ("E: write SETN 0000001F", lambda: os.write(fd, b"SETN 0000001F\n")),
                         ("E: write SETV 01 00", lambda: os.write(fd, b"SETV 01 00\n")),
                         ("E: write DOWN UUID 00000002",
                          lambda: os.write(fd, down(UUID, "00000002")))):
            if report is not None:
                report(what, None)  # type: ignore[operator]
            out.append([what, _result(fn)])
            if report is not None:
                report(what, out[-1][1])  # type: ignore[operator]
    finally:
        os.close(fd)
    return out
