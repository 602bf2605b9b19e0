"""ocfs2_dlmfs on real fakecfs mounts: two emulated nodes (two daemons) sharing one --dlm-dir.

What a cluster tool relies on: EX on one node keeps the other node out (trylock: ETXTBSY;
a blocking open waits, and the waiting node's daemon keeps serving), the LVB written under
EX is what the next holder reads, a node whose daemon dies gives its locks back (and the
LVB it may have changed reads as invalid), and a waiter killed by a signal leaks nothing.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from fakecfs import daemon
from tests.fakecfs_fixtures import fakecfs_mount, read_attr, require_fuse, wait_for
from tests.nodes import Region, configure, mkfs, start_regions

INTERVAL_MS = 100
OPENAT = 257 if os.uname().machine == "x86_64" else 56  # arm64/generic: 56
LOCK = "M000000000000000000000000000000"  # shaped like libocfs2's super lock name

# A waiter in its own process: opens LOCK with the flags given, says so, then holds it until
# stdin closes. Blocks in open() while another node holds the lock.
WAITER = r"""
import os, sys
path, flags = sys.argv[1], int(sys.argv[2])
fd = os.open(path, flags | os.O_CREAT, 0o600)
print("granted", os.read(fd, 64).hex() if flags == os.O_RDONLY else "", flush=True)
sys.stdin.read()
"""


def open_errno(path: Path, flags: int) -> int:
    try:
        fd = os.open(path, flags | os.O_CREAT, 0o600)
    except OSError as exc:
        return exc.errno or 0
    os.close(fd)
    return 0


def waiter(path: Path, flags: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WAITER, str(path), str(flags)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def blocked_in_open(proc: subprocess.Popen[str]) -> bool:
    """The waiter sits in openat(2) waiting for the FUSE daemon's answer."""
    try:
        with open(f"/proc/{proc.pid}/wchan", encoding="ascii") as f:
            wchan = f.read()
        with open(f"/proc/{proc.pid}/syscall", encoding="ascii") as f:
            syscall = f.read().split()
    except OSError:
        return False
    # 257: openat on x86-64 (the syscall number is what an open shows in any case).
    waiting = "fuse" in wchan or wchan == "request_wait_answer"
    return proc.poll() is None and waiting and syscall[:1] == [str(OPENAT)]


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """Two heartbeating nodes on one image, each with its domain directory made."""
    require_fuse()
    image = mkfs(tmp_path / "shared.img")
    region = Region.of(image)
    dlm_dir = tmp_path / "dlm"
    with ExitStack() as stack:
        roots = [stack.enter_context(fakecfs_mount(
            tmp_path / f"node{n}", "--hb-interval-ms", str(INTERVAL_MS),
            "--dlm-dir", str(dlm_dir))) for n in range(2)]
        cdirs = [configure(root, "demo", 2, n) for n, root in enumerate(roots)]
        # Before heartbeat the stack refuses the domain (o2cb_cluster_connect: EINVAL).
        with pytest.raises(OSError) as exc:
            (roots[0] / "dlm" / region.uuid).mkdir()
        assert exc.value.errno == errno.EINVAL
        start_regions([(cdir, region, image) for cdir in cdirs])
        domains = []
        for root in roots:
            (root / "dlm" / region.uuid).mkdir()
            domains.append(root / "dlm" / region.uuid)
        yield domains[0], domains[1], str(roots[0])


def test_ex_excludes_the_other_node_and_passes_the_lvb(
        two_nodes: tuple[Path, Path, str]) -> None:
    d0, d1, _ = two_nodes
    fd = os.open(d0 / LOCK, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o600)
    try:
        assert os.stat(d0 / LOCK).st_size == 64
        assert os.write(fd, b"generation-7") == 12
        assert open_errno(d1 / LOCK, os.O_RDWR | os.O_NONBLOCK) == errno.ETXTBSY
        assert open_errno(d1 / LOCK, os.O_RDONLY | os.O_NONBLOCK) == errno.ETXTBSY
        # A second EX on the holding node is granted: the kernel has no local exclusion.
        assert open_errno(d0 / LOCK, os.O_RDWR | os.O_NONBLOCK) == 0
        with pytest.raises(OSError) as exc:  # the node keeps its lock: unlink is refused
            os.unlink(d0 / LOCK)
        assert exc.value.errno == errno.EBUSY
        proc = waiter(d1 / LOCK, os.O_RDONLY)
        try:
            wait_for(lambda: blocked_in_open(proc), what="node1's PR open to block")
            # The waiting node's daemon keeps answering while its open waits.
            assert read_attr(d1.parent.parent / "sys/fs/o2cb/interface_revision") == "5\n"
            assert proc.poll() is None
        finally:
            os.close(fd)
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[0] == "granted"
        assert bytes.fromhex(line[1]) == b"generation-7" + bytes(52)
        # PR is shared: node0 may read too, but not write.
        assert open_errno(d0 / LOCK, os.O_RDONLY | os.O_NONBLOCK) == 0
        assert open_errno(d0 / LOCK, os.O_RDWR | os.O_NONBLOCK) == errno.ETXTBSY
        proc.communicate("")
    finally:
        if proc.poll() is None:
            proc.kill()
    # FUSE sends RELEASE after close(2) returns: the other node's grant goes back a moment
    # later, so a trylock right after the close may still see it held.
    wait_for(lambda: open_errno(d0 / LOCK, os.O_RDWR | os.O_NONBLOCK) == 0,
             what="node1's PR to be given back")
    for lock in (d0 / LOCK, d1 / LOCK):
        wait_for(functools.partial(_unlinked, lock), what="the last release to reach the daemon")


def test_a_killed_node_releases_its_locks(two_nodes: tuple[Path, Path, str]) -> None:
    d0, d1, root0 = two_nodes
    fd = os.open(d0 / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    proc = waiter(d1 / LOCK, os.O_RDONLY)
    try:
        wait_for(lambda: blocked_in_open(proc), what="node1's open to block")
        pid = daemon.daemon_pid(root0)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # node0 dies holding EX
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        # Granted; node0 may have changed the LVB before dying: the DLM marks it invalid.
        assert line == ["granted"], line
        proc.communicate("")
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(OSError):  # node0's mount is dead
            os.close(fd)


def test_a_signalled_waiter_leaks_no_lock(two_nodes: tuple[Path, Path, str]) -> None:
    d0, d1, _ = two_nodes
    fd = os.open(d0 / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    proc = waiter(d1 / LOCK, os.O_RDWR)
    try:
        wait_for(lambda: blocked_in_open(proc), what="node1's EX open to block")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(fd)
    # Had node1 been granted EX for the dead waiter, node0 could not take it back.
    assert open_errno(d0 / LOCK, os.O_RDWR | os.O_NONBLOCK) == 0
    wait_for(lambda: open_errno(d1 / LOCK, os.O_RDWR | os.O_NONBLOCK) == 0,
             what="node0's EX to be given back (RELEASE follows close)")


def test_errnos_on_the_mount(two_nodes: tuple[Path, Path, str]) -> None:
    d0, _, _ = two_nodes
    assert open_errno(d0 / ("L" * 32), os.O_RDONLY) == errno.EINVAL
    assert open_errno(d0 / "$x", os.O_RDONLY) == errno.EINVAL
    assert open_errno(d0.parent / "lock-in-root", os.O_RDONLY) == errno.EACCES
    with pytest.raises(OSError) as exc:
        (d0 / "sub").mkdir()
    assert exc.value.errno == errno.EPERM
    with pytest.raises(OSError) as exc:
        (d0.parent / ("D" * 64)).mkdir()
    assert exc.value.errno == errno.EINVAL
    assert open_errno(d0 / "L1", os.O_RDONLY) == 0
    with pytest.raises(OSError) as exc:
        d0.rmdir()
    assert exc.value.errno == errno.ENOTEMPTY
    fd = os.open(d0 / "L1", os.O_RDWR)
    try:
        os.lseek(fd, 64, os.SEEK_SET)
        with pytest.raises(OSError) as exc:
            os.write(fd, b"x")
        assert exc.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    wait_for(lambda: _unlinked(d0 / "L1"), what="the lock's release to reach the daemon")
    d0.rmdir()
    assert not d0.exists()


def test_a_waiting_upconvert_does_not_hold_up_opens_the_grant_covers(
        two_nodes: tuple[Path, Path, str]) -> None:
    d0, d1, _ = two_nodes
    pr0 = os.open(d0 / LOCK, os.O_RDONLY | os.O_CREAT, 0o600)
    pr1 = os.open(d1 / LOCK, os.O_RDONLY | os.O_CREAT, 0o600)
    proc = waiter(d0 / LOCK, os.O_RDWR)  # node0 PR -> EX waits for node1's PR
    try:
        wait_for(lambda: blocked_in_open(proc), what="node0's upconvert to block")
        # Another PR open on node0 is covered by its PR grant: granted at once.
        assert open_errno(d0 / LOCK, os.O_RDONLY | os.O_NONBLOCK) == 0
        os.close(pr1)
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["granted"]
        assert open_errno(d1 / LOCK, os.O_RDONLY | os.O_NONBLOCK) == errno.ETXTBSY
        proc.communicate("")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(pr0)


def _unlinked(path: Path) -> bool:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno == errno.EBUSY:  # the RELEASE of the last close is still on its way
            return False
        raise
    return True
