"""The misc devices a user-stack node has, as files of the sysroot.

Loading ``ocfs2_stack_user`` registers the misc device ``ocfs2_control`` (udev names it
``/dev/misc/ocfs2_control``) and pulls in fs/dlm, which registers ``dlm-control``. fakecfs
presents them as files under ``dev/misc/`` of its sysroot, with ``proc/misc`` listing them
(``fakecfs run`` places both at the real paths):

* ``dev/misc/ocfs2_control``: the T01 protocol of :mod:`fakecfs.stack_user`, state per
  open file;
* ``dev/misc/dlm-control``: what the pcmk tools probe (libdlm's ``dlm_kernel_version``):
  a read of exactly 12 bytes gives the device version {6, 0, 2} as three native u32, any
  other read EINVAL (fs/dlm's ``device_read``). Lock requests (writes) are not emulated:
  EOPNOTSUPP, logged;
* ``proc/misc``: the host's list (what any other reader expects there) plus both devices
  with minor 0. The files are FUSE files, not device nodes, so their ``st_rdev`` is 0, and
  libdlm matches ``minor(st_rdev)`` against this list.

The user-stack state (daemons, node number, live connections) is readable at the
fakecfs-only ``fakecfs/stack_user``.
"""

from __future__ import annotations

import errno
import logging
import stat
import struct
from collections.abc import Callable

from .stack_user import EmergencyRestart, NodeDown, UserStack
from .tree import FileHandle, HandleFile, KernelError

log = logging.getLogger("fakecfs.misc")

DLM_DEVICE_VERSION = (6, 0, 2)  # DLM_DEVICE_VERSION_MAJOR/MINOR/PATCH of Linux 6.1
DLM_VERSION_SIZE = 12
OUR_DEVICES = ("ocfs2_control", "dlm-control")
FILE_MINOR = 0  # minor(st_rdev) of a FUSE file


def proc_misc_text(host: str, loaded: bool) -> str:
    """``/proc/misc``: the host's "minor name" lines, ours first once the module is loaded.

    The host's own ocfs2_control/dlm-control lines (a host with the modules) are left
    out: the tools must find the emulated ones.
    """
    lines = [line for line in host.splitlines()
             if line.split()[1:2] and line.split()[1] not in OUR_DEVICES]
    if loaded:
        lines = [f"{FILE_MINOR:3d} {name}" for name in OUR_DEVICES] + lines
    return "".join(f"{line}\n" for line in lines)


class _ControlHandle(FileHandle):
    def __init__(self, device: ControlDevice) -> None:
        self.device = device
        self.open = device.stack.open()

    def read(self, offset: int, size: int) -> bytes:
        return self.device.stack.read(self.open, offset, size)

    def write(self, data: bytes) -> int:
        count, effect = self.device.stack.write(self.open, data)
        if isinstance(effect, NodeDown):
            self.device.on_node_down(effect)
        return count

    def release(self) -> None:
        effect = self.device.stack.release(self.open)
        if isinstance(effect, EmergencyRestart):
            self.device.on_restart(effect)


class ControlDevice(HandleFile):
    """``dev/misc/ocfs2_control``: each open is a :class:`ControlOpen`."""

    def __init__(self, stack: UserStack, on_node_down: Callable[[NodeDown], None],
                 on_restart: Callable[[EmergencyRestart], None]) -> None:
        super().__init__(name="ocfs2_control", mode=stat.S_IFREG | 0o660)
        self.stack = stack
        self.on_node_down = on_node_down
        self.on_restart = on_restart

    def check_open(self, read: bool, write: bool) -> None:
        if self.dead:
            raise KernelError(errno.ENOENT)

    def open_handle(self) -> FileHandle:
        return _ControlHandle(self)


class _DlmControlHandle(FileHandle):
    def read(self, offset: int, size: int) -> bytes:
        if size != DLM_VERSION_SIZE:
            log.info("dlm: non-version read from control device %d", size)
            raise KernelError(errno.EINVAL)
        return struct.pack("=3I", *DLM_DEVICE_VERSION)

    def write(self, data: bytes) -> int:
        log.warning("(fakecfs) dlm-control: lockspace and lock requests are not emulated")
        raise KernelError(errno.EOPNOTSUPP)


class DlmControlDevice(HandleFile):
    """``dev/misc/dlm-control``: only the version read libdlm's probe makes."""

    def __init__(self) -> None:
        super().__init__(name="dlm-control", mode=stat.S_IFREG | 0o660)

    def check_open(self, read: bool, write: bool) -> None:
        if self.dead:
            raise KernelError(errno.ENOENT)

    def open_handle(self) -> FileHandle:
        return _DlmControlHandle()
