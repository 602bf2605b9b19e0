"""Where the kernel surfaces are: the real host (``/``) or an emulated sysroot.

``HBCTL_SYSROOT=DIR`` (or ``--sysroot DIR``) points every path below at DIR, the
root of a fakecfs mount. Unset, the real host is used, and configfs is looked for
where libo2cb looks: ``/sys/kernel/config``, then ``/config``, accepted only if
statfs reports configfs's magic (on an emulated sysroot the magic cannot be
reported through FUSE, so the check is skipped there: the sysroot was named).
"""

from __future__ import annotations

import os

CONFIGFS_MAGIC = 0x62656570
ENV_SYSROOT = "HBCTL_SYSROOT"


class KernelUnavailable(Exception):
    """The kernel surfaces (configfs, the o2cb modules) are not there."""


class Sysroot:
    """Paths of the kernel surfaces under one root.

    A plain class, not a dataclass: ``ocfs2_hb_ctl -I`` imports this, and importing
    dataclasses costs about 10 ms of start-up.
    """

    __slots__ = ("root",)

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sysroot) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Sysroot({self.root!r})"

    @property
    def emulated(self) -> bool:
        return self.root not in ("", "/")

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel.lstrip("/"))

    @property
    def cluster_stack_file(self) -> str:
        return self.path("sys/fs/ocfs2/cluster_stack")

    @property
    def interface_revision_file(self) -> str:
        return self.path("sys/fs/o2cb/interface_revision")

    @property
    def max_locking_protocol_file(self) -> str:
        return self.path("sys/fs/ocfs2/max_locking_protocol")

    @property
    def hb_ctl_path_file(self) -> str:
        return self.path("proc/sys/fs/ocfs2/nm/hb_ctl_path")

    @property
    def debugfs_o2hb(self) -> str:
        return self.path("sys/kernel/debug/o2hb")

    def configfs(self) -> str:
        """The configfs mount, checked like libo2cb's ``init_configfs``."""
        for rel in ("sys/kernel/config", "config"):
            cand = self.path(rel)
            if not os.path.isdir(cand):
                continue
            if self.emulated or _statfs_type(cand) == CONFIGFS_MAGIC:
                return cand
        where = f" under {self.root}" if self.emulated else ""
        hint = (
            "is the fakecfs mount alive?"
            if self.emulated
            else "load the modules (modprobe ocfs2_nodemanager) and mount configfs "
            "(mount -t configfs none /sys/kernel/config)"
        )
        raise KernelUnavailable(f"configfs not found{where}: {hint}")

    def cluster_root(self) -> str:
        return os.path.join(self.configfs(), "cluster")


def _statfs_type(path: str) -> int:
    """f_type of statfs(2); os.statvfs does not expose it, so ask libc."""
    import ctypes

    class _Statfs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]

    libc = ctypes.CDLL(None, use_errno=True)
    buf = _Statfs()
    if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return 0
    return buf.f_type & 0xFFFFFFFF


def from_env(explicit: str | None = None) -> Sysroot:
    """The sysroot named by ``--sysroot`` or ``HBCTL_SYSROOT``, else the host."""
    root = explicit or os.environ.get(ENV_SYSROOT) or "/"
    return Sysroot(os.path.abspath(root))
