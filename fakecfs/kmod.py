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

* The mounts of the stack's own filesystems (``mount -t ocfs2_dlmfs ... /dlm`` and the
  like, made under ``fakecfs run``) are recorded too, as a host's mounts outlive the
  shell that made them: ``mount FSTYPE DIR`` loads the module that provides FSTYPE (the
  kernel's request_module on mount) and holds it (its refcount counts the mount, so
  ``modprobe -r`` is EBUSY until the umount); ``umount DIR`` lets go. ``fakecfs run``
  mounts them again in every new namespace.

Loading or unloading changes only this table: the emulated surfaces stay (fakecfs cannot
take /sys/kernel/config/cluster away from a process that has it open).

Control files under ``MOUNTPOINT/fakecfs/``: ``modules`` (read: /proc/modules lines;
write: ``load NAME`` or ``unload NAME``), ``filesystems`` (what the loaded modules and the
built-ins register, in /proc/filesystems form), ``fsmounts`` (read: ``FSTYPE DIR`` lines;
write: ``mount FSTYPE DIR`` or ``umount DIR``).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from .tree import KernelError
from .vfs import escape, unescape

BUILTIN_FILESYSTEMS = (("configfs", True), ("debugfs", True))
# Where each kernel filesystem's tree is in a fakecfs sysroot.
FS_TREES = {"configfs": "sys/kernel/config", "debugfs": "sys/kernel/debug",
            "ocfs2_dlmfs": "dlm"}


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
    # User stacks (pcmk, cman): fs/dlm and the user plugin, which registers ocfs2_control.
    ModuleInfo("dlm", (), (), 225280),
    ModuleInfo("ocfs2_stack_user", ("ocfs2_stackglue", "dlm"), (), 24576),
)}
BOOT_MODULES = ("ocfs2_nodemanager", "ocfs2_dlm", "ocfs2_stackglue", "ocfs2_stack_o2cb")


@dataclass
class ModuleTable:
    """Loaded modules, in load order (the newest first in /proc/modules, as the kernel)."""

    loaded: list[str] = field(default_factory=lambda: list(BOOT_MODULES))
    fs_mounts: list[tuple[str, str]] = field(default_factory=list)  # (fstype, dir)

    def users(self, name: str) -> list[str]:
        return [m for m in self.loaded if name in MODULES[m].depends]

    def _mounts_of(self, name: str) -> int:
        provided = {fs for fs, _nodev in MODULES[name].filesystems}
        return sum(1 for fstype, _dir in self.fs_mounts if fstype in provided)

    def refcount(self, name: str) -> int:
        return len(self.users(name)) + self._mounts_of(name)

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
        if self.refcount(name):
            raise KernelError(errno.EBUSY, f"Module {name} is in use")
        self.loaded.remove(name)
        done = [name]
        for dep in MODULES[name].depends:
            if dep in self.loaded and not self.refcount(dep):
                done += self.unload(dep)
        return done

    def mount_fs(self, fstype: str, dir_: str) -> list[str]:
        """A mount of one of the stack's filesystems: the modules loaded for it."""
        if fstype not in FS_TREES:
            raise KernelError(errno.ENODEV, f"unknown filesystem type {fstype!r}")
        if not dir_.startswith("/"):
            raise KernelError(errno.EINVAL, f"mount directory {dir_!r} is not absolute")
        builtin = {fs for fs, _nodev in BUILTIN_FILESYSTEMS}
        provider = [m for m, info in MODULES.items()
                    if fstype in {fs for fs, _nodev in info.filesystems}]
        loaded = [] if fstype in builtin else self.load(provider[0])
        self.fs_mounts.append((fstype, dir_))
        return loaded

    def umount_fs(self, dir_: str) -> str:
        """The umount of the newest such mount on DIR; its type."""
        for i in range(len(self.fs_mounts) - 1, -1, -1):
            if self.fs_mounts[i][1] == dir_:
                return self.fs_mounts.pop(i)[0]
        raise KernelError(errno.EINVAL, f"{dir_} is not a mount point")

    def render_fs_mounts(self) -> str:
        return "".join(f"{fstype} {escape(dir_)}\n" for fstype, dir_ in self.fs_mounts)

    def store_fs_mount(self, data: bytes) -> str:
        """One control write: ``mount FSTYPE DIR`` or ``umount DIR``; what was done."""
        words = [unescape(w) for w in data.decode("utf-8", "replace").split()]
        if len(words) == 3 and words[0] == "mount":
            loaded = self.mount_fs(words[1], words[2])
            return f"mount {words[1]} {words[2]}" + (f" (loaded {', '.join(loaded)})"
                                                      if loaded else "")
        if len(words) == 2 and words[0] == "umount":
            return f"umount {self.umount_fs(words[1])} {words[1]}"
        raise KernelError(errno.EINVAL, "use 'mount FSTYPE DIR' or 'umount DIR'")

    def proc_modules(self) -> str:
        """/proc/modules: name size refcount users state address, newest first."""
        lines = []
        for name in reversed(self.loaded):
            users = self.users(name)
            used_by = ",".join(users) + "," if users else "-"
            lines.append(f"{name} {MODULES[name].size} {self.refcount(name)} {used_by} Live "
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
