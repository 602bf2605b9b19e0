"""The container entrypoint that turns one container into one OCFS2 o2cb cluster node.

    docker run --device /dev/fuse --cap-add SYS_ADMIN --hostname node1 \\
        -v ./cluster.conf:/etc/ocfs2/cluster.conf:ro -v shared:/shared \\
        -e HEARTBEAT_DEVICE=/shared/ocfs2.img IMAGE [CMD ...]

What it does, in order: checks /dev/fuse and the privilege it needs (and says which docker
flags are missing when they are); mounts fakecfs (the emulated kernel) at $HBCTL_SYSROOT;
binds its surfaces where the tools look (/sys/kernel/config, /sys/fs/ocfs2, /sys/fs/o2cb,
/sys/kernel/debug/o2hb, /proc/sys/fs/ocfs2: the placement `fakecfs run` makes), so hbctl
and the unmodified C ocfs2-tools both work;
registers the cluster from $OCFS2_CLUSTER_CONF with the hostname as the local node; starts
heartbeat on $HEARTBEAT_DEVICE when set; then runs CMD (or waits). On SIGTERM (docker stop)
or when CMD ends it stops heartbeat cleanly (peers see a clean leave, not a death), unbinds
and unmounts, and exits with CMD's status.

Privilege: the node needs to mount FUSE and to use libo2cb's semaphore sets, which are made
with mode 000 (root passes only with CAP_IPC_OWNER, which Docker drops by default).
  - --device /dev/fuse --cap-add SYS_ADMIN --cap-add IPC_OWNER: the node is the container
    itself; `docker exec NODE ocfs2_hb_ctl ...` reaches it directly.
  - --device /dev/fuse --cap-add SYS_ADMIN (profile 1), or --device /dev/fuse --security-opt
    seccomp=unconfined (profile 2, no SYS_ADMIN): the node runs in a user + mount + IPC
    namespace made here (unshare --user --map-root-user --mount --ipc), where root may mount
    FUSE and owns the semaphores; `node-exec CMD` (and the hbctl wrapper) enter it for
    `docker exec`.

Environment: OCFS2_CLUSTER_CONF (default /etc/ocfs2/cluster.conf), O2CB_CLUSTER (default:
the only cluster in the file), O2CB_NODE (default: the hostname), O2CB_HEARTBEAT_THRESHOLD
(dead threshold in intervals; kernel default 31), FAKECFS_HB_INTERVAL_MS (default 2000),
HEARTBEAT_DEVICE (image file or block device to heartbeat on; unset: none),
O2CB_BRINGUP (``hbctl``, the default: ``hbctl cluster register``; ``init-script``: Debian's
``/etc/init.d/o2cb online CLUSTER`` under ``fakecfs run``, as a host boots, with its
timeouts from /etc/default/o2cb, and ``/etc/init.d/o2cb offline CLUSTER`` at the end).

User stacks: with OCFS2_CLUSTER_STACK=pcmk or cman the node is a user-stack node instead of
an o2cb one: fakecfs runs with ``--cluster-stack``; no cluster.conf is registered; the node
waits until one of the ``ring0_addr`` addresses of $COROSYNC_CONF (default
/etc/corosync/corosync.conf) is its own (the network may be wired into the container after it
starts), starts ``corosync -f`` and, once corosync answers, ``ocfs2_controld.STACK -D
--membership corosync`` on the emulated kernel; HEARTBEAT_DEVICE then registers hbctl's
service for that volume with the daemon (joining its group). At the end the daemon and
corosync are stopped after fakecfs.

FAKECFS_DLM_DIR (a folder every node's container shares, e.g. next to the image: the
emulated ocfs2_dlmfs keeps its lock files there, so the tools' cluster locks exclude across
containers).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from fakecfs.run import RunError, bind_surfaces

PROG = "fakecfs-node"
STATE = "/run/fakecfs-node"
USERNS_PID = f"{STATE}/userns.pid"
READY = f"{STATE}/ready"
INNER = "_FAKECFS_NODE_INNER"
BIN = os.path.dirname(sys.executable)
INIT_SCRIPT = "/etc/init.d/o2cb"
INIT_CONF = "/etc/ocfs2/cluster.conf"  # the init script's, hard-coded
HBCTL = os.path.join(BIN, "hbctl")
FAKECFS = os.path.join(BIN, "fakecfs")
CAP_SYS_ADMIN = 21
# libo2cb makes each region's semaphore set with mode 000, so even root needs CAP_IPC_OWNER,
# which Docker drops by default: without it the node gets an IPC namespace of its own.
CAP_IPC_OWNER = 15
MNT_DETACH = 2

FLAGS_HINT = (
    "run the container with '--device /dev/fuse --cap-add SYS_ADMIN', or without SYS_ADMIN "
    "with '--device /dev/fuse --security-opt seccomp=unconfined' (user-namespace profile)"
)


class NodeError(Exception):
    """A reason this container cannot be a node, worded for the person running docker."""


def log(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


# -- preflight ---------------------------------------------------------------------------


def check_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        raise NodeError("/dev/fuse does not exist in this container: add '--device /dev/fuse' "
                        "(compose: devices: [/dev/fuse])")
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        if exc.errno == errno.EPERM:  # the device cgroup forbids it
            raise NodeError("/dev/fuse exists but the container may not use it: add "
                            "'--device /dev/fuse' (a bind mount of /dev/fuse is not enough)"
                            ) from None
        raise NodeError(f"/dev/fuse: {exc.strerror}: run the node as root in the container, "
                        "or 'chmod 0666 /dev/fuse' on the host as udev would") from None


def has_cap(cap: int) -> bool:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def userns_works() -> str | None:
    """None when this process may make a user namespace with a mount namespace, else why."""
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--ipc", "true"],
                          capture_output=True, text=True, check=False)
    return None if proc.returncode == 0 else (proc.stderr.strip() or "unshare failed")


# -- mounts ------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def umount_lazy(target: str) -> None:
    _libc.umount2(target.encode(), MNT_DETACH)


def ensure_tmpfs(directory: str) -> None:
    """A private tmpfs at ``directory`` (this container's mount namespace only)."""
    os.makedirs(directory, exist_ok=True)
    ret = _libc.mount(b"tmpfs", directory.encode(), b"tmpfs", 0, b"mode=0755")
    if ret != 0:
        err = ctypes.get_errno()
        raise NodeError(f"cannot mount a tmpfs at {directory}: {os.strerror(err)}")


# -- the node ----------------------------------------------------------------------------


def program(name: str) -> str:
    """A command installed beside this Python (the project's venv), else on PATH."""
    mine = os.path.join(BIN, name)
    return mine if os.path.exists(mine) else (shutil.which(name) or name)


def ring0_addresses(conf: str) -> list[str]:
    with open(conf, encoding="utf-8") as f:
        return re.findall(r"^\s*ring0_addr\s*:\s*(\S+)", f.read(), flags=re.MULTILINE)


def own_address(addresses: Sequence[str]) -> str | None:
    """The first of ``addresses`` this network namespace has (one it can bind to)."""
    for addr in addresses:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((addr, 0))
            return addr
        except OSError:
            continue
    return None


def controld_listening() -> bool:
    """True once ``@ocfs2_controld_sock`` (this network namespace's) accepts a client."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect("\0ocfs2_controld_sock")
        except OSError:
            return False
    return True


def wait_for(what: str, cond: object, proc: subprocess.Popen[bytes] | None,
             timeout: float) -> None:
    """Poll ``cond()``; a NodeError when ``proc`` dies first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if proc is not None and proc.poll() is not None:
            raise NodeError(f"{what}: the process exited (status {proc.returncode}; see above)")
        if time.monotonic() > deadline:
            raise NodeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


class Node:
    """One node's lifetime: up() in steps, down() undoing whatever up() got to."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.stack = env.get("OCFS2_CLUSTER_STACK") or "o2cb"
        self.corosync_conf = env.get("COROSYNC_CONF") or "/etc/corosync/corosync.conf"
        self.corosync: subprocess.Popen[bytes] | None = None
        self.controld: subprocess.Popen[bytes] | None = None
        self.sysroot = env.get("HBCTL_SYSROOT") or "/run/fakecfs"
        self.interval_ms = env.get("FAKECFS_HB_INTERVAL_MS", "2000")
        self.dlm_dir = env.get("FAKECFS_DLM_DIR", "")
        self.conf = env.get("OCFS2_CLUSTER_CONF", "/etc/ocfs2/cluster.conf")
        self.device = env.get("HEARTBEAT_DEVICE", "")
        self.node = env.get("O2CB_NODE") or socket.gethostname()
        self.daemon: subprocess.Popen[bytes] | None = None
        self.binds: dict[str, str] = {}  # surface -> where it is bound
        self.heartbeat = False
        self.bringup = env.get("O2CB_BRINGUP") or "hbctl"
        self.online: str | None = None  # the cluster the init script brought online

    def hbctl(self, *args: str) -> None:
        env = dict(self.env, HBCTL_SYSROOT=self.sysroot)
        proc = subprocess.run([HBCTL, *args], env=env, check=False)
        if proc.returncode != 0:
            raise NodeError(f"'hbctl {' '.join(args)}' failed (exit {proc.returncode})")

    def mount_kernel(self) -> None:
        os.makedirs(self.sysroot, exist_ok=True)
        stack = [] if self.stack == "o2cb" else ["--cluster-stack", self.stack]
        self.daemon = subprocess.Popen(
            [FAKECFS, "mount", "--hb-interval-ms", self.interval_ms, *stack,
             *(["--dlm-dir", self.dlm_dir] if self.dlm_dir else []), self.sysroot],
            stdin=subprocess.DEVNULL,
        )
        probe = os.path.join(self.sysroot, "sys/kernel/config/cluster")
        deadline = time.monotonic() + 30
        while not os.path.isdir(probe):
            if self.daemon.poll() is not None:
                self.daemon = None
                raise NodeError(f"fakecfs could not mount {self.sysroot} (see above)")
            if time.monotonic() > deadline:
                raise NodeError(f"fakecfs did not answer on {self.sysroot} within 30 s")
            time.sleep(0.02)

    def register(self) -> None:
        if self.bringup not in ("hbctl", "init-script"):
            raise NodeError(f"O2CB_BRINGUP={self.bringup!r}: use 'hbctl' (the default) or "
                            "'init-script'")
        if not os.path.exists(self.conf):
            if self.device:
                raise NodeError(f"HEARTBEAT_DEVICE is set but there is no cluster.conf at "
                                f"{self.conf}: mount one with "
                                f"'-v ./cluster.conf:{self.conf}:ro'")
            log(f"no {self.conf}: the node runs unregistered (mount a cluster.conf there "
                "to register one)")
            return
        from hbctl.cluster import ConfigError, is_local, load

        try:
            config = load(self.conf)
        except (OSError, ConfigError) as exc:
            raise NodeError(f"{self.conf}: {exc}") from None
        name = self.env.get("O2CB_CLUSTER")
        if not name:
            if len(config.clusters) != 1:
                raise NodeError(f"{self.conf} defines {len(config.clusters)} clusters: "
                                "set O2CB_CLUSTER to the one to register")
            name = config.clusters[0].name
        cluster = config.cluster(name)
        if cluster is None:
            raise NodeError(f"{self.conf} has no cluster {name!r} (O2CB_CLUSTER)")
        names = [n.name for n in cluster.nodes]
        if not any(is_local(n, self.node) for n in names):
            # o2cb would register the cluster without a local node; heartbeat then fails.
            raise NodeError(f"{self.node!r} is not a node of cluster {name!r} in {self.conf} "
                            f"({', '.join(names)}): run the container with '--hostname NODE' "
                            "(or set O2CB_NODE)")
        if self.bringup == "init-script":
            self.init_script_online(name)
            return
        args = ["cluster", "register", "--config", self.conf, "--node", self.node]
        if self.env.get("O2CB_HEARTBEAT_THRESHOLD"):
            args += ["--dead-threshold", self.env["O2CB_HEARTBEAT_THRESHOLD"]]
        self.hbctl(*args, name)

    def init_script(self, *args: str) -> int:
        """Debian's init script, unmodified, in a host-with-modules view of this kernel."""
        return subprocess.run([FAKECFS, "run", self.sysroot, "--", INIT_SCRIPT, *args],
                              env=self.env, check=False).returncode

    def init_script_online(self, cluster: str) -> None:
        if not os.access(INIT_SCRIPT, os.X_OK):
            raise NodeError(f"O2CB_BRINGUP=init-script but {INIT_SCRIPT} is missing "
                            "(Debian's ocfs2-tools ships it)")
        if self.node != socket.gethostname():
            raise NodeError(f"O2CB_BRINGUP=init-script finds the local node by hostname "
                            f"({socket.gethostname()!r}), not O2CB_NODE={self.node!r}: run "
                            "the container with '--hostname NODE'")
        if self.env.get("O2CB_HEARTBEAT_THRESHOLD"):
            raise NodeError("O2CB_BRINGUP=init-script takes its timeouts from "
                            "/etc/default/o2cb: set O2CB_HEARTBEAT_THRESHOLD there, not in "
                            "the environment")
        if os.path.realpath(self.conf) != os.path.realpath(INIT_CONF):
            # The script reads only /etc/ocfs2/cluster.conf: put the file there, in this
            # container's own mount namespace.
            ensure_tmpfs(os.path.dirname(INIT_CONF))
            with open(self.conf, encoding="utf-8") as src, \
                    open(INIT_CONF, "w", encoding="utf-8") as dst:
                dst.write(src.read())
        rc = self.init_script("online", cluster)
        if rc != 0:
            raise NodeError(f"'{INIT_SCRIPT} online {cluster}' failed (exit {rc})")
        self.online = cluster

    def user_stack(self) -> None:
        """corosync, then ocfs2_controld on this kernel: a pcmk or cman node."""
        if self.stack not in ("pcmk", "cman"):
            raise NodeError(f"OCFS2_CLUSTER_STACK={self.stack!r}: use o2cb (the default), "
                            "pcmk or cman")
        if not os.path.exists(self.corosync_conf):
            raise NodeError(f"OCFS2_CLUSTER_STACK={self.stack} needs corosync's configuration "
                            f"at {self.corosync_conf}: mount one with "
                            f"'-v ./corosync.conf:{self.corosync_conf}:ro'")
        addresses = ring0_addresses(self.corosync_conf)
        if not addresses:
            raise NodeError(f"{self.corosync_conf} has no nodelist with ring0_addr entries")
        if own_address(addresses) is None:
            log(f"waiting for one of {', '.join(addresses)} to be this node's address")
            wait_for("the node's network address", lambda: own_address(addresses), None,
                     float(self.env.get("NODE_NETWORK_TIMEOUT_S", "300")))
        self.corosync = subprocess.Popen(["corosync", "-f", "-c", self.corosync_conf],
                                         stdin=subprocess.DEVNULL)
        wait_for("corosync", lambda: subprocess.run(
            ["corosync-cmapctl", "-g", "totem.cluster_name"], capture_output=True,
            check=False).returncode == 0, self.corosync, 60)
        self.controld = subprocess.Popen(
            [program(f"ocfs2_controld.{self.stack}"), "-D", "--membership", "corosync",
             "--sysroot", self.sysroot], stdin=subprocess.DEVNULL)
        wait_for("ocfs2_controld", controld_listening, self.controld, 60)

    def up(self) -> None:
        times = {"started": time.time()}
        self.mount_kernel()
        # The surfaces at their real paths, as `fakecfs run` places them (sysfs/procfs
        # parents mirrored on tmpfs where a directory cannot be made); down() undoes even a
        # partial set.
        try:
            bind_surfaces(self.sysroot, self.binds)
        except RunError as exc:
            raise NodeError(str(exc)) from None
        times["mounted"] = time.time()
        if self.stack == "o2cb":
            self.register()
        else:
            self.user_stack()
            times["controld"] = time.time()
        if self.device:
            times["heartbeat_start"] = time.time()
            self.hbctl("start", "-d", self.device)  # returns once the region is steady
            self.heartbeat = True
        times["ready"] = time.time()
        # For readiness probes (`test -e`), and the step times for whoever measures startup.
        with open(READY + ".new", "w", encoding="ascii") as f:
            json.dump({"node": self.node, **times}, f)
        os.rename(READY + ".new", READY)
        log(f"node {self.node} is up ({self.stack}, heartbeat interval {self.interval_ms} ms"
            + (f", heartbeat on {self.device})" if self.device else ", no heartbeat)"))

    def down(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(READY)
        if self.heartbeat:
            self.heartbeat = False
            try:
                self.hbctl("stop", "-d", self.device)
            except NodeError as exc:  # the daemon's own clean stop below still runs
                log(str(exc))
        if self.online is not None:
            cluster, self.online = self.online, None
            if self.init_script("offline", cluster) != 0:
                log(f"'{INIT_SCRIPT} offline {cluster}' failed (the clean stop still runs)")
        for target in reversed(list(self.binds.values())):
            umount_lazy(target)
        self.binds = {}
        if self.daemon is not None and self.daemon.poll() is None:
            # fakecfs's SIGTERM: every region writes its generation-0 block, then unmount.
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=8)
            except subprocess.TimeoutExpired:
                log("fakecfs did not stop within 8 s; killing it")
                self.daemon.kill()
                self.daemon.wait()
        self.daemon = None
        # The user stack after the kernel: put_super's helper still reached the daemon. The
        # daemon ignores SIGTERM while it has groups, so it is killed; corosync stops cleanly.
        for proc, sig in ((self.controld, signal.SIGKILL), (self.corosync, signal.SIGTERM)):
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout=8)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.controld = self.corosync = None

    def processes(self) -> list[tuple[str, subprocess.Popen[bytes] | None]]:
        return [("fakecfs", self.daemon), ("corosync", self.corosync),
                ("ocfs2_controld", self.controld)]


# -- process supervision (we are PID 1, or the first process of the user namespace) --------

_stop_signal: int | None = None


def _on_signal(signum: int, _frame: object) -> None:
    global _stop_signal
    _stop_signal = signum


def reap_orphans(keep: set[int]) -> None:
    """Reap exited processes reparented to us, leaving our own children to their Popen."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in keep:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)


def supervise(children: Sequence[tuple[str, subprocess.Popen[bytes] | None]],
              main: subprocess.Popen[bytes] | None) -> int | None:
    """Wait for a stop signal, for ``main`` (the user's command) to exit (its status), or
    for one of the node's own processes to die (1)."""
    while _stop_signal is None:
        if main is not None and main.poll() is not None:
            return main.returncode
        for name, child in children:
            if child is not None and child.poll() is not None:
                log(f"{name} exited unexpectedly (status {child.returncode})")
                return 1
        reap_orphans({c.pid for _, c in children if c is not None}
                     | ({main.pid} if main is not None else set()))
        time.sleep(0.1)
    return None


def stop_command(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def run_node(argv: list[str]) -> int:
    node = Node(dict(os.environ))
    command: subprocess.Popen[bytes] | None = None
    status = 0
    try:
        node.up()
        if _stop_signal is None and argv:
            command = subprocess.Popen(argv, env=dict(os.environ, HBCTL_SYSROOT=node.sysroot))
        result = supervise(node.processes(), command)
        if result is not None:
            status = result
        if command is not None:
            status = stop_command(command) if result is None else result
        if _stop_signal is not None:
            log(f"signal {signal.Signals(_stop_signal).name}: stopping the node")
    except (NodeError, OSError) as exc:
        log(str(exc))
        status = 1
    finally:
        node.down()
    return status if status >= 0 else 128 - status  # killed by signal N: 128 + N, as sh says


def run_in_userns(argv: list[str]) -> int:
    """Re-run this entrypoint as root of a fresh user + mount + IPC namespace.

    Root there may mount FUSE (no CAP_SYS_ADMIN needed outside) and owns the IPC namespace
    (so the mode-000 semaphore sets work without CAP_IPC_OWNER outside).
    """
    inner = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--mount", "--ipc", "--propagation", "private",
         sys.executable, os.path.abspath(__file__), *argv],
        env=dict(os.environ, **{INNER: "1"}),
    )
    # unshare execs in place: this pid is the namespace's first process, for node-exec.
    with open(USERNS_PID, "w", encoding="ascii") as f:
        f.write(f"{inner.pid}\n")
    while inner.poll() is None:
        if _stop_signal is not None:
            inner.send_signal(_stop_signal)
            break
        reap_orphans({inner.pid})
        time.sleep(0.1)
    status = inner.wait()
    with contextlib.suppress(OSError):
        os.unlink(USERNS_PID)
    return status if status >= 0 else 128 - status


def main(argv: list[str]) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    os.makedirs(STATE, exist_ok=True)
    if os.environ.get(INNER) == "1":
        return run_node(argv)
    # A container that was killed and started again keeps its files: forget the old node.
    for stale in (READY, USERNS_PID):
        with contextlib.suppress(OSError):
            os.unlink(stale)
    try:
        check_fuse()
        sys_admin, ipc_owner = has_cap(CAP_SYS_ADMIN), has_cap(CAP_IPC_OWNER)
        if sys_admin and ipc_owner:
            return run_node(argv)
        why = userns_works()
        if why is not None and sys_admin:
            raise NodeError(f"no CAP_IPC_OWNER (libo2cb's semaphore sets have mode 000: even "
                            f"root needs it) and no user namespace to do without it ({why}): "
                            "add '--cap-add IPC_OWNER'")
        if why is not None:
            raise NodeError(f"cannot mount FUSE here: no CAP_SYS_ADMIN, and no user namespace "
                            f"either ({why}; Docker's default seccomp profile forbids them): "
                            f"{FLAGS_HINT}")
    except NodeError as exc:
        log(str(exc))
        return 1
    missing = [n for n, c in (("SYS_ADMIN", CAP_SYS_ADMIN), ("IPC_OWNER", CAP_IPC_OWNER))
               if not has_cap(c)]
    log(f"no CAP_{' nor CAP_'.join(missing)}: running the node in its own user namespace")
    return run_in_userns(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
