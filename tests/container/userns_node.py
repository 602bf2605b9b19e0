"""One emulated node run by an ordinary user inside a user namespace (no root, no Docker).

    unshare --user --map-root-user --mount --ipc python3 userns_node.py WORKDIR NODE PEERS...

Many CI runners give no root: this is what such a runner does. In the namespace the user is
root of a fresh user + mount + IPC namespace, which may mount FUSE (when /dev/fuse is usable)
and owns its SysV semaphores. The node mounts fakecfs, registers WORKDIR/cluster.conf, starts
heartbeat on WORKDIR/shared.img, waits until it sees NODE and every PEER live and every peer
has seen it (a marker file each), then stops heartbeat and unmounts. It prints one JSON
object: what it saw, for the test that started it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def tool(module: str, *args: str, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True,
                          text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"{module} {' '.join(args)}: exit {proc.returncode}: "
                         f"{proc.stdout}{proc.stderr}")
    return proc.stdout


def live_names(env: dict[str, str]) -> set[str]:
    status = json.loads(tool("hbctl.cli", "status", "--json", env=env))
    return {n["name"] for c in status["clusters"] for r in c["regions"]
            for n in r["live_nodes"]}


def wait(predicate: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def main(workdir: str, node: str, peers: list[str]) -> int:
    mnt = os.path.join(workdir, f"mnt-{node}")
    image = os.path.join(workdir, "shared.img")
    os.makedirs(mnt, exist_ok=True)
    env = dict(os.environ, HBCTL_SYSROOT=mnt)
    with open("/proc/self/uid_map", encoding="ascii") as f:
        result: dict[str, object] = {"node": node, "uid_map": f.read()}
    tool("fakecfs.cli", "mount", "--background", "--hb-interval-ms", "100", mnt, env=env)
    try:
        tool("hbctl.cli", "cluster", "register", "--config",
             os.path.join(workdir, "cluster.conf"), "--node", node, "--dead-threshold", "5",
             "demo", env=env)
        result["start"] = tool("hbctl.cli", "start", "-d", image, env=env).strip()
        everyone = {node, *peers}
        wait(lambda: live_names(env) == everyone, f"{sorted(everyone)} live")
        open(os.path.join(workdir, f"seen-{node}"), "w").close()
        wait(lambda: all(os.path.exists(os.path.join(workdir, f"seen-{p}")) for p in peers),
             "the peers to see us")
        status = json.loads(tool("hbctl.cli", "status", "--json", env=env))
        result["status"] = status
        # A second barrier: a peer that stopped first would leave our status without it.
        open(os.path.join(workdir, f"read-{node}"), "w").close()
        wait(lambda: all(os.path.exists(os.path.join(workdir, f"read-{p}")) for p in peers),
             "the peers to read their status")
        result["stop"] = tool("hbctl.cli", "stop", "-d", image, env=env).strip()
        result["after_stop"] = json.loads(tool("hbctl.cli", "status", "--json", env=env))
    finally:
        tool("fakecfs.cli", "umount", mnt, env=env)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
