"""ocfs2_controld's command line: upstream's ``-D -h -V`` and this implementation's options."""

from __future__ import annotations

import getopt
from collections.abc import Sequence
from dataclasses import dataclass

PID_FILE = "/var/run/ocfs2_controld.pid"

USAGE = """\
Usage:

{prog} [options]

Options:

  -D                 Enable debugging code and don't fork (log to stderr)
  -h                 Print this help, then exit
  -V                 Print program version information, then exit

Options of this implementation (not in upstream's daemon):

  --membership MODE  corosync: CPG groups of the corosync in this network namespace;
                     local: a single-node cluster, no corosync;
                     auto (default): corosync if it answers, else local
  --nodeid N         local membership: this node's id (default 1)
  --cluster-name C   local membership: the cluster name MOUNT must carry (default: any)
  --join-delay-ms N  local membership: confirm joins after N ms (default 0)
  --sysroot DIR      kernel surfaces under DIR (default $HBCTL_SYSROOT or /)
  --control-device P the kernel's ocfs2_control (default SYSROOT/dev/misc/ocfs2_control;
                     'none': do not talk to the kernel)
  --pid-file P       lock file (default {pid_file}; 'none': no lock)

The daemon serves the abstract socket @ocfs2_controld_sock of its network namespace.
"""


class UsageError(Exception):
    pass


@dataclass
class Options:
    action: str = "run"
    """run, help or version."""
    debug: bool = False
    membership: str = "auto"
    nodeid: int = 1
    cluster_name: str | None = None
    join_delay_ms: int = 0
    sysroot: str | None = None
    control_device: str | None = None
    pid_file: str | None = PID_FILE


def parse_args(argv: Sequence[str]) -> Options:
    """getopt as upstream (``DhV``) plus long options; UsageError on a bad option."""
    longopts = ["membership=", "nodeid=", "cluster-name=", "join-delay-ms=", "sysroot=",
                "control-device=", "pid-file=", "help", "version"]
    try:
        pairs, rest = getopt.gnu_getopt(list(argv), "DhV", longopts)
    except getopt.GetoptError as e:
        raise UsageError(str(e)) from e
    if rest:
        raise UsageError(f"unexpected argument {rest[0]!r}")
    o = Options()
    for flag, value in pairs:
        if flag == "-D":
            o.debug = True
        elif flag in ("-h", "--help"):
            o.action = "help"
        elif flag in ("-V", "--version"):
            o.action = "version"
        elif flag == "--membership":
            if value not in ("auto", "corosync", "local"):
                raise UsageError(f"--membership must be auto, corosync or local, not {value!r}")
            o.membership = value
        elif flag in ("--nodeid", "--join-delay-ms"):
            try:
                n = int(value, 10)
            except ValueError:
                raise UsageError(f"{flag} needs a number, not {value!r}") from None
            limit = 0xFFFFFFFF if flag == "--nodeid" else 3_600_000
            if not (1 if flag == "--nodeid" else 0) <= n <= limit:
                raise UsageError(f"{flag} {value} is out of range")
            if flag == "--nodeid":
                o.nodeid = n
            else:
                o.join_delay_ms = n
        elif flag == "--cluster-name":
            if not value or " " in value:
                raise UsageError("--cluster-name must be a non-empty word")
            o.cluster_name = value
        elif flag == "--sysroot":
            o.sysroot = value
        elif flag == "--control-device":
            o.control_device = value
        elif flag == "--pid-file":
            o.pid_file = None if value == "none" else value
    return o
