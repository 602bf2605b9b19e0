"""Make image files findable where ``ocfs2_hb_ctl -u UUID`` looks: /proc/partitions + /dev.

The C ``ocfs2_hb_ctl`` finds a volume by UUID only through ``/proc/partitions``: every
line ``MAJOR MINOR BLOCKS NAME`` with a major other than 0 names ``/dev/NAME``, which it
opens and probes. An image file is in neither place. Inside a private mount namespace
(``fakecfs run``, or the namespace fakecfs prepares for put_super's helper) this module
adds one line per image to a copy of ``/proc/partitions`` bound over the original, and
puts ``/dev/NAME`` there as a bind mount of the image, in a mirror of ``/dev`` (the host's
``/dev`` is never written). Our ``ocfs2_hb_ctl`` scans ``/proc/partitions`` first too.

:func:`plan` is the core (names, numbers and the new file's text, no I/O);
:func:`make_findable` carries it out in the caller's (private) mount namespace.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass

# Block extended major (as NVMe partitions use), minors from the top of the 20-bit range:
# far from anything a host allocates, and never major 0, which the C tool skips.
FINDABLE_MAJOR = 259
FIRST_MINOR = 0xFFF00
_NAME_OK = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")


@dataclass(frozen=True)
class Device:
    """An image (or block device) to make findable: ``source`` is what /dev/NAME binds."""

    source: str  # a path this process can open (e.g. /proc/self/fd/N)
    label: str  # the name it is known by (the image's path); its basename names /dev/NAME
    size: int  # bytes


@dataclass(frozen=True)
class Findable:
    """One planned entry: ``/dev/NAME`` binds ``source``; ``line`` joins /proc/partitions."""

    name: str
    source: str
    line: str


def _listed(partitions: str) -> set[str]:
    names = set()
    for line in partitions.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0].isdigit():
            names.add(fields[3])
    return names


def device_name(label: str, taken: set[str]) -> str:
    """``/dev/NAME`` for an image: its basename where that is a plain, unused name."""
    base = os.path.basename(label.rstrip("/"))
    if not _NAME_OK.match(base) or base in (".", ".."):
        base = "fakecfs"
    name, n = base, 1
    while name in taken:
        name = f"{base}-{n}"
        n += 1
    return name


def plan(partitions: str, dev_names: set[str],
         devices: Sequence[Device]) -> tuple[str, list[Findable]]:
    """The new /proc/partitions text and the /dev entries to add.

    ``partitions`` is the host's file, ``dev_names`` what ``/dev`` already holds. Names
    avoid both; the numbers stay clear of the host's.
    """
    taken = _listed(partitions) | dev_names
    text = partitions if partitions.endswith("\n") or not partitions else partitions + "\n"
    out = []
    for i, dev in enumerate(devices):
        name = device_name(dev.label, taken)
        taken.add(name)
        line = f"{FINDABLE_MAJOR:4d} {FIRST_MINOR + i:7d} {dev.size // 1024:10d} {name}\n"
        out.append(Findable(name, dev.source, line))
        text += line
    return text, out


# -- the shell --------------------------------------------------------------------------


def device_of(path: str, label: str | None = None) -> Device:
    """A :class:`Device` for ``path`` (an image file or block device); OSError if absent."""
    st = os.stat(path)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise OSError(f"{path}: not an image file or block device")
    size = st.st_size
    if stat.S_ISBLK(st.st_mode):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)
    return Device(path, label or path, size)


def make_findable(devices: Sequence[Device]) -> list[Findable]:
    """In this (private) mount namespace: /proc/partitions lists them, /dev/NAME opens them.

    Must run after the namespace is unshared and made private (as ``fakecfs run`` does);
    nothing is written outside the namespace's own tmpfs mounts.
    """
    from .run import bind_text, mirror

    if not devices:
        return []
    with open("/proc/partitions", encoding="utf-8", errors="replace") as f:
        host = f.read()
    text, entries = plan(host, set(os.listdir("/dev")), devices)
    bind_text("/proc/partitions", text, 0o444)
    mirror("/dev", files={e.name: e.source for e in entries})
    return entries
