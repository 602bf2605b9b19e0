"""hbctl's reading of a real host's kernel log (/dev/kmsg records) into fakecfs's shape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakecfs.events import KINDS
from hbctl.events import format_event, parse_kmsg, read_fakecfs, read_kmsg

UUID = "0123456789ABCDEF0123456789ABCDEF"


@pytest.mark.parametrize("record, want", [
    (f"5,812,6120345,-;o2hb: Heartbeat started on region {UUID} (sdb)",
     {"kind": "region_started", "region": UUID, "dev": "sdb", "level": "notice",
      "seq": 812, "t": 6.120345}),
    (f"5,9,1,-;o2hb: Unable to stabilize heartbeat on region {UUID} (loop0)",
     {"kind": "region_aborted", "region": UUID, "dev": "loop0"}),
    (f"5,9,1,-;o2hb: Heartbeat start aborted on region {UUID} (dm-3)",
     {"kind": "region_aborted", "dev": "dm-3"}),
    (f"5,9,1,-;o2hb: Region {UUID} (sdc) is now a quorum device",
     {"kind": "quorum_region", "region": UUID, "dev": "sdc"}),
    ("3,10,2,-;(kworker/0:1,45,0):o2hb_write_timeout:276 ERROR: Heartbeat write timeout to "
     "device sdb after 60000 milliseconds",
     {"kind": "write_timeout", "dev": "sdb", "level": "err",
      "message": "Heartbeat write timeout to device sdb after 60000 milliseconds"}),
    ("0,11,3,-;*** ocfs2 is very sorry to be fencing this system by restarting ***",
     {"kind": "fenced", "level": "emerg"}),
    ("3,12,3,-;(o2hb-01234567,301,1):o2hb_check_slot:1020 ERROR: Node 2 has written a bad "
     "crc to sdb", {"kind": "bad_crc", "node": 2, "dev": "sdb"}),
    ("3,13,3,-;(o2hb-01234567,301,1):o2hb_check_own_slot:590 ERROR: Another node is "
     "heartbeating on device (sdb): expected(1:0xa, 0x5), ondisk(2:0xb, 0x6)",
     {"kind": "slot_conflict", "dev": "sdb"}),
    ("3,14,3,-;(o2hb-01234567,301,1):o2hb_check_slot:1080 ERROR: Node 1 on device sdb has "
     "a dead count of 30000 ms, but our count is 62000 ms.",
     {"kind": "dead_ms_mismatch", "node": 1, "dev": "sdb"}),
    ('3,15,3,-;(o2hb-01234567,301,1):o2hb_do_disk_heartbeat:1225 ERROR: Write error -5 on '
     'device "sdb"', {"kind": "io_error", "dev": "sdb"}),
    ("3,16,3,-;(o2hb-01234567,301,1):o2hb_bio_end_io:240 ERROR: IO Error 10",
     {"kind": "io_error"}),
    ("7,17,3,-;(o2hb-01234567,301,1):o2hb_check_slot:1050 Node 3 (id 0x1f) joined my region",
     {"kind": "node_up", "node": 3, "level": "debug"}),
    ("7,18,3,-;(o2hb-01234567,301,1):o2hb_check_slot:1070 Node 3 left my region",
     {"kind": "node_down", "node": 3}),
    ("6,19,3,-;o2net: Connected to node n2 (num 2) at 10.0.0.2:7777",
     {"kind": "net_up", "node": 2, "name": "n2"}),
    ("6,20,3,-;o2net: No longer connected to node n2 (num 2) at 10.0.0.2:7777",
     {"kind": "net_down", "node": 2}),
    ("6,21,3,-;o2dlm: Joining domain ABC ( 0 ) 1 nodes",
     {"kind": "kernel", "message": "o2dlm: Joining domain ABC ( 0 ) 1 nodes"}),
])
def test_stack_lines_become_events(record: str, want: dict[str, object]) -> None:
    event = parse_kmsg(record)
    assert event is not None
    assert {k: event.get(k) for k in want} == want


@pytest.mark.parametrize("record", [
    "6,1,0,-;Linux version 6.1.0",
    "6,2,0,-;(kworker,1,0):ext4_foo:1 ERROR: something else",
    "not a record", "x,y,z,-;o2hb: bad header",
])
def test_other_lines_are_skipped(record: str) -> None:
    assert parse_kmsg(record) is None


def test_hbctl_events_on_this_host() -> None:
    """The real /dev/kmsg path: everything it yields is the stack's, in the event shape."""
    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("/dev/kmsg is not readable here (needs root)")
    events = list(read_kmsg())
    assert all({"seq", "t", "kind", "level", "message"} <= set(e) for e in events)
    assert all(e["kind"] in KINDS or e["kind"] in ("net_up", "net_down", "kernel")
               for e in events)
    out = subprocess.run([str(Path(sys.executable).parent / "hbctl"), "--sysroot", "/",
                          "events", "--json"], capture_output=True, text=True, check=True)
    assert len(out.stdout.splitlines()) >= len(events)


def test_read_fakecfs_and_format(tmp_path: Path) -> None:
    (tmp_path / "fakecfs").mkdir()
    (tmp_path / "fakecfs/events").write_text(
        '{"seq":1,"t":1.5,"kind":"node_down","level":"debug","message":"Node 2 left my '
        f'region","node":2,"region":"{UUID}"}}\n{{"seq":2,"t":2')
    (event,) = read_fakecfs(str(tmp_path))  # the unfinished line is not an event yet
    assert format_event(event) == (f"[    1.500000] node_down {UUID} node 2: Node 2 left my "
                                   "region")
