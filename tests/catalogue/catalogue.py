"""The configfs fidelity catalogue: parse ``configfs.cat`` and replay it with syscalls.

The same replay runs against a fakecfs mount (tests/mount), against the Kernel object
without FUSE (tests/ops) and, in the real-kernel lane, against Linux's own configfs; the
expected results in the file are the kernel's. Standard library only, so it also runs in a
minimal guest.
"""

from __future__ import annotations

import ast
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

CATALOGUE = Path(__file__).with_name("configfs.cat")


@dataclass(frozen=True)
class Step:
    op: str
    path: str
    value: str | None
    expect: str
    line: int


@dataclass
class Case:
    name: str
    tags: set[str]
    steps: list[Step] = field(default_factory=list)


def parse(text: str) -> list[Case]:
    """Parse the catalogue; raises ValueError naming the line for malformed input."""
    cases: list[Case] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"configfs.cat:{lineno}: unterminated case header")
            name, *tags = line[1:-1].split()
            cases.append(Case(name, set(tags)))
            continue
        if not cases:
            raise ValueError(f"configfs.cat:{lineno}: step before any [case]")
        body, expect = line, "ok"
        if " = " in line:
            body, expect = line.rsplit(" = ", 1)
            if expect.startswith('"'):
                expect = "text:" + ast.literal_eval(expect)
        op, _, rest = body.partition(" ")
        path, _, value_src = rest.strip().partition(" ")
        value = ast.literal_eval(value_src) if value_src.strip() else None
        cases[-1].steps.append(Step(op, path, value, expect, lineno))
    return cases


def load() -> list[Case]:
    return parse(CATALOGUE.read_text(encoding="utf-8"))


def outcome(fn: object) -> str:
    """Run a step; "ok", "text:..." or the errno name."""
    try:
        result = fn()  # type: ignore[operator]
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok" if result is None else f"text:{result}"


def describe(st: os.stat_result) -> str:
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
    mode = f"{stat.S_IMODE(st.st_mode):04o}"
    return f"{kind} {mode}" if kind == "dir" else f"{kind} {mode} {st.st_size}"


class SyscallReplay:
    """Replays steps with real syscalls below ``configfs`` (a mount or the real kernel)."""

    def __init__(self, configfs: str, image: str | None = None) -> None:
        self.root = configfs
        self.image = image
        self._held: list[int] = []

    def p(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def value(self, text: str) -> bytes:
        if text.startswith("FD:"):
            target = text[3:]
            if target == "IMAGE":
                assert self.image is not None, "case needs an image"
                target = self.image
            fd = os.open(target, os.O_RDWR)
            self._held.append(fd)
            return str(fd).encode()
        return text.encode("latin-1")

    def expand(self, text: str) -> str:
        if self.image is not None:
            text = text.replace("IMAGE_NAME", os.path.basename(self.image))
        return text

    def _write(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def _read(self, path: str) -> str:
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, 4096):
                chunks.append(chunk)
            return b"".join(chunks).decode("latin-1")
        finally:
            os.close(fd)

    def run(self, step: Step) -> str:
        path = self.p(step.path)
        value = step.value or ""
        actions = {
            "mkdir": lambda: os.mkdir(path, 0o700),
            "rmdir": lambda: os.rmdir(path),
            "write": lambda: self._write(path, self.value(value)),
            "read": lambda: self._read(path),
            "create": lambda: os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)),
            "unlink": lambda: os.unlink(path),
            "rename": lambda: os.rename(path, self.p(value)),
            "link": lambda: os.link(path, self.p(value)),
            "symlink": lambda: os.symlink(self.p(value), path),
            "mknod": lambda: os.mknod(path, 0o644 | stat.S_IFREG),
            "mkfifo": lambda: os.mkfifo(path, 0o644),
            "chmod": lambda: os.chmod(path, int(value, 8)),
            "stat": lambda: describe(os.stat(path)),
        }
        return outcome(actions[step.op])

    def close(self) -> None:
        for fd in self._held:
            os.close(fd)
        self._held.clear()


def through_fuse(step: Step, kernel: str) -> str:
    """What a FUSE mount answers where configfs answers ``kernel``.

    The one difference FUSE itself imposes: a write of zero bytes never reaches the daemon
    (the kernel's FUSE code returns 0 at once), so it succeeds where configfs says EFAULT.
    No userspace writes zero bytes to configfs; docs/kernel-lane.md lists this.
    """
    if step.op == "write" and step.value == "" and kernel == "EFAULT":
        return "ok"
    return kernel


def replay(case: Case, runner: SyscallReplay, fuse: bool = True) -> list[str]:
    """Run a case; return a list of mismatches (empty when identical).

    ``fuse``: the runner is a FUSE mount (fakecfs), see ``through_fuse``.
    """
    problems = []
    try:
        for step in case.steps:
            got = runner.run(step)
            want = runner.expand(step.expect)
            if fuse:
                want = through_fuse(step, want)
            if got != want:
                problems.append(
                    f"{case.name} (line {step.line}): {step.op} {step.path} "
                    f"{step.value!r}: expected {want!r}, got {got!r}"
                )
    finally:
        runner.close()
    return problems


def cleanup(configfs: str) -> None:
    """Remove everything a case left (regions, nodes, the cluster), deepest first."""
    croot = os.path.join(configfs, "cluster")
    for cluster in os.listdir(croot):
        for group in ("heartbeat", "node"):
            gdir = os.path.join(croot, cluster, group)
            for name in os.listdir(gdir):
                if os.path.isdir(os.path.join(gdir, name)):
                    os.rmdir(os.path.join(gdir, name))
        os.rmdir(os.path.join(croot, cluster))
    # o2hb's globals outlive the cluster: put them back to the kernel's defaults.
    tmp = os.path.join(croot, "catalogue-reset")
    os.mkdir(tmp)
    for attr, value in (("dead_threshold", b"31"), ("mode", b"local")):
        fd = os.open(os.path.join(tmp, "heartbeat", attr), os.O_WRONLY)
        try:
            os.write(fd, value)
        finally:
            os.close(fd)
    os.rmdir(tmp)
