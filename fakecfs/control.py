"""The Python API to a running fakecfs mount's faults and events (plain file I/O, no trio).

    from fakecfs.control import Faults, Events

    faults = Faults("/run/node1")
    faults.freeze(); faults.thaw()
    faults.eio(UUID, op="write"); faults.delay(UUID, 3000, op="read"); faults.clear()
    faults.active()                      # ["eio region=... op=write", ...]

    events = Events("/run/node2")        # from the start of the log (or at_end=True)
    down = events.wait_for(kind="node_down", node=1, timeout=30)
    down["t"]                            # CLOCK_MONOTONIC seconds, like time.monotonic()

A refused fault raises :class:`FaultRefused` (an OSError with the control file's errno).
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable
from typing import Any

FAULTS_FILE = "fakecfs/faults"
EVENTS_FILE = "fakecfs/events"


class FaultRefused(OSError):
    """The emulated kernel refused a fault command (errno as the write(2) got it)."""


def _explain(err: int, command: str) -> str:
    why = {
        errno.EINVAL: "bad command or arguments",
        errno.ENOENT: "no such region",
        errno.EBUSY: "a region is starting or stopping; try again when it settled",
        errno.EALREADY: "not frozen" if command.split()[:1] == ["thaw"] else "already frozen",
        errno.ENOTCONN: "the fakecfs daemon is gone",
    }.get(err, os.strerror(err))
    return f"{command!r}: {why}"


class Faults:
    """Set and clear faults through MOUNTPOINT/fakecfs/faults."""

    def __init__(self, mountpoint: str | os.PathLike[str]) -> None:
        self.path = os.path.join(os.fspath(mountpoint), FAULTS_FILE)

    def command(self, command: str) -> None:
        """Write one control command (see fakecfs.faults for the syntax)."""
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError as exc:
            raise FaultRefused(exc.errno, f"{self.path}: {exc.strerror} (is this a fakecfs "
                               "mount?)") from exc
        try:
            os.write(fd, command.encode())  # the kernel side refuses non-ASCII (EINVAL)
        except OSError as exc:
            raise FaultRefused(exc.errno or errno.EIO, _explain(exc.errno or 0, command)) \
                from exc
        finally:
            os.close(fd)

    def active(self) -> list[str]:
        with open(self.path, encoding="ascii") as f:
            return [line.strip() for line in f if line.strip()]

    def freeze(self) -> None:
        self.command("freeze")

    def thaw(self) -> None:
        self.command("thaw")

    def clear(self, fault: str | None = None, region: str | None = None) -> None:
        self.command(" ".join(["clear", *([fault] if fault else []),
                               *([f"region={region}"] if region else [])]))

    def eio(self, region: str, op: str = "both") -> None:
        self.command(f"eio region={region} op={op}")

    def delay(self, region: str, ms: int, op: str = "both") -> None:
        self.command(f"delay region={region} op={op} ms={ms}")

    def corrupt(self, region: str) -> None:
        self.command(f"corrupt region={region}")

    def foreign(self, region: str, node: int | None = None) -> None:
        self.command(f"foreign region={region}" + (f" node={node}" if node is not None else ""))

    def deadms(self, region: str, ms: int) -> None:
        self.command(f"deadms region={region} ms={ms}")


def matches(event: dict[str, Any], **want: Any) -> bool:
    """True when every field given equals the event's (``kind="node_down", node=2``)."""
    return all(event.get(k) == v for k, v in want.items())


class Events:
    """Read MOUNTPOINT/fakecfs/events incrementally (the file only grows)."""

    def __init__(self, mountpoint: str | os.PathLike[str], at_end: bool = False) -> None:
        self.path = os.path.join(os.fspath(mountpoint), EVENTS_FILE)
        self.offset = os.stat(self.path).st_size if at_end else 0
        self._partial = b""
        self.seen: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        """The events appended since the last read (complete lines only)."""
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.offset)
            chunks = []
            while chunk := f.read(1 << 16):
                chunks.append(chunk)
        data = b"".join(chunks)
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        new = [json.loads(line) for line in lines if line.strip()]
        self.seen.extend(new)
        return new

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool] | None = None, *,
                 timeout: float = 30.0, poll: float = 0.02, **fields: Any) -> dict[str, Any]:
        """The first event not yet returned by a wait that matches (it is then consumed).

        Matches ``predicate`` and every ``field=value`` given. Raises TimeoutError.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.read()
            for i, event in enumerate(self.seen):
                if matches(event, **fields) and (predicate is None or predicate(event)):
                    del self.seen[i]
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no event {fields or ''} in {self.path} after {timeout}s")
            time.sleep(poll)
