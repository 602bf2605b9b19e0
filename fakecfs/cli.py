"""``fakecfs``: mount, unmount and inspect an emulated OCFS2 o2cb kernel.

    fakecfs mount [--background] [--hb-interval-ms N] [--strict] MOUNTPOINT
    fakecfs umount MOUNTPOINT
    fakecfs run MOUNTPOINT [--node NAME] [--device IMAGE] -- CMD ...
    fakecfs cluster up|status|down|bench DIR [--nodes N] ...
    fakecfs fault MOUNTPOINT freeze|thaw|clear|list|eio|delay|corrupt|foreign|deadms ...

The mount's root is a sysroot (sys/kernel/config/cluster, sys/fs/ocfs2, sys/fs/o2cb,
sys/kernel/debug/o2hb, proc/sys/fs/ocfs2/nm/hb_ctl_path): point hbctl at it with
HBCTL_SYSROOT=MOUNTPOINT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import clustercli, daemon, faultcli

if TYPE_CHECKING:
    from .kernel import KernelOptions

PROG = "fakecfs"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="An emulated Linux kernel for the OCFS2 o2cb heartbeat stack "
        "(configfs o2nm/o2hb, sysfs, debugfs) with a real disk heartbeat, over FUSE.",
        epilog="Point hbctl or ocfs2_hb_ctl at a mount with HBCTL_SYSROOT=MOUNTPOINT.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    m = sub.add_parser(
        "mount",
        help="mount an emulated kernel at MOUNTPOINT",
        description="Mount one emulated kernel. Its root is a sysroot holding "
        "sys/kernel/config/cluster, sys/fs/ocfs2, sys/fs/o2cb, sys/kernel/debug/o2hb, "
        "proc/sys/fs/ocfs2/nm/hb_ctl_path, dlm (ocfs2_dlmfs), proc/misc and (user stacks) "
        "dev/misc. SIGTERM/SIGINT stop heartbeat cleanly and unmount.",
    )
    m.add_argument("mountpoint", metavar="MOUNTPOINT")
    m.add_argument("--background", "-b", action="store_true",
                   help="daemonize; return once the mount answers")
    m.add_argument("--hb-interval-ms", type=int, default=2000, metavar="N",
                   help="heartbeat period in ms (kernel: 2000; use e.g. 100 in tests)")
    m.add_argument("--strict", action="store_true",
                   help="refuse regular image files for 'dev', like the real kernel")
    m.add_argument("--hb-ctl-path", default="/sbin/ocfs2_hb_ctl", metavar="PATH",
                   help="initial value of proc/sys/fs/ocfs2/nm/hb_ctl_path")
    m.add_argument("--dlm-dir", metavar="DIR",
                   help="where the emulated ocfs2_dlmfs keeps its host-wide lock files; nodes "
                   "exclude each other only when they share DIR (default: DIR 'dlm' in the "
                   "state dir, shared by one user's nodes on this host)")
    m.add_argument("--cluster-stack", default="o2cb", metavar="LABEL",
                   help="initial sys/fs/ocfs2/cluster_stack (4 chars; pcmk or cman loads the "
                   "user plugin: dev/misc/ocfs2_control, dev/misc/dlm-control, proc/misc)")
    m.add_argument("--dlm-recover-callbacks", action="store_true",
                   help="present sys/fs/ocfs2/dlm_recover_callback_support, as kernels since "
                   "2014 do: the tools then skip ocfs2_controld (default: controld mode)")
    m.add_argument("--log", metavar="FILE",
                   help="log file (default: stderr; with --background a file in the state dir)")
    m.add_argument("--debug", action="store_true", help="log every kernel event")
    m.add_argument("--trace", metavar="FILE",
                   help="append every configfs mkdir/rmdir/write to FILE as JSON lines "
                   "{op, path, value, result} (result: 0 or bytes written, or -errno); "
                   "writes to dev/misc/ocfs2_control too")
    u = sub.add_parser("umount", help="stop heartbeat cleanly and unmount MOUNTPOINT")
    u.add_argument("mountpoint", metavar="MOUNTPOINT")
    faultcli.add_parser(sub)
    clustercli.add_parser(sub)
    # Listed for --help only: main() hands `run` and its arguments to fakecfs.run as a whole.
    sub.add_parser("run", add_help=False,
                   help="run CMD with MOUNTPOINT's surfaces at their real paths "
                   "(fakecfs run MOUNTPOINT [--node NAME] [--device IMAGE] -- CMD ...)")
    return p


def _fail(msg: str) -> int:
    print(f"{PROG}: {msg}", file=sys.stderr)
    return 1


def _prepare_mountpoint(path: str) -> str | None:
    """Return an error message, or None when ``path`` can be mounted on."""
    if daemon.is_dead_mount(path):
        print(f"{PROG}: {path}: left dead by a killed fakecfs daemon "
              "(Transport endpoint is not connected); unmounting it", file=sys.stderr)
        try:
            daemon.unmount(path, lazy=True)
        except OSError as exc:
            return f"{path}: cannot unmount the dead mount: {exc.strerror}"
    if not os.path.isdir(path):
        return f"{path}: not a directory"
    if daemon.daemon_pid(path) is not None and daemon.is_mounted(path):
        return f"{path}: already mounted by fakecfs (pid {daemon.daemon_pid(path)})"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return ("/dev/fuse is missing or not accessible: run as root, or 'chmod 0666 "
                "/dev/fuse' (what udev does), or in a container pass --device /dev/fuse")
    return None


def _trace_writer(path: str) -> Callable[[str, str, str | None, int], None]:
    """A kernel trace hook appending one JSON line per operation (flushed at once)."""
    f = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives with the daemon

    def trace(op: str, p: str, value: str | None, result: int) -> None:
        f.write(json.dumps({"op": op, "path": p, "value": value, "result": result}) + "\n")

    return trace


def _setup_logging(args: argparse.Namespace, path: str | None) -> None:
    level = logging.DEBUG if args.debug else logging.INFO
    fmt = "%(asctime)s fakecfs[%(process)d] %(name)s: %(message)s"
    if path:
        logging.basicConfig(filename=path, level=level, format=fmt)
    else:
        logging.basicConfig(stream=sys.stderr, level=level, format=fmt)


def _mount(args: argparse.Namespace) -> int:
    from .kernel import KernelOptions

    mountpoint = os.path.abspath(args.mountpoint)
    if args.hb_interval_ms < 1:
        return _fail("--hb-interval-ms must be at least 1")
    if len(args.cluster_stack) != 4 or not args.cluster_stack.isprintable():
        return _fail(f"--cluster-stack {args.cluster_stack!r}: a stack label is 4 characters "
                     "(o2cb, pcmk, cman)")
    error = _prepare_mountpoint(mountpoint)
    if error:
        return _fail(error)
    options = KernelOptions(
        hb_interval_ms=args.hb_interval_ms, strict=args.strict, hb_ctl_path=args.hb_ctl_path,
        cluster_stack=args.cluster_stack, recover_callbacks=args.dlm_recover_callbacks,
        mountpoint=mountpoint,
        trace=_trace_writer(args.trace) if args.trace else None,
        dlm_dir=os.path.abspath(args.dlm_dir) if args.dlm_dir else None,
    )
    allow_other = os.geteuid() == 0
    if not args.background:
        _setup_logging(args, args.log)
        try:
            _serve(mountpoint, options, allow_other, ready=None)
        except RuntimeError as exc:  # pyfuse3.init failures (permissions, no FUSE)
            return _fail(f"{mountpoint}: cannot mount: {exc}")
        return 0
    return _daemonize(args, mountpoint, options, allow_other)


def _serve(mountpoint: str, options: KernelOptions, allow_other: bool,
           ready: Callable[[], None] | None) -> None:
    """Serve until unmounted, with a pid file naming this process (for fakecfs umount)."""
    from .serve import serve

    with open(daemon.pid_file(mountpoint), "w", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")
    try:
        serve(mountpoint, options, allow_other=allow_other, ready=ready)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(daemon.pid_file(mountpoint))


def _daemonize(args: argparse.Namespace, mountpoint: str, options: KernelOptions,
               allow_other: bool) -> int:
    """Fork a daemon; the parent returns once the mount answers (or the child failed)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        with os.fdopen(rfd, "rb") as r:
            status = r.read()
        if status.startswith(b"ok"):
            return 0
        _, st = os.waitpid(pid, 0)
        msg = status.decode(errors="replace").strip() or f"daemon exited with status {st}"
        return _fail(msg)
    # The child: a new session, stdio away from the caller's terminal and pipes. Whatever
    # fails is written to the pipe the parent waits on.
    os.close(rfd)

    def tell_parent(text: str) -> None:
        with contextlib.suppress(OSError):
            os.write(wfd, text.encode())

    code = 1
    try:
        try:
            _detach(args, mountpoint)
        except Exception as exc:
            tell_parent(f"{mountpoint}: cannot start the daemon: {exc}\n")
        else:

            def ready() -> None:
                tell_parent("ok\n")
                os.close(wfd)

            try:
                _serve(mountpoint, options, allow_other, ready)
                code = 0
            except Exception as exc:
                tell_parent(f"{mountpoint}: cannot mount: {exc}\n")
                logging.getLogger("fakecfs").exception("daemon failed")
    finally:
        os._exit(code)


def _detach(args: argparse.Namespace, mountpoint: str) -> None:
    """The daemon's own session, its stdio on its log file instead of the caller's."""
    os.setsid()
    log_path = args.log or daemon.log_file(mountpoint)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    _setup_logging(args, None)


def _umount(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    if daemon.is_dead_mount(mountpoint):
        daemon.unmount(mountpoint, lazy=True)
        print(f"{PROG}: {mountpoint}: its daemon was dead; unmounted", file=sys.stderr)
        return 0
    pid = daemon.daemon_pid(mountpoint)
    if pid is not None:
        if daemon.stop_daemon(pid):
            return 0
        return _fail(f"{mountpoint}: daemon {pid} did not stop within 30 s")
    if not daemon.is_mounted(mountpoint):
        return _fail(f"{mountpoint}: not mounted")
    try:
        daemon.unmount(mountpoint)
    except OSError as exc:
        return _fail(f"{mountpoint}: {exc.strerror}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run":
        from . import run

        return run.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "mount":
        return _mount(args)
    if args.command == "fault":
        return faultcli.main(args)
    if args.command == "cluster":
        return clustercli.main(args)
    return _umount(args)


if __name__ == "__main__":
    sys.exit(main())
