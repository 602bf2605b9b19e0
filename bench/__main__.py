"""``python -m bench``: run the side-by-side benchmarks and print ratios against C.

    python -m bench [--quick] [--json] [--only fuse|hbctl] [--cpu N] [--ops N] [--rounds N]
                    [--variants] [--profile]

FUSE: attribute stat and open+read+close throughput, fakecfs against attrfs (a minimal C
libfuse low-level server of the same shape), same C client, pinned to one CPU and unpinned;
beside them the Python floors (the same tree in a few lines of pyfuse3 + trio, and in a
plain Python loop on /dev/fuse), which say how much of the gap is whose.
ocfs2_hb_ctl: wall time of ``-I -u UUID``, ``-S``, ``-K``, ours against Debian's C tool on
the same fakecfs kernel, inside ``fakecfs run --node``, and a Python floor for ``-I``.
Targets (from the issues): fakecfs >= 0.5x the C server's throughput; ocfs2_hb_ctl <= 3x
the C tool's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import fusebench, hbbench
from .results import Comparison, format_table


def _parser() -> argparse.ArgumentParser:
    what = "\n\n".join(__doc__.split("\n\n")[2:])  # the docstring past its usage line
    p = argparse.ArgumentParser(prog="python -m bench", description=what,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a short run (a few seconds; FUSE pinned only)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--only", choices=("fuse", "hbctl"), help="run one half only")
    p.add_argument("--cpu", type=int, help="CPU to pin to (default: the last one allowed)")
    p.add_argument("--ops", type=int, help="FUSE operations per round (full 1000, quick 100)")
    p.add_argument("--rounds", type=int, help="FUSE rounds (full 5, quick 3)")
    p.add_argument("--variants", action="store_true",
                   help="also measure the pyfuse3 floor with one worker task and on asyncio")
    p.add_argument("--profile", action="store_true",
                   help="also profile fakecfs under cProfile and our start-up imports")
    return p


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "allowed_cpus": sorted(os.sched_getaffinity(0)),
            "kernel": platform.release(), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if os.geteuid() != 0:
        # Like the kernel, fakecfs lets only root mkdir a cluster; the raw floor calls
        # mount(2); the ocfs2_hb_ctl half needs namespaces and loop devices.
        print("bench: must run as root (cluster mkdir in configfs, mount(2), namespaces, "
              "loop devices)", file=sys.stderr)
        return 1
    if not os.path.exists("/dev/fuse") or not os.access("/dev/fuse", os.R_OK | os.W_OK):
        print("bench: /dev/fuse is not usable here (make setup chmods it)", file=sys.stderr)
        return 1
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    n, rounds = (100, 3) if args.quick else (1000, 5)
    n, rounds = args.ops or n, args.rounds or rounds
    hb_rounds, cycles = (3, 1) if args.quick else (15, 5)
    comparisons: list[Comparison] = []
    breakdown: dict[str, float] = {}
    profile: dict[str, str] = {}
    skipped: dict[str, str] = {}
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="fakecfs-bench-"))
    try:
        if args.only in (None, "fuse"):
            floors = (*fusebench.FLOORS, *(fusebench.FLOOR_VARIANTS if args.variants else ()))
            # --quick measures pinned only: the unpinned numbers need long runs to mean much.
            comparisons += fusebench.measure(workdir, n, rounds, cpu, floors,
                                             unpinned=not args.quick)
        if args.only in (None, "hbctl"):
            why = hbbench.missing_tools()
            if why:
                skipped["hbctl"] = why
            else:
                comps, breakdown = hbbench.measure(workdir, hb_rounds, cycles)
                comparisons += comps
        if args.profile:
            from . import profiling

            profile["fakecfs"] = profiling.profile_daemon(workdir, 300 if args.quick else 2000)
            profile["imports"] = profiling.import_times()
    finally:
        for mnt in workdir.iterdir():
            fusebench.lazy_unmount(mnt)
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - t0

    if args.json:
        print(json.dumps({
            "machine": _machine(), "quick": args.quick, "ops_per_run": n, "rounds": rounds,
            "hb_rounds": hb_rounds, "hb_cycles": cycles, "seconds": elapsed,
            "comparisons": [c.to_json() for c in comparisons],
            "startup_breakdown_ms": breakdown, "skipped": skipped, "profile": profile,
        }, indent=2))
        return 0
    m = _machine()
    print(f"bench: {m['cpus']} CPUs, kernel {m['kernel']}, Python {m['python']}; "
          f"{'quick' if args.quick else 'full'} run, medians of {rounds} rounds of {n} ops "
          f"(FUSE) and of {hb_rounds} runs / {cycles} cycles (ocfs2_hb_ctl); "
          f"{elapsed:.1f} s\n")
    print(format_table(comparisons))
    if breakdown:
        print("\nwhere our ocfs2_hb_ctl -I -u goes (median ms; the first four are cumulative):")
        for k, v in breakdown.items():
            print(f"  {v:7.2f}  {k}")
    for what, why in skipped.items():
        print(f"\nskipped {what}: {why}")
    for text in profile.values():
        print("\n" + text.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
