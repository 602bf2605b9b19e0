"""The ocfs2_controld daemon on its real socket, with the single-node membership.

Each test runs its own daemon in a private network namespace (the socket is abstract)
and talks to it with the codec, as libo2cb would: 256-byte records on one connection per
operation, MOUNT and MRESULT on the same one.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hbctl.controld import proto
from tests.userstack.daemon import BIN, RunningDaemon, control_file, controld, fake_sysroot
from tests.userstack.netns import NetNs, network_namespace

U = "1431E6308F3E4C30B5A4906741DD1C4D"
U2 = "D7B7157609244D26B8BBA703A1E7B2CA"


@pytest.fixture
def ns() -> Iterator[NetNs]:
    with network_namespace() as n:
        yield n


@pytest.fixture
def image(tmp_path: Path) -> str:
    p = tmp_path / "us.img"
    p.write_bytes(b"\0" * 4096)
    return str(p)


@contextmanager
def start_daemon(ns: NetNs, tmp: Path, *extra: str) -> Iterator[RunningDaemon]:
    sysroot = fake_sysroot(tmp / "sysroot")
    control_file(tmp / "ocfs2_control")
    with controld(ns, tmp, "--membership", "local", "--cluster-name", "uc",
                  "--sysroot", str(sysroot), "--control-device", str(tmp / "ocfs2_control"),
                  *extra) as d:
        yield d


@pytest.fixture
def daemon(ns: NetNs, tmp_path: Path) -> Iterator[RunningDaemon]:
    with start_daemon(ns, tmp_path) as d:
        yield d


def join(d: RunningDaemon, service: str, device: str, uuid: str = U) -> None:
    c = d.connect()
    assert c.call(proto.mount(uuid, "uc", device, service)) in ((0, "OK"),
                                                                 (114, "Already mounted, go ahead"))
    assert c.call(proto.mresult(uuid, 0, service)) == (0, "OK")
    c.close()


def test_services_join_and_leave_over_the_socket(daemon: RunningDaemon, image: str,
                                                 tmp_path: Path) -> None:
    join(daemon, "svc", image)
    # The first join opened the kernel's control device and did the T01 handshake.
    assert (tmp_path / "ocfs2_control").read_bytes() == (
        b"T01\nT01\nSETN 00000001\nSETV 01 00\n")
    c = daemon.connect()
    assert c.call(proto.mount(U, "uc", image, "svc")) == (
        errno.EBUSY, f"Filesystem {U} is already mounted on svc")
    join(daemon, "svc2", image)
    assert daemon.connect().listing(proto.listfs("uc")) == [U]
    assert daemon.connect().listing(proto.listclusters()) == ["uc"]
    assert daemon.connect().call(proto.unmount(U, "svc")) == (0, "OK")
    assert daemon.connect().call(proto.unmount(U, "svc2")) == (0, "OK")
    assert daemon.connect().listing(proto.listfs("uc")) == []
    assert daemon.connect().call(proto.unmount(U, "svc")) == (
        errno.ENOENT, f"Filesystem {U} is unknown or not mounted anywhere")
    dump = "".join(daemon.connect().listing(proto.dump()))
    assert f'remove_mount: uuid "{U}", service "svc2"' in dump
    # The handshake happens once per daemon, not per join.
    join(daemon, "again", image)
    assert (tmp_path / "ocfs2_control").read_bytes().count(b"SETN") == 1


def test_bad_clients_are_dropped_and_others_unaffected(ns: NetNs, tmp_path: Path,
                                                       image: str) -> None:
    with start_daemon(ns, tmp_path, "--join-delay-ms", "300") as d:
        # A first mount waits for its (delayed) join while bad clients come and go.
        waiting = d.connect()
        waiting.send(proto.mount(U, "uc", image, "svc"))
        garbage = d.connect()
        garbage.send(b"HELLO".ljust(256, b"\0"))
        assert garbage.closed_by_daemon()
        never_answered = d.connect()
        never_answered.send(proto.encode("LISTMOUNTS", "ocfs2", "uc"))
        assert never_answered.closed_by_daemon()
        cut = d.connect()
        cut.send(proto.dump()[:100])
        cut.sock.shutdown(2)  # EOF mid-record
        cut.close()
        oversize = d.connect()
        oversize.send(proto.dump() + b"x" * 44)  # a whole record, then 44 stray bytes
        assert oversize.recv().verb == "ITEMCOUNT"
        oversize.close()
        stranger = d.connect()
        assert stranger.call(proto.mresult(U, 0, "svc")) == (
            errno.EINVAL, "Client is not attached to a mountgroup")
        busy = d.connect()
        assert busy.call(proto.mount(U, "uc", image, "other")) == (
            errno.EBUSY, "Another mount is in progress")
        # The deferred reply still arrives, and the daemon lives on.
        assert waiting.status() == (0, "OK")
        assert waiting.call(proto.mresult(U, 0, "svc")) == (0, "OK")
        assert d.connect().listing(proto.listfs("uc")) == [U]
        assert d.alive()
        assert "read error 74" in d.stderr()


def test_mounter_vanishing_mid_join_leaves_nothing(ns: NetNs, tmp_path: Path,
                                                   image: str) -> None:
    with start_daemon(ns, tmp_path, "--join-delay-ms", "200") as d:
        c = d.connect()
        c.send(proto.mount(U, "uc", image, "svc"))
        c.close()
        deadline = time.monotonic() + 30
        while d.connect().listing(proto.listfs("uc")):
            assert time.monotonic() < deadline, d.stderr()
            time.sleep(0.05)
        join(d, "svc", image)  # the group is free again


def test_signals_are_ignored_while_mounts_exist(daemon: RunningDaemon, image: str) -> None:
    join(daemon, "svc", image)
    daemon.proc.send_signal(signal.SIGTERM)
    c = daemon.connect()  # still serving
    assert c.call(proto.unmount(U, "svc")) == (0, "OK")
    deadline = time.monotonic() + 10
    while "but mounts exist" not in daemon.stderr():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=30) == 0


def test_missing_control_device_fails_the_join_not_the_daemon(ns: NetNs, tmp_path: Path,
                                                              image: str) -> None:
    sysroot = fake_sysroot(tmp_path / "sysroot")
    with controld(ns, tmp_path, "--membership", "local", "--sysroot", str(sysroot)) as d:
        c = d.connect()
        assert c.call(proto.mount(U, "anyname", image, "svc")) == (
            errno.ENODEV, f"Unable to start join to group {U}")
        assert d.connect().listing(proto.listfs("anyname")) == []
        assert "Unable to access cluster service while opening" in d.stderr()


def test_refuses_another_stack(tmp_path: Path) -> None:
    sysroot = fake_sysroot(tmp_path / "sysroot", "cman")
    r = subprocess.run([str(BIN / "ocfs2_controld.pcmk"), "-D", "--sysroot", str(sysroot)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr == ('ocfs2_controld.pcmk: This daemon supports the "pcmk" stack, '
                        'but the "cman" stack is in use\n')
    r = subprocess.run([str(BIN / "ocfs2_controld.cman"), "-Q"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.endswith("Please use '-h' for usage.\n")


def test_without_D_it_forks_and_returns_once_listening(ns: NetNs, tmp_path: Path,
                                                       image: str) -> None:
    sysroot = fake_sysroot(tmp_path / "sysroot", "cman")
    pid_file = tmp_path / "controld.pid"
    r = subprocess.run(ns.cmd(str(BIN / "ocfs2_controld.cman"), "--membership", "local",
                              "--sysroot", str(sysroot), "--control-device", "none",
                              "--pid-file", str(pid_file)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pid = int(pid_file.read_text())
    try:
        # Listening already: no retry needed.
        c = NetNs.socket(ns)
        c.connect(proto.SOCKET_ADDRESS)
        c.close()
        # A second daemon in the same namespace is refused by the lock.
        r2 = subprocess.run(ns.cmd(str(BIN / "ocfs2_controld.cman"), "--membership", "local",
                                   "--sysroot", str(sysroot), "--pid-file", str(pid_file)),
                            capture_output=True, text=True, timeout=60)
        assert r2.returncode == 1
        assert "another ocfs2_controld runs" in r2.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
