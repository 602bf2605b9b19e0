"""The generic configfs object model: items, groups, attributes and the VFS rules.

This is what ``fs/configfs`` does for any subsystem, independent of o2nm/o2hb:

- an *item* is a directory whose files are its attributes, all created at once;
- a *group* is an item in which mkdir makes new items (``make_item``); groups have
  *default groups* that cannot be removed (EPERM);
- each write(2) to an attribute is one ``store()`` of at most 4095 bytes; reads are served
  from a per-open buffer filled by ``show()`` (that buffer lives in the shell);
- rmdir: EPERM for default groups, EBUSY for pinned items, ENOTEMPTY when a user-made item
  sits below (attributes do not count), else the item and its attributes go at once;
- files cannot be created (EACCES), nor unlinked, renamed, linked or symlinked (EPERM).

Readdir follows Linux 6.1 (the kernel of the real-kernel lane): every dirent is
head-inserted, so entries list newest first. Pure code: no I/O, no clock.
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .tree import DirEntry, Entry, FileEntry, KernelError

SIMPLE_ATTR_SIZE = 4096
PAGE_SIZE = 4096
MODE_RW = 0o644
MODE_RO = 0o444


@dataclass(frozen=True)
class AttrSpec:
    """One attribute of an item type: the CONFIGFS_ATTR / CONFIGFS_ATTR_RO macros."""

    name: str
    show: Callable[[ConfigItem], str] | None
    store: Callable[[ConfigItem, bytes], object] | None = None

    @property
    def mode(self) -> int:
        return MODE_RW if self.store is not None else MODE_RO


class AttrFile(FileEntry):
    """An attribute file of a configfs item."""

    def __init__(self, item: ConfigItem, spec: AttrSpec) -> None:
        super().__init__(name=spec.name, mode=stat.S_IFREG | spec.mode, parent=item)
        self.item = item
        self.spec = spec

    def size(self) -> int:
        return PAGE_SIZE

    def check_open(self, read: bool, write: bool) -> None:
        if self.dead or self.item.dead:
            raise KernelError(errno.ENOENT)
        # configfs checks the inode's current mode (chmod persists) and the callbacks,
        # even for root: pid (0444, no store) can never be opened for writing.
        if write and (not self.mode & 0o222 or self.spec.store is None):
            raise KernelError(errno.EACCES)
        if read and (not self.mode & 0o444 or self.spec.show is None):
            raise KernelError(errno.EACCES)

    def show(self) -> bytes:
        if self.item.dead:
            raise KernelError(errno.ENOENT)
        assert self.spec.show is not None
        text = self.spec.show(self.item).encode("latin-1")
        if len(text) > SIMPLE_ATTR_SIZE:
            raise KernelError(errno.EIO, "show() returned more than a page")
        return text

    def store(self, data: bytes) -> object:
        """One write(2): at most 4095 bytes reach the store; returns count or an effect."""
        if self.item.dead:
            raise KernelError(errno.ENOENT)
        if not data:
            raise KernelError(errno.EFAULT)
        assert self.spec.store is not None
        page = data[: SIMPLE_ATTR_SIZE - 1]
        result = self.spec.store(self.item, page)
        return len(page) if result is None else result


class ConfigItem(DirEntry):
    """A config_item: a directory holding its attributes (and, for groups, children)."""

    attr_specs: Sequence[AttrSpec] = ()

    def __init__(self, name: str, *, default: bool = False) -> None:
        super().__init__(name=name, mode=stat.S_IFDIR | 0o755)
        self.default = default  # a default group: created with its parent, rmdir -> EPERM
        self.pinned = 0  # configfs_depend_item count: rmdir -> EBUSY
        self._entries: list[Entry] = []  # creation order; 6.1 readdir shows it reversed
        for spec in self.attr_specs:
            self._attach(AttrFile(self, spec))

    def _attach(self, entry: Entry) -> Entry:
        entry.parent = self
        self._entries.append(entry)
        return entry

    def children(self) -> list[Entry]:
        return list(reversed(self._entries))

    def lookup(self, name: str) -> Entry | None:
        for entry in self._entries:
            if entry.name == name:
                return entry
        return None

    def items(self) -> list[ConfigItem]:
        """Child items and groups in creation order (not attributes)."""
        return [e for e in self._entries if isinstance(e, ConfigItem)]

    def user_items(self) -> list[ConfigItem]:
        return [e for e in self.items() if not e.default]

    def mkdir(self, name: str) -> Entry:
        if self.lookup(name) is not None:
            raise KernelError(errno.EEXIST)
        raise KernelError(errno.EPERM, "lack of mkdir returns EPERM")

    def rmdir(self, name: str) -> object:
        child = self.lookup(name)
        if child is None:
            raise KernelError(errno.ENOENT)
        if not isinstance(child, ConfigItem):
            raise KernelError(errno.ENOTDIR)
        if child.default:
            raise KernelError(errno.EPERM, "default groups cannot be removed")
        if child.pinned:
            raise KernelError(errno.EBUSY, "item is pinned")
        if _has_user_items(child):
            raise KernelError(errno.ENOTEMPTY)
        self._entries.remove(child)
        _mark_dead(child)
        return self.drop_item(child)

    def drop_item(self, child: ConfigItem) -> object:
        """The type's drop_item callback; returns an effect for the shell, or None."""
        return None


class ConfigGroup(ConfigItem):
    """A config_group: mkdir inside makes an item through ``make_item``."""

    def add_default_group(self, group: ConfigItem) -> ConfigItem:
        group.default = True
        self._attach(group)
        return group

    def mkdir(self, name: str) -> Entry:
        if self.lookup(name) is not None:
            raise KernelError(errno.EEXIST)
        item = self.make_item(name)
        self._attach(item)
        return item

    def make_item(self, name: str) -> ConfigItem:
        raise KernelError(errno.EPERM, "lack of mkdir returns EPERM")


def _has_user_items(item: ConfigItem) -> bool:
    """configfs_detach_prep: user-made items below (through default groups) block rmdir."""
    return any(not c.default or _has_user_items(c) for c in item.items())


def _mark_dead(item: ConfigItem) -> None:
    """After detach, open attribute files answer ENOENT."""
    item.dead = True
    for entry in item._entries:
        entry.dead = True
        if isinstance(entry, ConfigItem):
            _mark_dead(entry)
