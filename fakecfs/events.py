"""The emulated kernel's log as an event stream: ``MOUNTPOINT/fakecfs/events``.

One JSON object per line, appended as things happen; the file only grows (a reader keeps
its offset and reads on from there, like ``tail -f``). Fields::

    seq      1, 2, 3 ... in this kernel
    t        CLOCK_MONOTONIC seconds (time.monotonic(), /dev/kmsg's clock): comparable
             between processes of one host
    kind     what happened (KINDS below)
    level    "err", "notice", "info" or "debug", as the kernel would print it
    message  the kernel's wording
    region   the region (UUID) it concerns, when it concerns one
    node     the node number it concerns (node_up/node_down, bad_crc, ...)
    dev      the region's device name
    fault    the control-file command of a fault_set/fault_cleared event

Only about the last ``limit`` events are kept; the bytes of older ones read as blank lines, so
every offset a reader holds stays valid. Pure code: the shell passes the time in.
"""

from __future__ import annotations

import bisect
import errno
import json
import logging
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .tree import FileHandle, HandleFile, KernelError

KINDS = {
    "node_up": "a node became live in a region (o2hb's 'joined my region')",
    "node_down": "a node left a region: dead by silence, or a clean leave (generation 0); "
                 "user stacks: ocfs2_controld's DOWN for a mounted volume",
    "region_started": "a region reached steady state; the dev write returned",
    "region_aborted": "a start failed: 'Unable to stabilize', an I/O error, a signal",
    "region_stopped": "a region's heartbeat ended (rmdir, local node removed, unmount)",
    "quorum_region": "global mode: a region became a quorum device",
    "write_timeout": "no good write for the write timeout ('Heartbeat write timeout')",
    "fenced": "the node fenced itself: every region stopped without a clean leave (user "
              "stacks: the emergency restart when ocfs2_control is released with mounts)",
    "io_error": "a heartbeat read or write failed",
    "bad_crc": "a live node's block had a bad checksum (counted as a miss)",
    "slot_conflict": "our slot on disk is not what we wrote ('Another node is heartbeating')",
    "dead_ms_mismatch": "a node writes another hb_dead_ms than ours",
    "no_nodes": "no configured node to heartbeat for",
    "fault_set": "a fault was injected (fakecfs/faults)",
    "fault_cleared": "a fault was removed",
}

LEVELS = {
    logging.CRITICAL: "crit",
    logging.ERROR: "err",
    logging.WARNING: "warning",
    logging.INFO: "notice",
    logging.DEBUG: "debug",
}

Emit = Callable[..., None]
"""``emit(kind, message, level=logging.INFO, **fields)``: how shells report an event."""


@dataclass(frozen=True)
class Event:
    seq: int
    t: float
    kind: str
    level: str
    message: str
    fields: tuple[tuple[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "t": round(self.t, 6), "kind": self.kind,
                               "level": self.level, "message": self.message}
        out.update(self.fields)
        return out

    def line(self) -> bytes:
        return (json.dumps(self.as_dict(), separators=(",", ":")) + "\n").encode("utf-8")


class EventLog:
    """The events of one kernel as a growing byte stream of JSON lines."""

    def __init__(self, limit: int = 50_000) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        self.limit = limit
        self.seq = 0
        self._lines: list[bytes] = []
        self._starts: list[int] = []  # byte offset of each kept line
        self.base = 0  # offset of the first kept byte
        self.size = 0  # bytes ever written

    def append(self, t: float, kind: str, message: str, level: int = logging.INFO,
               **fields: Any) -> Event:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        self.seq += 1
        kept = tuple((k, v) for k, v in fields.items() if v is not None)
        event = Event(self.seq, t, kind, LEVELS.get(level, "info"), message, kept)
        line = event.line()
        self._lines.append(line)
        self._starts.append(self.size)
        self.size += len(line)
        if len(self._lines) > self.limit + self.limit // 4:
            # Dropped in batches: one list copy per limit/4 events, not one per event.
            drop = len(self._lines) - self.limit
            del self._lines[:drop]
            del self._starts[:drop]
            self.base = self._starts[0]
        return event

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` (b"" at the end; dropped events as newlines)."""
        if offset >= self.size or size <= 0:
            return b""
        if offset < self.base:
            return b"\n" * min(size, self.base - offset)
        i = bisect.bisect_right(self._starts, offset) - 1
        out = bytearray(self._lines[i][offset - self._starts[i]:])
        i += 1
        while len(out) < size and i < len(self._lines):
            out += self._lines[i]
            i += 1
        return bytes(out[:size])

    def events(self) -> list[Event]:
        """The kept events, decoded (for tests and the Python API)."""
        out = []
        for line in self._lines:
            d = json.loads(line)
            base = {k: d.pop(k) for k in ("seq", "t", "kind", "level", "message")}
            out.append(Event(base["seq"], base["t"], base["kind"], base["level"],
                             base["message"], tuple(d.items())))
        return out


class _EventsHandle(FileHandle):
    """One open of fakecfs/events: reads at the file offset, from the log as it is now."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def read(self, offset: int, size: int) -> bytes:
        return self.log.read(offset, size)


class EventsFile(HandleFile):
    """``fakecfs/events``: the log, read-only, readable by anyone; st_size is its length."""

    def __init__(self, log: EventLog) -> None:
        super().__init__(name="events", mode=stat.S_IFREG | 0o444)
        self.log = log

    def size(self) -> int:
        return self.log.size

    def check_open(self, read: bool, write: bool) -> None:
        if write:
            raise KernelError(errno.EACCES)

    def open_handle(self) -> FileHandle:
        return _EventsHandle(self.log)
