"""``ocfs2_hb_ctl``: a drop-in for the C tool, same options, words and exit codes.

The kernel runs ``/sbin/ocfs2_hb_ctl -K -u <UUID>`` when an ocfs2 volume goes
away, mount.ocfs2 runs ``-P -d <dev>``, the o2cb init script parses ``-I``'s
``"<UUID>: N refs"``: all of them must see what the C tool gives. So:

* options are parsed like glibc ``getopt(argc, argv, "ISKPd:u:n:h")``, with GNU
  permutation (the service operand may stand anywhere; ``POSIXLY_CORRECT``
  stops at the first operand) and glibc's diagnostics, prefixed with argv[0];
* validation errors print the usage on stderr and exit 1, ``-h`` on stdout
  with exit 0, and every exit code is 0 or 1;
* failures are com_err lines, ``ocfs2_hb_ctl: <message> while starting
  heartbeat``, including the stray blank line after "Cannot initialize
  cluster".

On a user cluster stack (pcmk, cman) ``-S``/``-K`` register and remove a service with
ocfs2_controld as Debian's libo2cb does (hbctl.userstack); ``-I`` still prints the
semaphore count, which means nothing there (as upstream), and ``-P`` fails (as upstream).

Heavy modules are imported only where needed, so the kernel's and the init
script's calls (``-K -u``, ``-I -u``) start quickly.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~8 ms of start-up)

if TYPE_CHECKING:
    from typing import TextIO

    from hbctl.ondisk import HeartbeatDesc, Volume
    from hbctl.sysroot import Sysroot

PROGNAME = "ocfs2_hb_ctl"
OPTSTRING = "ISKPd:u:n:h"
IONICE_PATH = "/usr/bin/ionice"
KERNEL_SERVICE = "ocfs2"  # the service of the kernel's `-K -u UUID` call
CLASSIC_STACK = "o2cb"  # hbctl.stack's, without importing it for -I's start-up

USAGE_LINES = (
    "-S -d <device> <service>",
    "-S -u <uuid> <service>",
    "-K -d <device> <service>",
    "-K -u <uuid> <service>",
    "-I -d <device>",
    "-I -u <uuid>",
    "-P -d <device> [-n <io_priority>]",
    "-P -u <uuid> [-n <io_priority>]",
    "-h",
)


def usage_text() -> str:
    first, *rest = USAGE_LINES
    lines = [f"Usage: {PROGNAME} {first}"]
    lines += [f"       {PROGNAME} {line}" for line in rest]
    return "\n".join(lines) + "\n"


# -- option parsing (a core: argv in, options and diagnostics out) ---------------


def getopt(
    args: list[str], optstring: str, prog: str, posixly_correct: bool = False
) -> tuple[list[tuple[str, str | None]], list[str], list[str]]:
    """glibc getopt(3) without long options: (options, operands, diagnostics).

    Options are returned in order, unknown ones and ones missing their
    argument as ``("?", None)``. Operands are collected as GNU permutation
    would leave them at the end of argv; after ``--`` everything is an operand;
    ``-`` alone is an operand. With ``posixly_correct`` (or a leading ``+`` in
    ``optstring``) the first operand ends option processing.
    """
    if optstring.startswith("+"):
        posixly_correct = True
        optstring = optstring[1:]
    opts: list[tuple[str, str | None]] = []
    operands: list[str] = []
    diags: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            operands += args[i:]
            break
        if not arg.startswith("-") or arg == "-":
            if posixly_correct:
                operands += args[i - 1 :]
                break
            operands.append(arg)
            continue
        j = 1
        while j < len(arg):
            c = arg[j]
            j += 1
            pos = optstring.find(c)
            if pos < 0 or c == ":":
                diags.append(f"{prog}: invalid option -- '{c}'\n")
                opts.append(("?", None))
                continue
            if optstring[pos + 1 : pos + 2] == ":":
                if j < len(arg):
                    opts.append((c, arg[j:]))
                elif i < len(args):
                    opts.append((c, args[i]))
                    i += 1
                else:
                    diags.append(f"{prog}: option requires an argument -- '{c}'\n")
                    opts.append(("?", None))
                break
            opts.append((c, None))
    return opts, operands, diags


def atoi(text: str) -> int:
    """C atoi as glibc does it: strtol clamped to long, then truncated to int."""
    s = text.lstrip(" \t\n\v\f\r")
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    digits = ""
    for ch in s:
        if not ("0" <= ch <= "9"):
            break
        digits += ch
    value = sign * int(digits) if digits else 0
    value = max(-(1 << 63), min((1 << 63) - 1, value))
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


class Options:
    """The parsed command line (a plain class: dataclasses costs ~10 ms of start-up)."""

    __slots__ = ("action", "device", "io_prio", "service", "uuid")

    def __init__(self) -> None:
        self.action: str | None = None  # "start", "stop", "refinfo", "ionice", "usage"
        self.device: str | None = None
        self.uuid: str | None = None
        self.io_prio = 0
        self.service: str | None = None


_ACTIONS = {"S": "start", "K": "stop", "I": "refinfo", "P": "ionice", "h": "usage"}


def parse_args(
    args: list[str], prog: str, posixly_correct: bool = False
) -> tuple[Options | None, list[str]]:
    """``read_options`` + ``process_options``: the options, or None for usage-and-exit-1."""
    opts, operands, diags = getopt(args, OPTSTRING, prog, posixly_correct)
    o = Options()
    bad = False
    for name, value in opts:
        if name in _ACTIONS:
            o.action = _ACTIONS[name]  # the last action given wins
        elif name == "d":
            o.device = value
        elif name == "u":
            o.uuid = value
        elif name == "n":
            o.io_prio = atoi(value or "")
        else:
            bad = True
    if bad:
        return None, diags
    if operands:
        o.service = operands[0]
    return (o if _valid(o) else None), diags


def _valid(o: Options) -> bool:
    one_of = (o.uuid is None) != (o.device is None)
    if o.action == "start":
        return one_of and o.service is not None
    if o.action == "stop":
        if not one_of:
            return False
        if o.service is None:
            # the kernel's call form: `-K -u UUID`, no service
            if o.uuid is None:
                return False
            o.service = KERNEL_SERVICE
        return True
    if o.action == "refinfo":
        return one_of
    if o.action == "ionice":
        return one_of and 0 <= o.io_prio <= 7
    return o.action == "usage"


# -- the shell ------------------------------------------------------------------


class _Failed(Exception):
    """Exit 1 after printing ``line`` (None: print nothing, as for -P)."""

    def __init__(self, line: str | None) -> None:
        super().__init__(line)
        self.line = line


def _write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``ocfs2_hb_ctl`` with ``argv`` (default ``sys.argv[1:]``); returns 0 or 1."""
    args = sys.argv[1:] if argv is None else list(argv)
    prog = prog if prog is not None else (sys.argv[0] if sys.argv and sys.argv[0] else PROGNAME)
    posix = "POSIXLY_CORRECT" in os.environ
    opts, diags = parse_args(args, prog, posix)
    for line in diags:
        _write(sys.stderr, line)
    if opts is None:
        _write(sys.stderr, usage_text())
        return 1
    if opts.action == "usage":
        _write(sys.stdout, usage_text())
        return 0
    try:
        _run(opts)
    except _Failed as f:
        if f.line is not None:
            _write(sys.stderr, f.line)
        return 1
    return 0


def _com_err(message: str, context: str) -> _Failed:
    from hbctl.errors import com_err

    return _Failed(com_err(PROGNAME, message, context))


def _run(o: Options) -> None:
    from hbctl.errors import O2cbError
    from hbctl.stack import o2cb_init
    from hbctl.sysroot import from_env

    sysroot = from_env()
    try:
        stack = o2cb_init(sysroot)
    except O2cbError as e:
        # The C tool passes "Cannot initialize cluster\n" to com_err, which
        # adds its own newline: the blank line is part of the contract.
        raise _com_err(e.message, "Cannot initialize cluster\n") from e
    if stack != CLASSIC_STACK and o.action == "ionice":
        # Upstream asks corosync's cmap for the cluster, then reads a configfs region that
        # user stacks do not have: it always fails there, silently.
        raise _Failed(None)

    volume: Volume | None = None
    desc: HeartbeatDesc | None = None
    if o.uuid is None:
        assert o.device is not None
        volume, desc = _read_desc(o.device, "while reading uuid")
        uuid = volume.uuid
    else:
        uuid = o.uuid

    import signal

    # As the C tool: nothing but a crash may interrupt a start or stop halfway.
    keep = {signal.SIGTRAP, signal.SIGSEGV}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.valid_signals()) - keep)
    try:
        if o.action == "start":
            _start(sysroot, stack, o, uuid, volume, desc)
        elif o.action == "stop":
            _stop(sysroot, stack, o, uuid, volume)
        elif o.action == "refinfo":
            _refinfo(uuid)
        elif o.action == "ionice":
            _ionice(sysroot, uuid, o.io_prio)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _read_desc(device: str, context: str) -> tuple[Volume, HeartbeatDesc]:
    from hbctl.devices import read_volume_with_sector
    from hbctl.ondisk import OnDiskError

    try:
        return read_volume_with_sector(device)
    except OnDiskError as e:
        raise _com_err(e.com_err, context) from e


def _lookup(uuid: str, context: str) -> tuple[str, Volume, HeartbeatDesc]:
    """Find the device holding ``uuid`` (``-u``): "Directory entry not found" if none."""
    from hbctl.devices import find_by_uuid
    from hbctl.errors import Code

    device = find_by_uuid(uuid)
    if device is None:
        raise _com_err(Code.OCFS2_FILE_NOT_FOUND.message, context)
    try:
        volume, desc = _read_desc(device, context)
    except _Failed:
        # The scan read it a moment ago; treat a vanished device as not found.
        raise _com_err(Code.OCFS2_FILE_NOT_FOUND.message, context) from None
    return device, volume, desc


def _start(
    sysroot: Sysroot,
    stack: str,
    o: Options,
    uuid: str,
    volume: Volume | None,
    desc: HeartbeatDesc | None,
) -> None:
    from hbctl.errors import O2cbError
    from hbctl.regions import begin_group_join, user_start

    context = "while starting heartbeat"
    device = o.device
    if device is None:
        device, volume, desc = _lookup(uuid, context)
    assert desc is not None
    try:
        if stack != CLASSIC_STACK:
            assert o.service is not None
            user_start(sysroot, stack, volume, uuid, device, o.service)
            return
        begin_group_join(sysroot, stack, volume, uuid, device, desc, persist=True)
    except O2cbError as e:
        raise _com_err(e.message, context) from e


def _stop(sysroot: Sysroot, stack: str, o: Options, uuid: str, volume: Volume | None) -> None:
    from hbctl.errors import O2cbError
    from hbctl.mounting import is_mount_service, mount_group_leave, tool_group_leave
    from hbctl.regions import user_stop

    context = "while stopping heartbeat"
    if o.device is None:
        _device, volume, _desc = _lookup(uuid, context)
    try:
        if stack != CLASSIC_STACK:
            # One "ocfs2" service however many mounts: the kernel's -K ends it (upstream's
            # answer to the mounted flag); every other service is a tool's own.
            assert o.service is not None
            user_stop(sysroot, stack, volume, uuid, o.service)
            return
        # The mount's service ("ocfs2", also the kernel's -K default) is put_super's stop:
        # it clears the mounted flag (hbctl.mounting). Any other service is a tool's.
        if is_mount_service(o.service):
            mount_group_leave(sysroot, stack, volume, uuid)
        else:
            tool_group_leave(sysroot, stack, volume, uuid, persist=True)
    except O2cbError as e:
        raise _com_err(e.message, context) from e


def _refinfo(uuid: str) -> None:
    from hbctl.errors import O2cbError
    from hbctl.semaphores import region_refs

    try:
        num = region_refs(uuid)
    except O2cbError as e:
        raise _com_err(e.message, "while reading reference counts") from e
    _write(sys.stdout, f"{uuid}: {num} refs\n")


def _ionice(sysroot: Sysroot, uuid: str, prio: int) -> None:
    """Give the region's heartbeat thread real-time I/O priority; silent on errors."""
    from hbctl.errors import O2cbError
    from hbctl.regions import hb_thread_pid

    if not os.access(IONICE_PATH, os.X_OK):
        raise _Failed(None)
    try:
        pid = hb_thread_pid(sysroot, None, uuid)
    except O2cbError:
        raise _Failed(None) from None
    import subprocess

    try:
        rc = subprocess.call(["ionice", "-c1", f"-n{prio}", f"-p{pid}"], executable=IONICE_PATH)
    except OSError:
        raise _Failed(None) from None
    if rc != 0:
        raise _Failed(None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
