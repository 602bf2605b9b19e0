"""Serving one emulated kernel on a FUSE mountpoint: mount, serve, stop cleanly, unmount.

Also the helpers the CLI needs around that: a dead mountpoint left by a killed daemon is
detected (ENOTCONN) and lazily unmounted so the path can be reused; a pid file per
mountpoint lets ``fakecfs umount`` ask the daemon to stop cleanly (its heartbeat regions
write their generation-0 block, so peers see a clean leave, not a death).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import signal
import subprocess
import tempfile

log = logging.getLogger("fakecfs.daemon")
MNT_DETACH = 2


def outer_uid() -> int:
    """Our uid as the initial user namespace sees it (root in a user namespace is a user)."""
    uid = os.getuid()
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            for line in f:
                inside, outside, count = (int(x) for x in line.split())
                if inside <= uid < inside + count:
                    return outside + uid - inside
    except (OSError, ValueError):
        pass
    return uid


def state_dir() -> str:
    """Where pid and log files live (per real user, also inside user namespaces)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = os.path.join(base, f"fakecfs-{outer_uid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _key(mountpoint: str) -> str:
    return hashlib.sha1(os.path.realpath(mountpoint).encode()).hexdigest()[:16]


def pid_file(mountpoint: str) -> str:
    return os.path.join(state_dir(), _key(mountpoint) + ".pid")


def log_file(mountpoint: str) -> str:
    return os.path.join(state_dir(), _key(mountpoint) + ".log")


def is_dead_mount(mountpoint: str) -> bool:
    """A FUSE mount whose daemon is gone answers ENOTCONN to every access."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def is_mounted(mountpoint: str) -> bool:
    real = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            return any(line.split()[4] == real for line in f)
    except OSError:
        return False


def unmount(mountpoint: str, *, lazy: bool = False) -> None:
    """umount2(2) where we may (root, or root in a user namespace), else fusermount3 -u."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(mountpoint), MNT_DETACH if lazy else 0) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EPERM, errno.EACCES):
        raise OSError(err, os.strerror(err), mountpoint)
    cmd = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [mountpoint]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OSError(errno.EPERM, proc.stderr.strip() or "fusermount3 -u failed", mountpoint)


def daemon_pid(mountpoint: str) -> int | None:
    """The pid of the daemon serving ``mountpoint``, if its pid file names a live process."""
    try:
        with open(pid_file(mountpoint), encoding="ascii") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def stop_daemon(pid: int, timeout: float = 30.0) -> bool:
    """SIGTERM the daemon and wait for it to exit; True if it did."""
    import time

    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def alive(pid: int) -> bool:
    """Is ``pid`` running? A zombie (exited, not yet reaped by its parent) is not."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat_line = f.read()
    except OSError:
        return False
    return stat_line[stat_line.rfind(")") + 2 : stat_line.rfind(")") + 3] not in ("Z", "X")
