"""``fakecfs fault MOUNTPOINT ...``: inject faults into a running emulated node.

Each subcommand writes one command to MOUNTPOINT/fakecfs/faults (see fakecfs.faults) and
exits 0, or prints why it was refused and exits 1; ``list`` prints the active faults.
"""

from __future__ import annotations

import argparse
import json
import sys

from .control import FaultRefused, Faults
from .faults import HELP

_REGION_HELP = "the heartbeat region (the volume UUID)"
_OPS = ("read", "write", "both")


def add_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "fault", help="inject or clear faults on a running node (fakecfs/faults)",
        description="Inject faults into a running fakecfs node; the emulated kernel reacts "
        "as the real o2hb does (peers declare the node dead, write timeouts fence it, bad "
        "CRCs are logged and counted as misses). Watch the reactions with "
        "'hbctl events --follow' (HBCTL_SYSROOT=MOUNTPOINT). A fence stops heartbeat "
        "without a clean leave; no process is ever killed.",
        epilog="Refusals: unknown region (ENOENT), a region starting or stopping (EBUSY), "
        "freeze when frozen / thaw when not frozen (EALREADY), bad arguments (EINVAL).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("mountpoint", metavar="MOUNTPOINT")
    fsub = f.add_subparsers(dest="fault", required=True, metavar="FAULT")
    fsub.add_parser("freeze", help=HELP["freeze"], description=HELP["freeze"])
    fsub.add_parser("thaw", help=HELP["thaw"], description=HELP["thaw"])
    c = fsub.add_parser("clear", help=HELP["clear"], description=HELP["clear"] +
                        " (clearing a freeze is a thaw)")
    c.add_argument("kind", nargs="?", choices=("freeze", "eio", "delay", "corrupt", "foreign",
                                               "deadms"), help="only this kind of fault")
    c.add_argument("--region", help="only this region's faults")
    ls = fsub.add_parser("list", help="print the active faults, one command per line")
    ls.add_argument("--json", action="store_true", help="a JSON list of strings")
    e = fsub.add_parser("eio", help=HELP["eio"], description=HELP["eio"])
    e.add_argument("--region", required=True, help=_REGION_HELP)
    e.add_argument("--op", choices=_OPS, default="both", help="which I/O fails (both)")
    d = fsub.add_parser("delay", help=HELP["delay"], description=HELP["delay"])
    d.add_argument("--region", required=True, help=_REGION_HELP)
    d.add_argument("--op", choices=_OPS, default="both", help="which I/O is slow (both)")
    d.add_argument("--ms", type=int, required=True, help="added to each read/write, in ms")
    co = fsub.add_parser("corrupt", help=HELP["corrupt"], description=HELP["corrupt"])
    co.add_argument("--region", required=True, help=_REGION_HELP)
    fo = fsub.add_parser("foreign", help=HELP["foreign"], description=HELP["foreign"])
    fo.add_argument("--region", required=True, help=_REGION_HELP)
    fo.add_argument("--node", type=int, help="the node number the writer claims "
                    "(default: the next slot's; ours gives 'Heartbeat generation mismatch')")
    dm = fsub.add_parser("deadms", help=HELP["deadms"], description=HELP["deadms"])
    dm.add_argument("--region", required=True, help=_REGION_HELP)
    dm.add_argument("--ms", type=int, required=True, help="the hb_dead_ms to write")


def command_of(args: argparse.Namespace) -> str:
    """The control-file command for parsed arguments."""
    words = [args.fault]
    if args.fault == "clear" and args.kind:
        words.append(args.kind)
    for key in ("region", "op", "ms", "node"):
        value = getattr(args, key, None)
        if value is not None:
            words.append(f"{key}={value}")
    return " ".join(words)


def main(args: argparse.Namespace) -> int:
    faults = Faults(args.mountpoint)
    try:
        if args.fault == "list":
            active = faults.active()
            print(json.dumps(active) if args.json else "\n".join(active))
            return 0
        faults.command(command_of(args))
    except OSError as exc:
        msg = str(exc) if isinstance(exc, FaultRefused) else f"{faults.path}: {exc.strerror}"
        print(f"fakecfs fault: {msg}", file=sys.stderr)
        return 1
    return 0
