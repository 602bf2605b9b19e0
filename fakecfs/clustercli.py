"""``fakecfs cluster up|status|down DIR``: N emulated nodes on one image, in one command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cluster import Cluster, ClusterError, bench


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "cluster", help="bring N emulated nodes up on one fresh image, show them, take them down "
        "(or benchmark them)",
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
    b = csub.add_parser("bench", help="up N nodes, measure CPU/memory per node and how long "
                        "the survivors take to declare a killed node dead, then down",
                        description="Bring up N nodes under DIR, sample each daemon's CPU "
                        "time and RSS over --sample-s seconds, kill -9 the last node, time "
                        "each survivor's node_down event, take the cluster down and report "
                        "(the kernel's rule: dead after dead_threshold periods).")
    b.add_argument("dir", metavar="DIR")
    b.add_argument("--nodes", "-n", type=int, default=8, help="how many (default 8)")
    b.add_argument("--hb-interval-ms", type=int, default=2000, metavar="N")
    b.add_argument("--dead-threshold", type=int, default=31, metavar="N")
    b.add_argument("--wave", type=int, default=4, metavar="N")
    b.add_argument("--sample-s", type=float, default=10.0, metavar="S",
                   help="CPU/memory sampling window (default 10 s)")
    b.add_argument("--json", action="store_true", help="machine-readable output")
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
        if args.action == "bench":
            return _bench(args)
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


def _bench(args: argparse.Namespace) -> int:
    if (Path(args.dir) / "cluster.json").exists():
        raise ClusterError(f"{args.dir}: a cluster is already up here")
    if args.nodes < 2:
        raise ClusterError("bench needs at least 2 nodes (one is killed)")
    cluster = Cluster(Path(args.dir), "fakecfs", args.hb_interval_ms, args.dead_threshold)
    rule = args.dead_threshold * args.hb_interval_ms / 1000
    try:
        cluster.up(args.nodes, wave=args.wave)
        cluster.wait_for(timeout=max(60.0, 3 * rule))
        report = bench(cluster, args.sample_s, timeout=3 * rule + 60)
    finally:
        cluster.down()
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    d = report["death_detected_s"]
    print(f"{report['nodes']} nodes, period {report['interval_ms']} ms, dead threshold "
          f"{report['dead_threshold']}\n"
          f"  CPU: {report['cpu_total'] * 100:.1f}% of one core together, per node "
          f"{report['cpu_per_node']['min'] * 100:.2f}-{report['cpu_per_node']['max'] * 100:.2f}%"
          f" (over {report['sample_s']} s)\n"
          f"  RSS per node: {report['rss_per_node_mib']['min']}-"
          f"{report['rss_per_node_mib']['max']} MiB\n"
          f"  killed node declared dead by {report['nodes'] - 1} survivors after "
          f"{d['min']:.2f}-{d['max']:.2f} s (rule {report['death_rule_s']:.2f} s)")
    return 0
