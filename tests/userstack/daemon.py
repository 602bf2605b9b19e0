"""Start an ``ocfs2_controld.<stack>`` for a test, inside a given network namespace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.userstack import ctl
from tests.userstack.netns import NetNs

BIN = Path(sys.executable).parent


def fake_sysroot(root: Path, stack: str = "pcmk") -> Path:
    """The only kernel surface the daemon reads itself: ``sys/fs/ocfs2/cluster_stack``."""
    (root / "sys/fs/ocfs2").mkdir(parents=True, exist_ok=True)
    (root / "sys/fs/ocfs2/cluster_stack").write_text(f"{stack}\n")
    return root


def control_file(path: Path) -> Path:
    """A plain file standing in for ocfs2_control: reads give ``T01\\n`` then EOF, and
    every write the daemon makes is appended after it, for the test to read back."""
    path.write_bytes(b"T01\n")
    return path


class RunningDaemon:
    def __init__(self, ns: NetNs, proc: subprocess.Popen[str], log: Path) -> None:
        self.ns = ns
        self.proc = proc
        self.log = log

    def connect(self) -> ctl.Conn:
        return ctl.connect(self.ns.socket())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def controld(ns: NetNs, tmp: Path, *args: str, stack: str = "pcmk",
             env: dict[str, str] | None = None) -> Iterator[RunningDaemon]:
    """``ocfs2_controld.<stack> -D ARGS`` in ``ns``; killed (SIGKILL) at the end."""
    log = tmp / f"controld-{os.getpid()}-{id(ns)}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ns.cmd(str(BIN / f"ocfs2_controld.{stack}"), "-D", "--pid-file", "none", *args),
            stdout=out, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})})
    d = RunningDaemon(ns, proc, log)
    try:
        yield d
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
