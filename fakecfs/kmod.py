"""The kernel modules of the o2cb stack, as bookkeeping: what /proc/modules would list.

Debian's ``/etc/init.d/o2cb`` decides what to do from ``/proc/filesystems`` and
``/proc/modules`` and loads what is missing with ``modprobe``. An emulated kernel has no
modules, but it can keep the table a host with them would show, so the script (and
``lsmod``) see a consistent story: :class:`ModuleTable` is that table, a pure core.

* The stack's modules and their dependencies as on Debian's 6.1 kernel; configfs and
  debugfs are built in (never listed, always in /proc/filesystems).
* At boot the modules whose surfaces fakecfs always shows are loaded
  (``ocfs2_nodemanager`` for configfs's ``cluster/``, ``ocfs2_stackglue`` and
  ``ocfs2_stack_o2cb`` for ``/sys/fs/ocfs2``).
* ``load NAME`` is ``modprobe NAME`` (dependencies first, idempotent); ``unload NAME`` is
  ``modprobe -r NAME``: EBUSY while another loaded module uses it, and dependencies left
  unused go too. Unknown names are ENOENT.

Loading or unloading changes only this table: the emulated surfaces stay (fakecfs cannot
take /sys/kernel/config/cluster away from a process that has it open).

Control file ``MOUNTPOINT/fakecfs/modules``: read gives /proc/modules lines; each write(2)
is ``load NAME`` or ``unload NAME``. ``MOUNTPOINT/fakecfs/filesystems`` lists the
filesystems the loaded modules (and the built-ins) register, in /proc/filesystems form.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from .tree import KernelError

BUILTIN_FILESYSTEMS = (("configfs", True), ("debugfs", True))


@dataclass(frozen=True)
class ModuleInfo:
    name: str
    depends: tuple[str, ...] = ()
    filesystems: tuple[tuple[str, bool], ...] = ()  # (name, nodev)
    size: int = 16384  # what /proc/modules shows; plausible, not measured


MODULES = {m.name: m for m in (
    ModuleInfo("ocfs2_nodemanager", (), (), 172032),
    ModuleInfo("ocfs2_stackglue", (), (), 24576),
    ModuleInfo("ocfs2_stack_o2cb", ("ocfs2_stackglue", "ocfs2_dlm"), (), 16384),
    ModuleInfo("ocfs2_dlm", ("ocfs2_nodemanager",), (), 294912),
    ModuleInfo("ocfs2_dlmfs", ("ocfs2_stackglue",), (("ocfs2_dlmfs", True),), 36864),
    ModuleInfo("ocfs2", ("ocfs2_stackglue", "ocfs2_nodemanager"), (("ocfs2", False),),
               1720320),
)}
BOOT_MODULES = ("ocfs2_nodemanager", "ocfs2_dlm", "ocfs2_stackglue", "ocfs2_stack_o2cb")


@dataclass
class ModuleTable:
    """Loaded modules, in load order (the newest first in /proc/modules, as the kernel)."""

    loaded: list[str] = field(default_factory=lambda: list(BOOT_MODULES))

    def users(self, name: str) -> list[str]:
        return [m for m in self.loaded if name in MODULES[m].depends]

    def load(self, name: str) -> list[str]:
        """modprobe NAME: the modules newly loaded, dependencies first."""
        info = MODULES.get(name)
        if info is None:
            raise KernelError(errno.ENOENT, f"Module {name} not found")
        done: list[str] = []
        for dep in info.depends:
            done += self.load(dep)
        if name not in self.loaded:
            self.loaded.append(name)
            done.append(name)
        return done

    def unload(self, name: str) -> list[str]:
        """modprobe -r NAME: the modules removed (NAME, then dependencies left unused)."""
        if name not in MODULES:
            raise KernelError(errno.ENOENT, f"Module {name} not found")
        if name not in self.loaded:
            raise KernelError(errno.ENOENT, f"Module {name} is not currently loaded")
        if self.users(name):
            raise KernelError(errno.EBUSY, f"Module {name} is in use")
        self.loaded.remove(name)
        done = [name]
        for dep in MODULES[name].depends:
            if dep in self.loaded and not self.users(dep):
                done += self.unload(dep)
        return done

    def proc_modules(self) -> str:
        """/proc/modules: name size refcount users state address, newest first."""
        lines = []
        for name in reversed(self.loaded):
            users = self.users(name)
            used_by = ",".join(users) + "," if users else "-"
            lines.append(f"{name} {MODULES[name].size} {len(users)} {used_by} Live "
                         "0x0000000000000000\n")
        return "".join(lines)

    def filesystems(self) -> str:
        """What the built-ins and loaded modules add to /proc/filesystems."""
        found = list(BUILTIN_FILESYSTEMS)
        for name in self.loaded:
            found += MODULES[name].filesystems
        return "".join(f"{'nodev' if nodev else ''}\t{fs}\n" for fs, nodev in found)

    def stack_plugins(self) -> list[str]:
        """/sys/fs/ocfs2/loaded_cluster_plugins: the ocfs2_stack_* modules loaded."""
        prefix = "ocfs2_stack_"
        return [m[len(prefix):] for m in self.loaded if m.startswith(prefix)]

    def store(self, data: bytes) -> list[str]:
        """One control write: ``load NAME`` or ``unload NAME``."""
        words = data.decode("utf-8", "replace").split()
        if len(words) != 2 or words[0] not in ("load", "unload"):
            raise KernelError(errno.EINVAL, "use 'load NAME' or 'unload NAME'")
        return (self.load if words[0] == "load" else self.unload)(words[1])
