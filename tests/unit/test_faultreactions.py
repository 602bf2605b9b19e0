"""The fault recording's core: console parsing, normalisation and the comparison rules."""

from __future__ import annotations

from tests.kernel.faultreactions import compare, console_lines, distinct, is_cluster_line

CONSOLE = """\
Booting from ROM..\x1b[2J[    9.454861] o2hb: Heartbeat mode set to local
[   22.549372] lane: fault applied: 0 131072 error
[   24.123063] (o2hb-62067EB056,132,0):o2hb_bio_end_io:535 ERROR: IO Error 10
[   24.123411] (o2hb-62067EB056,132,0):o2hb_do_disk_heartbeat:1164 ERROR: status = -5
[   24.2] device-mapper: ioctl: error adding target to table
[   26.304762] (kworker/0:0,7,0):o2hb_write_timeout:301 ERROR: Heartbeat write timeout to \
device dm-0 after 4196 milliseconds
[   26.317374] *** ocfs2 is very sorry to be fencing this system by restarting ***
"""


def test_console_lines_keep_timestamps_and_the_stack_s_lines_only() -> None:
    lines = console_lines(CONSOLE)
    assert lines[0] == (22.549372, "lane: fault applied: 0 131072 error")
    ours = [m for _, m in lines if is_cluster_line(m)]
    assert len(ours) == 4
    assert not any("device-mapper" in m for m in ours)


def test_normalised_lines_drop_prefixes_names_and_numbers() -> None:
    kernel = distinct([m for _, m in console_lines(CONSOLE) if is_cluster_line(m)])
    assert kernel == ["IO Error N", "status = -N",
                      "Heartbeat write timeout to device DEV after N milliseconds",
                      "*** ocfs2 is very sorry to be fencing this system by restarting ***"]
    fakecfs = distinct(["IO Error 10", "status = -5", "IO Error 10",
                        "Heartbeat write timeout to device shared.img after 1000 milliseconds",
                        "*** ocfs2 is very sorry to be fencing this system by restarting ***"])
    assert fakecfs == kernel
    assert distinct(["Node 1 has written a bad crc to loop3"]) == [
        "Node N has written a bad crc to DEV"]
    assert distinct(["o2hb: Heartbeat started on region 0123456789ABCDEF0123456789ABCDEF "
                     "(vda)"]) == ["o2hb: Heartbeat started on region REGION (DEV)"]


def reaction(lines: list[str], fenced: bool = True, at: float = 2.0) -> dict[str, object]:
    return {"outcome": {"fenced": fenced}, "lines": lines,
            "intervals": {"fence after the fault": at}}


def test_compare_names_each_difference_and_ignores_o2net_s_part() -> None:
    kernel = reaction(["IO Error N", "o2hb: node N hb write hung for Ns on region REGION (DEV).",
                       "o2net: No connection established with node N after N.N seconds"])
    assert compare(kernel, reaction(["IO Error N"]), 0.5) == []
    diffs = compare(kernel, reaction(["status = -N"], fenced=False, at=3.0), 0.5)
    assert diffs == ["outcome fenced: kernel True, fakecfs False",
                     "lines only the kernel logs: ['IO Error N']",
                     "lines only fakecfs logs: ['status = -N']",
                     "fence after the fault: kernel 2.0 intervals, fakecfs 3.0"]
    assert compare(kernel, reaction(["IO Error N"], at=2.4), 0.5) == []
    missing = {"outcome": {"fenced": True}, "lines": ["IO Error N"], "intervals": {}}
    assert compare(kernel, missing, 0.5) == [
        "fence after the fault: kernel 2.0 intervals, fakecfs None"]


def test_a_record_of_two_lines_is_one_message_again() -> None:
    text = ("[   36.046283] (o2hb-35F60BED42,132,0):o2hb_check_slot:1055 ERROR: Node 1 on device "
            "dm-0 has a dead count of 9000 ms, but our count is 8000 ms.\n"
            "[   36.046283] Please double check your configuration values for "
            "'O2CB_HEARTBEAT_THRESHOLD'\n"
            "[   36.046283] (o2hb-35F60BED42,132,0):o2hb_check_slot:975 ERROR: Node 1 has "
            "written a bad crc to dm-0\n")
    lines = console_lines(text)
    assert len(lines) == 2
    assert distinct([lines[0][1]]) == [
        "Node N on device DEV has a dead count of N ms, but our count is N ms.\n"
        "Please double check your configuration values for 'O2CB_HEARTBEAT_THRESHOLD'"]
