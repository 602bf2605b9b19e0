"""Emulated superblocks and mounts: the part of the VFS the ocfs2 heartbeat lifecycle needs.

On a real kernel one block device has one ocfs2 superblock however often it is mounted:
a second ``mount`` of the device, ``mount --bind`` and ``mount --rbind`` all add mounts
that share it, and only when the last of them goes does put_super run — and with it the
o2dlm shutdown (the heartbeat region is unpinned) and ``ocfs2_hb_ctl -K -u UUID``
(kernel-o2hb.md §10.3). This module is that bookkeeping, as a pure core: a
:class:`MountTable` of :class:`Superblock` s keyed by device identity and the
:class:`Mount` s on them, the commands of fakecfs's control file, and the mount-time
checks of ocfs2 + ``o2cb_cluster_check`` as a function of facts. No I/O, no trio: the
shell (:mod:`fakecfs.usermode`) resolves devices, reads superblocks, pins regions and
runs the helper.

The mounts are *virtual*: fakecfs cannot make a real ocfs2 mount, so a mount's DIR is
only a name in this table (absolute, normalised), never a directory on the host. The
control surface is ``MOUNTPOINT/fakecfs/mounts``, outside every real kernel path:

* reading it gives one line per mount, oldest first, like /proc/mounts but with the
  last two fields replaced by the superblock id and the volume UUID::

      /tmp/x.img /mnt/a ocfs2 rw,heartbeat=local sb1 B7E82B346F634EEA831B1E24655B60BE

* each write(2) is one command (fields separated by blanks, octal escapes ``\\040``
  for blanks inside paths, as in /proc/mounts): ``mount DEVICE DIR [OPTIONS]``,
  ``bind SRC DST``, ``rbind SRC DST``, ``umount DIR``, ``remount DIR [OPTIONS]``. It
  returns once the command is done — for the last umount of a superblock, once the
  helper has exited (UMH_WAIT_PROC). Errors are the syscalls' errnos.

Mount semantics kept: same device (same ``st_rdev``, or same ``(st_dev, st_ino)`` for an
image file) = same superblock, whatever path names it; mounts stack (``umount DIR``
removes the newest mount on DIR); umount of a mount with mounts below it is EBUSY; a
bind of a path inside a mount binds that mount's superblock; rbind also copies every
mount below SRC, shifted to DST; remount changes the options of every mount of DIR's
superblock (ro/rw and the rest; ocfs2 refuses a change of heartbeat mode with EINVAL, and
takes no heartbeat reference). Not kept: mount propagation, lazy umount, per-mount
(bind) remount flags.
"""

from __future__ import annotations

import errno
import itertools
import posixpath
from dataclasses import dataclass, field

from hbctl.mtab import escape, unescape

from .tree import KernelError

FSTYPE = "ocfs2"
CONTROL_DIR = "fakecfs"
MOUNTS_FILE = "mounts"
HB_OPTIONS = ("local", "global", "none")


# -- commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MountRequest:
    device: str
    dir: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class BindRequest:
    src: str
    dst: str
    recursive: bool


@dataclass(frozen=True)
class UmountRequest:
    dir: str


@dataclass(frozen=True)
class RemountRequest:
    dir: str
    options: tuple[str, ...]


Request = MountRequest | BindRequest | UmountRequest | RemountRequest


@dataclass(frozen=True)
class MountCommand:
    """Effect of a write to the control file: carry out ``request``; return ``count``."""

    request: Request
    count: int


def _abs_dir(path: str) -> str:
    if not path.startswith("/"):
        raise KernelError(errno.EINVAL, f"mount directory {path!r} is not absolute")
    return posixpath.normpath(path).replace("//", "/")


def parse_command(data: bytes) -> Request:
    """One control write -> a request; EINVAL for anything malformed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise KernelError(errno.EINVAL, "command is not UTF-8") from e
    words = [unescape(w) for w in text.split()]
    if not words:
        raise KernelError(errno.EINVAL, "empty command")
    verb, args = words[0], words[1:]
    if verb == "mount" and len(args) in (2, 3):
        opts = tuple(o for o in (args[2].split(",") if len(args) == 3 else []) if o)
        return MountRequest(args[0], _abs_dir(args[1]), opts)
    if verb in ("bind", "rbind") and len(args) == 2:
        return BindRequest(_abs_dir(args[0]), _abs_dir(args[1]), verb == "rbind")
    if verb == "umount" and len(args) == 1:
        return UmountRequest(_abs_dir(args[0]))
    if verb == "remount" and len(args) in (1, 2):
        opts = tuple(o for o in (args[1].split(",") if len(args) == 2 else []) if o)
        return RemountRequest(_abs_dir(args[0]), opts)
    raise KernelError(errno.EINVAL, f"bad command {text.strip()!r}: use 'mount DEV DIR "
                      "[OPTS]', 'bind SRC DST', 'rbind SRC DST', 'umount DIR' or "
                      "'remount DIR [OPTS]'")


def heartbeat_option(options: tuple[str, ...]) -> str:
    """The ``heartbeat=`` mount option (the last one wins); "none" when absent."""
    mode = "none"
    for opt in options:
        if opt.startswith("heartbeat="):
            mode = opt.split("=", 1)[1]
            if mode not in HB_OPTIONS:
                raise KernelError(errno.EINVAL, f"bad mount option {opt!r}")
    return mode


# -- mount-time checks (ocfs2_verify_heartbeat, stackglue, o2cb_cluster_check) --------------


def stack_option(options: tuple[str, ...]) -> str | None:
    """The ``cluster_stack=`` mount option mount.ocfs2 passes for user stacks (last wins)."""
    label = None
    for opt in options:
        if opt.startswith("cluster_stack="):
            label = opt.split("=", 1)[1]
    return label


@dataclass(frozen=True)
class MountFacts:
    """What the shell found out for a first mount of a device."""

    local_volume: bool  # OCFS2_FEATURE_INCOMPAT_LOCAL_MOUNT
    volume_stack: str | None  # None/"" = classic o2cb
    heartbeat: str  # the heartbeat= option: local, global or none
    cluster_stack: str  # /sys/fs/ocfs2/cluster_stack
    this_node: int  # 255 when no local node is configured
    node_heartbeating: bool  # this node in the live map of the heartbeat it mounts with
    stack_option: str | None = None  # the cluster_stack= mount option


def check_new_superblock(f: MountFacts) -> str:
    """The kernel's refusals for a new superblock; returns the plugin it will use
    (``"o2cb"`` or ``"user"``), or ``""`` for a local (unclustered) volume.

    Messages are the kernel's log lines. Stricter than the kernel in one point: with
    ``heartbeat=local`` this node must be live on *this volume's* region (the kernel
    accepts any live region); mount.ocfs2 always starts that region first.
    """
    label = f.volume_stack or "o2cb"
    user = label != "o2cb"
    # ocfs2_verify_userspace_stack
    if not user and f.stack_option:
        raise KernelError(errno.EINVAL, "cluster stack passed to mount, but this filesystem "
                          "does not support it")
    if user and not f.local_volume and f.stack_option != label:
        raise KernelError(errno.EINVAL, f'cluster stack passed to mount ("{f.stack_option or ""}'
                          f'") does not match the filesystem ("{label}")')
    # ocfs2_verify_heartbeat
    if f.heartbeat != "none":
        if f.local_volume:
            raise KernelError(errno.EINVAL, "Cannot heartbeat on a locally mounted device.")
        if user:
            raise KernelError(errno.EINVAL, "Userspace stack expected, but o2cb heartbeat "
                              "arguments passed to mount")
    if f.local_volume:
        return ""
    if f.heartbeat == "none" and not user:
        raise KernelError(errno.EINVAL,
                          "Heartbeat has to be started to mount a read-write clustered device.")
    # ocfs2_stack_driver_get: the plugin is loaded on demand; the label must be running
    if f.cluster_stack != label:
        raise KernelError(errno.EBUSY, "A different cluster stack is in use")
    if user:
        return "user"
    if f.this_node >= 255:
        raise KernelError(errno.EINVAL, "This node has not been configured.")
    if not f.node_heartbeating:
        raise KernelError(errno.EINVAL, "o2cb heartbeat has not been started.")
    return "o2cb"


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceKey:
    """A device's identity: ("blk", rdev) or ("file", st_dev, st_ino)."""

    kind: str
    a: int
    b: int = 0


@dataclass(eq=False)
class Superblock:
    """One mounted ocfs2 volume; lives while any mount uses it."""

    sid: str
    key: DeviceKey
    device: str  # as named by the first mount
    uuid: str
    clustered: bool  # not a local-mount volume: put_super runs the helper
    holds: object | None = None  # the shell's pin (the heartbeat region), opaque here
    plugin: str = "o2cb"  # the stack plugin it holds: "o2cb" or "user"


@dataclass(eq=False)
class Mount:
    """One mount of a superblock at a (virtual) directory."""

    sb: Superblock
    dir: str
    device: str
    options: tuple[str, ...]


def _under(path: str, top: str) -> bool:
    """``path`` is ``top`` or inside it."""
    return top == "/" or path == top or path.startswith(top + "/")


@dataclass
class MountTable:
    """The emulated kernel's ocfs2 mounts and superblocks."""

    mounts: list[Mount] = field(default_factory=list)  # oldest first
    superblocks: dict[DeviceKey, Superblock] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def superblock(self, key: DeviceKey) -> Superblock | None:
        return self.superblocks.get(key)

    def new_superblock(self, key: DeviceKey, device: str, uuid: str,
                       clustered: bool, plugin: str = "o2cb") -> Superblock:
        assert key not in self.superblocks
        sb = Superblock(f"sb{next(self._ids)}", key, device, uuid, clustered, plugin=plugin)
        self.superblocks[key] = sb
        return sb

    def attach(self, sb: Superblock, dir_: str, device: str,
               options: tuple[str, ...]) -> Mount:
        m = Mount(sb, dir_, device, options)
        self.mounts.append(m)
        return m

    def mounts_of(self, sb: Superblock) -> list[Mount]:
        return [m for m in self.mounts if m.sb is sb]

    def _covering(self, path: str) -> Mount:
        """The mount a path resolves into: the newest one with the longest DIR over it."""
        best: Mount | None = None
        for m in self.mounts:
            if _under(path, m.dir) and (best is None or len(m.dir) >= len(best.dir)):
                best = m
        if best is None:
            raise KernelError(errno.EINVAL, f"{path} is not on an ocfs2 mount")
        return best

    def bind(self, src: str, dst: str) -> list[Mount]:
        """``mount --bind``: DST gets the superblock SRC is on."""
        m = self._covering(src)
        return [self.attach(m.sb, dst, m.device, m.options)]

    def rbind(self, src: str, dst: str) -> list[Mount]:
        """``mount --rbind``: the bind plus a copy of every mount below SRC."""
        snapshot = list(self.mounts)
        made: list[Mount] = []
        try:
            top = self._covering(src)
        except KernelError:
            top = None
        if top is not None:
            made.append(self.attach(top.sb, dst, top.device, top.options))
        for m in snapshot:
            if m is not top and _under(m.dir, src) and m.dir != src:
                target = dst + m.dir[len(src.rstrip("/")):]
                made.append(self.attach(m.sb, target, m.device, m.options))
        if not made:
            raise KernelError(errno.EINVAL, f"no ocfs2 mount at or below {src}")
        return made

    def umount(self, dir_: str) -> tuple[Mount, Superblock | None]:
        """Remove the newest mount on DIR; the superblock is returned if it was its last
        mount (put_super is due, and the superblock has left the table)."""
        on_dir = [m for m in self.mounts if m.dir == dir_]
        if not on_dir:
            raise KernelError(errno.EINVAL, f"{dir_} is not a mount point")
        m = on_dir[-1]
        if any(o.dir != dir_ and _under(o.dir, dir_) for o in self.mounts):
            raise KernelError(errno.EBUSY, f"{dir_} has mounts below it")
        self.mounts.remove(m)
        if self.mounts_of(m.sb):
            return m, None
        del self.superblocks[m.sb.key]
        return m, m.sb

    def drop_all(self) -> list[Superblock]:
        """A machine that restarts: every mount is gone at once, no put_super runs."""
        gone = list(self.superblocks.values())
        self.mounts.clear()
        self.superblocks.clear()
        return gone
    def remount(self, dir_: str, options: tuple[str, ...]) -> list[Mount]:
        """``mount -o remount``: new options for every mount of DIR's superblock.

        The heartbeat mode stays what it was (a different ``heartbeat=`` is EINVAL, as
        ocfs2_remount says "Cannot change heartbeat mode on remount"); ``rw`` is implied
        unless ``ro`` is given; ``remount`` itself is not an option.
        """
        on_dir = [m for m in self.mounts if m.dir == dir_]
        if not on_dir:
            raise KernelError(errno.EINVAL, f"{dir_} is not a mount point")
        sb = on_dir[-1].sb
        old = [o for o in on_dir[-1].options if o.startswith("heartbeat=")]
        new = [o for o in options if o.startswith("heartbeat=")]
        if new and old and heartbeat_option(tuple(new)) != heartbeat_option(tuple(old)):
            raise KernelError(errno.EINVAL, "Cannot change heartbeat mode on remount")
        rest = [o for o in options
                if o not in ("remount", "rw") and not o.startswith("heartbeat=")]
        changed = self.mounts_of(sb)
        for m in changed:
            m.options = (*rest, *old)
        return changed

    def render(self) -> str:
        """The control file's text: one /proc/mounts-like line per mount."""
        return "".join(
            f"{escape(m.device)} {escape(m.dir)} {FSTYPE} "
            f"{','.join(('rw', *m.options)) if 'ro' not in m.options else ','.join(m.options)} "
            f"{m.sb.sid} {m.sb.uuid}\n"
            for m in self.mounts
        )
