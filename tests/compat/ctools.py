"""Helpers for running Debian's unmodified ocfs2-tools against fakecfs via ``fakecfs run``.

A :class:`NodeShell` is one emulated node's userland: a small agent process started under
``fakecfs run MOUNTPOINT --node NAME``, so every command it runs shares that node's mount
namespace (the surfaces at their real paths), IPC namespace (the heartbeat semaphores) and
hostname. The test sends commands one at a time and gets exit code and output back, so it
can check the emulated tree and the semaphores between steps, without fixed sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakecfs_fixtures import FAKECFS, VENV_BIN

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
C_HB_CTL = shutil.which("ocfs2_hb_ctl", path=SBIN_PATH) or "/usr/sbin/ocfs2_hb_ctl"
O2CB = shutil.which("o2cb", path=SBIN_PATH) or "/usr/sbin/o2cb"
MOUNTED = shutil.which("mounted.ocfs2", path=SBIN_PATH) or "/usr/sbin/mounted.ocfs2"
PY_HB_CTL = str(VENV_BIN / "ocfs2_hb_ctl")
HBCTL = str(VENV_BIN / "hbctl")

# The agent: reads one JSON request per line, answers one JSON line. Requests are an argv
# to run, or an "@"-command answered in-process (semaphore values need semctl in this IPC
# namespace). It uses only the standard library: it also runs as an ordinary user.
AGENT = r"""
import ctypes, json, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
GETVAL = 12
def sem(key):
    semid = libc.semget(ctypes.c_int(key), 0, 0)
    if semid < 0:
        return None
    return [libc.semctl(semid, n, GETVAL) for n in (0, 1)]
for line in sys.stdin:
    req = json.loads(line)
    if req[0] == "@sem":
        out = {"sem": sem(req[1])}
    elif req[0] == "@sem_keys":
        with open("/proc/sysvipc/sem") as f:
            rows = f.read().splitlines()[1:]
        out = {"keys": [int(r.split()[0]) for r in rows]}
    else:
        try:
            p = subprocess.run(req, capture_output=True, text=True)
            out = {"rc": p.returncode, "out": p.stdout, "err": p.stderr}
        except OSError as exc:
            out = {"rc": 127, "out": "", "err": str(exc)}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
"""


def require_ctools() -> None:
    """Skip unless the C tools are installed and we are root.

    The suite runs as root (loop devices, the C tools' mode-000 semaphore sets) and
    switches to an ordinary user itself for the user-namespace scenarios.
    """
    if os.geteuid() != 0:
        pytest.skip("the ocfs2-tools compat suite runs as root (it drops to an ordinary "
                    "user itself where that is the point)")
    for tool in (C_HB_CTL, O2CB, MOUNTED):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"{tool} not installed (make setup installs Debian's ocfs2-tools)")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, setpriv to another user)")


def sem_key(uuid: str) -> int:
    """libo2cb's semaphore key: CRC-32 of the upper-case UUID as a signed key_t."""
    crc = zlib.crc32(uuid.encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


@dataclass
class Result:
    rc: int
    out: str
    err: str


class NodeShell:
    """Commands run inside one ``fakecfs run --node`` (one node's namespaces)."""

    def __init__(self, launcher: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            list(launcher), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env,
        )

    def _ask(self, request: list[object]) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self.proc.stdout.readline()
        if not line:
            assert self.proc.stderr is not None
            self.proc.wait()
            raise AssertionError(
                f"node shell died (rc {self.proc.returncode}): {self.proc.stderr.read()}")
        answer: dict[str, object] = json.loads(line)
        return answer

    def run(self, *argv: str) -> Result:
        a = self._ask(list(argv))
        return Result(int(a["rc"]), str(a["out"]), str(a["err"]))  # type: ignore[call-overload]

    def ok(self, *argv: str) -> str:
        """Run and require exit 0; return stdout."""
        r = self.run(*argv)
        assert r.rc == 0, f"{argv} exited {r.rc}: {r.err or r.out}"
        return r.out

    def sem(self, uuid: str) -> tuple[int, int] | None:
        """(mutex, refcount) of the region's semaphore set, or None if there is none."""
        values = self._ask(["@sem", sem_key(uuid)])["sem"]
        return None if values is None else (values[0], values[1])  # type: ignore[index]

    def sem_keys(self) -> list[int]:
        """Keys of every semaphore set in this node's IPC namespace (/proc/sysvipc/sem)."""
        return list(self._ask(["@sem_keys"])["keys"])  # type: ignore[call-overload]

    def hb_ctl(self, tool: str, *args: str) -> Result:
        return self.run(tool, *args)

    def refs(self, tool: str, *target: str) -> str:
        return self.ok(tool, "-I", *target)

    def status(self) -> Any:
        """``hbctl status --json`` inside the node (regions, refs, live nodes)."""
        return json.loads(self.ok(HBCTL, "status", "--json"))

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=30)
        finally:
            for f in (self.proc.stdout, self.proc.stderr):
                if f is not None:
                    f.close()


def agent_argv() -> list[str]:
    return [sys.executable, "-u", "-c", AGENT]


@contextmanager
def node_shell(sysroot: Path, node: str = "n1") -> Iterator[NodeShell]:
    """A NodeShell in ``fakecfs run SYSROOT --node NODE`` (run by this process's user)."""
    shell = NodeShell([FAKECFS, "run", str(sysroot), "--node", node, "--", *agent_argv()])
    try:
        yield shell
    finally:
        shell.close()


USER = "nobody"
GROUP = "nogroup"


@contextmanager
def user_node_shell(workdir: Path, node: str = "n1") -> Iterator[NodeShell]:
    """A NodeShell run by the ordinary user ``nobody`` in a user namespace of its own.

    The user maps itself to root in a new user + mount namespace (``unshare --user
    --map-root-user --mount``), mounts fakecfs there (a daemon it owns, so the emulated
    tree is writable to it) and runs the agent under ``fakecfs run --node``. The tree is
    visible only inside: inspect it through the shell.
    """
    mnt = workdir / "sysroot"
    mnt.mkdir(exist_ok=True)
    os.chown(mnt, *_ids())
    fakecfs = FAKECFS
    script = (
        f"{fakecfs} mount --background --hb-interval-ms 50 {mnt} || exit 1; "
        f'{fakecfs} run {mnt} --node {node} -- "$@"; rc=$?; '
        f"{fakecfs} umount {mnt}; exit $rc"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "HOME")}
    env["HOME"] = str(workdir)
    launcher = [
        "setpriv", f"--reuid={USER}", f"--regid={GROUP}", "--clear-groups",
        "unshare", "--user", "--map-root-user", "--mount",
        "sh", "-c", script, "sh", *agent_argv(),
    ]
    shell = NodeShell(launcher, env=env)
    try:
        yield shell
    finally:
        shell.close()


def _ids() -> tuple[int, int]:
    import grp
    import pwd

    return pwd.getpwnam(USER).pw_uid, grp.getgrnam(GROUP).gr_gid


def user_workdir(tmp_path: Path) -> Path:
    """A directory the ordinary user can reach and write (pytest's tmp dirs are 0700)."""
    require_root()
    try:
        uid, gid = _ids()
    except KeyError:
        pytest.skip(f"no user {USER}/{GROUP} to run as")
    if not os.access("/dev/fuse", os.F_OK):
        pytest.skip("/dev/fuse does not exist")
    if os.stat("/dev/fuse").st_mode & 0o006 != 0o006:
        os.chmod("/dev/fuse", 0o666)  # what udev (and make setup) do
    work = Path(f"/tmp/fakecfs-compat-{os.getpid()}-{tmp_path.name}")
    work.mkdir(mode=0o755)
    os.chown(work, uid, gid)
    return work


def give_to_user(*paths: Path) -> None:
    uid, gid = _ids()
    for p in paths:
        os.chown(p, uid, gid)


@contextmanager
def loop_device(image: Path) -> Iterator[str]:
    """Attach ``image`` to a loop device (root only) so /proc/partitions scans find it."""
    require_root()
    proc = subprocess.run(["losetup", "--find", "--show", str(image)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"no loop device: {proc.stderr.strip()}")
    dev = proc.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def cluster_conf(path: Path, *, cluster: str = "demo", nodes: Sequence[str] = ("n1", "n2"),
                 mode: str = "local", regions: Sequence[str] = ()) -> Path:
    """A cluster.conf in o2cb's format (stanzas, tab-indented ``key = value``)."""
    parts = [f"cluster:\n\tnode_count = {len(nodes)}\n\theartbeat_mode = {mode}\n"
             f"\tname = {cluster}\n"]
    for num, name in enumerate(nodes):
        parts.append(f"node:\n\tip_port = 7777\n\tip_address = 127.0.0.{num + 1}\n"
                     f"\tnumber = {num}\n\tname = {name}\n\tcluster = {cluster}\n")
    for region in regions:
        parts.append(f"heartbeat:\n\tregion = {region}\n\tcluster = {cluster}\n")
    path.write_text("\n".join(parts))
    return path


def trace_lines(path: Path) -> list[dict[str, object]]:
    """The fakecfs --trace file as a list of operations."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@contextmanager
def daemon_node(mountpoint: Path, node: str, *mount_args: str,
                run_args: Sequence[str] = ()) -> Iterator[NodeShell]:
    """A node whose fakecfs *daemon* lives in the node's IPC and UTS namespaces.

    Needed when the emulated kernel itself acts in the node: put_super runs
    ``hb_ctl_path -K -u UUID`` as the daemon's child, in the daemon's namespaces, so its
    refcount must be the node's. The daemon is started under ``unshare --ipc --uts``; the
    shell joins those namespaces (``nsenter``) and then ``fakecfs run`` (no ``--node``).
    The mount stays visible to the test (the mount namespace is the host's).
    """
    from fakecfs import daemon

    require_root()
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["unshare", "--ipc", "--uts", "sh", "-c", f'hostname {node} && exec "$@"', "sh",
         FAKECFS, "mount", "--background", *mount_args, str(mountpoint)],
        check=True, capture_output=True, text=True,
    )
    try:
        pid = daemon.daemon_pid(str(mountpoint))
        assert pid is not None, "fakecfs daemon did not record its pid"
        shell = NodeShell(["nsenter", f"--target={pid}", "--ipc", "--uts", "--",
                           FAKECFS, "run", str(mountpoint), *run_args, "--",
                           *agent_argv()])
        try:
            yield shell
        finally:
            shell.close()
    finally:
        subprocess.run([FAKECFS, "umount", str(mountpoint)], check=False, capture_output=True)

