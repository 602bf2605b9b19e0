"""``fakecfs cluster up|status|down DIR``: N emulated nodes on one image, in one command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cluster import Cluster, ClusterError


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "cluster", help="bring N emulated nodes up on one fresh image, show them, take them down",
        description="N emulated nodes under DIR: a fresh ocfs2 image (DIR/shared.img), a "
        "generated DIR/cluster.conf, and per node a fakecfs mount DIR/nodeN with its own IPC "
        "and UTS namespace (hostname nodeN), the cluster registered and heartbeat started. "
        "Joins are started in waves, so the kernel's stabilisation rule does not abort them. "
        "Run a command as a node with: nsenter --ipc --uts --target HOLDER CMD (status "
        "shows the holder pids; set HBCTL_SYSROOT=DIR/nodeN). Needs root.")
    csub = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = csub.add_parser("up", help="create the image and start N nodes")
    up.add_argument("dir", metavar="DIR")
    up.add_argument("--nodes", "-n", type=int, default=3, help="how many (1-255, default 3)")
    up.add_argument("--hb-interval-ms", type=int, default=2000, metavar="N",
                    help="heartbeat period (kernel: 2000)")
    up.add_argument("--dead-threshold", type=int, default=31, metavar="N",
                    help="periods of silence before a node is dead (kernel default 31)")
    up.add_argument("--cluster", default="fakecfs", help="cluster name (default fakecfs)")
    up.add_argument("--wave", type=int, default=4, metavar="N",
                    help="joins started together (default 4)")
    st = csub.add_parser("status", help="each node: daemon, live nodes it sees")
    st.add_argument("dir", metavar="DIR")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    dn = csub.add_parser("down", help="stop every node cleanly and remove the namespaces")
    dn.add_argument("dir", metavar="DIR")


def main(args: argparse.Namespace) -> int:
    try:
        if args.action == "up":
            if (Path(args.dir) / "cluster.json").exists():
                raise ClusterError(f"{args.dir}: a cluster is already up here "
                                   "(fakecfs cluster down first)")
            if args.wave < 1:
                raise ClusterError("--wave must be at least 1")
            cluster = Cluster(Path(args.dir), args.cluster, args.hb_interval_ms,
                              args.dead_threshold)
            cluster.up(args.nodes, wave=args.wave,
                       progress=lambda msg: print(f"fakecfs cluster: {msg}", flush=True))
            cluster.wait_for(timeout=max(60.0, args.dead_threshold * args.hb_interval_ms / 500))
            print(f"fakecfs cluster: {args.nodes} nodes up, all see all "
                  f"(region {cluster.uuid})")
            return 0
        cluster = Cluster.load(Path(args.dir))
        if args.action == "down":
            cluster.down()
            return 0
        data = cluster.status()
        for row, node in zip(data["nodes"], cluster.nodes, strict=True):
            row["holder"] = node.state.holder
        if args.json:
            print(json.dumps(data, indent=1))
        else:
            print(f"cluster {data['cluster']} region {data['uuid']} image {data['image']}")
            for row in data["nodes"]:
                live = "-" if row["live"] is None else " ".join(map(str, row["live"]))
                state = "running" if row["running"] else "down"
                print(f"  {row['name']:8} {state:8} holder {row['holder']:<8} live: {live}")
        return 0
    except (ClusterError, TimeoutError) as exc:
        print(f"fakecfs cluster: {exc}", file=sys.stderr)
        return 1
