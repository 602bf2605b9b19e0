"""The fakecfs daemon's life: background start, signals, dead mountpoints, concurrency,
and an ordinary user running a node inside a user namespace."""

from __future__ import annotations

import errno
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fakecfs import daemon
from tests.fakecfs_fixtures import (
    FAKECFS,
    fakecfs_mount,
    read_attr,
    require_fuse,
    wait_for,
    write_attr,
)
from tests.nodes import Region, configure, livenodes, mkfs, start_region


def test_sigterm_stops_heartbeat_cleanly_and_unmounts(tmp_path: Path) -> None:
    require_fuse()
    image = mkfs(tmp_path / "img")
    region = Region.of(image)
    with fakecfs_mount(tmp_path / "a", "--hb-interval-ms", "50") as a, \
         fakecfs_mount(tmp_path / "b", "--hb-interval-ms", "50") as b:
        ca, cb = configure(a, "demo", 2, 0, 20), configure(b, "demo", 2, 1, 20)
        threads = [threading.Thread(target=start_region, args=(c, region, image))
                   for c in (ca, cb)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(lambda: livenodes(a, region.uuid) == [0, 1], what="both live")
        pid = daemon.daemon_pid(str(b))
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        # A clean leave (generation 0) is noticed at the next read, long before the 20
        # intervals a death would take.
        start = time.monotonic()
        wait_for(lambda: livenodes(a, region.uuid) == [0], what="clean leave")
        assert time.monotonic() - start < 20 * 0.05
        wait_for(lambda: not daemon.is_mounted(str(b)), what="unmounted")
        # The daemon removes its pid file after the unmount returns: wait for it too.
        wait_for(lambda: daemon.daemon_pid(str(b)) is None, what="pid file removed")


def test_dead_mountpoint_is_reported_and_reused(tmp_path: Path) -> None:
    require_fuse()
    mnt = tmp_path / "m"
    with fakecfs_mount(mnt):
        pid = daemon.daemon_pid(str(mnt))
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: daemon.is_dead_mount(str(mnt)), what="dead mount")
        with pytest.raises(OSError) as exc:
            os.stat(mnt / "sys")
        assert exc.value.errno == errno.ENOTCONN
        proc = subprocess.run([FAKECFS, "mount", "--background", str(mnt)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "left dead by a killed fakecfs daemon" in proc.stderr
        assert read_attr(mnt / "sys/fs/o2cb/interface_revision") == "5\n"


def test_mount_refuses_a_missing_directory(tmp_path: Path) -> None:
    proc = subprocess.run([FAKECFS, "mount", "--background", str(tmp_path / "nope")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"fakecfs: {tmp_path / 'nope'}: not a directory"


def test_blocked_dev_write_does_not_block_others_and_rmdir_aborts_it(tmp_path: Path) -> None:
    """While a dev write waits for steady state, the daemon serves everything else; a
    racing rmdir of the region aborts the start, and the writer gets EIO as from the kernel."""
    require_fuse()
    image = mkfs(tmp_path / "img")
    region = Region.of(image)
    # A 1 s period: the start needs ~4 periods, so there is time to act while it waits.
    with fakecfs_mount(tmp_path / "m", "--hb-interval-ms", "1000") as root:
        cdir = configure(root, "demo", 1, 0)
        result: list[BaseException | None] = []

        def start() -> None:
            try:
                start_region(cdir, region, image)
                result.append(None)
            except OSError as exc:
                result.append(exc)

        t = threading.Thread(target=start)
        t.start()
        rdir = cdir / "heartbeat" / region.uuid
        wait_for(lambda: read_attr(rdir / "dev") if rdir.exists() else "", what="dev set")
        # Other requests are answered at once while the writer waits.
        begin = time.monotonic()
        assert read_attr(cdir / "heartbeat/dead_threshold") == "31\n"
        assert sorted(os.listdir(rdir)) == ["block_bytes", "blocks", "dev", "pid", "start_block"]
        assert time.monotonic() - begin < 0.5
        assert t.is_alive()
        rdir.rmdir()
        t.join(timeout=10)
        assert not t.is_alive()
        assert isinstance(result[0], OSError) and result[0].errno == errno.EIO


def _unprivileged_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("fakecfs-test")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh",
                        "fakecfs-test"], check=True, capture_output=True)
        return pwd.getpwnam("fakecfs-test")


NODE_SCRIPT = r"""
set -e
cd "$WORK"
"$BIN/fakecfs" mount --background --hb-interval-ms 50 "$WORK/mnt"
export HBCTL_SYSROOT="$WORK/mnt"
"$BIN/hbctl" cluster register --config "$WORK/cluster.conf" --node solo demo
"$BIN/hbctl" start -d "$WORK/shared.img"
cat "$WORK/mnt/sys/kernel/debug/o2hb/$UUID/livenodes"
"$BIN/hbctl" stop -d "$WORK/shared.img"
find "$WORK/mnt/sys/kernel/config/cluster/demo/heartbeat" -mindepth 1 -type d
"$BIN/fakecfs" umount "$WORK/mnt"
"""


def test_ordinary_user_runs_a_node_in_a_user_namespace(tmp_path: Path) -> None:
    """No root: an ordinary user, in a user namespace, mounts fakecfs and heartbeats on an
    image file (what CI runners without root get)."""
    if os.geteuid() != 0:
        pytest.skip("the test makes an unprivileged user; run as root")
    require_fuse()
    if oct(os.stat("/dev/fuse").st_mode & 0o666) != oct(0o666):
        pytest.skip("/dev/fuse is not 0666 (make setup does what udev would)")
    user = _unprivileged_user()
    work = Path("/tmp") / f"fakecfs-userns-{os.getpid()}"
    work.mkdir(mode=0o755)
    try:
        (work / "mnt").mkdir()
        image = mkfs(work / "shared.img")
        (work / "cluster.conf").write_text(
            "cluster:\n\tnode_count = 1\n\tname = demo\n\n"
            "node:\n\tip_port = 7777\n\tip_address = 127.0.0.1\n\tnumber = 0\n"
            "\tname = solo\n\tcluster = demo\n"
        )
        os.system(f"chown -R {user.pw_uid}:{user.pw_gid} {work}")
        venv_bin = Path(FAKECFS).parent
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "WORK": str(work), "BIN": str(venv_bin),
               "UUID": Region.of(image).uuid, "HOME": str(work)}
        proc = subprocess.run(
            ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
             "unshare", "--user", "--map-root-user", "--mount", "--ipc",
             "sh", "-c", NODE_SCRIPT],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert "heartbeat running on" in lines[1]
        assert lines[2] == "0 "  # this node sees itself live in its region
        assert "heartbeat stopped" in lines[3]
        assert lines[4:] == []  # no region left after the stop
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


WRITER = """
import os, sys
fd = os.open(sys.argv[2], os.O_RDWR)
dev = os.open(sys.argv[1], os.O_WRONLY)
print("writing", flush=True)
os.write(dev, str(fd).encode())
"""


def test_writer_killed_while_blocked_aborts_the_start(tmp_path: Path) -> None:
    """SIGKILL of the process blocked in the dev write aborts the start, as the kernel's
    interrupted wait does: the region is not started and its attributes are writable again."""
    require_fuse()
    image = mkfs(tmp_path / "img")
    region = Region.of(image)
    with fakecfs_mount(tmp_path / "m", "--hb-interval-ms", "1000") as root:
        cdir = configure(root, "demo", 1, 0)
        rdir = cdir / "heartbeat" / region.uuid
        rdir.mkdir()
        write_attr(rdir / "block_bytes", "512")
        write_attr(rdir / "start_block", str(region.start_block))
        write_attr(rdir / "blocks", "255")
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(rdir / "dev"), str(image)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        wait_for(lambda: read_attr(rdir / "dev"), what="start under way")
        proc.kill()
        proc.wait()
        wait_for(lambda: read_attr(rdir / "dev") == "", what="start aborted")
        assert read_attr(rdir / "pid") == ""
        write_attr(rdir / "blocks", "255")  # writable again: the region is not started
        rdir.rmdir()
