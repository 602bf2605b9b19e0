"""The fault commands, the active fault set, global mode's quorum, and the event log."""

from __future__ import annotations

import errno
import json

import pytest

from fakecfs.events import KINDS, EventLog
from fakecfs.faults import (
    NO_FAULTS,
    FaultError,
    FaultSet,
    Phase,
    corrupt_block,
    foreign_node_for,
    parse_command,
)
from fakecfs.hbdisk import decode_block, encode_block, verify_block
from fakecfs.quorum import GlobalQuorum

R = "0123456789ABCDEF0123456789ABCDEF"


@pytest.mark.parametrize("text, command", [
    (b"freeze", "freeze"),
    (b"freeze\n", "freeze"),
    (f"eio region={R}".encode(), f"eio region={R} op=both"),
    (f"eio region={R} op=read".encode(), f"eio region={R} op=read"),
    (f"delay  ms=300 region={R}\n".encode(), f"delay region={R} op=both ms=300"),
    (f"corrupt region={R}".encode(), f"corrupt region={R}"),
    (f"foreign region={R} node=3".encode(), f"foreign region={R} node=3"),
    (f"foreign region={R}".encode(), f"foreign region={R}"),
    (f"deadms region={R} ms=0".encode(), f"deadms region={R} ms=0"),
])
def test_commands_round_trip(text: bytes, command: str) -> None:
    cmd = parse_command(text)
    assert cmd.fault is not None and cmd.fault.command() == command
    assert parse_command(command.encode()).fault == cmd.fault


@pytest.mark.parametrize("text", [
    b"", b"\n", b"melt", b"eio", b"eio R", f"eio region={R} op=up".encode(),
    f"eio region={R} region={R}".encode(), f"eio region={R} ms=3".encode(),
    f"delay region={R}".encode(), f"delay region={R} ms=-1".encode(),
    f"delay region={R} ms=0".encode(), f"delay region={R} ms=1e3".encode(),
    f"deadms region={R} ms=4294967296".encode(), f"foreign region={R} node=255".encode(),
    b"eio region=" + b"A" * 33, b"eio region=a/b", b"freeze now", b"thaw x=1",
    b"clear melt", b"\xff\xfe", b"eio region=\x00",
])
def test_malformed_commands_are_einval(text: bytes) -> None:
    with pytest.raises(FaultError) as exc:
        parse_command(text)
    assert exc.value.errno == errno.EINVAL


def apply(faults: FaultSet, text: str, regions: dict[str, Phase] | None = None) -> tuple[
        list[str], list[str]]:
    added, cleared = faults.apply(parse_command(text.encode()),
                                  {R: Phase.RUNNING} if regions is None else regions)
    return [f.command() for f in added], [f.command() for f in cleared]


def refused(faults: FaultSet, text: str, regions: dict[str, Phase] | None = None) -> int:
    before = faults.render()
    with pytest.raises(FaultError) as exc:
        apply(faults, text, regions)
    assert faults.render() == before  # nothing half-applied
    return exc.value.errno


def test_fault_set_rules() -> None:
    f = FaultSet()
    assert refused(f, "thaw") == errno.EALREADY
    assert apply(f, "freeze") == (["freeze"], [])
    assert f.frozen and refused(f, "freeze") == errno.EALREADY
    assert apply(f, "thaw") == ([], ["freeze"])
    assert refused(f, "eio region=OTHER") == errno.ENOENT
    assert apply(f, f"eio region={R} op=read") == ([f"eio region={R} op=read"], [])
    # the same kind again replaces it
    assert apply(f, f"eio region={R} op=write") == ([f"eio region={R} op=write"],
                                                     [f"eio region={R} op=read"])
    apply(f, f"delay region={R} op=read ms=40")
    apply(f, "freeze")
    assert f.render().splitlines() == [f"eio region={R} op=write",
                                       f"delay region={R} op=read ms=40", "freeze"]
    rf = f.for_region(R)
    assert (rf.eio("read"), rf.eio("write"), rf.delay_ms("read"), rf.delay_ms("write")) == (
        False, True, 40, 0)
    assert apply(f, "clear delay") == ([], [f"delay region={R} op=read ms=40"])
    assert apply(f, f"clear region={R}") == ([], [f"eio region={R} op=write"])
    assert apply(f, "clear") == ([], ["freeze"])
    assert f.for_region(R) is NO_FAULTS


def test_busy_regions_refuse_faults() -> None:
    f = FaultSet()
    starting = {R: Phase.STARTING, "B": Phase.IDLE}
    assert refused(f, f"corrupt region={R}", starting) == errno.EBUSY
    assert refused(f, "freeze", starting) == errno.EBUSY
    assert apply(f, "corrupt region=B", starting)[0] == ["corrupt region=B"]  # idle: fine
    apply(f, "freeze", {R: Phase.RUNNING})
    assert refused(f, "thaw", {R: Phase.STOPPING}) == errno.EBUSY
    assert refused(f, "clear", {R: Phase.STOPPING}) == errno.EBUSY  # would thaw
    assert f.forget_region("B")[0].command() == "corrupt region=B"
    assert f.render() == "freeze\n"


def test_block_faults() -> None:
    block = encode_block(512, 77, 3, 0xABC, 62000)
    bad = corrupt_block(block)
    assert verify_block(block) and not verify_block(bad)
    assert decode_block(bad).seq == 77 and decode_block(bad).generation == 0xABC
    assert foreign_node_for(3, 255, None) == 4
    assert foreign_node_for(254, 255, None) == 0
    assert foreign_node_for(3, 255, 3) == 3


def test_global_quorum_fences_at_half() -> None:
    q = GlobalQuorum()
    assert not q.good_write(0, False, {0}, {0})  # not steady: not yet
    assert q.good_write(0, True, {0}, {0})
    assert not q.good_write(1, True, {0}, {0, 1})  # does not see every live node
    assert q.good_write(1, True, {0, 1}, {0, 1})
    assert q.good_write(2, True, {0, 1}, {0, 1})
    assert not q.write_timeout(0)  # 1 of 3
    assert q.failed == {0}
    assert not q.good_write(0, True, {0, 1}, {0, 1}) and q.failed == set()  # recovered
    assert not q.write_timeout(0)
    assert q.write_timeout(1)  # 2 of 3
    q2 = GlobalQuorum({0, 1})
    assert q2.write_timeout(0)  # 1 of 2 is half
    assert GlobalQuorum().write_timeout(5)  # no quorum region at all: 0 >= 0 fences
    q2.region_gone(0)
    assert q2.quorum == {1} and q2.failed == set()


def test_event_log_offsets_and_limit() -> None:
    log = EventLog(limit=4)
    first = log.append(10.5, "node_up", "Node 1 joined my region", node=1, region=R,
                       dev=None)
    assert first.as_dict() == {"seq": 1, "t": 10.5, "kind": "node_up", "level": "notice",
                               "message": "Node 1 joined my region", "node": 1, "region": R}
    whole = log.read(0, 1 << 20)
    assert json.loads(whole) == first.as_dict() and whole.endswith(b"\n")
    # reads at any offset and size join up into the same bytes
    for i in range(2, 12):
        log.append(float(i), "fault_set", f"fault {i}")
    data = b""
    while chunk := log.read(len(data), 7):  # a reader moves on by what it got
        data += chunk
    lines = [json.loads(line) for line in data.split(b"\n") if line.strip()]
    # only the last few are kept; older bytes read as blank lines, offsets stay valid
    assert [e["seq"] for e in lines] == list(range(lines[0]["seq"], 12))
    assert lines[0]["seq"] > 1 and len(data) == log.size
    assert log.read(log.size, 100) == b""
    assert [e.seq for e in log.events()] == [e["seq"] for e in lines]
    with pytest.raises(ValueError):
        log.append(0.0, "no_such_kind", "x")
    assert "fenced" in KINDS
