"""Where put_super's usermode helper runs: this node, with the emulated kernel at its real paths.

The kernel runs ``hb_ctl_path -K -u UUID`` in the host's root with a bare environment, and
the helper finds configfs at ``/sys/kernel/config`` and the device in ``/proc/partitions``.
fakecfs's daemon has neither at those paths, so it starts the helper through this module,
which prepares what ``fakecfs run`` prepares and then becomes the helper:

* a private mount namespace (the daemon's IPC, UTS and network namespaces are kept: the
  semaphores the helper changes are the node's);
* the sysroot's surfaces bound at ``/sys/kernel/config``, ``/sys/fs/ocfs2``, ... and the
  statfs shim preloaded, so the C ``ocfs2_hb_ctl`` accepts the emulated configfs and our
  ``ocfs2_hb_ctl`` needs no ``HBCTL_SYSROOT``;
* the superblock's device findable by UUID (:mod:`fakecfs.findable`): a ``/proc/partitions``
  line and ``/dev/NAME`` bound to the device the mount opened (an inherited descriptor, so
  it is the same file whatever path named it).

Then it ``execve``s the helper with the kernel's argv (the path as given, no PATH search)
and the kernel's environment (``HOME=/``, ``PATH=...``) plus the shim's three variables
(``LD_PRELOAD``, ``FAKECFS_CONFIGFS_PATHS``, ``FAKECFS_SYSROOT``). If the program cannot be
executed, the errno is written to the status descriptor (the daemon turns it into the
kernel's ``-errno``). If the namespace cannot be prepared (no CAP_SYS_ADMIN and no user
namespaces), the helper runs in the daemon's namespace as before, and a line says so.

Internal command line (the daemon builds it)::

    python -m fakecfs.helperns SYSROOT STATUS_FD [--device LABEL FD]... -- PROG ARG...
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .findable import Device

HELPER_ENV = {"HOME": "/", "PATH": "/sbin:/bin:/usr/sbin:/usr/bin"}


@dataclass(frozen=True)
class Launch:
    """A parsed launcher command line."""

    sysroot: str
    status_fd: int
    devices: tuple[tuple[str, int], ...]  # (label, inherited fd)
    argv: tuple[str, ...]


def launcher_argv(python: str, sysroot: str, status_fd: int,
                  devices: Sequence[tuple[str, int]], argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` through this module."""
    out = [python, "-m", "fakecfs.helperns", sysroot, str(status_fd)]
    for label, fd in devices:
        out += ["--device", label, str(fd)]
    return [*out, "--", *argv]


def parse(args: Sequence[str]) -> Launch:
    """The inverse of :func:`launcher_argv` (without the interpreter); ValueError if bad."""
    args = list(args)
    if "--" not in args:
        raise ValueError("no '--' before the helper's argv")
    cut = args.index("--")
    head, argv = args[:cut], args[cut + 1:]
    if len(head) < 2 or not argv:
        raise ValueError("usage: SYSROOT STATUS_FD [--device LABEL FD]... -- PROG ARG...")
    sysroot, status = head[0], int(head[1])
    devices = []
    rest = head[2:]
    while rest:
        if rest[0] != "--device" or len(rest) < 3:
            raise ValueError(f"unexpected {rest[0]!r}")
        devices.append((rest[1], int(rest[2])))
        rest = rest[3:]
    return Launch(sysroot, status, tuple(devices), tuple(argv))


def helper_env(bound: dict[str, str] | None, preload: str | None,
               sysroot: str) -> dict[str, str]:
    """The kernel's environment, plus the shim's variables when the surfaces are bound."""
    if bound is None or preload is None:
        return dict(HELPER_ENV)
    from .run import command_env

    return command_env(dict(HELPER_ENV), preload, bound, sysroot)


def _device(label: str, fd: int) -> Device | None:
    """The device behind an inherited descriptor, by a path of this namespace.

    A bind mount's source must be in the caller's mount namespace, which ``fd``'s is not
    after unshare: its path (the copy of the daemon's tree) is used, checked to be the
    same file.
    """
    from .findable import Device

    st = os.fstat(fd)
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
        same = os.stat(path)
    except OSError:
        same = None
    if same is None or (same.st_dev, same.st_ino) != (st.st_dev, st.st_ino):
        print(f"(fakecfs) {label} cannot be reached from the daemon's root: the helper "
              "will not find it", file=sys.stderr)
        return None
    size = st.st_size
    if size == 0:  # a block device: fstat says 0, its end says how big
        size = os.lseek(fd, 0, os.SEEK_END)
    return Device(path, label, size)


def prepare(launch: Launch) -> dict[str, str]:
    """Set up this process's namespace; the environment to exec the helper with."""
    from .findable import make_findable
    from .run import RunError, bind_surfaces, enter_namespaces, preload_library

    try:
        preload = preload_library()
        enter_namespaces(None)
        bound = bind_surfaces(launch.sysroot)
        devices = [dev for label, fd in launch.devices
                   if (dev := _device(label, fd)) is not None]
        make_findable(devices)
    except (RunError, OSError) as exc:
        print(f"(fakecfs) cannot prepare the helper's namespace ({exc}); running "
              "it in the daemon's", file=sys.stderr)
        return helper_env(None, None, launch.sysroot)
    return helper_env(bound, preload, launch.sysroot)


def main(args: Sequence[str] | None = None) -> int:
    try:
        launch = parse(sys.argv[1:] if args is None else args)
    except ValueError as exc:
        print(f"fakecfs.helperns: {exc}", file=sys.stderr)
        return 2
    env = prepare(launch)
    for _label, fd in launch.devices:
        os.close(fd)  # bound where needed; the helper must not inherit them
    os.set_inheritable(launch.status_fd, False)  # closes on a successful exec: EOF
    try:
        os.execve(launch.argv[0], list(launch.argv), env)
    except OSError as exc:
        os.write(launch.status_fd, str(exc.errno or 0).encode())
    return 127


if __name__ == "__main__":
    sys.exit(main())
