"""Injected faults: the commands of ``MOUNTPOINT/fakecfs/faults`` and the active fault set.

A fault makes the emulated machine or disk misbehave; the heartbeat shell asks this core
what to do with each read and write, and the kernel reacts as the real o2hb does (spec
kernel-o2hb.md §8.5-8.7). One command per write(2); reading the file lists the active
faults, one per line, in the command syntax that set them::

    freeze                          the node hangs: heartbeat I/O and timers stop
    thaw                            it resumes (a stall past the write timeout fences)
    eio region=UUID [op=both]       reads, writes or both fail with EIO
    delay region=UUID ms=N [op=both]  reads, writes or both take N ms longer
    corrupt region=UUID             our blocks reach the disk with a bad CRC
    foreign region=UUID [node=N]    another writer puts node N's blocks in our slot
    deadms region=UUID ms=N         we write hb_dead_ms N (a misconfigured threshold)
    clear [FAULT] [region=UUID]     remove faults (all of them by default; thaws too)

Setting a region fault that is already set replaces it. Errors (``FaultError.errno``):
EINVAL for anything malformed, ENOENT for a region that does not exist, EBUSY while a
region concerned (any region, for freeze, thaw and a clear that thaws) is starting or
stopping, EALREADY for freeze when frozen and thaw when not frozen. A failed command
changes nothing.
Pure code: no I/O, no clock.
"""

from __future__ import annotations

import errno
import stat
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from .tree import FileEntry, KernelError

OPS = ("read", "write", "both")
REGION_FAULTS = ("eio", "delay", "corrupt", "foreign", "deadms")
NODE_FAULTS = ("freeze",)
MAX_DELAY_MS = 24 * 3600 * 1000
MAX_REGION_NAME = 32
_U32 = 0xFFFFFFFF

HELP = {
    "freeze": "the node hangs (a paused VM): no heartbeat I/O, no timers; peers declare it "
              "dead after dead_threshold periods",
    "thaw": "end a freeze; if the write timeout passed meanwhile the node fences at once, as "
            "the kernel does after such a stall",
    "eio": "reads/writes of the region fail with EIO: at start the dev write gets EIO, "
           "while running no good write re-arms the write timeout, so the node fences",
    "delay": "reads/writes take MS longer; beyond the write timeout the node fences with "
             "'Heartbeat write timeout'",
    "corrupt": "our blocks reach the disk with a bad CRC: peers log 'has written a bad crc' "
               "and count misses until they declare us dead",
    "foreign": "a misconfigured node writes into our slot: 'Another node is heartbeating on "
               "device', a start cannot stabilise, a running region fences",
    "deadms": "we write another hb_dead_ms: peers log 'has a dead count of' when we join",
    "clear": "remove faults: all, one kind, or one region's",
}


class FaultError(Exception):
    """A command refused with ``errno`` (the write(2) fails with it)."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, message)
        self.errno = err
        self.message = message


class Phase(Enum):
    """Where a region is, as far as faults care."""

    IDLE = "idle"  # exists, not started (faults wait for the start)
    STARTING = "starting"  # dev write in progress
    RUNNING = "running"
    STOPPING = "stopping"  # rmdir in progress


@dataclass(frozen=True)
class Fault:
    """One active fault: its name and parameters (None where they do not apply)."""

    name: str
    region: str | None = None
    op: str | None = None
    ms: int | None = None
    node: int | None = None

    def command(self) -> str:
        """The control-file command that sets this fault."""
        parts = [self.name]
        for key in ("region", "op", "ms", "node"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={value}")
        return " ".join(parts)

    @property
    def key(self) -> tuple[str, str | None]:
        return self.name, self.region


@dataclass(frozen=True)
class Command:
    verb: str  # a fault name, "thaw" or "clear"
    fault: Fault | None = None  # what to set (fault verbs)
    clear_name: str | None = None  # clear: only this kind
    clear_region: str | None = None  # clear: only this region


def _number(key: str, text: str, lo: int, hi: int) -> int:
    if not text.isdigit():
        raise FaultError(errno.EINVAL, f"{key}={text}: not a decimal number")
    value = int(text)
    if not lo <= value <= hi:
        raise FaultError(errno.EINVAL, f"{key}={value}: out of range {lo}..{hi}")
    return value


_ALLOWED = {
    "freeze": set(), "thaw": set(), "clear": {"region"},
    "eio": {"region", "op"}, "delay": {"region", "op", "ms"}, "corrupt": {"region"},
    "foreign": {"region", "node"}, "deadms": {"region", "ms"},
}
_REQUIRED = {"eio": {"region"}, "delay": {"region", "ms"}, "corrupt": {"region"},
             "foreign": {"region"}, "deadms": {"region", "ms"}}


def parse_command(data: bytes) -> Command:
    """One control write → a Command; FaultError(EINVAL) for anything malformed."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise FaultError(errno.EINVAL, "not ASCII") from None
    words = text.split()
    if not words:
        raise FaultError(errno.EINVAL, "empty command")
    verb, rest = words[0], words[1:]
    if verb not in _ALLOWED:
        raise FaultError(errno.EINVAL, f"unknown fault {verb!r} (known: "
                         f"{', '.join(sorted(_ALLOWED))})")
    clear_name = None
    if verb == "clear" and rest and "=" not in rest[0]:
        clear_name = rest.pop(0)
        if clear_name not in NODE_FAULTS + REGION_FAULTS:
            raise FaultError(errno.EINVAL, f"clear: unknown fault {clear_name!r}")
    args: dict[str, str] = {}
    for word in rest:
        key, eq, value = word.partition("=")
        if not eq or not value:
            raise FaultError(errno.EINVAL, f"{word!r}: expected KEY=VALUE")
        if key not in _ALLOWED[verb]:
            raise FaultError(errno.EINVAL, f"{verb} takes no {key}=")
        if key in args:
            raise FaultError(errno.EINVAL, f"{key}= given twice")
        args[key] = value
    missing = _REQUIRED.get(verb, set()) - set(args)
    if missing:
        raise FaultError(errno.EINVAL, f"{verb} needs {', '.join(sorted(missing))}=")
    region = args.get("region")
    if region is not None and (len(region) > MAX_REGION_NAME
                               or not set(region) <= set(string.printable) - {"/"}):
        raise FaultError(errno.EINVAL, f"region={region}: not a region name")
    op = args.get("op")
    if op is not None and op not in OPS:
        raise FaultError(errno.EINVAL, f"op={op}: expected read, write or both")
    if verb == "clear":
        return Command("clear", clear_name=clear_name, clear_region=region)
    if verb == "thaw":
        return Command("thaw")
    ms = node = None
    if verb == "delay":
        ms = _number("ms", args["ms"], 1, MAX_DELAY_MS)
    if verb == "deadms":
        ms = _number("ms", args["ms"], 0, _U32)
    if verb == "foreign" and "node" in args:
        node = _number("node", args["node"], 0, 254)
    if verb in ("eio", "delay"):
        op = op or "both"
    return Command(verb, Fault(verb, region, op, ms, node))


@dataclass(frozen=True)
class RegionFaults:
    """What the heartbeat shell must do to one region's I/O right now."""

    read_eio: bool = False
    write_eio: bool = False
    read_delay_ms: int = 0
    write_delay_ms: int = 0
    corrupt: bool = False
    foreign: bool = False
    foreign_node: int | None = None  # the node number it claims; None: the next slot's
    dead_ms: int | None = None

    def eio(self, op: str) -> bool:
        return self.read_eio if op == "read" else self.write_eio

    def delay_ms(self, op: str) -> int:
        return self.read_delay_ms if op == "read" else self.write_delay_ms


NO_FAULTS = RegionFaults()


@dataclass
class FaultSet:
    """The active faults of one emulated node."""

    faults: dict[tuple[str, str | None], Fault] = field(default_factory=dict)

    @property
    def frozen(self) -> bool:
        return ("freeze", None) in self.faults

    def render(self) -> str:
        return "".join(f.command() + "\n" for f in self.faults.values())

    def apply(self, cmd: Command, regions: Mapping[str, Phase]) -> tuple[list[Fault],
                                                                          list[Fault]]:
        """Carry out ``cmd`` against the regions that exist: (faults set, faults cleared).

        Raises FaultError before changing anything.
        """
        busy = sorted(name for name, phase in regions.items()
                      if phase in (Phase.STARTING, Phase.STOPPING))
        if cmd.verb == "clear":
            if cmd.clear_region is not None and cmd.clear_region in busy:
                raise FaultError(errno.EBUSY, f"region {cmd.clear_region} is starting or "
                                 "stopping")
            gone = [f for f in self.faults.values()
                    if (cmd.clear_name is None or f.name == cmd.clear_name)
                    and (cmd.clear_region is None or f.region == cmd.clear_region)]
            if any(f.name == "freeze" for f in gone) and busy:
                raise FaultError(errno.EBUSY, f"region {busy[0]} is starting or stopping")
            for f in gone:
                del self.faults[f.key]
            return [], gone
        if cmd.verb in ("freeze", "thaw"):
            if (cmd.verb == "freeze") == self.frozen:
                raise FaultError(errno.EALREADY, "already frozen" if self.frozen
                                 else "not frozen")
            if busy:
                raise FaultError(errno.EBUSY, f"region {busy[0]} is starting or stopping")
            if cmd.verb == "thaw":
                return [], [self.faults.pop(("freeze", None))]
            freeze = Fault("freeze")
            self.faults[freeze.key] = freeze
            return [freeze], []
        fault = cmd.fault
        assert fault is not None and fault.region is not None
        if fault.region not in regions:
            raise FaultError(errno.ENOENT, f"no region {fault.region}")
        if fault.region in busy:
            raise FaultError(errno.EBUSY, f"region {fault.region} is starting or stopping")
        old = self.faults.get(fault.key)
        self.faults[fault.key] = fault
        return [fault], [old] if old is not None else []

    def forget_region(self, region: str) -> list[Fault]:
        """The region is gone (rmdir): its faults go with it."""
        gone = [f for f in self.faults.values() if f.region == region]
        for f in gone:
            del self.faults[f.key]
        return gone

    def for_region(self, region: str) -> RegionFaults:
        mine = {f.name: f for f in self.faults.values() if f.region == region}
        if not mine:
            return NO_FAULTS
        out = RegionFaults()
        eio, delay, foreign, deadms = (mine.get(n) for n in ("eio", "delay", "foreign",
                                                             "deadms"))
        if eio is not None:
            out = replace(out, read_eio=eio.op in ("read", "both"),
                          write_eio=eio.op in ("write", "both"))
        if delay is not None:
            ms = delay.ms or 0
            out = replace(out, read_delay_ms=ms if delay.op in ("read", "both") else 0,
                          write_delay_ms=ms if delay.op in ("write", "both") else 0)
        if "corrupt" in mine:
            out = replace(out, corrupt=True)
        if foreign is not None:
            out = replace(out, foreign=True, foreign_node=foreign.node)
        if deadms is not None:
            out = replace(out, dead_ms=deadms.ms)
        return out


def corrupt_block(block: bytes) -> bytes:
    """The block with its hb_cksum inverted: every field intact, the CRC wrong."""
    raw = bytearray(block)
    off = 12  # hb_cksum
    cksum = int.from_bytes(raw[off:off + 4], "little") ^ _U32
    raw[off:off + 4] = cksum.to_bytes(4, "little")
    return bytes(raw)


def foreign_node_for(our_node: int, blocks: int, requested: int | None) -> int:
    """The node number a foreign writer claims: the one asked for, else the next slot's."""
    if requested is not None:
        return requested
    return (our_node + 1) % max(blocks, 1)



@dataclass(frozen=True)
class FaultCommand:
    """Effect of a write to fakecfs/faults: the kernel applies ``command`` (and its effects)."""

    command: Command
    count: int


class FaultsFile(FileEntry):
    """``fakecfs/faults``: read the active faults; write one command per write(2)."""

    def __init__(self, faults: FaultSet) -> None:
        super().__init__(name="faults", mode=stat.S_IFREG | 0o644)
        self.faults = faults

    def size(self) -> int:
        return 4096

    def show(self) -> bytes:
        return self.faults.render().encode("ascii")

    def store(self, data: bytes) -> object:
        try:
            return FaultCommand(parse_command(data), len(data))
        except FaultError as exc:
            raise KernelError(exc.errno, exc.message) from exc
