"""``make demo``: three emulated OCFS2 nodes heartbeating on one fresh mkfs.ocfs2 image.

Each node is one fakecfs mount (its own emulated kernel), its own IPC namespace (its own
semaphore refcounts) and its own node name, as three hosts would be. The demo registers the
cluster on each, starts heartbeat, prints who sees whom as they come up, stops one node
cleanly, kills another node's daemon, and shows the survivor notice both. A short heartbeat
interval keeps it quick; the kernel's is 2000 ms.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fakecfs.cluster import cluster_conf

INTERVAL_MS = 200
DEAD_THRESHOLD = 10
NODES = ("node1", "node2", "node3")
BIN = Path(sys.executable).parent

CLUSTER_CONF = cluster_conf("demo", NODES)


class Node:
    """One emulated host: a fakecfs mount plus an IPC namespace kept alive by a holder."""

    def __init__(self, name: str, num: int, work: Path) -> None:
        self.name = name
        self.num = num
        self.mnt = work / name
        self.mnt.mkdir()
        self.holder: subprocess.Popen[bytes] | None = None

    def up(self) -> None:
        subprocess.run([str(BIN / "fakecfs"), "mount", "--background",
                        "--hb-interval-ms", str(INTERVAL_MS), str(self.mnt)], check=True)
        self.holder = subprocess.Popen(["unshare", "--ipc", "sleep", "infinity"])
        # nsenter must not run before unshare(2) did, or it would enter the host's namespace.
        ours = os.readlink("/proc/self/ns/ipc")
        while os.readlink(f"/proc/{self.holder.pid}/ns/ipc") == ours:
            time.sleep(0.005)

    def hbctl(self, *args: str, check: bool = True) -> str:
        assert self.holder is not None
        env = dict(os.environ, HBCTL_SYSROOT=str(self.mnt))
        cmd = ["nsenter", "--ipc", "--target", str(self.holder.pid), str(BIN / "hbctl"), *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if check and proc.returncode:
            raise SystemExit(f"demo: {self.name}: hbctl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def live(self) -> list[str] | None:
        try:
            data = json.loads(self.hbctl("status", "--json", check=False) or "{}")
        except json.JSONDecodeError:
            return None
        for cluster in data.get("clusters", []):
            for region in cluster["regions"]:
                return [n["name"] or str(n["num"]) for n in region["live_nodes"] or []]
        return None

    def down(self) -> None:
        subprocess.run([str(BIN / "fakecfs"), "umount", str(self.mnt)], check=False,
                       capture_output=True)
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()


def table(nodes: list[Node], t0: float, note: str) -> str:
    rows = [f"  t={time.monotonic() - t0:5.1f}s  {note}"]
    for node in nodes:
        live = node.live()
        seen = "(not running)" if live is None else (", ".join(live) or "nobody")
        rows.append(f"      {node.name} sees: {seen}")
    return "\n".join(rows)


def watch(nodes: list[Node], t0: float, until: object, note: str, timeout: float) -> None:
    """Print the table whenever what the nodes see changes, until ``until()`` holds."""
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = [n.live() for n in nodes]
        if view != last:
            print(table(nodes, t0, note), flush=True)
            last = view
        if until(view):  # type: ignore[operator]
            return
        time.sleep(INTERVAL_MS / 4000)
    raise SystemExit(f"demo: timed out waiting for: {note}")


def preflight() -> None:
    missing = [t for t in ("mkfs.ocfs2", "unshare", "nsenter") if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"demo: missing tools: {', '.join(missing)} (run make setup)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise SystemExit("demo: /dev/fuse is not accessible (run as root, or make setup)")
    if os.geteuid() != 0:
        raise SystemExit("demo: run as root (it makes one IPC namespace per node)")


def main() -> None:
    preflight()
    work = Path(tempfile.mkdtemp(prefix="fakecfs-demo-"))
    nodes = [Node(name, i, work) for i, name in enumerate(NODES)]
    try:
        image = work / "shared.img"
        subprocess.run(["truncate", "-s", "256M", str(image)], check=True)
        subprocess.run(["mkfs.ocfs2", "-q", "-F", "-b", "4096", "-C", "4096", "-N", "4",
                        "-J", "size=4M", "-L", "demo", "--cluster-stack=o2cb",
                        "--cluster-name=demo", str(image)], check=True, stdin=subprocess.DEVNULL,
                       capture_output=True)
        (work / "cluster.conf").write_text(CLUSTER_CONF)
        print(f"fakecfs demo: 3 emulated nodes on one ocfs2 image ({image})")
        print(f"  heartbeat every {INTERVAL_MS} ms (short for the demo; the kernel uses 2000 ms),"
              f" dead threshold {DEAD_THRESHOLD} intervals\n")
        for node in nodes:
            node.up()
            node.hbctl("cluster", "register", "--config", str(work / "cluster.conf"),
                       "--node", node.name, "--dead-threshold", str(DEAD_THRESHOLD), "demo")
        print(nodes[0].hbctl("info", str(image)))
        t0 = time.monotonic()
        starters = [threading.Thread(target=n.hbctl, args=("start", "-d", str(image)))
                    for n in nodes]
        for s in starters:
            s.start()
        watch(nodes, t0, lambda v: all(x == list(NODES) for x in v), "starting heartbeat", 60)
        for s in starters:
            s.join()
        print("\nAll three nodes see each other. hbctl status on node1:\n")
        print(nodes[0].hbctl("status"))

        print("Stopping node3 cleanly (hbctl stop): it writes a generation-0 block.")
        t0 = time.monotonic()
        nodes[2].hbctl("stop", "-d", str(image))
        watch(nodes[:2], t0, lambda v: all(x == ["node1", "node2"] for x in v),
              "after node3's clean stop", 30)

        print(f"\nKilling node2's emulated kernel (kill -9): no clean leave, node1 declares it"
              f" dead after {DEAD_THRESHOLD} silent intervals (~{DEAD_THRESHOLD * INTERVAL_MS}"
              " ms).")
        t0 = time.monotonic()
        with open(Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
                  / f"fakecfs-{os.getuid()}" / _pid_name(nodes[1].mnt)) as f:
            os.kill(int(f.read()), signal.SIGKILL)
        watch(nodes[:1], t0, lambda v: v[0] == ["node1"], "after node2's death", 60)
        print("\nDone; cleaning up.")
    finally:
        for node in nodes:
            node.down()
        shutil.rmtree(work, ignore_errors=True)


def _pid_name(mnt: Path) -> str:
    from fakecfs.daemon import pid_file

    return os.path.basename(pid_file(str(mnt)))


if __name__ == "__main__":
    main()
