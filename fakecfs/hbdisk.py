"""The o2hb disk heartbeat as a pure state machine: block codec, slot liveness, one region.

This is the *core* of fakecfs's disk heartbeat (spec kernel-o2hb.md §5.3, §5.4, §8, §9).
Nothing here does I/O, reads a clock, draws random numbers or knows about trio: the caller
passes in the bytes it read, the sequence number and generation it wants written and the
current time, and gets back the bytes to write and what happened (nodes up/down, log lines
in the kernel's wording, steady/aborted). ``fakecfs.heartbeat`` is the thin trio shell that
feeds it from a real device; the unit tests feed it from a dict standing in for the disk.

Wire format (little-endian, one ``block_bytes`` block per node at
``(start_block + node) * block_bytes``)::

    off 0  u64 hb_seq         wall-clock seconds of the write, never 0
    off 8  u8  hb_node
    off 9  u8  pad[3]
    off 12 u32 hb_cksum       Linux crc32_le(0, whole block with this field zeroed)
    off 16 u64 hb_generation  random non-zero per start, 0 = clean leave
    off 24 u32 hb_dead_ms     dead_threshold * 2000 (kernel units, whatever the period)
    rest   zero
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

LIVE_THRESHOLD = 2
"""Changed samples needed before a slot is live (O2HB_LIVE_THRESHOLD)."""
DEFAULT_DEAD_THRESHOLD = 31
"""Equal samples after which a live slot is dead (O2HB_DEFAULT_DEAD_THRESHOLD)."""
MIN_DEAD_THRESHOLD = 2
REGION_TIMEOUT_MS = 2000
# The floor of the write timeout when the emulation runs a period shorter than the kernel's.
EMULATED_MIN_WRITE_TIMEOUT_MS = 1000
"""The kernel's fixed period between two writes of one node (O2HB_REGION_TIMEOUT_MS)."""
MAX_NODES = 255
HEADER = struct.Struct("<QB3xIQI")
"""hb_seq, hb_node, (pad), hb_cksum, hb_generation, hb_dead_ms: 28 bytes."""
_CKSUM = struct.Struct("<I")
_CKSUM_OFF = 12
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF


def crc32_le(seed: int, data: bytes) -> int:
    """Linux ``crc32_le``: reflected CRC-32 (0xEDB88320) with no pre- or post-inversion.

    zlib's crc32 inverts on the way in and out, so undo both (spec §8.3).
    """
    return zlib.crc32(data, (seed ^ _U32) & _U32) ^ _U32


@dataclass(frozen=True)
class HbBlock:
    """The decoded fields of one heartbeat block (no validity implied: see verify_block)."""

    seq: int
    node: int
    cksum: int
    generation: int
    dead_ms: int


def _block_crc(raw: bytes) -> int:
    """The checksum the block should carry: the CRC of the block with hb_cksum zeroed."""
    # Chained over the three pieces rather than copying the block: every slot of every
    # iteration goes through here.
    view = memoryview(raw)
    crc = zlib.crc32(view[:_CKSUM_OFF], _U32)
    crc = zlib.crc32(bytes(4), crc)
    return zlib.crc32(view[_CKSUM_OFF + 4 :], crc) ^ _U32


def encode_block(block_bytes: int, seq: int, node: int, generation: int, dead_ms: int) -> bytes:
    """A whole ``block_bytes`` heartbeat block as the kernel's o2hb_prepare_block makes it."""
    if block_bytes < HEADER.size:
        raise ValueError(f"block_bytes {block_bytes} cannot hold a heartbeat block")
    blk = bytearray(block_bytes)
    HEADER.pack_into(blk, 0, seq & _U64, node & 0xFF, 0, generation & _U64, dead_ms & _U32)
    # The checksum goes in last, computed over the whole block with the field still zero.
    _CKSUM.pack_into(blk, _CKSUM_OFF, crc32_le(0, bytes(blk)))
    return bytes(blk)


def decode_block(raw: bytes) -> HbBlock:
    """Read the fields of a block. Never raises: a short buffer reads as if zero-padded."""
    head = bytes(raw[: HEADER.size]).ljust(HEADER.size, b"\0")
    seq, node, cksum, generation, dead_ms = HEADER.unpack(head)
    return HbBlock(seq=seq, node=node, cksum=cksum, generation=generation, dead_ms=dead_ms)


def verify_block(raw: bytes) -> bool:
    """True when the stored hb_cksum matches the block. An all-zero block passes (CRC 0)."""
    if len(raw) < HEADER.size:
        return False
    return bool(_CKSUM.unpack_from(raw, _CKSUM_OFF)[0] == _block_crc(raw))


def next_seq(last_seq: int, wall_seconds: int) -> int:
    """The hb_seq to write next: wall-clock seconds, but always moving on from the last one.

    Peers only test whether hb_seq changed, so at periods under a second the kernel's
    "seconds" would look like missed beats; max(wall, last + 1) keeps real time at the
    kernel's 2 s period and still changes on every write when faster. Never 0.
    """
    seq = max(wall_seconds, last_seq + 1, 1)
    # hb_seq is a u64; a counter that ran off the end starts again from the clock.
    return seq if seq <= _U64 else max(wall_seconds & _U64, 1)


def bitmap_text(nodes: Iterable[int]) -> str:
    """debugfs bitmap format (§9): ``"%d "`` per set bit, then a newline; empty → ``"\\n"``."""
    return "".join(f"{n} " for n in sorted(nodes)) + "\n"


# --- per-slot liveness (§8.5) ------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    """A line the kernel would print, with a ``logging`` level (ERROR, NOTICE≈INFO, DEBUG).

    ``kind`` names the event the line stands for in fakecfs's event stream (``node_up``,
    ``bad_crc``, ...; see fakecfs.events); lines without one are only logged.
    """

    level: int
    message: str
    kind: str = ""
    node: int | None = None


@dataclass
class SlotState:
    """What the kernel keeps per slot (struct o2hb_disk_slot)."""

    node: int
    last_time: int = 0
    last_generation: int = 0
    equal_samples: int = 0
    changed_samples: int = 0
    live: bool = False
    raw: bytes = b""


@dataclass(frozen=True)
class SlotChange:
    """The outcome of checking one slot: did it go up or down in this region."""

    up: bool = False
    down: bool = False
    logs: tuple[LogLine, ...] = ()


def check_slot(slot: SlotState, dev_name: str, dead_threshold: int, our_dead_ms: int) -> SlotChange:
    """Run o2hb_check_slot on ``slot.raw``, updating ``slot`` in place.

    The caller decides whether the slot is looked at at all (configured or live).
    """
    logs: list[LogLine] = []
    raw = slot.raw
    gen_changed = False
    blk = decode_block(raw)
    if not verify_block(raw):
        # A freshly formatted area has no CRC: silence unless the node is live, and then it
        # is a transient miss; the other fields may be junk, so they are not taken.
        if not slot.live:
            return SlotChange()
        logs.append(LogLine(logging.ERROR, f"Node {slot.node} has written a bad crc to {dev_name}",
                            "bad_crc", slot.node))
        slot.equal_samples = (slot.equal_samples + 1) & _U16
    else:
        if slot.last_time != blk.seq:
            slot.changed_samples = (slot.changed_samples + 1) & _U16
        else:
            slot.equal_samples = (slot.equal_samples + 1) & _U16
        slot.last_time = blk.seq
        if slot.last_generation != blk.generation:
            # It dropped off and came back (or left cleanly with generation 0): down now,
            # but keep the changed samples it has built up toward being live again.
            gen_changed = True
            slot.equal_samples = 0
            logs.append(
                LogLine(
                    logging.DEBUG,
                    f"Node {slot.node} changed generation (0x{slot.last_generation:x} "
                    f"to 0x{blk.generation:x})",
                )
            )
        slot.last_generation = blk.generation

    if not slot.live and slot.changed_samples >= LIVE_THRESHOLD:
        slot.live = True
        slot.equal_samples = 0
        logs.append(LogLine(logging.DEBUG, f"Node {slot.node} (id 0x{slot.last_generation:x}) "
                            "joined my region", "node_up", slot.node))
        if blk.dead_ms and blk.dead_ms != our_dead_ms:
            logs.append(
                LogLine(
                    logging.ERROR,
                    f"Node {slot.node} on device {dev_name} has a dead count of "
                    f"{blk.dead_ms} ms, but our count is {our_dead_ms} ms.\n"
                    "Please double check your configuration values for "
                    "'O2CB_HEARTBEAT_THRESHOLD'",
                    "dead_ms_mismatch",
                    slot.node,
                )
            )
        return SlotChange(up=True, logs=tuple(logs))
    if not slot.live:
        return SlotChange(logs=tuple(logs))
    if slot.equal_samples >= dead_threshold or gen_changed:
        slot.live = False
        logs.append(LogLine(logging.DEBUG, f"Node {slot.node} left my region", "node_down",
                            slot.node))
        # A restarted node is still writing, so its progress toward live is kept.
        if not gen_changed:
            slot.changed_samples = 0
        return SlotChange(down=True, logs=tuple(logs))
    if slot.changed_samples:
        slot.changed_samples = 0
        slot.equal_samples = 0
    return SlotChange(logs=tuple(logs))


# --- one region (§5.3, §8.4, §8.6, §8.7) -------------------------------------------------


@dataclass(frozen=True)
class IterationResult:
    """What one heartbeat iteration decided.

    ``up``/``down`` are transitions in this region's live map; ``membership_change`` is the
    kernel's flag (a node up or down in the *global* map, which stalls the steady count).
    ``status`` is 0 or a negative errno, like hr_last_hb_status.
    """

    up: tuple[int, ...] = ()
    down: tuple[int, ...] = ()
    logs: tuple[LogLine, ...] = ()
    own_slot_ok: bool = False
    membership_change: bool = False
    became_steady: bool = False
    aborted: bool = False
    status: int = 0


EIO = 5
EINVAL = 22


@dataclass
class _Pending:
    """State carried from begin_iteration to end_iteration."""

    own_slot_ok: bool
    up: list[int] = field(default_factory=list)
    down: list[int] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)
    membership_change: bool = False


class RegionMachine:
    """One heartbeat region of one node, as the kernel's o2hb thread runs it.

    Per iteration the shell calls ``read_range`` → reads those slots → ``begin_iteration``
    → writes the returned block to our slot → ``end_iteration``. A failed read (or no
    configured nodes) is ``fail_iteration``. Times are milliseconds on any monotonic clock.
    """

    def __init__(
        self,
        node_num: int,
        blocks: int,
        block_bytes: int,
        dead_threshold: int = DEFAULT_DEAD_THRESHOLD,
        generation: int = 1,
        *,
        interval_ms: int = REGION_TIMEOUT_MS,
        first_global_region: bool = False,
        region_name: str = "",
        dev_name: str = "",
        min_write_timeout_ms: int = EMULATED_MIN_WRITE_TIMEOUT_MS,
    ) -> None:
        if not 0 <= node_num < MAX_NODES:
            raise ValueError(f"node number {node_num} out of range")
        if not 0 < blocks <= MAX_NODES or node_num >= blocks:
            raise ValueError(f"blocks {blocks} does not hold slot {node_num}")
        if generation == 0 or generation > _U64:
            raise ValueError("generation must be a non-zero u64 (zero means a clean leave)")
        self.node_num = node_num
        self.blocks = blocks
        self.block_bytes = block_bytes
        self.dead_threshold = dead_threshold
        self.generation = generation
        self.interval_ms = interval_ms
        self.min_write_timeout_ms = min_write_timeout_ms
        self.region_name = region_name
        self.dev_name = dev_name
        # hb_dead_ms is on the wire: the kernel writes threshold x O2HB_REGION_TIMEOUT_MS and
        # peers compare it with their own, so it stays in kernel units even when the emulation
        # runs a shorter period (a kernel peer would otherwise log a mismatch warning).
        self.dead_ms = dead_threshold * REGION_TIMEOUT_MS
        # What we write as hb_dead_ms when it must differ from ours (a misconfigured node,
        # fakecfs's "deadms" fault); None writes dead_ms.
        self.wire_dead_ms: int | None = None
        live_threshold = LIVE_THRESHOLD << 1 if first_global_region else LIVE_THRESHOLD
        self.steady_iterations = live_threshold + 1
        self.unsteady_iterations = 3 * self.steady_iterations
        self.aborted = False
        self.slots = [SlotState(node=i) for i in range(blocks)]
        self._live: set[int] = set()  # this region's live map (slots with .live set)
        self.last_seq = 0
        self.last_good_write_ms: int | None = None
        self.write_timeout_armed_at: int | None = None
        self._pending: _Pending | None = None
        self._populated = False

    # -- start --

    def populate(self, raw_slots: Mapping[int, bytes]) -> None:
        """Take the baseline read of every slot (no CRC check), before the first iteration."""
        for i, slot in enumerate(self.slots):
            raw = bytes(raw_slots.get(i, b""))
            blk = decode_block(raw)
            slot.raw = raw
            slot.last_time = blk.seq
            slot.last_generation = blk.generation
        # Our first seq must differ from whatever a previous run left in our slot.
        self.last_seq = self.slots[self.node_num].last_time
        self._populated = True

    @property
    def steady(self) -> bool:
        return self.steady_iterations == 0 and not self.aborted

    @property
    def live_nodes(self) -> list[int]:
        return sorted(self._live)

    def livenodes_text(self) -> str:
        return bitmap_text(self.live_nodes)

    def next_seq(self, wall_seconds: int) -> int:
        """The seq for our next write, moving on from the last one we wrote or found."""
        return next_seq(self.last_seq, wall_seconds)

    # -- iteration --

    def _to_read(self, configured: Collection[int], live_elsewhere: Collection[int]) -> set[int]:
        nodes = set(configured) | set(live_elsewhere) | self._live
        return {n for n in nodes if 0 <= n < self.blocks}

    def read_range(
        self, configured: Collection[int], live_elsewhere: Collection[int] = ()
    ) -> tuple[int, int] | None:
        """First and last slot (inclusive) to read this iteration; None = nothing configured.

        ``live_elsewhere`` are nodes live in other regions (global live map): the kernel reads
        and checks them even when they are no longer configured.
        """
        nodes = self._to_read(configured, live_elsewhere)
        if not nodes:
            return None
        return min(nodes), max(nodes)

    def begin_iteration(
        self,
        raw: Mapping[int, bytes],
        configured: Collection[int],
        seq: int,
        live_elsewhere: Collection[int] = (),
    ) -> bytes:
        """Take this iteration's read, check our slot, prepare our block, check every slot.

        Returns the block to write to our slot. ``seq`` must be non-zero (see next_seq).
        """
        if not self._populated:
            raise RuntimeError("populate() must run before the first iteration")
        if self._pending is not None:
            raise RuntimeError("begin_iteration() twice without end_iteration()")
        for i, data in raw.items():
            if 0 <= i < self.blocks:
                self.slots[i].raw = bytes(data)
        own_ok, mismatch = self._check_own_slot()
        pending = _Pending(own_slot_ok=own_ok)
        if mismatch is not None:
            pending.logs.append(mismatch)

        seq = seq or 1
        wire_dead_ms = self.dead_ms if self.wire_dead_ms is None else self.wire_dead_ms
        block = encode_block(self.block_bytes, seq, self.node_num, self.generation, wire_dead_ms)
        self.last_seq = seq
        # The kernel prepares the block in our slot's read buffer, so checking our own slot
        # below sees what we are writing: that is how we become live in our own region.
        own = self.slots[self.node_num]
        own.raw = block

        elsewhere = set(live_elsewhere)
        configured_set = set(configured)
        for n in sorted(self._to_read(configured_set, elsewhere)):
            slot = self.slots[n]
            # An unconfigured node is only followed while it is live somewhere.
            if n not in configured_set and not (slot.live or n in elsewhere):
                continue
            change = check_slot(slot, self.dev_name, self.dead_threshold, self.dead_ms)
            pending.logs.extend(change.logs)
            if change.up:
                pending.up.append(n)
                self._live.add(n)
            if change.down:
                pending.down.append(n)
                self._live.discard(n)
            # UP/DOWN are global: only the first region up / last region down counts.
            if (change.up or change.down) and n not in elsewhere:
                pending.membership_change = True
        self._pending = pending
        return block

    def _check_own_slot(self) -> tuple[bool, LogLine | None]:
        """o2hb_check_own_slot: is the block on disk the one we last wrote (or found)?"""
        slot = self.slots[self.node_num]
        if not slot.last_time:
            return False, None  # "Don't check on our 1st timestamp"
        blk = decode_block(slot.raw)
        if (
            blk.seq == slot.last_time
            and blk.generation == slot.last_generation
            and blk.node == slot.node
        ):
            return True, None
        if blk.node != slot.node:
            what = "Another node is heartbeating on device"
        elif blk.generation != slot.last_generation:
            what = "Heartbeat generation mismatch on device"
        else:
            what = "Heartbeat sequence mismatch on device"
        return False, LogLine(
            logging.ERROR,
            f"{what} ({self.dev_name}): expected({slot.node}:0x{slot.last_generation:x}, "
            f"0x{slot.last_time:x}), ondisk({blk.node}:0x{blk.generation:x}, 0x{blk.seq:x})",
            "slot_conflict",
            blk.node,
        )

    def end_iteration(self, write_ok: bool, now_ms: int, write_errno: int = EIO) -> IterationResult:
        """Finish the iteration once our write completed (or failed with ``write_errno``)."""
        pending = self._pending
        if pending is None:
            raise RuntimeError("end_iteration() without begin_iteration()")
        self._pending = None
        status = 0
        if not write_ok:
            pending.logs.append(
                LogLine(logging.ERROR, f'Write error {-write_errno} on device "{self.dev_name}"',
                        "io_error")
            )
            status = -write_errno
        elif pending.own_slot_ok:
            # Arming happens before the steady count drops below, so the timer only starts at
            # the first good write *after* steady state, as in the kernel.
            if self.steady_iterations == 0:
                self.write_timeout_armed_at = now_ms
            self.last_good_write_ms = now_ms
        return self._bail(
            status,
            pending.own_slot_ok,
            pending.membership_change,
            pending.up,
            pending.down,
            pending.logs,
        )

    def fail_iteration(
        self, status: int = -EIO, reason: str | None = None, kind: str = "io_error"
    ) -> IterationResult:
        """An iteration that ended before the write: read error, or no configured nodes.

        Nothing is re-armed; a start still counts down toward "Unable to stabilize".
        """
        if self._pending is not None:
            raise RuntimeError("fail_iteration() during an iteration")
        logs = [LogLine(logging.ERROR, reason, kind)] if reason else []
        return self._bail(status, False, False, [], [], logs)

    def no_configured_nodes(self) -> IterationResult:
        return self.fail_iteration(-EINVAL, "o2hb: No configured nodes found!", "no_nodes")

    def _bail(
        self,
        status: int,
        own_slot_ok: bool,
        membership_change: bool,
        up: list[int],
        down: list[int],
        logs: list[LogLine],
    ) -> IterationResult:
        became_steady = aborted = False
        if self.steady_iterations and status == 0 and own_slot_ok and not membership_change:
            self.steady_iterations -= 1
            became_steady = self.steady_iterations == 0
        if self.steady_iterations:
            self.unsteady_iterations -= 1
            if self.unsteady_iterations == 0:
                logs.append(
                    LogLine(
                        logging.INFO,
                        f"o2hb: Unable to stabilize heartbeat on region {self.region_name} "
                        f"({self.dev_name})",
                    )
                )
                self.steady_iterations = 0
                self.aborted = aborted = True
                status = -EIO
        return IterationResult(
            up=tuple(up),
            down=tuple(down),
            logs=tuple(logs),
            own_slot_ok=own_slot_ok,
            membership_change=membership_change,
            became_steady=became_steady,
            aborted=aborted,
            status=status,
        )

    # -- timers --

    @property
    def write_timeout_ms(self) -> int:
        """O2HB_MAX_WRITE_TIMEOUT_MS, scaled to our period: (dead_threshold - 1) x interval.

        At a shortened period it is at least ``min_write_timeout_ms`` (1 s by default): a test
        running a 50 ms period with a small threshold would otherwise "fence" on a scheduler
        hiccup of a loaded CI machine, which is not a hung disk. At the kernel's period it is
        exact.
        """
        timeout = (self.dead_threshold - 1) * self.interval_ms
        if self.interval_ms < REGION_TIMEOUT_MS:
            timeout = max(timeout, self.min_write_timeout_ms)
        return timeout

    @property
    def write_deadline_ms(self) -> int | None:
        """When the write timeout fires unless re-armed; None while not armed."""
        if self.write_timeout_armed_at is None:
            return None
        return self.write_timeout_armed_at + self.write_timeout_ms

    def write_timeout_expired(self, now_ms: int) -> bool:
        deadline = self.write_deadline_ms
        return deadline is not None and now_ms >= deadline

    def write_timeout_message(self, now_ms: int | None = None) -> str:
        """The kernel's line: the time since the last good write (the timeout if unknown)."""
        elapsed = self.write_timeout_ms
        if now_ms is not None and self.write_timeout_armed_at is not None:
            elapsed = now_ms - self.write_timeout_armed_at
        return f"Heartbeat write timeout to device {self.dev_name} after {elapsed} milliseconds"

    def elapsed_ms(self, now_ms: int) -> int:
        """debugfs elapsed_time_in_ms: since the last good write, 0 if there was none."""
        if self.last_good_write_ms is None:
            return 0
        return max(0, now_ms - self.last_good_write_ms)

    # -- stop --

    def stop_block(self, seq: int) -> bytes:
        """The last block of a clean stop: generation 0, so peers drop us at once (§8.8)."""
        self.last_seq = seq or 1
        return encode_block(self.block_bytes, seq or 1, self.node_num, 0, self.dead_ms)

    def shutdown_slots(self) -> list[int]:
        """o2hb_shutdown_slot on every slot: the nodes that go DOWN locally as we stop."""
        gone = self.live_nodes
        self._live.clear()
        for slot in self.slots:
            slot.live = False
            slot.changed_samples = slot.equal_samples = 0
        self.write_timeout_armed_at = None
        return gone
