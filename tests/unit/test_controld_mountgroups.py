"""The ocfs2_controld state machine (spec user-stacks.md §5.5-§5.7, every error row of §7.3)."""

from __future__ import annotations

import errno

import pytest

from hbctl.controld import proto
from hbctl.controld.mountgroups import (
    REASON_LEAVE,
    REASON_NODEDOWN,
    REASON_PROCDOWN,
    Controld,
    DropClient,
    Effect,
    Exit,
    FenceNode,
    JoinGroup,
    LeaveGroup,
    Log,
    NodeDown,
    Reply,
)

U = "1431E6308F3E4C30B5A4906741DD1C4D"
U2 = "D7B7157609244D26B8BBA703A1E7B2CA"
DEV = "/dev/loop0"
DEVICES = {"/dev/loop0": 0x0700, "/dev/ocfsimg": 0x0700, "/dev/loop1": 0x0701}


def probe(path: str) -> int:
    if path not in DEVICES:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    return DEVICES[path]


def make(cluster: str | None = "uc", nodeid: int = 1) -> Controld:
    return Controld(nodeid, cluster, probe=probe, clock=lambda: 1700000000.0)


def acts(effects: list[Effect]) -> list[Effect]:
    return [e for e in effects if not isinstance(e, Log)]


def statuses(effects: list[Effect], client: int) -> list[tuple[int, str]]:
    out = []
    for e in effects:
        if isinstance(e, Reply) and e.client == client:
            for r in e.records:
                m = proto.decode(r)
                if m.verb == "STATUS":
                    out.append(proto.parse_status(m))
    return out


def send(c: Controld, client: int, record: bytes) -> list[Effect]:
    return c.client_record(client, proto.decode(record))


def status_of(c: Controld, client: int, record: bytes) -> tuple[int, str]:
    got = statuses(send(c, client, record), client)
    assert len(got) == 1, got
    return got[0]


def start(c: Controld, client: int, service: str, uuid: str = U, device: str = DEV,
          members: tuple[int, ...] = ()) -> None:
    """A whole first join: MOUNT, CPG confirms, STATUS 0 OK, MRESULT 0, STATUS 0 OK."""
    eff = send(c, client, proto.mount(uuid, "uc", device, service))
    assert acts(eff) == [JoinGroup(uuid)]
    assert statuses(c.group_joined(uuid, (c.nodeid, *members)), client) == [(0, "OK")]
    assert status_of(c, client, proto.mresult(uuid, 0, service)) == (0, "OK")


# --- the observed sequences of spec §4 -------------------------------------------------


def test_b1_to_b6_services_lifecycle() -> None:
    c = make()
    # b1: the first MOUNT is answered only once the join is confirmed.
    eff = send(c, 1, proto.mount(U, "uc", DEV, "svc"))
    assert acts(eff) == [JoinGroup(U)]
    assert statuses(c.group_joined(U, [1]), 1) == [(0, "OK")]
    assert status_of(c, 1, proto.mresult(U, 0, "svc")) == (0, "OK")
    # b2: the same service again.
    assert status_of(c, 2, proto.mount(U, "uc", DEV, "svc")) == (
        errno.EBUSY, f"Filesystem {U} is already mounted on svc")
    # b3: a second service: go ahead at once, no new join.
    eff = send(c, 3, proto.mount(U, "uc", DEV, "svc2"))
    assert acts(eff) == [Reply(3, (proto.status(114, "Already mounted, go ahead"),))]
    assert status_of(c, 3, proto.mresult(U, 0, "svc2")) == (0, "OK")
    # b4: a service that is not the last: answered at once.
    assert acts(send(c, 4, proto.unmount(U, "svc"))) == [Reply(4, (proto.status(0, "OK"),))]
    # b5: the last service: leave, answered when the leave is confirmed.
    assert acts(send(c, 5, proto.unmount(U, "svc2"))) == [LeaveGroup(U)]
    assert statuses(c.group_left(U), 5) == [(0, "OK")]
    assert c.mountgroups == {}
    # b6
    assert status_of(c, 6, proto.unmount(U, "svc")) == (
        errno.ENOENT, f"Filesystem {U} is unknown or not mounted anywhere")


def test_real_mounts_share_one_ocfs2_service_removed_by_one_unmount() -> None:
    c = make()
    start(c, 1, "ocfs2")
    # c3: a second mount of the same device (here through another path to the same rdev).
    assert status_of(c, 2, proto.mount(U, "uc", "/dev/ocfsimg", "ocfs2")) == (
        114, "Already mounted, go ahead")
    assert status_of(c, 2, proto.mresult(U, 0, "ocfs2")) == (0, "OK")
    assert c.snapshot()["mountgroups"][0]["services"] == ["ocfs2"]  # type: ignore[index]
    # c6: the kernel's single -K -u at put_super.
    assert acts(send(c, 3, proto.unmount(U, "ocfs2"))) == [LeaveGroup(U)]
    assert statuses(c.group_left(U), 3) == [(0, "OK")]


def test_c1_failed_first_mount_leaves_and_answers_after_the_leave() -> None:
    c = make()
    send(c, 1, proto.mount(U, "uc", DEV, "ocfs2"))
    c.group_joined(U, [1])
    eff = send(c, 1, proto.mresult(U, 19, "ocfs2"))  # mount(2) said ENODEV
    assert acts(eff) == [LeaveGroup(U)]
    assert statuses(c.group_left(U), 1) == [(0, "OK")]  # the client's error is not echoed
    assert not c.have_mounts()


def test_failed_mresult_of_a_later_service_answers_at_once() -> None:
    c = make()
    start(c, 1, "svc")
    send(c, 2, proto.mount(U, "uc", DEV, "tunefs.ocfs2"))
    eff = send(c, 2, proto.mresult(U, -1485330940, "tunefs.ocfs2"))
    assert acts(eff) == [Reply(2, (proto.status(0, "OK"),))]
    assert c.snapshot()["mountgroups"][0]["services"] == ["svc"]  # type: ignore[index]


def test_failed_additional_mount_tears_nothing_down() -> None:
    c = make()
    start(c, 1, "ocfs2")
    send(c, 2, proto.mount(U, "uc", DEV, "ocfs2"))
    assert status_of(c, 2, proto.mresult(U, 19, "ocfs2")) == (0, "OK")
    assert c.snapshot()["mountgroups"][0]["services"] == ["ocfs2"]  # type: ignore[index]


# --- MOUNT error rows ------------------------------------------------------------------


def test_mount_error_rows() -> None:
    c = make()
    assert status_of(c, 1, proto.mount(U, "uc", DEV, "s", fs="ext4")) == (
        errno.EINVAL, "Invalid filesystem type")
    assert status_of(c, 1, proto.mount(U, "pacemaker", DEV, "s")) == (
        errno.EINVAL, "Invalid cluster name")
    long_uuid = U + "00"
    assert status_of(c, 1, proto.mount(long_uuid, "uc", DEV, "s")) == (
        errno.ENAMETOOLONG, f"UUID too long: {long_uuid}")
    assert status_of(c, 1, proto.mount(U, "uc", "/dev/nope", "s")) == (
        errno.ENOENT, 'Failed to stat device "/dev/nope": No such file or directory')
    assert c.mountgroups == {}  # failed first mounts leave no mountgroup behind
    start(c, 1, "s")
    # This text is 128 bytes: upstream's 128-byte buffer cuts its closing quote.
    assert status_of(c, 2, proto.mount(U, "uc", "/dev/loop1", "t")) == (
        errno.EINVAL,
        f'Trying to mount fs "{U}" on device "/dev/loop1", but it is already mounted '
        f'from device "{DEV}')
    assert status_of(c, 2, proto.mount(U, "uc", DEV, "s")) == (
        errno.EBUSY, f"Filesystem {U} is already mounted on s")
    send(c, 3, proto.mount(U, "uc", DEV, "t"))  # in progress until its MRESULT
    assert status_of(c, 4, proto.mount(U, "uc", DEV, "u")) == (
        errno.EBUSY, "Another mount is in progress")
    assert c.snapshot()["mountgroups"][0]["services"] == ["t", "s"]  # type: ignore[index]


def test_second_mount_during_the_join_is_busy() -> None:
    c = make()
    send(c, 1, proto.mount(U, "uc", DEV, "svc"))  # join not yet confirmed
    assert status_of(c, 2, proto.mount(U, "uc", DEV, "other")) == (
        errno.EBUSY, "Another mount is in progress")


def test_any_cluster_name_without_one_configured() -> None:
    c = make(cluster=None)
    eff = send(c, 1, proto.mount(U, "whatever", DEV, "svc"))
    assert acts(eff) == [JoinGroup(U)]
    assert status_of(c, 2, proto.listclusters()) == (
        errno.ENOENT, "Unable to query cluster name: No such file or directory")


def test_error_texts_are_cut_to_127_bytes() -> None:
    c = make()
    start(c, 1, "s")
    device = "/dev/" + "d" * 200
    DEVICES[device] = 0x0999
    try:
        err, text = status_of(c, 2, proto.mount(U, "uc", device, "t"))
    finally:
        del DEVICES[device]
    assert err == errno.EINVAL
    assert len(text.encode()) == 127
    assert text.startswith(f'Trying to mount fs "{U}" on device "/dev/ddd')


# --- MRESULT error rows ----------------------------------------------------------------


def test_mresult_error_rows() -> None:
    c = make()
    assert status_of(c, 9, proto.mresult(U, 0, "s")) == (
        errno.EINVAL, "Client is not attached to a mountgroup")
    assert status_of(c, 9, proto.mresult(U, 0, "s", fs="xfs")) == (
        errno.EINVAL, "Invalid filesystem type")
    send(c, 1, proto.mount(U, "uc", DEV, "s"))
    c.group_joined(U, [1])
    assert status_of(c, 1, proto.mresult(U + "0", 0, "s")) == (
        errno.EINVAL, f"UUID too long: {U}0")
    assert status_of(c, 1, proto.mresult(U2, 0, "s")) == (
        errno.EINVAL, f"UUID {U2} does not match mountgroup {U}")
    assert status_of(c, 1, proto.mresult(U, 0, "nope")) == (
        errno.ENOENT, f"Unknown service nope for filesystem {U}")
    rec = proto.encode("MRESULT", "ocfs2", U, "12abc", "s")
    assert status_of(c, 1, rec) == (errno.EINVAL, "Invalid error code string: 12abc")
    rec = proto.encode("MRESULT", "ocfs2", U, "99999999999", "s")
    assert status_of(c, 1, rec) == (errno.ERANGE, "Error code 99999999999 is out of range")
    rec = proto.encode("MRESULT", "ocfs2", U, "99999999999999999999", "s")
    assert status_of(c, 1, rec) == (errno.ERANGE,
                                    "Error code 9223372036854775807 is out of range")
    # None of the refusals changed the state: the real MRESULT still completes the mount.
    assert status_of(c, 1, proto.mresult(U, 0, "s")) == (0, "OK")
    # The client is detached once its MRESULT is done.
    assert status_of(c, 1, proto.mresult(U, 0, "s")) == (
        errno.EINVAL, "Client is not attached to a mountgroup")


def test_mresult_no_mount_in_progress_and_service_not_in_progress() -> None:
    c = make()
    start(c, 1, "s")
    send(c, 2, proto.mount(U, "uc", DEV, "t"))  # client 2 attached, "t" in progress
    assert status_of(c, 2, proto.mresult(U, 0, "s")) == (
        errno.EINVAL, "Service s is not in progress")
    # An UNMOUNT racing it: busy, and client 2 stays attached with "t" in progress.
    assert status_of(c, 3, proto.unmount(U, "s")) == (errno.EBUSY, "Another mount is in progress")
    # Client 2 hung up after being told to go ahead: the service is assumed mounted.
    c.client_eof(2)
    assert c.snapshot()["mountgroups"][0]["services"] == ["t", "s"]  # type: ignore[index]
    # A failed MRESULT of a later service leaves its client attached with nothing in
    # progress: a second MRESULT on that connection finds no mount in progress.
    send(c, 5, proto.mount(U, "uc", DEV, "fsck.ocfs2"))
    assert status_of(c, 5, proto.mresult(U, 5, "fsck.ocfs2")) == (0, "OK")
    assert status_of(c, 5, proto.mresult(U, 0, "fsck.ocfs2")) == (
        errno.ENOENT, f"No mount in progress for filesystem {U}")


# --- UNMOUNT error rows ----------------------------------------------------------------


def test_unmount_error_rows() -> None:
    c = make()
    assert status_of(c, 1, proto.unmount(U, "s", fs="ext3")) == (
        errno.EINVAL, "Invalid filesystem type")
    assert status_of(c, 1, proto.unmount(U + "F", "s")) == (
        errno.ENAMETOOLONG, f"UUID too long: {U}F")
    assert status_of(c, 1, proto.unmount(U, "s")) == (
        errno.ENOENT, f"Filesystem {U} is unknown or not mounted anywhere")
    start(c, 1, "s")
    assert status_of(c, 1, proto.unmount(U, "t")) == (
        errno.ENOENT, f"Service {U} is not mounted on t")


def test_unmount_racing_an_additional_mount_makes_it_a_first_mount() -> None:
    c = make()
    start(c, 1, "ocfs2")
    send(c, 2, proto.mount(U, "uc", DEV, "ocfs2"))  # additional, in progress
    assert status_of(c, 3, proto.unmount(U, "ocfs2")) == (
        errno.EBUSY, "Another mount is in progress")
    # No longer additional: its failure now tears the group down like a first mount.
    assert acts(send(c, 2, proto.mresult(U, 19, "ocfs2"))) == [LeaveGroup(U)]


# --- lists -----------------------------------------------------------------------------


def items(effects: list[Effect], client: int) -> list[str]:
    r = proto.ListReceiver()
    for e in effects:
        if isinstance(e, Reply) and e.client == client:
            for rec in e.records:
                r.feed(proto.decode(rec))
    assert r.done
    return r.items


def test_listclusters_listfs_dump() -> None:
    c = make()
    assert items(send(c, 1, proto.listclusters()), 1) == ["uc"]
    start(c, 2, "s", uuid=U)
    start(c, 3, "s", uuid=U2, device="/dev/loop1")
    assert items(send(c, 4, proto.listfs("uc")), 4) == [U2, U]  # newest first
    assert status_of(c, 4, proto.listfs("other")) == (errno.EINVAL, "Invalid cluster name")
    assert status_of(c, 4, proto.listfs("uc", fs="gfs2")) == (
        errno.EINVAL, "Invalid filesystem type")
    text = "".join(items(send(c, 5, proto.dump()), 5))
    assert f'1700000000 start_mount: uuid "{U2}", device "/dev/loop1", service "s"\n' in text


def test_dump_ring_keeps_the_newest_megabyte() -> None:
    c = make()
    for i in range(3000):
        c.log(f"line {i:06d} " + "x" * 400)
    text = "".join(items(send(c, 1, proto.dump()), 1))
    assert len(text.encode()) == 1024 * 1024
    assert text.endswith("client message DUMP from 1\n")
    assert "line 000000" not in text


# --- bad clients -----------------------------------------------------------------------


def test_records_upstream_never_answers_drop_the_client() -> None:
    c = make()
    for rec in (proto.encode("LISTMOUNTS", "ocfs2", "uc"), proto.status(0, "OK"),
                proto.encode("ITEM", "x")):
        assert acts(send(c, 1, rec)) == [DropClient(1)]
    eff = c.client_garbage(2, proto.ProtocolError(errno.EBADMSG, "junk"))
    assert acts(eff) == [DropClient(2)]


def test_mounter_dying_before_the_join_completes_removes_the_group() -> None:
    c = make()
    send(c, 1, proto.mount(U, "uc", DEV, "s"))
    assert acts(c.client_eof(1)) == []  # not joined yet: leave once the join lands
    assert acts(c.group_joined(U, [1])) == [LeaveGroup(U)]
    assert acts(c.group_left(U)) == []  # nobody to answer
    assert not c.have_mounts()


def test_mounter_dying_after_the_join_before_being_notified() -> None:
    c = make()
    start(c, 1, "s")
    send(c, 2, proto.mount(U, "uc", DEV, "t"))  # answered 114 = notified
    c.client_eof(2)
    assert c.snapshot()["mountgroups"][0]["services"] == ["t", "s"]  # type: ignore[index]
    assert c.snapshot()["mountgroups"][0]["in_progress"] is None  # type: ignore[index]


def test_first_mounter_dying_after_go_ahead_keeps_the_service() -> None:
    c = make()
    send(c, 1, proto.mount(U, "uc", DEV, "s"))
    c.group_joined(U, [1])
    eff = c.client_eof(1)
    assert any("already entered, assuming it succeeded" in e.text
               for e in eff if isinstance(e, Log))
    assert c.snapshot()["mountgroups"][0]["services"] == ["s"]  # type: ignore[index]
    # And it can be undone with -K.
    assert acts(send(c, 2, proto.unmount(U, "s"))) == [LeaveGroup(U)]


def test_additional_mounter_dying_clears_additional() -> None:
    c = make()
    start(c, 1, "ocfs2")
    send(c, 2, proto.mount(U, "uc", DEV, "ocfs2"))
    c.client_eof(2)
    assert acts(send(c, 3, proto.unmount(U, "ocfs2"))) == [LeaveGroup(U)]


def test_unmounter_dying_mid_leave_lets_the_leave_finish() -> None:
    c = make()
    start(c, 1, "s")
    send(c, 2, proto.unmount(U, "s"))
    c.client_eof(2)
    assert acts(c.group_left(U)) == []
    assert not c.have_mounts()


def test_join_that_cannot_start_answers_the_mounter() -> None:
    c = make()
    send(c, 1, proto.mount(U, "uc", DEV, "s"))
    assert statuses(c.group_join_failed(U, errno.ENOENT), 1) == [
        (errno.ENOENT, f"Unable to start join to group {U}")]
    assert not c.have_mounts()


def test_mount_refused_during_the_last_leave_keeps_the_leaving_group() -> None:
    # Found by hypothesis: upstream frees the mountgroup here and client 1 never hears back.
    c = make()
    send(c, 1, proto.mount(U, "uc", DEV, "ocfs2"))
    c.group_joined(U, [1])
    assert acts(send(c, 1, proto.mresult(U, 19, "ocfs2"))) == [LeaveGroup(U)]
    assert status_of(c, 2, proto.mount(U, "uc", DEV, "ocfs2")) == (
        errno.EBUSY, "Another mount is in progress")
    assert statuses(c.group_left(U), 1) == [(0, "OK")]
    assert not c.have_mounts()


def test_unexpected_leave_of_a_live_group_exits() -> None:
    c = make()
    start(c, 1, "s")
    assert [type(e) for e in acts(c.group_left(U))] == [Exit]


# --- membership ------------------------------------------------------------------------


def test_peer_death_sends_down_for_each_shared_group_once() -> None:
    c = make(nodeid=1)
    start(c, 1, "s", uuid=U, members=(2,))
    start(c, 2, "s", uuid=U2, device="/dev/loop1", members=(2, 3))
    c.group_members(U, joined=[3])
    c.group_members(U2, left=[(3, REASON_LEAVE)])
    # The per-group confchg ignores deaths; the daemon group's pass acts on them.
    assert acts(c.group_members(U, left=[(2, REASON_NODEDOWN)])) == []
    eff = acts(c.daemon_members([(2, REASON_NODEDOWN), (3, REASON_PROCDOWN)]))
    assert eff == [FenceNode(3), NodeDown(U2, 2), NodeDown(U, 2), NodeDown(U, 3)]
    assert acts(c.daemon_members([(2, REASON_NODEDOWN)])) == []
    assert c.mountgroups[U].nodes == {1}


def test_down_message_is_the_kernels_47_bytes() -> None:
    msg = NodeDown(U, 0x2A).control_message()
    assert msg == f"DOWN {U} 0000002A\n".encode()
    assert len(msg) == 47


@pytest.mark.parametrize("reason", [REASON_LEAVE])
def test_clean_daemon_leave_is_no_death(reason: int) -> None:
    c = make()
    start(c, 1, "s", members=(2,))
    assert acts(c.daemon_members([(2, reason)])) == []
