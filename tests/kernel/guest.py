"""The real-kernel lane's guest side: runs inside the QEMU guest against Linux's own configfs.

``python -m tests.kernel.guest TASK [ARGS]`` speaks JSON lines prefixed ``@@`` on
``/dev/ttyS1`` (the host's Unix socket) and reads commands from it. Tasks:

* ``catalogue IMAGE``: replay every non-extension catalogue case on the real configfs and
  report each step's result (the recording that tests/catalogue/kernel-results.json holds);
* ``hbctl DEV``: hbctl cluster register, ocfs2_hb_ctl -S/-I/-K (ours) by device and by UUID
  beside the C tool, with the real o2hb's debugfs livenodes;
* ``interop DEV``: heartbeat with a fakecfs node on the host on one image, on command.
"""

from __future__ import annotations

import json
import os
import sys
import termios
import time
import tty
from pathlib import Path
from typing import IO

CONFIGFS = "/sys/kernel/config"
DEBUGFS = "/sys/kernel/debug"


class Channel:
    """The ttyS1 line to the host, raw (no echo, no CR/LF translation)."""

    def __init__(self, path: str = "/dev/ttyS1") -> None:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self.fd = fd
        self.reader: IO[bytes] = os.fdopen(os.dup(fd), "rb", buffering=0)
        self._buf = b""

    def say(self, kind: str, **fields: object) -> None:
        data = b"@@" + json.dumps({"kind": kind, **fields}).encode() + b"\n"
        while data:
            data = data[os.write(self.fd, data):]

    def command(self) -> str:
        while b"\n" not in self._buf:
            self._buf += os.read(self.fd, 4096)
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode().strip()


def task_catalogue(ch: Channel, image: str) -> None:
    from tests.catalogue.catalogue import SyscallReplay, cleanup, load
    from tests.catalogue.recorded import unexpand

    for case in load():
        if "extension" in case.tags:
            continue
        runner = SyscallReplay(CONFIGFS, image)
        steps: list[str] = []
        started = time.monotonic()
        try:
            for step in case.steps:
                steps.append(unexpand(runner.run(step), image))
        finally:
            runner.close()
        took = time.monotonic() - started
        try:
            cleanup(CONFIGFS)
            clean = "ok"
        except OSError as exc:
            clean = f"{type(exc).__name__}: {exc}"
        ch.say("case", name=case.name, results=steps, seconds=round(took, 3), cleanup=clean)
    ch.say("done")


TASKS = {"catalogue": task_catalogue}


def main(argv: list[str]) -> int:
    ch = Channel()
    ch.say("hello", uname=os.uname().release, python=sys.version.split()[0],
           uptime=float(Path("/proc/uptime").read_text().split()[0]))
    try:
        task = TASKS[argv[0]]
        task(ch, *argv[1:])
    except BaseException as exc:
        import traceback

        ch.say("error", text="".join(traceback.format_exception(exc)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
