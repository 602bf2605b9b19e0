"""The module table an emulated o2cb kernel keeps: what /proc/modules and /proc/filesystems
list, and what modprobe / modprobe -r do to it (dependencies, "in use", unknown names)."""

from __future__ import annotations

import errno

import pytest

from fakecfs.kmod import BOOT_MODULES, MODULES, ModuleTable
from fakecfs.tree import KernelError


def names(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines()]


def test_boot_has_the_stack_whose_surfaces_fakecfs_always_shows() -> None:
    t = ModuleTable()
    assert names(t.proc_modules()) == list(reversed(BOOT_MODULES))
    assert t.stack_plugins() == ["o2cb"]
    assert t.filesystems() == "nodev\tconfigfs\nnodev\tdebugfs\n"  # built in


def test_proc_modules_lines_carry_refcount_and_users() -> None:
    t = ModuleTable()
    lines = {line.split()[0]: line.split() for line in t.proc_modules().splitlines()}
    _name, size, count, users, state, addr = lines["ocfs2_stackglue"]
    assert (count, users, state) == ("1", "ocfs2_stack_o2cb,", "Live")
    assert lines["ocfs2_stack_o2cb"][2:4] == ["0", "-"]
    assert int(size) == MODULES["ocfs2_stackglue"].size and addr.startswith("0x")


def test_load_brings_dependencies_first_and_is_idempotent() -> None:
    t = ModuleTable(loaded=[])
    assert t.load("ocfs2_dlmfs") == ["ocfs2_stackglue", "ocfs2_dlmfs"]
    assert t.load("ocfs2_dlmfs") == []
    assert "nodev\tocfs2_dlmfs\n" in t.filesystems()
    assert t.load("ocfs2") == ["ocfs2_nodemanager", "ocfs2"]
    assert "\tocfs2\n" in t.filesystems() and "nodev\tocfs2\n" not in t.filesystems()


def test_unload_refuses_a_used_module_and_takes_unused_dependencies_along() -> None:
    t = ModuleTable()
    t.load("ocfs2_dlmfs")
    with pytest.raises(KernelError) as e:
        t.unload("ocfs2_stackglue")
    assert e.value.errno == errno.EBUSY
    assert t.unload("ocfs2_dlmfs") == ["ocfs2_dlmfs"]  # stackglue still used by the plugin
    assert t.unload("ocfs2_stack_o2cb") == [
        "ocfs2_stack_o2cb", "ocfs2_stackglue", "ocfs2_dlm", "ocfs2_nodemanager"]
    assert t.proc_modules() == "" and t.stack_plugins() == []


@pytest.mark.parametrize(("line", "err"), [
    (b"load e1000", errno.ENOENT), (b"unload ocfs2", errno.ENOENT), (b"unload nope", errno.ENOENT),
    (b"insert ocfs2", errno.EINVAL), (b"load", errno.EINVAL), (b"", errno.EINVAL),
])
def test_bad_control_writes(line: bytes, err: int) -> None:
    t = ModuleTable()
    before = t.proc_modules()
    with pytest.raises(KernelError) as e:
        t.store(line)
    assert e.value.errno == err
    assert t.proc_modules() == before  # nothing half-done


def test_a_mount_of_the_stacks_filesystem_loads_and_holds_its_module() -> None:
    t = ModuleTable()
    assert t.store_fs_mount(b"mount ocfs2_dlmfs /dlm") == \
        "mount ocfs2_dlmfs /dlm (loaded ocfs2_dlmfs)"  # request_module on mount
    assert t.render_fs_mounts() == "ocfs2_dlmfs /dlm\n"
    line = next(x for x in t.proc_modules().splitlines() if x.startswith("ocfs2_dlmfs "))
    assert line.split()[2:4] == ["1", "-"]  # held by the mount, used by no module
    with pytest.raises(KernelError) as e:
        t.unload("ocfs2_dlmfs")
    assert e.value.errno == errno.EBUSY
    assert t.store_fs_mount(b"umount /dlm") == "umount ocfs2_dlmfs /dlm"
    assert t.unload("ocfs2_dlmfs") == ["ocfs2_dlmfs"]
    t.store_fs_mount(b"mount configfs /my\\040config")  # built in: nothing to load
    assert t.render_fs_mounts() == "configfs /my\\040config\n"
    assert t.fs_mounts == [("configfs", "/my config")]


@pytest.mark.parametrize(("line", "err"), [
    (b"mount ext4 /mnt", errno.ENODEV), (b"mount ocfs2_dlmfs dlm", errno.EINVAL),
    (b"umount /nowhere", errno.EINVAL), (b"mount /dlm", errno.EINVAL),
])
def test_bad_fs_mount_writes(line: bytes, err: int) -> None:
    t = ModuleTable()
    with pytest.raises(KernelError) as e:
        t.store_fs_mount(line)
    assert e.value.errno == err
    assert t.fs_mounts == [] and list(reversed(BOOT_MODULES)) == names(t.proc_modules())
