"""``fakecfs run``: run a command with an emulated kernel's surfaces at their real paths.

Unmodified C tools (libo2cb, ``ocfs2_hb_ctl``, ``o2cb``, ``mounted.ocfs2``) only look at
``/sys/kernel/config``, ``/sys/fs/ocfs2``, ``/sys/fs/o2cb`` and ``/proc/sys/fs/ocfs2`` (and
libocfs2's cluster locking at ``/dlm``, once ocfs2_dlmfs is mounted there). This module gives
the command a private mount namespace in which those paths are bind mounts of a fakecfs
sysroot, and preloads a small shim (``preload/fakecfs_preload.so``) that answers ``statfs``
on the configfs path with configfs's magic and on a mounted ``/dlm`` with ocfs2_dlmfs's,
which FUSE cannot report. The shim
also routes ``mount(2)`` of type ocfs2, bind mounts of emulated mounts and their
``umount(2)`` to the sysroot's emulated VFS (``FAKECFS_SYSROOT/fakecfs/mounts``), so an
unmodified ``mount.ocfs2`` and ``umount`` drive the emulated mount lifecycle.

``/sys`` is sysfs: ``/sys/kernel/config`` or ``/sys/fs/ocfs2`` cannot be created there when
the host lacks the modules. We then *mirror* the parent directory: a tmpfs holding bind
mounts of every existing entry, plus the new mount points, moved over the parent. Only the
namespace sees it; the host's tree is never changed.

For user stacks (a sysroot whose ``dev/misc`` holds ocfs2_control and dlm-control) it also
places ``dev/misc`` at ``/dev/misc`` (mirroring ``/dev`` on a tmpfs: ``/dev`` is the host's
devtmpfs, where nothing may be created) and ``proc/misc`` over ``/proc/misc``.

As root (or root of a user namespace) only a mount namespace is made; otherwise a user
namespace mapping the caller to root as well (``unshare --user --map-root-user``). With
``--node NAME`` the command also gets its own IPC namespace (the heartbeat semaphores are
per node), UTS namespace with hostname NAME (o2cb finds the local node by hostname) and
network namespace with ``lo`` up (``@ocfs2_controld_sock`` is per network namespace: a
node's tools and controld share one, two nodes never do). ``--netns PATH`` joins an
existing network namespace instead, one the caller wired to the other nodes.
With ``--device IMAGE`` an image file is made findable by UUID as the C tools look
(:mod:`fakecfs.findable`: a ``/proc/partitions`` line and ``/dev/NAME``).

The namespace is also a host *with the o2cb modules*: kmod (``modprobe``, ``rmmod``,
``lsmod``) is replaced by :mod:`fakecfs.kmodcmd`, which loads and unloads in the emulated
kernel's module table, and the shim shows ``/proc/filesystems``, ``/proc/modules`` and the
mount tables as such a host does and mounts configfs, debugfs and ocfs2_dlmfs from the
sysroot, so Debian's ``/etc/init.d/o2cb`` runs unmodified. Those mounts are on the
emulated kernel's record, and every run makes them again (:func:`restore_fs_mounts`).
At the end the command is exec'd: its exit status is ours.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from . import shim
from .findable import Device, device_of, make_findable

PROG = "fakecfs run"
# What Debian's ocfs2-tools installs: a missing one gets the package named, not just ENOENT.
OCFS2_TOOLS = frozenset({
    "o2cb", "o2cluster", "o2hbmonitor", "o2image", "ocfs2_hb_ctl", "debugfs.ocfs2",
    "fsck.ocfs2", "mkfs.ocfs2", "mount.ocfs2", "mounted.ocfs2", "tunefs.ocfs2",
})

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 2

# Where this package is imported from: helper processes started with a bare environment
# (kmodcmd, helperns) must find it there.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RunError(Exception):
    """``fakecfs run`` cannot set up the namespace; the message says why."""


@dataclass(frozen=True)
class Surface:
    """One piece of the sysroot and where the tools expect it (first usable target wins)."""

    source: str  # relative to the sysroot
    targets: tuple[str, ...]
    required: bool = True
    # Never mkdir the target in its parent (devtmpfs is the host's own /dev even in a
    # private mount namespace): mirror the parent instead; skip it while the sysroot's
    # folder is empty (no user stack loaded), so o2cb nodes keep the host's live /dev.
    mirror_only: bool = False


SURFACES = (
    # libo2cb tries /sys/kernel/config, then /config (o2cb_abi.c:init_configfs).
    Surface("sys/kernel/config", ("/sys/kernel/config", "/config")),
    Surface("sys/fs/ocfs2", ("/sys/fs/ocfs2",)),
    Surface("sys/fs/o2cb", ("/sys/fs/o2cb",)),
    # Read by mount.ocfs2 (hb_ctl_path) and by debugging consumers (o2hbmonitor): optional.
    Surface("proc/sys/fs/ocfs2", ("/proc/sys/fs/ocfs2",), required=False),
    Surface("sys/kernel/debug/o2hb", ("/sys/kernel/debug/o2hb",), required=False),
    # The module parameter telling libo2dlm that this ocfs2_dlmfs serves every stack (the
    # dlmfs tree itself is placed at /dlm by `mount -t ocfs2_dlmfs`, as on a host).
    Surface("sys/module/ocfs2_dlmfs", ("/sys/module/ocfs2_dlmfs",), required=False),
    # User stacks: ocfs2_control and dlm-control (udev's /dev/misc names), and the
    # /proc/misc list libdlm's probe reads. A file bind for /proc/misc.
    Surface("dev/misc", ("/dev/misc",), required=False, mirror_only=True),
    Surface("proc/misc", ("/proc/misc",), required=False),
)


# -- namespaces -------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    ret = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(ret, f"mount {source or fstype} on {target}")


def _write_file(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(text)


def join_netns(path: str) -> None:
    """setns(2) into the network namespace at ``path`` (``ip netns add`` makes them)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise RunError(f"--netns {path}: {exc.strerror}") from exc
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise RunError(f"--netns {path}: setns: {os.strerror(err)} (is it a network "
                           "namespace, and are you root?)")
    finally:
        os.close(fd)


def loopback_up() -> None:
    """Bring ``lo`` up in a new network namespace (corosync and loopback peers need it)."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        got = fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0))
        flags = struct.unpack("16sH14x", got)[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def enter_namespaces(node: str | None, netns: str | None = None) -> str:
    """Unshare a private mount namespace (+ IPC/UTS/network with ``node``); say which kind.

    A node's network namespace is its own, so its ``@ocfs2_controld_sock`` (abstract
    sockets are per network namespace) is never another node's. ``netns`` joins an
    existing one instead (made by the caller and wired to the peers, e.g. a veth pair on
    a bridge, so corosync reaches them).
    """
    if netns:
        join_netns(netns)
    new_net = CLONE_NEWNET if node and not netns else 0
    extra = CLONE_NEWIPC | CLONE_NEWUTS | new_net if node else 0
    errors = []
    try:
        _unshare(CLONE_NEWNS | extra)
        kind = "mount namespace"
    except OSError as exc:
        errors.append(f"unshare(CLONE_NEWNS) failed: {os.strerror(exc.errno or 0)}")
        uid, gid = os.geteuid(), os.getegid()
        try:
            _unshare(CLONE_NEWUSER | CLONE_NEWNS | extra)
        except OSError as exc2:
            errors.append(f"unshare(CLONE_NEWUSER) failed: {os.strerror(exc2.errno or 0)}")
            raise RunError(
                "no mount namespace available (" + "; ".join(errors) + "). Run as root, "
                "enable user namespaces (sysctl user.max_user_namespaces), or in Docker add "
                "--cap-add SYS_ADMIN (or --privileged)"
            ) from exc2
        # What `unshare --map-root-user` does: the caller is root inside, itself outside.
        _write_file("/proc/self/setgroups", "deny")
        _write_file("/proc/self/uid_map", f"0 {uid} 1\n")
        _write_file("/proc/self/gid_map", f"0 {gid} 1\n")
        kind = "user + mount namespace"
    # Our mounts must not leak back to the host (systemd makes / shared).
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    if node:
        socket.sethostname(node)
    if new_net:
        loopback_up()
    return kind


# -- mount points -------------------------------------------------------------------------


def ensure_dir(path: str) -> None:
    """Make ``path`` exist as a directory, mirroring its parent when it cannot be made."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        ensure_dir(parent)
    try:
        os.mkdir(path, 0o755)
    except OSError:
        if parent == "/":
            raise  # never mirror the root itself: /config is only tried where it can be made
        mirror(parent, os.path.basename(path))


def mirror(directory: str, *new: str, files: dict[str, str] | None = None) -> None:
    """Replace ``directory`` (in this namespace) by a tmpfs copy with extra subdirs ``new``
    and extra entries ``files`` (name -> a file bind mounted there).

    Every existing entry is bind mounted (recursively) from the original, so the mirror
    shows what the original shows; symlinks are copied. The tmpfs is assembled in a
    temporary directory and moved over ``directory`` in one step.
    """
    stage = tempfile.mkdtemp(prefix="fakecfs-run-")
    moved = False
    try:
        _mount("tmpfs", stage, "tmpfs", 0, "mode=0755")
        for name in os.listdir(directory):
            src, dst = os.path.join(directory, name), os.path.join(stage, name)
            try:
                if os.path.islink(src):
                    os.symlink(os.readlink(src), dst)
                    continue
                if os.path.isdir(src):
                    os.mkdir(dst)
                else:
                    open(dst, "x").close()
                _mount(src, dst, None, MS_BIND | MS_REC)
            except OSError:
                continue  # unreadable or vanished entries are simply not mirrored
        for name in new:
            os.mkdir(os.path.join(stage, name), 0o755)
        for name, source in (files or {}).items():
            open(os.path.join(stage, name), "x").close()
            _mount(source, os.path.join(stage, name), None, MS_BIND)
        _mount(stage, directory, None, MS_MOVE)
        moved = True
    finally:
        if not moved:  # a half-built mirror must not pin the staging directory
            _libc.umount2(os.fsencode(stage), MNT_DETACH)
        with contextlib.suppress(OSError):
            os.rmdir(stage)


def bind_text(target: str, text: str, mode: int) -> None:
    """Bind a file holding ``text`` over the file ``target`` (in this namespace only).

    The file lives on a private tmpfs whose staging mount is detached at once: the bind
    keeps it alive, and nothing of it is reachable from outside the namespace.
    """
    stage = tempfile.mkdtemp(prefix="fakecfs-run-")
    try:
        _mount("tmpfs", stage, "tmpfs", 0, "mode=0755,size=1m")
        try:
            copy = os.path.join(stage, os.path.basename(target))
            with open(copy, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(copy, mode)
            _mount(copy, target, None, MS_BIND)
        finally:
            _libc.umount2(os.fsencode(stage), MNT_DETACH)
    finally:
        os.rmdir(stage)


def restore_fs_mounts(sysroot: str, bound: dict[str, str]) -> list[str]:
    """Mount again, in this namespace, the stack's filesystems the kernel has on record.

    A host's ``mount -t ocfs2_dlmfs ... /dlm`` outlives the shell that made it; here each
    ``fakecfs run`` is a new namespace, so the emulated kernel keeps the record
    (``fakecfs/fsmounts``) and every run binds those trees again. A directory missing in
    this namespace is skipped. Returns the directories mounted.
    """
    from .kmod import FS_TREES
    from .vfs import unescape

    try:
        with open(os.path.join(sysroot, "fakecfs/fsmounts"), encoding="utf-8") as f:
            records = [line.split(" ", 1) for line in f.read().splitlines() if " " in line]
    except OSError:
        return []
    done = []
    for fstype, escaped in records:
        dir_, tree = unescape(escaped), FS_TREES.get(fstype)
        if tree is None or bound.get(tree) == dir_ or not os.path.isdir(dir_):
            continue  # unknown, already placed (configfs), or nowhere to mount it
        src = os.path.join(sysroot, tree)
        if os.path.isdir(src):
            _mount(src, dir_, None, MS_BIND | MS_REC)
        elif fstype == "ocfs2_dlmfs":
            _mount("fakecfs-dlmfs", dir_, "tmpfs", 0, "mode=0755")
        else:
            continue
        done.append(dir_)
    return done


KMOD_SEARCH = "/usr/sbin:/sbin:/usr/bin:/bin"


def emulate_kmod() -> str | None:
    """Put ``fakecfs.kmodcmd`` where kmod is (modprobe, rmmod, lsmod), in this namespace.

    Returns the path replaced, or None where kmod is not installed.
    """
    found = shutil.which("modprobe", path=KMOD_SEARCH)
    if found is None:
        return None
    target = os.path.realpath(found)
    script = (
        "#!/bin/sh\n# fakecfs run: the o2cb stack's modules, emulated\n"
        f"PYTHONPATH={PACKAGE_PARENT} exec {sys.executable} -m fakecfs.kmodcmd "
        '"$0" "$@"\n'
    )
    bind_text(target, script, 0o755)
    return target


def bind_surfaces(sysroot: str, bound: dict[str, str] | None = None) -> dict[str, str]:
    """Bind every surface of ``sysroot``; return {source: target} of what was bound.

    ``bound`` is filled as each bind is made, so a caller that must undo them (the
    container entrypoint) knows what to undo even when a later one fails.
    """
    if bound is None:
        bound = {}
    for surface in SURFACES:
        src = os.path.join(sysroot, surface.source)
        is_file = os.path.isfile(src)
        if not is_file and not os.path.isdir(src):
            if surface.required:
                raise RunError(f"{src} is missing: is {sysroot} a fakecfs mount?")
            continue
        if surface.mirror_only and not os.listdir(src):
            continue
        problems = []
        for target in surface.targets:
            try:
                if is_file:
                    if not os.path.isfile(target):
                        raise OSError(errno.ENOENT, "no such file to bind over")
                elif surface.mirror_only and not os.path.isdir(target):
                    mirror(os.path.dirname(target), os.path.basename(target))
                else:
                    ensure_dir(target)
                _mount(src, target, None, MS_BIND | MS_REC)
            except OSError as exc:
                problems.append(f"{target}: {exc.strerror or exc}")
                continue
            bound[surface.source] = target
            break
        else:
            if surface.required:
                raise RunError(f"cannot place {src}: " + "; ".join(problems))
    return bound


# -- the command ------------------------------------------------------------------------


def check_sysroot(sysroot: str) -> None:
    cluster = os.path.join(sysroot, "sys/kernel/config/cluster")
    try:
        ok = os.path.isdir(cluster)
    except OSError:
        ok = False
    if not ok:
        if not os.path.isdir(sysroot):
            raise RunError(f"{sysroot}: no such directory")
        raise RunError(f"{sysroot} is not a live fakecfs mount (no sys/kernel/config/cluster): "
                       f"run 'fakecfs mount --background {sysroot}' first")


def command_env(env: dict[str, str], preload: str, bound: dict[str, str],
                sysroot: str) -> dict[str, str]:
    """The command's environment: the shim preloaded, told where configfs sits."""
    out = dict(env)
    previous = out.get("LD_PRELOAD", "")
    out["LD_PRELOAD"] = preload + (f":{previous}" if previous else "")
    out["FAKECFS_CONFIGFS_PATHS"] = bound["sys/kernel/config"]
    out["FAKECFS_SYSROOT"] = sysroot
    return out


def parser(remainder: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run CMD in a private mount namespace where a fakecfs mount's surfaces "
        "sit at /sys/kernel/config (or /config), /sys/fs/ocfs2, /sys/fs/o2cb, "
        "/proc/sys/fs/ocfs2 and /sys/kernel/debug/o2hb, with a shim preloaded so "
        "unmodified ocfs2-tools accept the emulated configfs, and the namespace looks like "
        "a host with the o2cb modules (modprobe/lsmod, /proc/filesystems, /proc/modules, "
        "mount -t configfs|debugfs|ocfs2_dlmfs): Debian's /etc/init.d/o2cb runs as is.",
        epilog="The shim ships as C source: unless a built copy sits next to it (a checkout's "
        "make setup, the Debian package), the first run builds it with cc (or $CC) into "
        "$XDG_CACHE_HOME/fakecfs/ (default ~/.cache/fakecfs/). CMD's exit status is returned; "
        "127 when it is not found.",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="a live fakecfs mount")
    p.add_argument("--node", metavar="NAME",
                   help="also a private IPC namespace (per-node semaphores), UTS namespace "
                   "with hostname NAME and network namespace (lo up; the node's own "
                   "@ocfs2_controld_sock)")
    p.add_argument("--netns", metavar="PATH",
                   help="join the network namespace at PATH (e.g. /run/netns/NAME from "
                   "'ip netns add') instead of making one, so the node's corosync reaches "
                   "its peers; needs root")
    p.add_argument("--device", metavar="IMAGE", action="append", default=[],
                   help="make IMAGE findable by UUID as the C tools look (a /proc/partitions "
                   "line and /dev/BASENAME bound to it, in the namespace only); repeatable")
    if remainder:
        p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    return p


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options and MOUNTPOINT before ``--``, the command after it (never parsed by us)."""
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        args = parser(remainder=False).parse_args(argv[:cut])
        return args, argv[cut + 1:]
    args = parser().parse_args(argv)
    return args, list(args.command)


def _image(path: str) -> Device:
    try:
        return device_of(os.path.abspath(path), path)
    except OSError as exc:
        raise RunError(f"--device {path}: {exc.strerror or exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    args, cmd = parse(sys.argv[1:] if argv is None else argv)
    if not cmd:
        print(f"{PROG}: no command given "
              "(fakecfs run MOUNTPOINT [--node NAME] [--device IMAGE] -- CMD ...)",
              file=sys.stderr)
        return 1
    sysroot = os.path.abspath(args.mountpoint)
    try:
        check_sysroot(sysroot)
        devices = [_image(path) for path in args.device]
        preload = shim.preload_library()
        enter_namespaces(args.node, args.netns)
        bound = bind_surfaces(sysroot)
        make_findable(devices)
    except (RunError, shim.ShimError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    try:
        emulate_kmod()
    except OSError as exc:  # the rest works without it: say so, and go on
        print(f"{PROG}: modprobe/lsmod not emulated: {exc}", file=sys.stderr)
    try:
        restore_fs_mounts(sysroot, bound)
    except OSError as exc:
        print(f"{PROG}: the kernel's earlier configfs/debugfs/dlmfs mounts not restored: "
              f"{exc}", file=sys.stderr)
    env = command_env(dict(os.environ), preload, bound, sysroot)
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as exc:
        hint = ""
        if exc.errno == errno.ENOENT and os.path.basename(cmd[0]) in OCFS2_TOOLS:
            hint = " (it comes with ocfs2-tools: on Debian, apt-get install ocfs2-tools)"
        print(f"{PROG}: {cmd[0]}: {exc.strerror}{hint}", file=sys.stderr)
        return 127 if exc.errno == errno.ENOENT else 126
    return 0  # not reached
