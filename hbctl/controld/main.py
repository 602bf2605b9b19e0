"""The ``ocfs2_controld.pcmk`` / ``ocfs2_controld.cman`` commands: checks, pid lock, fork.

Before anything runs: the options, and the stack check (``cluster_stack`` must name this
daemon's stack, upstream's message otherwise). Then the pid-file lock and, without ``-D``,
the fork: the command returns 0 once the daemon listens, or 1 with the reason it could not
start. The daemon itself is ``hbctl.controld.daemon.run``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from collections.abc import Sequence

import trio

from hbctl.controld.daemon import VERSION, DaemonExit, ReadyPipe, run
from hbctl.controld.options import PID_FILE, USAGE, Options, UsageError, parse_args
from hbctl.errors import O2cbError
from hbctl.stack import determine_stack
from hbctl.sysroot import from_env


def lock_pid_file(path: str) -> int:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _first_exit(exc: BaseException) -> DaemonExit | None:
    if isinstance(exc, DaemonExit):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_exit(inner)
            if found is not None:
                return found
    return None


def _run_guarded(stack: str, o: Options, ready: ReadyPipe) -> int:
    """Lock the pid file, run, and turn a DaemonExit into an exit status."""
    prog = f"ocfs2_controld.{stack}"
    failure: str | None = None
    status = 0
    if o.pid_file:
        try:
            lock_pid_file(o.pid_file)
        except OSError as e:
            busy = e.errno in (errno.EAGAIN, errno.EACCES)
            failure = (f"cannot lock {o.pid_file}: "
                       f"{'another ocfs2_controld runs' if busy else e.strerror}")
            status = 1
    if failure is None:
        try:
            status = trio.run(run, stack, o, ready)
        except BaseException as e:
            exit_ = _first_exit(e)
            if exit_ is None:
                raise
            status = exit_.status
            failure = str(exit_) if exit_.status else None
    if failure is not None:
        if ready.fd is not None:
            ready.say(failure)
        else:
            print(f"{prog}: {failure}", file=sys.stderr)
    return status


def _daemonize(stack: str, o: Options) -> int:
    """Fork; the parent returns once the child listens (0) or failed (1, its reason)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as r:
            answer = r.read().decode(errors="replace").strip()
        if answer == "ok":
            return 0
        print(f"ocfs2_controld.{stack}: {answer or 'daemon died while starting'}",
              file=sys.stderr)
        return 1
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os._exit(_run_guarded(stack, o, ReadyPipe(write_end)))


def main(stack: str, argv: Sequence[str] | None = None) -> int:
    prog = f"ocfs2_controld.{stack}"
    try:
        o = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        print("Please use '-h' for usage.", file=sys.stderr)
        return 1
    if o.action == "help":
        print(USAGE.format(prog=prog, pid_file=PID_FILE), end="")
        return 0
    if o.action == "version":
        print(f"ocfs2_controld (hbctl, protocol {VERSION}, stack {stack})")
        return 0
    sysroot = from_env(o.sysroot)
    try:
        running = determine_stack(sysroot)
    except O2cbError as e:
        print(f"{prog}: {e.message} while determining the current cluster stack",
              file=sys.stderr)
        return 1
    if running != stack:
        print(f'{prog}: This daemon supports the "{stack}" stack, but the "{running}" stack '
              "is in use", file=sys.stderr)
        return 1
    if o.debug:
        return _run_guarded(stack, o, ReadyPipe(None))
    return _daemonize(stack, o)


def main_pcmk() -> int:
    return main("pcmk")


def main_cman() -> int:
    return main("cman")
