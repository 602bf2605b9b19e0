"""A private Docker engine for the container lane: installed if missing, started by hand.

No daemon runs on CI machines and there is no registry: docker.io comes from Debian, dockerd
is started with its own exec root, pid file and socket (no iptables, no bridge: containers get
``--network none``), and stopped again with every mount it leaves behind (the
``EXEC_ROOT/netns/default`` nsfs mount, overlay mounts of a killed run). Its data root is a
cache kept under /var/cache/fakecfs-ci, so a second run reuses the base image and the build's
apt layers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("FAKECFS_CI_CACHE", "/var/cache/fakecfs-ci"))
MNT_DETACH = 2


class Skip(Exception):
    """No Docker engine can be had here; the message says why (the lane is skipped)."""


@dataclass(frozen=True)
class Engine:
    docker: str  # the client binary
    env: dict[str, str]  # os.environ plus DOCKER_HOST
    log: Path

    def run(self, *args: str, check: bool = True, timeout: float = 600,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.docker, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=input, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: exit {proc.returncode}\n"
                               f"{proc.stdout}{proc.stderr}")
        return proc


def install_docker() -> None:
    """apt-get docker.io (and debootstrap, for the base image) when they are missing."""
    missing = [p for p, b in (("docker.io", "dockerd"), ("debootstrap", "debootstrap"))
               if shutil.which(b) is None and not os.path.exists(f"/usr/sbin/{b}")]
    if not missing:
        return
    if os.geteuid() != 0:
        raise Skip(f"{' and '.join(missing)} missing and not root to install them")
    if shutil.which("apt-get") is None:
        raise Skip(f"{' and '.join(missing)} missing and no apt-get to install them")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # maybe stale package lists: update once and retry
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise Skip(f"cannot install {' '.join(missing)}: {proc.stderr.strip()[-400:]}")


def _mounts_under(*roots: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if any(point == r or point.startswith(r + "/") for r in roots):
                out.append(point)
    return out


def unmount_all_under(*roots: str) -> None:
    """Lazily unmount every mount at or below ``roots``, deepest first."""
    libc = ctypes.CDLL(None, use_errno=True)
    for point in sorted(set(_mounts_under(*roots)), key=len, reverse=True):
        libc.umount2(point.encode(), MNT_DETACH)


def _stop_pid(pid: int, timeout: float) -> None:
    """Stop a process that is not our child (a child would linger as a zombie: use wait)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _stop_stale_daemon(pidfile: Path) -> None:
    """A dockerd left by a killed earlier lane still owns our data root: stop it."""
    try:
        pid = int(pidfile.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return
    if comm == "dockerd":
        _stop_pid(pid, 20)


@contextlib.contextmanager
def engine() -> Iterator[Engine]:
    """Start a private dockerd; stop it and unmount what it left on exit."""
    if os.geteuid() != 0:
        raise Skip("the Docker lane needs root (to install docker.io and start dockerd)")
    install_docker()
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    client = shutil.which("docker")
    if client is None:
        raise Skip("docker.io is installed but no docker client is on PATH")
    CACHE.mkdir(parents=True, exist_ok=True)
    data_root = CACHE / "docker"
    owner = CACHE / "dockerd.pid"
    _stop_stale_daemon(owner)
    unmount_all_under(str(data_root))
    # Exec roots of killed earlier lanes (the caller holds the lane lock: none is in use).
    for stale in Path("/run").glob("fakecfs-ci-*"):
        unmount_all_under(str(stale))
        shutil.rmtree(stale, ignore_errors=True)
    # Short paths: containerd puts unix sockets under the exec root (108-byte limit).
    exec_root = Path(tempfile.mkdtemp(prefix="fakecfs-ci-", dir="/run"))
    sock = exec_root / "docker.sock"
    log = CACHE / "dockerd.log"  # kept: the last run's engine log, for a failed lane
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
    env.pop("DOCKER_CONTEXT", None)
    with open(log, "wb") as logf:
        daemon = subprocess.Popen(
            [dockerd, "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--storage-driver=overlay2", "--data-root", str(data_root),
             "--exec-root", str(exec_root / "exec"), "--pidfile", str(exec_root / "pid"),
             "-H", f"unix://{sock}"],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    owner.write_text(f"{daemon.pid}\n")
    eng = Engine(client, env, log)
    try:
        deadline = time.monotonic() + 60
        while eng.run("version", check=False, timeout=30).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-800:]
                raise Skip(f"dockerd did not start (exit {daemon.poll()}):\n{tail}")
            time.sleep(0.2)
        yield eng
    finally:
        daemon.terminate()  # dockerd stops its containerd and exits within a second
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        with contextlib.suppress(OSError):
            owner.unlink()
        unmount_all_under(str(exec_root), str(data_root))
        shutil.rmtree(exec_root, ignore_errors=True)
