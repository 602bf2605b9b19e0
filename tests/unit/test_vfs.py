"""The emulated VFS core: superblocks shared by mounts, binds and rbinds; put_super once.

Pure tests of :mod:`fakecfs.vfs` (no FUSE, no devices): the table decides when the last
mount of a superblock goes, which is what makes the kernel run ``ocfs2_hb_ctl -K`` once.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakecfs.tree import KernelError
from fakecfs.usermode import HELPER_ENV, call_usermodehelper, helper_argv, leave_group
from fakecfs.vfs import (
    BindRequest,
    DeviceKey,
    MountFacts,
    MountRequest,
    MountTable,
    RemountRequest,
    Superblock,
    UmountRequest,
    check_new_superblock,
    escape,
    heartbeat_option,
    parse_command,
    unescape,
)

UUID = "B7E82B346F634EEA831B1E24655B60BE"
DEV = DeviceKey("blk", 0x700)
OTHER = DeviceKey("file", 2049, 1234)


def mount(t: MountTable, key: DeviceKey, dir_: str, device: str = "/dev/loop0") -> Superblock:
    sb = t.superblock(key) or t.new_superblock(key, device, UUID, True)
    t.attach(sb, dir_, device, ("heartbeat=local",))
    return sb


def errno_of(fn: object, *args: object) -> int:
    with pytest.raises(KernelError) as e:
        fn(*args)  # type: ignore[operator]
    return e.value.errno


# -- commands -------------------------------------------------------------------------------


def test_commands_parse_with_proc_mounts_escapes() -> None:
    assert parse_command(b"mount /dev/loop0 /mnt/a heartbeat=local,noatime\n") == \
        MountRequest("/dev/loop0", "/mnt/a", ("heartbeat=local", "noatime"))
    assert parse_command(b"mount rel.img /mnt//a/") == MountRequest("rel.img", "/mnt/a", ())
    assert parse_command(b"bind /mnt/a /mnt/b") == BindRequest("/mnt/a", "/mnt/b", False)
    assert parse_command(b"rbind /srv /copy") == BindRequest("/srv", "/copy", True)
    assert parse_command(b"umount /my\\040dir") == UmountRequest("/my dir")


@pytest.mark.parametrize("bad", [b"", b"\n", b"mount /dev/x", b"umount rel/dir",
                                 b"bind /a", b"frobnicate /a", b"mount a b c d", b"\xff"])
def test_malformed_commands_are_einval(bad: bytes) -> None:
    assert errno_of(parse_command, bad) == errno.EINVAL


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30))
@settings(max_examples=200)
def test_escape_round_trips_and_has_no_blanks(text: str) -> None:
    e = escape(text)
    assert unescape(e) == text
    assert not set(e) & set(" \t\n")


def test_heartbeat_option_last_wins_and_rejects_unknown_modes() -> None:
    assert heartbeat_option(()) == "none"
    assert heartbeat_option(("heartbeat=none", "heartbeat=local")) == "local"
    assert errno_of(heartbeat_option, ("heartbeat=disk",)) == errno.EINVAL


# -- superblocks and mounts ---------------------------------------------------------------------


def test_same_device_shares_one_superblock_and_only_the_last_umount_puts_it() -> None:
    t = MountTable()
    a = mount(t, DEV, "/a")
    b = mount(t, DEV, "/b", "/dev/disk/by-uuid/x")  # another name, same rdev
    c = mount(t, OTHER, "/c")
    assert a is b and a is not c
    m, last = t.umount("/a")
    assert (m.dir, last) == ("/a", None)
    m, last = t.umount("/b")
    assert (m.dir, last) == ("/b", a)
    assert t.superblock(DEV) is None and t.superblock(OTHER) is c


def test_bind_shares_the_superblock_and_either_order_of_umount_puts_it_once() -> None:
    for first, second in (("/a", "/b"), ("/b", "/a")):
        t = MountTable()
        sb = mount(t, DEV, "/a")
        [m] = t.bind("/a", "/b")
        assert m.sb is sb
        assert t.umount(first)[1] is None
        assert t.umount(second)[1] is sb
        assert t.mounts == [] and t.superblocks == {}


def test_bind_of_a_path_inside_a_mount_uses_that_mount() -> None:
    t = MountTable()
    sb = mount(t, DEV, "/a")
    [m] = t.bind("/a/sub/dir", "/b")
    assert m.sb is sb
    assert errno_of(t.bind, "/elsewhere", "/c") == errno.EINVAL


def test_rbind_copies_the_tree_below_and_the_superblock_lives_until_the_last_copy() -> None:
    t = MountTable()
    data = mount(t, DEV, "/srv/data")
    logs = mount(t, OTHER, "/srv/data/logs")
    made = t.rbind("/srv", "/copy")
    assert [(m.dir, m.sb) for m in made] == [("/copy/data", data), ("/copy/data/logs", logs)]
    # the original tree goes: deepest first, no put_super yet
    assert t.umount("/srv/data/logs")[1] is None
    assert t.umount("/srv/data")[1] is None
    assert t.umount("/copy/data/logs")[1] is logs
    assert t.umount("/copy/data")[1] is data


def test_rbind_of_a_mount_itself_and_of_nothing() -> None:
    t = MountTable()
    sb = mount(t, DEV, "/a")
    assert [(m.dir, m.sb) for m in t.rbind("/a", "/b")] == [("/b", sb)]
    assert errno_of(t.rbind, "/nothing", "/c") == errno.EINVAL
    root = t.rbind("/", "/jail")
    assert sorted(m.dir for m in root) == ["/jail/a", "/jail/b"]


def test_rbind_into_its_own_tree_copies_once() -> None:
    t = MountTable()
    mount(t, DEV, "/a")
    made = t.rbind("/a", "/a/inner")
    assert [m.dir for m in made] == ["/a/inner"]


def test_umount_rules_einval_ebusy_and_stacking() -> None:
    t = MountTable()
    assert errno_of(t.umount, "/a") == errno.EINVAL
    sb = mount(t, DEV, "/a")
    mount(t, OTHER, "/a/b")
    assert errno_of(t.umount, "/a") == errno.EBUSY
    t.umount("/a/b")
    mount(t, DEV, "/a")  # stacked on the same dir, same superblock
    assert t.umount("/a")[1] is None
    assert t.umount("/a")[1] is sb
    assert errno_of(t.umount, "/a") == errno.EINVAL


def test_remount_changes_every_mount_of_the_superblock_but_never_the_heartbeat() -> None:
    t = MountTable()
    mount(t, DEV, "/a")
    t.bind("/a", "/b")
    mount(t, OTHER, "/c")
    assert parse_command(b"remount /b ro,heartbeat=local") == RemountRequest(
        "/b", ("ro", "heartbeat=local"))
    assert [m.dir for m in t.remount("/b", ("ro", "heartbeat=local"))] == ["/a", "/b"]
    lines = t.render().splitlines()
    assert [line.split()[3] for line in lines] == [
        "ro,heartbeat=local", "ro,heartbeat=local", "rw,heartbeat=local"]
    t.remount("/a", ("rw",))  # back to rw; no heartbeat= given: the mode is kept
    assert t.render().split("\n")[0].split()[3] == "rw,heartbeat=local"
    assert errno_of(t.remount, "/a", ("heartbeat=global",)) == errno.EINVAL
    assert errno_of(t.remount, "/nowhere", ("ro",)) == errno.EINVAL
    assert t.superblock(DEV) is not None and len(t.mounts) == 3  # nothing else changed


def test_render_is_proc_mounts_like_with_superblock_and_uuid() -> None:
    t = MountTable()
    sb = mount(t, DEV, "/my dir")
    t.bind("/my dir", "/b")
    lines = t.render().splitlines()
    assert lines == [
        f"/dev/loop0 /my\\040dir ocfs2 rw,heartbeat=local {sb.sid} {UUID}",
        f"/dev/loop0 /b ocfs2 rw,heartbeat=local {sb.sid} {UUID}",
    ]


@given(st.lists(st.tuples(st.sampled_from(["mount", "bind", "rbind", "umount"]),
                          st.sampled_from(["/a", "/b", "/a/x", "/c"]),
                          st.sampled_from(["/a", "/b", "/a/x", "/c", "/d/e"]),
                          st.sampled_from([DEV, OTHER])), max_size=25))
@settings(max_examples=300)
def test_put_super_comes_exactly_once_per_superblock_whatever_the_order(ops: list) -> None:
    """Invariant: every superblock made is put exactly once, when its last mount goes."""
    t = MountTable()
    made: list[Superblock] = []
    put: list[Superblock] = []
    for verb, p1, p2, key in ops:
        try:
            if verb == "mount":
                if t.superblock(key) is None:
                    made.append(t.new_superblock(key, "d", UUID, True))
                t.attach(t.superblocks[key], p1, "d", ())
            elif verb == "bind":
                t.bind(p1, p2)
            elif verb == "rbind":
                t.rbind(p1, p2)
            else:
                _, last = t.umount(p1)
                if last is not None:
                    put.append(last)
        except KernelError:
            pass
        live = {m.sb for m in t.mounts}
        assert live == set(t.superblocks.values())
    # unmount everything, deepest first
    while t.mounts:
        deepest = max(t.mounts, key=lambda m: len(m.dir))
        _, last = t.umount(deepest.dir)
        if last is not None:
            put.append(last)
    assert sorted(id(s) for s in put) == sorted(id(s) for s in made)


# -- the kernel's refusals for a new superblock --------------------------------------------------

GOOD = MountFacts(local_volume=False, volume_stack="o2cb", heartbeat="local",
                  cluster_stack="o2cb", this_node=1, node_heartbeating=True)


def test_a_clustered_volume_with_heartbeat_mounts_clustered() -> None:
    assert check_new_superblock(GOOD) == "o2cb"
    assert check_new_superblock(GOOD.__class__(**{**GOOD.__dict__, "volume_stack": None})) \
        == "o2cb"


@pytest.mark.parametrize(("change", "err"), [
    ({"heartbeat": "none"}, errno.EINVAL),  # heartbeat has to be started
    ({"this_node": 255}, errno.EINVAL),  # this node has not been configured
    ({"node_heartbeating": False}, errno.EINVAL),  # heartbeat has not been started
    ({"cluster_stack": "pcmk"}, errno.EBUSY),  # a different stack is in use
    ({"local_volume": True}, errno.EINVAL),  # cannot heartbeat on a local volume
    ({"stack_option": "o2cb"}, errno.EINVAL),  # cluster_stack= on a classic volume
])
def test_refusals(change: dict, err: int) -> None:
    facts = MountFacts(**{**GOOD.__dict__, **change})
    assert errno_of(check_new_superblock, facts) == err


def test_a_local_mount_volume_mounts_without_heartbeat_and_without_a_cluster() -> None:
    facts = MountFacts(local_volume=True, volume_stack=None, heartbeat="none",
                       cluster_stack="o2cb", this_node=255, node_heartbeating=False)
    assert check_new_superblock(facts) == ""


USER = MountFacts(local_volume=False, volume_stack="pcmk", heartbeat="none",
                  cluster_stack="pcmk", this_node=255, node_heartbeating=False,
                  stack_option="pcmk")


def test_a_user_stack_volume_mounts_on_the_user_plugin_without_o2cb_heartbeat() -> None:
    # No o2cb node or heartbeat is needed: membership is the user stack's.
    assert check_new_superblock(USER) == "user"


@pytest.mark.parametrize(("change", "err"), [
    ({"stack_option": None}, errno.EINVAL),  # mount.ocfs2 always passes cluster_stack=
    ({"stack_option": "cman"}, errno.EINVAL),  # does not match the filesystem
    ({"heartbeat": "local"}, errno.EINVAL),  # o2cb heartbeat arguments on a user stack
    ({"cluster_stack": "o2cb"}, errno.EBUSY),  # a different cluster stack is in use
    ({"cluster_stack": "cman"}, errno.EBUSY),  # pcmk and cman share the plugin, not the label
])
def test_user_stack_refusals(change: dict, err: int) -> None:
    facts = MountFacts(**{**USER.__dict__, **change})
    assert errno_of(check_new_superblock, facts) == err


# -- the usermode helper (fakecfs.usermode), run for real ---------------------------------------


async def test_the_helper_gets_the_kernels_argv_env_and_cwd_and_is_waited_for(
        tmp_path: Path) -> None:
    record = tmp_path / "record"
    helper = tmp_path / "helper"
    helper.write_text(f"#!/bin/sh\nsleep 0.2\n{{ printf '%s\\n' \"$0\" \"$@\"; pwd; "
                      f"tr '\\0' '\\n' < /proc/$$/environ; }} > {record}\n")
    helper.chmod(0o755)
    assert await leave_group(str(helper), UUID) == 0
    lines = record.read_text().splitlines()  # written before leave_group returned
    assert lines[:5] == [str(helper), "-K", "-u", UUID, "/"]
    assert sorted(lines[5:]) == ["HOME=/", "PATH=/sbin:/bin:/usr/sbin:/usr/bin"]
    assert helper_argv("/sbin/ocfs2_hb_ctl", UUID) == ["/sbin/ocfs2_hb_ctl", "-K", "-u", UUID]
    assert HELPER_ENV == {"HOME": "/", "PATH": "/sbin:/bin:/usr/sbin:/usr/bin"}


async def test_helper_results_are_the_kernels_wait_status_or_minus_errno(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho nope >&2\nexit 1\n")
    failing.chmod(0o755)
    not_exec = tmp_path / "not_exec"
    not_exec.write_text("#!/bin/sh\n")
    with caplog.at_level(logging.INFO, logger="fakecfs.vfs"):
        assert await leave_group(str(failing), UUID) == 256  # exit 1: no kernel message
        assert "Error" not in caplog.text and "nope" in caplog.text
        assert await leave_group(str(tmp_path / "missing"), UUID) == -errno.ENOENT
        assert f'ocfs2: Error -2 running user helper "{tmp_path}/missing -K -u {UUID}"' \
            in caplog.text
        assert await leave_group(str(not_exec), UUID) == -errno.EACCES


async def test_the_launcher_reports_a_helper_that_cannot_run_as_minus_errno(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Through fakecfs.helperns (here with a sysroot that is no fakecfs: it says so and runs
    the helper in the daemon's namespace): the execve failure still comes back as -errno."""
    ok = tmp_path / "ok"
    ok.write_text("#!/bin/sh\nexit 0\n")
    ok.chmod(0o755)
    with caplog.at_level(logging.INFO, logger="fakecfs.vfs"):
        assert await call_usermodehelper([str(tmp_path / "missing"), "-K", "-u", UUID],
                                         dict(HELPER_ENV), str(tmp_path)) == -errno.ENOENT
        assert await call_usermodehelper([str(ok), "-K", "-u", UUID], dict(HELPER_ENV),
                                         str(tmp_path)) == 0
    assert "cannot prepare the helper's namespace" in caplog.text
