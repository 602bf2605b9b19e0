"""The o2hb core: block codec against the spec's vectors, slot liveness, and whole regions
of many nodes driven against each other through an in-memory disk (h11 style)."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakecfs.hbdisk import (
    DEFAULT_DEAD_THRESHOLD,
    EINVAL,
    EIO,
    IterationResult,
    RegionMachine,
    SlotState,
    bitmap_text,
    check_slot,
    crc32_le,
    decode_block,
    encode_block,
    next_seq,
    verify_block,
)

BB = 512
ZERO = bytes(BB)

# --- codec: the spec's test vectors (§8.3) ----------------------------------------------


def test_crc32_le_sanity_values() -> None:
    assert crc32_le(0, b"123456789") == 0x2DFD2D88
    assert crc32_le(0xFFFFFFFF, b"123456789") ^ 0xFFFFFFFF == 0xCBF43926
    assert crc32_le(0, bytes(512)) == 0
    # region message key and o2dlm domain key from the spec
    name = b"0123456789ABCDEF0123456789ABCDEF"
    assert crc32_le(32, name) == 0xF4D3E139
    assert crc32_le(33, name) == 0x0509E493
    assert crc32_le(0, name) == 0xCE613CEB


def test_worked_example_block() -> None:
    blk = encode_block(512, 0x65A1B2C3, 3, 0x0123456789ABCDEF, 62000)
    assert len(blk) == 512
    assert blk[:32].hex() == ("c3b2a165000000000300000063ab39bbefcdab896745230130f2000000000000")
    assert blk[32:] == bytes(480)
    dec = decode_block(blk)
    assert (dec.seq, dec.node, dec.cksum, dec.generation, dec.dead_ms) == (
        0x65A1B2C3, 3, 0xBB39AB63, 0x0123456789ABCDEF, 62000,
    )  # fmt: skip
    assert verify_block(blk)


def test_clean_leave_block() -> None:
    blk = encode_block(512, 0x65A1B2C5, 3, 0, 62000)
    assert blk[:32].hex() == ("c5b2a165000000000300000083d35cf3000000000000000030f2000000000000")
    assert decode_block(blk).cksum == 0xF35CD383
    assert decode_block(blk).generation == 0
    assert verify_block(blk)


def test_4096_byte_block() -> None:
    blk = encode_block(4096, 0x65A1B2C3, 3, 0x0123456789ABCDEF, 62000)
    assert len(blk) == 4096
    assert decode_block(blk).cksum == 0xA07D9F6E
    assert verify_block(blk)


def test_all_zero_block_verifies() -> None:
    # a freshly zeroed heartbeat area reads as valid: seq 0, generation 0
    assert verify_block(ZERO)
    assert decode_block(ZERO) == decode_block(b"")


def test_next_seq() -> None:
    assert next_seq(0, 0) == 1  # never 0
    assert next_seq(0, 1700000000) == 1700000000
    assert next_seq(1700000000, 1700000000) == 1700000001  # fast periods: still changes
    assert next_seq(1700000005, 1700000000) == 1700000006
    assert next_seq(2**64 - 1, 5) == 5  # a wrapped counter falls back to the clock


def test_bitmap_text() -> None:
    assert bitmap_text([]) == "\n"
    assert bitmap_text([1, 0]) == "0 1 \n"


@given(st.binary(max_size=600))
def test_decode_and_verify_never_raise(raw: bytes) -> None:
    decode_block(raw)
    assert verify_block(raw) in (True, False)


@given(
    st.integers(1, 2**64 - 1),
    st.integers(0, 254),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, BB - 1),
    st.integers(1, 255),
)
def test_roundtrip_and_any_corruption_detected(
    seq: int, node: int, gen: int, dead_ms: int, where: int, flip: int
) -> None:
    blk = encode_block(BB, seq, node, gen, dead_ms)
    dec = decode_block(blk)
    assert (dec.seq, dec.node, dec.generation, dec.dead_ms) == (seq, node, gen, dead_ms)
    assert verify_block(blk)
    bad = bytearray(blk)
    bad[where] ^= flip
    assert not verify_block(bytes(bad))


# --- the slot machine (§8.5) ------------------------------------------------------------


def _slot_sees(slot: SlotState, raw: bytes, threshold: int = 31) -> tuple[bool, bool]:
    slot.raw = raw
    ch = check_slot(slot, "loop0", threshold, threshold * 2000)
    return ch.up, ch.down


def test_slot_live_after_two_changes_dead_after_threshold_equal() -> None:
    slot = SlotState(node=4)
    gen = 0xABC
    assert _slot_sees(slot, encode_block(BB, 10, 4, gen, 62000)) == (False, False)
    assert _slot_sees(slot, encode_block(BB, 11, 4, gen, 62000)) == (True, False)
    assert slot.live
    last = encode_block(BB, 12, 4, gen, 62000)
    assert _slot_sees(slot, last) == (False, False)
    for _ in range(4):
        assert _slot_sees(slot, last, threshold=5) == (False, False)
    assert _slot_sees(slot, last, threshold=5) == (False, True)
    assert not slot.live


def test_bad_crc_ignored_when_not_live_and_a_miss_when_live() -> None:
    garbage = b"\xff" * BB
    slot = SlotState(node=2)
    ch = check_slot(SlotState(node=2, raw=garbage), "sdb", 31, 62000)
    assert ch.logs == () and not ch.up
    for seq in (1, 2, 3):
        _slot_sees(slot, encode_block(BB, seq, 2, 9, 62000))
    assert slot.live
    slot.raw = garbage
    ch = check_slot(slot, "sdb", 3, 6000)
    assert [ln.message for ln in ch.logs] == ["Node 2 has written a bad crc to sdb"]
    assert ch.logs[0].level == logging.ERROR
    assert slot.equal_samples == 1 and slot.last_time == 3  # junk fields not taken
    check_slot(slot, "sdb", 3, 6000)
    assert check_slot(slot, "sdb", 3, 6000).down


def test_dead_ms_mismatch_warns_but_goes_live() -> None:
    slot = SlotState(node=1)
    _slot_sees(slot, encode_block(BB, 1, 1, 5, 30000))
    slot.raw = encode_block(BB, 2, 1, 5, 30000)
    ch = check_slot(slot, "loop0", 31, 62000)
    assert ch.up
    (warn,) = [ln for ln in ch.logs if ln.level == logging.ERROR]
    assert (warn.kind, warn.node) == ("dead_ms_mismatch", 1)
    assert warn.message.startswith(
        "Node 1 on device loop0 has a dead count of 30000 ms, but our count is 62000 ms."
    )
    assert "O2CB_HEARTBEAT_THRESHOLD" in warn.message
    # hb_dead_ms == 0 (old writers) does not warn
    slot = SlotState(node=1)
    _slot_sees(slot, encode_block(BB, 1, 1, 5, 0))
    slot.raw = encode_block(BB, 2, 1, 5, 0)
    assert not [ln for ln in check_slot(slot, "x", 31, 62000).logs
                if ln.kind == "dead_ms_mismatch"]


def test_generation_change_is_down_then_up_next_read() -> None:
    slot = SlotState(node=3)
    for seq in (1, 2, 3):
        _slot_sees(slot, encode_block(BB, seq, 3, 111, 62000))
    assert slot.live
    assert _slot_sees(slot, encode_block(BB, 4, 3, 222, 62000)) == (False, True)
    assert _slot_sees(slot, encode_block(BB, 5, 3, 222, 62000)) == (True, False)


# --- a region driven against a fake disk ------------------------------------------------


class Disk:
    """The shared heartbeat area: slot -> block bytes (missing = zeroed)."""

    def __init__(self) -> None:
        self.slots: dict[int, bytes] = {}

    def read(self, lo: int, hi: int) -> dict[int, bytes]:
        return {i: self.slots.get(i, ZERO) for i in range(lo, hi + 1)}

    def read_all(self, blocks: int) -> dict[int, bytes]:
        return self.read(0, blocks - 1)


def iterate(
    m: RegionMachine, disk: Disk, configured: Iterable[int], wall: int, now_ms: int
) -> IterationResult:
    """One kernel iteration of ``m`` against ``disk``: read, begin, write, end."""
    conf = set(configured)
    rng = m.read_range(conf)
    if rng is None:
        return m.no_configured_nodes()
    blk = m.begin_iteration(disk.read(*rng), conf, m.next_seq(wall))
    disk.slots[m.node_num] = blk
    return m.end_iteration(True, now_ms)


def start(
    node: int,
    disk: Disk,
    gen: int | None = None,
    *,
    dead_threshold: int = DEFAULT_DEAD_THRESHOLD,
    interval_ms: int = 2000,
    first_global_region: bool = False,
) -> RegionMachine:
    m = RegionMachine(
        node,
        255,
        BB,
        dead_threshold,
        gen or (0x1000 + node),
        interval_ms=interval_ms,
        first_global_region=first_global_region,
        dev_name="loop0",
    )
    m.populate(disk.read_all(255))
    return m


def test_simulated_table_zeroed_own_slot_live_peer() -> None:
    # spec §8.9: we are node 0, node 1 is a live peer writing every period
    disk = Disk()
    peer_seq = 100
    disk.slots[1] = encode_block(BB, peer_seq, 1, 77, 62000)
    me = start(0, disk)
    rows = []
    for it in range(1, 6):
        peer_seq += 1
        disk.slots[1] = encode_block(BB, peer_seq, 1, 77, 62000)
        r = iterate(me, disk, {0, 1}, wall=1000 + 2 * it, now_ms=2000 * it)
        rows.append((it, r.own_slot_ok, r.membership_change, me.steady_iterations, r.up))
    assert rows == [
        (1, False, False, 3, ()),
        (2, True, True, 3, (0, 1)),
        (3, True, False, 2, ()),
        (4, True, False, 1, ()),
        (5, True, False, 0, ()),
    ]
    assert me.steady and me.live_nodes == [0, 1]


def test_simulated_table_stale_own_slot() -> None:
    disk = Disk()
    disk.slots[0] = encode_block(BB, 500, 0, 0xDEAD, 62000)  # a previous run of node 0
    disk.slots[1] = encode_block(BB, 100, 1, 77, 62000)
    me = start(0, disk)
    steady_after = []
    for it in range(1, 5):
        disk.slots[1] = encode_block(BB, 100 + it, 1, 77, 62000)
        r = iterate(me, disk, {0, 1}, wall=400 + it, now_ms=2000 * it)
        steady_after.append((r.own_slot_ok, r.up, me.steady_iterations, r.became_steady))
    assert steady_after == [
        (True, (), 2, False),
        (True, (0, 1), 2, False),
        (True, (), 1, False),
        (True, (), 0, True),
    ]
    # the first seq moved on from the stale block even though the wall clock is behind it
    assert decode_block(disk.slots[0]).seq > 500


def test_simulated_table_no_peer_same_as_first() -> None:
    disk = Disk()
    me = start(0, disk)
    results = [iterate(me, disk, {0, 1}, wall=10 + i, now_ms=i) for i in range(1, 6)]
    assert [r.own_slot_ok for r in results] == [False, True, True, True, True]
    assert [r.up for r in results] == [(), (0,), (), (), ()]
    assert [r.became_steady for r in results] == [False] * 4 + [True]
    assert me.livenodes_text() == "0 \n"


def test_first_global_region_needs_five_and_aborts_at_fifteen() -> None:
    disk = Disk()
    me = start(0, disk, first_global_region=True)
    results = [iterate(me, disk, {0}, wall=i, now_ms=i) for i in range(1, 8)]
    assert [r.became_steady for r in results].index(True) == 6  # 7th iteration
    # a start that cannot stabilise in the first global region: 15 iterations
    me = start(0, Disk(), first_global_region=True)
    aborted = [me.fail_iteration(-EIO).aborted for _ in range(15)]
    assert aborted == [False] * 14 + [True]


def test_no_configured_nodes() -> None:
    me = start(0, Disk())
    assert me.read_range(set()) is None
    r = me.no_configured_nodes()
    assert r.status == -EINVAL
    assert [ln.message for ln in r.logs] == ["o2hb: No configured nodes found!"]


def test_read_range_includes_live_unconfigured_nodes() -> None:
    disk = Disk()
    me = start(2, disk)
    for i in range(3):
        disk.slots[9] = encode_block(BB, 50 + i, 9, 1, 62000)
        iterate(me, disk, {2, 9}, wall=i + 1, now_ms=i)
    assert me.live_nodes == [2, 9]
    # node 9 removed from the configuration: still read (and still live) while it beats
    assert me.read_range({2}) == (2, 9)
    assert me.read_range({2}, live_elsewhere={20}) == (2, 20)
    assert start(2, Disk()).read_range({300}) is None  # no slot for it


class Cluster:
    """N nodes in one region on one Disk, iterated round-robin, one period per round."""

    def __init__(self, nodes: Iterable[int], dead_threshold: int = DEFAULT_DEAD_THRESHOLD):
        self.disk = Disk()
        self.threshold = dead_threshold
        self.configured = set(nodes)
        self.machines: dict[int, RegionMachine] = {}
        for n in sorted(self.configured):
            self.machines[n] = start(n, self.disk, dead_threshold=dead_threshold)
        self.round = 0
        self.ups: dict[int, list[tuple[int, int]]] = {n: [] for n in self.configured}
        self.downs: dict[int, list[tuple[int, int]]] = {n: [] for n in self.configured}

    def step(self, skip: Iterable[int] = ()) -> None:
        self.round += 1
        for n, m in self.machines.items():
            if n in skip:
                continue
            r = iterate(m, self.disk, self.configured, 1000 + 2 * self.round, 2000 * self.round)
            assert not r.aborted
            self.ups[n] += [(self.round, u) for u in r.up]
            self.downs[n] += [(self.round, d) for d in r.down]


@pytest.mark.parametrize("count", [20, 255])
def test_many_nodes_all_see_all_live(count: int) -> None:
    c = Cluster(range(count))
    for _ in range(6):
        c.step()
    everyone = list(range(count))
    for m in c.machines.values():
        assert m.steady
        assert m.live_nodes == everyone
    assert c.machines[0].livenodes_text() == " ".join(map(str, everyone)) + " \n"


def test_hundreds_of_iterations_stay_stable() -> None:
    c = Cluster(range(32), dead_threshold=5)
    for _ in range(300):
        c.step()
    assert all(m.live_nodes == list(range(32)) for m in c.machines.values())
    assert all(len(d) == 0 for d in c.downs.values())
    assert all(len(u) == 32 for u in c.ups.values())


def test_silent_node_dead_after_exactly_threshold_reads() -> None:
    threshold = 7
    c = Cluster(range(8), dead_threshold=threshold)
    for _ in range(5):
        c.step()
    victim = 4
    last_write = c.round  # its last block was written in this round
    for _ in range(threshold + 2):
        c.step(skip={victim})
    for n, downs in c.downs.items():
        if n == victim:
            continue
        # Readers after the victim in the round saw its last block in that round already;
        # readers before it see it one round later. Then `threshold` equal samples.
        first_equal = last_write + 1 if n > victim else last_write + 2
        assert downs == [(first_equal + threshold - 1, victim)], n
        assert victim not in c.machines[n].live_nodes


def test_clean_stop_dropped_at_next_read() -> None:
    c = Cluster(range(6))
    for _ in range(5):
        c.step()
    leaver = 2
    m = c.machines.pop(leaver)
    assert m.shutdown_slots() == list(range(6))
    c.round += 1
    stop = m.stop_block(m.next_seq(1000 + 2 * c.round))
    assert decode_block(stop).generation == 0 and verify_block(stop)
    c.disk.slots[leaver] = stop
    c.round -= 1
    c.step()
    for n in c.machines:
        assert c.downs[n] == [(c.round, leaver)]
        assert c.machines[n].live_nodes == [0, 1, 3, 4, 5]
    for _ in range(40):  # and it stays gone: the block never changes again
        c.step()
    assert all(len(d) == 1 for n, d in c.downs.items() if n != leaver)


def test_restarted_node_goes_down_then_up() -> None:
    c = Cluster(range(5))
    for _ in range(5):
        c.step()
    c.machines[3] = start(3, c.disk, gen=0xFEED)  # same node, new heartbeat generation
    c.step()
    c.step()
    c.step()
    for n in (0, 1, 2, 4):
        # node 4 reads after node 3 in a round and sees the new generation at once
        down = 6 if n > 3 else 7
        assert c.downs[n] == [(down, 3)]
        assert c.ups[n][-1] == (down + 1, 3)
        assert 3 in c.machines[n].live_nodes
    for _ in range(2):
        c.step()
    assert c.machines[3].steady
    assert all(m.live_nodes == [0, 1, 2, 3, 4] for m in c.machines.values())


def test_two_machines_with_one_node_number_abort_start() -> None:
    disk = Disk()
    disk.slots[0] = encode_block(BB, 1, 0, 5, 62000)
    a = start(1, disk, gen=0xAAAA)
    b = start(1, disk, gen=0xBBBB)
    results_a = []
    for i in range(1, 10):
        disk.slots[0] = encode_block(BB, 1 + i, 0, 5, 62000)
        results_a.append(iterate(a, disk, {0, 1}, wall=i, now_ms=i))
        rb = iterate(b, disk, {0, 1}, wall=i, now_ms=i)
    assert not any(r.own_slot_ok for r in results_a)
    assert results_a[-1].aborted and rb.aborted
    assert results_a[-1].status == -EIO
    assert not a.steady and a.aborted
    msgs = [ln.message for r in results_a for ln in r.logs]
    assert "o2hb: Unable to stabilize heartbeat on region  (loop0)" in msgs
    mismatch = [s for s in msgs if s.startswith("Heartbeat generation mismatch on device (loop0)")]
    assert len(mismatch) == 8  # iterations 2..9; the first has no timestamp to check
    assert "expected(1:0xaaaa, " in mismatch[0] and "ondisk(1:0xbbbb, " in mismatch[0]


def test_foreign_writer_in_our_slot_after_steady() -> None:
    disk = Disk()
    me = start(1, disk, dead_threshold=4)
    for i in range(1, 7):
        iterate(me, disk, {1}, wall=i, now_ms=i * 2000)
    assert me.steady and me.write_deadline_ms == 12000 + 3 * 2000
    disk.slots[1] = encode_block(BB, 99, 7, 0x77, 62000)  # node 7 misconfigured onto slot 1
    r = iterate(me, disk, {1}, wall=7, now_ms=14000)
    assert not r.own_slot_ok
    assert r.logs[0].message == (
        "Another node is heartbeating on device (loop0): expected(1:0x1001, 0x6), "
        "ondisk(7:0x77, 0x63)"
    )
    # not re-armed: the deadline still counts from the last good write
    assert me.write_deadline_ms == 18000
    assert me.write_timeout_expired(18000)


def test_write_timeout_armed_after_steady_and_only_by_good_writes() -> None:
    disk = Disk()
    me = start(0, disk, dead_threshold=5, interval_ms=2000)
    assert me.write_timeout_ms == 8000
    now = 0
    for _ in range(5):
        now += 2000
        r = iterate(me, disk, {0}, wall=now, now_ms=now)
    assert r.became_steady
    # the write that made us steady did not arm the timer yet (armed before the count drops)
    assert me.write_deadline_ms is None and not me.write_timeout_expired(10**9)
    assert me.elapsed_ms(now + 30) == 30
    now += 2000
    iterate(me, disk, {0}, wall=now, now_ms=now)
    assert me.write_deadline_ms == now + 8000
    good = now
    # read errors and write errors: no re-arm
    for i in range(3):
        now += 2000
        if i % 2:
            me.fail_iteration(-EIO)
        else:
            me.begin_iteration(disk.read(0, 0), {0}, me.next_seq(now))
            r = me.end_iteration(False, now)
            assert r.status == -EIO and r.logs[-1].message == 'Write error -5 on device "loop0"'
        assert not me.write_timeout_expired(now)
    assert me.elapsed_ms(now) == now - good
    assert me.write_timeout_expired(good + 8000)
    assert me.write_timeout_message() == (
        "Heartbeat write timeout to device loop0 after 8000 milliseconds"
    )


def test_elapsed_ms_zero_before_any_good_write() -> None:
    assert start(0, Disk()).elapsed_ms(12345) == 0


def test_stop_shutdown_clears_live_map() -> None:
    disk = Disk()
    me = start(0, disk)
    for i in range(3):
        iterate(me, disk, {0}, wall=i, now_ms=i)
    assert me.shutdown_slots() == [0]
    assert me.live_nodes == [] and me.livenodes_text() == "\n"


def test_bad_parameters_rejected() -> None:
    with pytest.raises(ValueError):
        RegionMachine(5, 5, BB)
    with pytest.raises(ValueError):
        RegionMachine(0, 255, BB, generation=0)
    with pytest.raises(ValueError):
        encode_block(16, 1, 0, 1, 0)
    m = RegionMachine(0, 4, BB)
    with pytest.raises(RuntimeError):
        m.begin_iteration({}, {0}, 1)


def test_block_layout_constant() -> None:
    assert struct.calcsize("<QB3xIQI") == 28


def test_write_timeout_has_a_floor_only_at_shortened_periods() -> None:
    """(threshold-1) x period, but never below 1 s when the period is shortened."""
    disk = Disk()
    assert start(0, disk, dead_threshold=5, interval_ms=100).write_timeout_ms == 1000
    assert start(1, disk, dead_threshold=31, interval_ms=100).write_timeout_ms == 3000
    assert start(2, disk, dead_threshold=31, interval_ms=2000).write_timeout_ms == 60000
    assert start(3, disk, dead_threshold=3, interval_ms=2000).write_timeout_ms == 4000
