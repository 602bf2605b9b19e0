"""The small sysfs, procfs and debugfs files the ocfs2 tools read, with the kernel's rules.

- ``sys/fs/ocfs2/*`` (stackglue): cluster_stack (4-char label, EBUSY while another stack is
  active), loaded/active plugin lists, max_locking_protocol, dlm_recover_callback_support;
- ``sys/fs/o2cb/interface_revision``: "5";
- ``proc/sys/fs/ocfs2/nm/hb_ctl_path``: a proc_dostring sysctl (max 256);
- ``sys/kernel/debug/o2hb/...``: livenodes bitmaps, region num, elapsed time, pinned.
Pure code: each file is a show/store pair over state owned by the kernel.
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Callable

from .tree import FileEntry, KernelError

HB_CTL_PATH_MAX = 256


class ValueFile(FileEntry):
    """A sysfs/proc/debugfs file: ``show`` renders it, ``store`` (if any) takes a write."""

    def __init__(
        self,
        name: str,
        show: Callable[[], str],
        store: Callable[[bytes], None] | None = None,
        *,
        mode: int | None = None,
        size: int = 4096,
    ) -> None:
        if mode is None:
            mode = 0o644 if store is not None else 0o444
        super().__init__(name=name, mode=stat.S_IFREG | mode)
        self._show = show
        self._store = store
        self._size = size

    def size(self) -> int:
        return self._size

    def check_open(self, read: bool, write: bool) -> None:
        if self.dead:
            raise KernelError(errno.ENOENT)
        if write and self._store is None:
            raise KernelError(errno.EACCES)

    def show(self) -> bytes:
        return self._show().encode("latin-1")

    def store(self, data: bytes) -> object:
        assert self._store is not None
        self._store(data)
        return len(data)


USER_PLUGIN = "user"  # the plugin of every label but o2cb (ocfs2_stack_user)


class StackGlue:
    """``/sys/fs/ocfs2``: the cluster stack label and whether a mount holds the stack.

    The o2cb plugin is loaded from the start. The user plugin (the module
    ``ocfs2_stack_user``, in the kernel's module table) is loaded by ``modprobe``, or the
    first time a user label is written to ``cluster_stack`` or a user-stack volume is
    mounted: fakecfs stands in for the init script's (or the mount's) modprobe.
    ``dlm_recover_callback_support`` exists only with ``recover_callbacks`` (kernels since
    2014 have it; without it the tools use ocfs2_controld, the mode fakecfs emulates).
    """

    def __init__(self, recover_callbacks: bool = False) -> None:
        self.cluster_stack = "o2cb"
        self.active_users = 0  # mounts holding the stack (ocfs2_stack_driver_get)
        self.recover_callbacks = recover_callbacks
        # The stack plugin modules loaded, oldest first (the kernel's module table says;
        # o2cb at boot), and how to load one (modprobe ocfs2_stack_<plugin>).
        self.loaded_plugins: Callable[[], list[str]] = lambda: ["o2cb"]
        self.load_plugin: Callable[[str], None] = lambda plugin: None

    def plugin_of(self, label: str) -> str:
        return "o2cb" if label == "o2cb" else USER_PLUGIN

    @property
    def active(self) -> str:
        return self.cluster_stack if self.active_users else ""

    def loaded_plugins_text(self) -> str:
        """What 6.1's show function gives: it prints every name at the *start* of the page
        while counting their lengths, so the oldest plugin (o2cb, last in its newest-first
        list) shows, followed by NUL bytes where the others would be (recorded from the
        real kernel)."""
        page = bytearray(4096)
        total = 0
        for name in reversed(self.loaded_plugins()):  # stackglue's list: newest first
            text = f"{name}\n".encode()
            page[: len(text) + 1] = text + b"\0"
            total += len(text)
        return page[:total].decode("latin-1")

    def store_cluster_stack(self, data: bytes) -> None:
        if not data:
            return
        if data.endswith(b"\n"):
            data = data[:-1]
        if len(data) != 4 or b"\0" in data:
            raise KernelError(errno.EINVAL)
        label = data.decode("latin-1")
        if self.active_users and label != self.cluster_stack:
            raise KernelError(errno.EBUSY, "a different cluster stack is in use")
        self.cluster_stack = label
        if label != "o2cb":
            self.load_plugin(USER_PLUGIN)

    def files(self) -> list[ValueFile]:
        files = [
            ValueFile("max_locking_protocol", lambda: "1.0\n"),
            ValueFile("loaded_cluster_plugins", self.loaded_plugins_text),
            ValueFile(
                "active_cluster_plugin",
                lambda: f"{self.plugin_of(self.active)}\n" if self.active else "",
            ),
            ValueFile("cluster_stack", lambda: f"{self.cluster_stack}\n",
                      self.store_cluster_stack),
        ]
        if self.recover_callbacks:
            files.append(ValueFile("dlm_recover_callback_support", lambda: "1\n"))
        return files


class HbCtlPath:
    """``/proc/sys/fs/ocfs2/nm/hb_ctl_path``: proc_dostring, default /sbin/ocfs2_hb_ctl."""

    def __init__(self, path: str = "/sbin/ocfs2_hb_ctl") -> None:
        self.path = path

    def store(self, data: bytes) -> None:
        # proc_dostring copies up to maxlen-1 bytes, stopping at a newline or NUL.
        text = data[: HB_CTL_PATH_MAX - 1]
        for stop in (b"\n", b"\0"):
            cut = text.find(stop)
            if cut >= 0:
                text = text[:cut]
        self.path = text.decode("latin-1")

    def file(self) -> ValueFile:
        return ValueFile("hb_ctl_path", lambda: f"{self.path}\n", self.store)


def bitmap_text(bits: list[int]) -> str:
    """debugfs bitmap format: each set bit as "%d ", then a newline ("0 1 \\n", "\\n")."""
    return "".join(f"{b} " for b in sorted(bits)) + "\n"


def debug_file(name: str, show: Callable[[], str]) -> ValueFile:
    """A debugfs o2hb file: mode 0400, content rendered at open."""
    return ValueFile(name, show, mode=0o400, size=0)
