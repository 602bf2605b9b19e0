"""The cluster stack's kernel events, from a fakecfs sysroot or from a real host's log.

On an emulated sysroot the events are ``SYSROOT/fakecfs/events`` (JSON lines written by
fakecfs). On a real host they are the kernel's own messages in ``/dev/kmsg`` from o2hb,
o2net, o2quo, o2dlm and ocfs2, parsed here into the same shape::

    {"seq": N, "t": SECONDS, "kind": KIND, "level": "err"|"notice"|..., "message": TEXT,
     "region": UUID, "node": N, "dev": NAME}          (region/node/dev when known)

``t`` is CLOCK_MONOTONIC seconds on both (kmsg's timestamp). Kinds are fakecfs's (node_up,
node_down, region_started, region_aborted, region_stopped, quorum_region, write_timeout,
fenced, io_error, bad_crc, slot_conflict, dead_ms_mismatch, no_nodes, fault_set,
fault_cleared); on a host also ``net_up``/``net_down`` (o2net connections) and ``kernel``
(any other line of the stack). The real kernel prints node up/down of o2hb only with the
HEARTBEAT log mask enabled. The parser is pure; the readers do the I/O.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

EVENTS_FILE = "fakecfs/events"
KMSG = "/dev/kmsg"
_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

# mlog's prefix: "(comm,pid,cpu):function:line ERROR: " (ERROR/NOTICE or nothing).
_MLOG = re.compile(r"^\([^()]*,\d+,\d+\):(\w+):\d+ (?:(?:ERROR|NOTICE): )?")
_STACK = re.compile(r"o2hb|o2net|o2quo|o2dlm|o2cb|ocfs2|\(o2hb-")
_DEV = r"\(?([^\s()\"]+)\)?"
_RULES: list[tuple[str, re.Pattern[str], tuple[str, ...]]] = [
    ("region_started", re.compile(rf"^o2hb: Heartbeat started on region (\S+) {_DEV}"),
     ("region", "dev")),
    ("region_stopped", re.compile(rf"^o2hb: Heartbeat stopped on region (\S+) {_DEV}"),
     ("region", "dev")),
    ("region_aborted", re.compile(rf"^o2hb: Heartbeat start aborted on region (\S+) {_DEV}"),
     ("region", "dev")),
    ("region_aborted",
     re.compile(rf"^o2hb: Unable to stabilize heartbeat on region (\S+) {_DEV}"),
     ("region", "dev")),
    ("quorum_region", re.compile(rf"^o2hb: Region (\S+) {_DEV} is now a quorum device"),
     ("region", "dev")),
    ("write_timeout", re.compile(r"^Heartbeat write timeout to device (\S+) after"), ("dev",)),
    ("fenced", re.compile(r"\*\*\* ocfs2 is very sorry to be fencing this system"), ()),
    ("bad_crc", re.compile(r"^Node (\d+) has written a bad crc to (\S+)"), ("node", "dev")),
    ("slot_conflict", re.compile(r"^(?:Another node is heartbeating|Heartbeat generation "
                                 rf"mismatch|Heartbeat sequence mismatch) on device {_DEV}"),
     ("dev",)),
    ("dead_ms_mismatch", re.compile(r"^Node (\d+) on device (\S+) has a dead count of"),
     ("node", "dev")),
    ("io_error", re.compile(r"^Write error -?\d+ on device \"([^\"]+)\""), ("dev",)),
    ("io_error", re.compile(r"^IO Error -?\d+"), ()),
    ("node_up", re.compile(r"^Node (\d+) \(id 0x[0-9a-f]+\) joined my region"), ("node",)),
    ("node_down", re.compile(r"^Node (\d+) left my region"), ("node",)),
    ("no_nodes", re.compile(r"^o2hb: No configured nodes found"), ()),
    ("net_up", re.compile(r"^o2net: (?:Connected to|Accepted connection from) node (\S+) "
                          r"\(num (\d+)\)"), ("name", "node")),
    ("net_down", re.compile(r"^o2net: No longer connected to node (\S+) \(num (\d+)\)"),
     ("name", "node")),
]


def parse_kmsg(record: str) -> dict[str, Any] | None:
    """One /dev/kmsg record (``PRI,SEQ,USEC,FLAGS;TEXT``) → an event, None if not ours."""
    head, sep, text = record.partition(";")
    if not sep:
        return None
    fields = head.split(",")
    try:
        pri, seq, usec = int(fields[0]), int(fields[1]), int(fields[2])
    except (IndexError, ValueError):
        return None
    text = text.split("\n", 1)[0]  # continuation lines ( KEY=VALUE) are dropped
    if not _STACK.search(text) and not _MLOG.match(text):
        return None
    message = _MLOG.sub("", text, count=1)
    event: dict[str, Any] = {"seq": seq, "t": usec / 1e6, "kind": "kernel",
                             "level": _LEVELS[pri & 7], "message": message}
    for kind, pattern, names in _RULES:
        m = pattern.search(message)
        if m:
            event["kind"] = kind
            for name, value in zip(names, m.groups(), strict=True):
                event[name] = int(value) if name == "node" else value
            break
    else:
        if not _STACK.search(text):
            return None  # an mlog line of some other subsystem
    return event


def read_kmsg(follow: bool = False, path: str = KMSG) -> Iterator[dict[str, Any]]:
    """The stack's events in the kernel's ring buffer; with ``follow``, then new ones."""
    flags = os.O_RDONLY | (0 if follow else os.O_NONBLOCK)
    fd = os.open(path, flags)
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten while we read: go on
                    continue
                raise
            if not record:
                return
            event = parse_kmsg(record.decode("utf-8", "replace"))
            if event is not None:
                yield event
    finally:
        os.close(fd)


def read_fakecfs(sysroot: str, follow: bool = False,
                 poll: float = 0.05) -> Iterator[dict[str, Any]]:
    """The events of a fakecfs sysroot; with ``follow``, keep reading as the file grows."""
    path = os.path.join(sysroot, EVENTS_FILE)
    partial = b""
    with open(path, "rb", buffering=0) as f:
        while True:
            chunk = f.read(1 << 16)
            if chunk:
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
                continue
            if not follow:
                return
            time.sleep(poll)  # the file only grows: a cheap read at its end


def format_event(event: dict[str, Any]) -> str:
    """One human line: ``[   12.345678] kind region node N: message``."""
    where = " ".join(str(event[k]) if k != "node" else f"node {event[k]}"
                     for k in ("region", "node") if event.get(k) is not None)
    message = str(event.get("message", "")).replace("\n", " ")
    return f"[{event.get('t', 0):12.6f}] {event.get('kind')}{' ' + where if where else ''}: " \
           f"{message}"
