"""Attribute throughput over FUSE: fakecfs against attrfs, a minimal C libfuse server.

Both daemons serve the same shape (``sys/kernel/config/cluster/c1/idle_timeout_ms``, a
4096-byte-size attribute holding ``30000\\n``), are mounted with the same options
(``default_permissions``, as fakecfs mounts), answer with entry/attr timeouts 0 and open
with direct_io, so the kernel sends both the same requests. The client is the same C
program (``hammer``) for both, so the only difference measured is the daemon.

Rounds alternate the order (C first, then ours; ours first, then C) so drift in the
machine's speed hits both sides alike. Pinned means both daemons (every thread) and the
client are bound to one CPU, as ``taskset -c`` would; unpinned means free to use all.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build import build
from .results import Comparison

FAKECFS = str(Path(sys.executable).parent / "fakecfs")
ATTR_DIR = "sys/kernel/config/cluster/c1"
ATTR = "idle_timeout_ms"
# fakecfs's options; allow_other only as root, as fakecfs does (else fuse.conf must allow it)
MOUNT_OPTIONS = "default_permissions,fsname=attrfs,subtype=attrfs" + (
    ",allow_other" if os.geteuid() == 0 else "")
THROUGHPUT_TARGET = 0.5  # fakecfs >= half the C server's throughput


@dataclass(frozen=True)
class Workload:
    name: str
    mode: str  # hammer's: "stat" or "read" (open + read + close)
    from_dir: bool  # run in the attribute's directory and name it relatively


WORKLOADS = (
    Workload("stat, full path", "stat", False),
    Workload("open+read+close, full path", "read", False),
    Workload("stat, in its directory", "stat", True),
    Workload("open+read+close, in its directory", "read", True),
)


@dataclass
class Server:
    """One mounted daemon: what the client runs against."""

    label: str
    mountpoint: Path
    pid: int

    def pin(self, cpus: set[int]) -> None:
        """Bind every thread of the daemon to ``cpus`` (``taskset -a -p``)."""
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            with suppress(ProcessLookupError):
                os.sched_setaffinity(int(tid), cpus)


def is_mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4] == real for line in f)


def lazy_unmount(path: Path) -> None:
    if is_mounted(path):
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextmanager
def fakecfs_server(mountpoint: Path, *extra: str) -> Iterator[Server]:
    """``fakecfs mount --background`` with cluster c1 made; unmounted on exit."""
    from fakecfs import daemon

    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run([FAKECFS, "mount", "--background", *extra, str(mountpoint)],
                   check=True, capture_output=True, text=True)
    try:
        pid = daemon.daemon_pid(str(mountpoint))
        if pid is None:
            raise RuntimeError(f"fakecfs at {mountpoint} left no pid file")
        (mountpoint / ATTR_DIR).mkdir(exist_ok=True)
        yield Server("fakecfs", mountpoint, pid)
    finally:
        subprocess.run([FAKECFS, "umount", str(mountpoint)], check=False, capture_output=True)
        lazy_unmount(mountpoint)


@dataclass
class AttrfsServer(Server):
    """attrfs in the foreground, single-threaded; counts the requests it answered."""

    log: Path

    def requests(self) -> int:
        """Requests answered so far (SIGUSR1 makes attrfs print the count)."""
        before = self.log.read_text().count("requests:")
        os.kill(self.pid, signal.SIGUSR1)
        _wait(lambda: self.log.read_text().count("requests:") > before, "attrfs's count")
        return int(re.findall(r"requests: (\d+)", self.log.read_text())[-1])


@contextmanager
def python_server(mountpoint: Path, label: str, module: str, *options: str) -> Iterator[Server]:
    """``python -m MODULE OPTIONS MOUNTPOINT``: one of the Python floors."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", module, *options, str(mountpoint)],
                            cwd=Path(__file__).resolve().parents[1], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: is_mounted(mountpoint) or proc.poll() is not None, f"{module} to mount")
        if proc.poll() is not None:
            raise RuntimeError(f"{module} failed: {proc.communicate()[1].strip()}")
        yield Server(label, mountpoint, proc.pid)
    finally:
        _stop(proc, mountpoint)


def _stop(proc: subprocess.Popen[Any], mountpoint: Path) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    lazy_unmount(mountpoint)


@contextmanager
def attrfs_server(mountpoint: Path, log: Path) -> Iterator[AttrfsServer]:
    binary = build("attrfs", fuse=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        proc = subprocess.Popen([str(binary), "-f", "-s", "-o", MOUNT_OPTIONS, str(mountpoint)],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        _wait(lambda: is_mounted(mountpoint) or proc.poll() is not None, "attrfs to mount")
        if proc.poll() is not None:
            raise RuntimeError(f"attrfs failed: {log.read_text().strip()}")
        yield AttrfsServer("C attrfs", mountpoint, proc.pid, log)
    finally:
        _stop(proc, mountpoint)


def run_hammer(server: Server, w: Workload, n: int, cpus: set[int] | None) -> float:
    """``n`` operations of ``w`` against ``server``; operations per second."""
    hammer = build("hammer")
    directory = server.mountpoint / ATTR_DIR
    path = ATTR if w.from_dir else str(directory / ATTR)
    preexec = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    res = subprocess.run([str(hammer), w.mode, path, str(n)], cwd=directory,
                         capture_output=True, text=True, preexec_fn=preexec)
    if res.returncode != 0:
        raise RuntimeError(f"hammer on {server.label}: {res.stderr.strip()}")
    return n / (int(res.stdout) / 1e9)


def requests_per_op(c_server: AttrfsServer, n: int) -> dict[str, float]:
    """FUSE requests one operation costs (counted by attrfs; fakecfs gets the same ones)."""
    out = {}
    for w in WORKLOADS:
        before = c_server.requests()
        run_hammer(c_server, w, n, None)
        out[w.name] = (c_server.requests() - before) / n
    return out


def compare(
    servers: list[Server], ref: Server, cpus: set[int] | None, n: int, rounds: int,
    group: str, per_op: dict[str, float],
) -> list[Comparison]:
    """Every workload on every server and the reference, ``rounds`` times.

    Each round runs the reference and the servers back to back, in an order that rotates
    from round to round, so slow phases of a shared machine fall on all of them alike.
    """
    all_cpus = os.sched_getaffinity(0)
    for s in (ref, *servers):
        s.pin(cpus or all_cpus)
    comps = {(s.label, w.name): Comparison(
        group, f"{w.name}: {s.label}", "ops/s",
        target=THROUGHPUT_TARGET if s.label == "fakecfs" else None) for s in servers
        for w in WORKLOADS}
    refs: dict[str, list[float]] = {w.name: [] for w in WORKLOADS}
    everyone = [ref, *servers]
    for w in WORKLOADS:  # warm up: page in the daemons' code paths and the client
        for s in everyone:
            run_hammer(s, w, max(20, n // 10), cpus)
    for r in range(rounds):
        order = everyone[r % len(everyone):] + everyone[:r % len(everyone)]
        for w in WORKLOADS:
            for s in order:
                value = run_hammer(s, w, n, cpus)
                (refs[w.name] if s is ref else comps[s.label, w.name].ours).append(value)
    for (_label, wname), c in comps.items():
        c.ref = refs[wname]
        reqs = per_op.get(wname)
        if reqs:
            c.note = (f"{reqs:.1f} requests/op; {1e6 / c.ours_median / reqs:.1f} us/request "
                      f"vs {1e6 / c.ref_median / reqs:.1f} in C")
    # Rows grouped by workload: fakecfs, then the floors under it.
    return [comps[s.label, w.name] for w in WORKLOADS for s in servers]


# (label, module, options): the same tree served by less and less Python machinery.
FLOORS = (
    ("pyfuse3 floor", "bench.pyattrfs", ()),
    ("raw /dev/fuse py", "bench.rawfuse", ()),
)
FLOOR_VARIANTS = (
    ("pyfuse3, 1 task", "bench.pyattrfs", ("--min-tasks", "1", "--max-tasks", "1")),
    ("pyfuse3, asyncio", "bench.pyattrfs", ("--asyncio", "--min-tasks", "1", "--max-tasks", "1")),
)


def measure(workdir: Path, n: int, rounds: int, cpu: int,
            floors: tuple[tuple[str, str, tuple[str, ...]], ...] = FLOORS,
            unpinned: bool = True) -> list[Comparison]:
    """Pinned to ``cpu`` (and unpinned unless told not to), every workload: fakecfs and
    the Python floors ((label, module, options) each) against attrfs."""
    with ExitStack() as stack:
        ref = stack.enter_context(attrfs_server(workdir / "attrfs", workdir / "attrfs.log"))
        servers: list[Server] = [stack.enter_context(fakecfs_server(workdir / "fakecfs"))]
        for i, (label, module, options) in enumerate(floors):
            servers.append(stack.enter_context(
                python_server(workdir / f"floor{i}", label, module, *options)))
        per_op = requests_per_op(ref, 50)
        results = compare(servers, ref, {cpu}, n, rounds, f"FUSE, daemon + client pinned to "
                          f"CPU {cpu} (ops/s, higher is better)", per_op)
        if not unpinned:
            return results
        free = compare(servers, ref, None, n, rounds,
                       "FUSE, unpinned (ops/s, higher is better)", per_op)
        for c in free:  # the request counts are said once, on the pinned rows
            c.note = ""
        return results + free
