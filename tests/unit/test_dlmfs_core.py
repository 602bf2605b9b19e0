"""The dlmfs core: names and errnos, per-node grant caching and the LVB (no I/O)."""

from __future__ import annotations

import errno
import os

import pytest

from fakecfs.dlmfs import (
    LVB_LEN,
    Acquire,
    DlmfsRoot,
    Level,
    LockRes,
    Release,
    compatible,
    open_request,
)
from fakecfs.tree import KernelError


def kerr(fn: object, *args: object) -> int:
    with pytest.raises(KernelError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.errno


def test_only_pr_with_pr_is_compatible() -> None:
    assert compatible(Level.PR, Level.PR)
    assert not compatible(Level.PR, Level.EX)
    assert not compatible(Level.EX, Level.EX)
    assert compatible(Level.NL, Level.EX)


@pytest.mark.parametrize("flags, expected", [
    (os.O_RDONLY, (Level.PR, False)),
    (os.O_WRONLY, (Level.EX, False)),
    (os.O_RDWR, (Level.EX, False)),
    (os.O_RDONLY | os.O_NONBLOCK, (Level.PR, True)),
    (os.O_RDWR | os.O_NONBLOCK | os.O_CREAT, (Level.EX, True)),
])
def test_open_flags_choose_the_level(flags: int, expected: tuple[Level, bool]) -> None:
    assert open_request(flags) == expected


def test_domain_and_lock_names_the_kernel_refuses() -> None:
    joined = [False]
    root = DlmfsRoot("dlm", lambda: joined[0])
    assert kerr(root.mkdir, "D" * 32) == errno.EINVAL  # not heartbeating: no connection
    joined[0] = True
    assert kerr(root.mkdir, "D" * 64) == errno.EINVAL  # GROUP_NAME_MAX
    domain = root.mkdir("D" * 63)
    assert kerr(root.mkdir, "D" * 63) == errno.EEXIST
    assert kerr(domain.mkdir, "sub") == errno.EPERM  # no ->mkdir below the root
    assert kerr(domain.create, "L" * 32, 0o600) == errno.EINVAL  # USER_DLM_LOCK_ID_MAX_LEN
    assert kerr(domain.create, "$reserved", 0o600) == errno.EINVAL
    lock = domain.create("L" * 31, 0o640)
    assert lock.size() == LVB_LEN and lock.mode & 0o777 == 0o640
    assert kerr(domain.create, "L" * 31, 0o600) == errno.EEXIST
    assert kerr(root.rmdir, domain.name) == errno.ENOTEMPTY
    domain.unlink(lock.name)
    assert lock.dead and kerr(domain.unlink, lock.name) == errno.ENOENT
    assert root.rmdir(domain.name) is None and domain.dead
    assert kerr(root.rmdir, domain.name) == errno.ENOENT


def test_unlink_of_a_held_lock_is_ebusy() -> None:
    root = DlmfsRoot("dlm", lambda: True)
    domain = root.mkdir("dom")
    lock = domain.create("M0", 0o600)
    lock.res.granted(Level.PR, bytes(LVB_LEN))
    lock.res.hold(Level.PR)
    assert kerr(domain.unlink, "M0") == errno.EBUSY
    lock.res.drop(Level.PR)
    domain.unlink("M0")


def test_a_node_asks_the_cluster_only_for_more_than_it_holds() -> None:
    res = LockRes("M0")
    assert res.request(Level.PR, False) == Acquire(Level.PR, False)
    res.granted(Level.PR, b"x" * LVB_LEN)
    res.hold(Level.PR)
    assert res.request(Level.PR, True) is None  # a second PR shares the node's grant
    res.hold(Level.PR)
    assert res.request(Level.EX, True) == Acquire(Level.EX, True)  # upconvert
    res.granted(Level.EX, b"x" * LVB_LEN)
    res.hold(Level.EX)
    assert res.request(Level.EX, False) is None  # the kernel: no exclusion on one node
    res.hold(Level.EX)
    assert res.drop(Level.EX) is None  # one EX holder left
    release = res.drop(Level.EX)
    assert release == Release(Level.PR, b"x" * LVB_LEN)  # down to PR, LVB published
    assert res.drop(Level.PR) is None
    assert res.drop(Level.PR) == Release(Level.NL, None)  # PR gives no LVB back
    assert res.level == Level.NL and not res.held


def test_lvb_reads_writes_and_invalidity() -> None:
    res = LockRes("M0")
    res.granted(Level.EX, None)  # a dead EX holder left it invalid
    assert res.read_lvb(0, 64) == b""
    assert res.write_lvb(0, b"abc") == 3
    assert res.read_lvb(0, 64) == b"abc" + bytes(61)
    assert res.read_lvb(1, 2) == b"bc"
    assert res.read_lvb(64, 10) == b""
    # The kernel copies to the start of the LVB whatever the offset, clipped at 64 bytes.
    assert res.write_lvb(60, b"WXYZ1234") == 4
    assert res.read_lvb(0, 4) == b"WXYZ"
    with pytest.raises(KernelError) as info:
        res.write_lvb(64, b"x")
    assert info.value.errno == errno.ENOSPC
    assert res.write_lvb(0, b"z" * 100) == LVB_LEN
