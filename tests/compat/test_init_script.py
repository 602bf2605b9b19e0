"""Debian's ``/etc/init.d/o2cb``, unmodified, under ``fakecfs run``: as on a host with the
modules. The script reads /proc/filesystems, /proc/modules and /proc/mounts, runs
modprobe, mounts configfs, debugfs and ocfs2_dlmfs, registers the cluster from
/etc/ocfs2/cluster.conf and writes the timeouts of /etc/default/o2cb. Each test is one
node shell (``fakecfs run --node n1``); the configuration files are put in place inside
its private mount namespace, so the host's /etc is never touched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.ctools import C_HB_CTL, NodeShell, cluster_conf, node_shell, require_ctools
from tests.fakecfs_fixtures import fakecfs_mount, read_attr, require_fuse
from tests.nodes import Region, mkfs

INIT = "/etc/init.d/o2cb"
DEFAULTS = """O2CB_ENABLED={enabled}
O2CB_STACK=o2cb
O2CB_BOOTCLUSTER=demo
O2CB_HEARTBEAT_THRESHOLD=7
O2CB_IDLE_TIMEOUT_MS=10000
O2CB_KEEPALIVE_DELAY_MS=1000
O2CB_RECONNECT_DELAY_MS=2500
"""

LOADED = """Driver for "configfs": Loaded
Filesystem "configfs": Mounted
Stack glue driver: Loaded
Stack plugin "o2cb": Loaded
Driver for "ocfs2_dlmfs": Loaded
Filesystem "ocfs2_dlmfs": Mounted
"""
ONLINE = """Checking O2CB cluster "demo": Online
  Heartbeat dead threshold: 7
  Network idle timeout: 10000
  Network keepalive delay: 1000
  Network reconnect delay: 2500
  Heartbeat mode: Local
"""
DEBUGFS = "Debug file system at /sys/kernel/debug: mounted\n"


@pytest.fixture
def sysroot(tmp_path: Path) -> Iterator[Path]:
    require_ctools()
    require_fuse()
    if not os.access(INIT, os.X_OK):
        pytest.skip(f"{INIT} not installed (Debian's ocfs2-tools ships it)")
    with fakecfs_mount(tmp_path / "mnt", "--hb-interval-ms", "50") as mnt:
        yield mnt


def configured(sh: NodeShell, tmp_path: Path, enabled: bool = False) -> None:
    """/etc/ocfs2/cluster.conf and /etc/default/o2cb, in this namespace only."""
    conf = cluster_conf(tmp_path / "cluster.conf")
    defaults = tmp_path / "o2cb"
    defaults.write_text(DEFAULTS.format(enabled="true" if enabled else "false"))
    sh.ok("mount", "-t", "tmpfs", "fakecfs-test", "/etc/ocfs2")
    sh.ok("cp", str(conf), "/etc/ocfs2/cluster.conf")
    sh.ok("mount", "--bind", str(defaults), "/etc/default/o2cb")


def init(sh: NodeShell, *args: str) -> str:
    r = sh.run(INIT, *args)
    assert r.rc == 0, (args, r.out, r.err)
    assert r.err == "", (args, r.err)
    return r.out


def test_load_online_status_offline_unload(sysroot: Path, tmp_path: Path) -> None:
    cluster = sysroot / "sys/kernel/config/cluster/demo"
    image = mkfs(tmp_path / "vol.img")
    with node_shell(sysroot, "n1") as sh:
        configured(sh, tmp_path)
        # A fresh emulated kernel: the o2cb stack is loaded (its surfaces are there),
        # ocfs2_dlmfs is not.
        assert "ocfs2_dlmfs" not in sh.ok("cat", "/proc/filesystems")
        assert init(sh, "status", "demo") == (
            LOADED.split("Driver for \"ocfs2_dlmfs\"")[0]
            + 'Driver for "ocfs2_dlmfs": Not loaded\n'
            + 'Checking O2CB cluster "demo": Offline\n' + DEBUGFS)

        assert init(sh, "load") == (
            "checking debugfs...\n"
            'Loading filesystem "ocfs2_dlmfs": OK\n'
            "Mounting ocfs2_dlmfs filesystem at /dlm: OK\n")
        assert "nodev\tocfs2_dlmfs" in sh.ok("cat", "/proc/filesystems")
        modules = sh.ok("cat", "/proc/modules").splitlines()
        assert modules[0].startswith("ocfs2_dlmfs ")  # the newest first
        assert [m.split()[0] for m in modules] == [
            "ocfs2_dlmfs", "ocfs2_stack_o2cb", "ocfs2_stackglue", "ocfs2_dlm",
            "ocfs2_nodemanager"]
        assert "ocfs2_dlmfs" in sh.ok("lsmod")
        assert sh.ok("stat", "-f", "-c", "%t", "/dlm") == "76a9f425\n"  # DLMFS_MAGIC
        mounts = sh.ok("cat", "/proc/mounts")
        assert "configfs /sys/kernel/config configfs " in mounts
        assert " /dlm ocfs2_dlmfs " in mounts

        assert init(sh, "online", "demo") == (
            "checking debugfs...\n"
            'Setting cluster stack "o2cb": OK\n'
            'Registering O2CB cluster "demo": OK\n'
            "Setting O2CB cluster timeouts : OK\n")
        # What the script wrote, as the emulated configfs holds it.
        assert read_attr(cluster / "heartbeat/dead_threshold") == "7\n"
        assert read_attr(cluster / "idle_timeout_ms") == "10000\n"
        assert read_attr(cluster / "keepalive_delay_ms") == "1000\n"
        assert read_attr(cluster / "reconnect_delay_ms") == "2500\n"
        assert read_attr(cluster / "node/n1/local") == "1\n"
        assert read_attr(cluster / "node/n2/local") == "0\n"

        # Heartbeat on a volume (a tool's reference): status sees it, offline refuses.
        uuid = Region.of(image).uuid
        sh.ok(C_HB_CTL, "-S", "-d", str(image), "fsck")
        assert init(sh, "status", "demo") == (
            LOADED + ONLINE + "Checking O2CB heartbeat: Active\n" + DEBUGFS)
        refused = sh.run(INIT, "offline", "demo")
        assert (refused.rc, refused.err) == (
            1, "Unable to stop cluster as heartbeat region still active\n")
        assert refused.out.endswith("Stopping O2CB cluster demo: Failed\n")
        assert (cluster / "heartbeat" / uuid).is_dir()
        sh.ok(C_HB_CTL, "-K", "-d", str(image), "fsck")
        assert init(sh, "status", "demo") == (
            LOADED + ONLINE + "Checking O2CB heartbeat: Not active\n" + DEBUGFS)

        assert init(sh, "offline", "demo") == (
            "Clean userdlm domains: OK\n"
            'Stopping O2CB cluster demo: Unregistering O2CB cluster "demo": OK\n')
        assert not cluster.exists()
        assert init(sh, "unload") == (
            "Clean userdlm domains: OK\n"
            "Unmounting ocfs2_dlmfs filesystem: OK\n"
            'Unloading module "ocfs2_dlmfs": OK\n'
            'Unloading module "ocfs2_stack_o2cb": OK\n')
        assert sh.ok("cat", "/proc/modules") == ""
        assert " /dlm " not in sh.ok("cat", "/proc/mounts")
        assert init(sh, "status", "demo") == (
            'Driver for "configfs": Loaded\nFilesystem "configfs": Mounted\n'
            'Stack glue driver: Loaded\nStack plugin "o2cb": Not loaded\n'
            'Driver for "ocfs2_dlmfs": Not loaded\n'
            'Checking O2CB cluster "demo": Offline\n' + DEBUGFS)
    # None of it reached the host.
    assert "ocfs2_dlmfs" not in Path("/proc/filesystems").read_text()
    assert " /dlm " not in Path("/proc/self/mounts").read_text()
    modprobe = shutil.which("modprobe", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if modprobe is not None:
        assert Path(os.path.realpath(modprobe)).read_bytes()[:4] == b"\x7fELF"


def test_start_and_stop_follow_etc_default_o2cb(sysroot: Path, tmp_path: Path) -> None:
    cluster = sysroot / "sys/kernel/config/cluster/demo"
    with node_shell(sysroot, "n1") as sh:
        configured(sh, tmp_path, enabled=True)
        # stop first (as at boot, nothing to stop), then start: load + online BOOTCLUSTER
        assert init(sh, "stop") == (
            'Unloading module "ocfs2_stack_o2cb": OK\n')
        assert init(sh, "start") == (
            "checking debugfs...\n"
            'Loading stack plugin "o2cb": OK\n'
            'Loading filesystem "ocfs2_dlmfs": OK\n'
            "Mounting ocfs2_dlmfs filesystem at /dlm: OK\n"
            'Setting cluster stack "o2cb": OK\n'
            'Registering O2CB cluster "demo": OK\n'
            "Setting O2CB cluster timeouts : OK\n")
        assert read_attr(cluster / "heartbeat/dead_threshold") == "7\n"
        assert sh.ok(INIT, "online-status") == "online\n"
        init(sh, "stop")
        assert not cluster.exists()
        assert sh.run(INIT, "online-status").out == "offline\n"
        # disabled: start does nothing at all
        (tmp_path / "o2cb").write_text(DEFAULTS.format(enabled="false"))  # the bound file
        assert init(sh, "start") == ""
        assert not cluster.exists()


def test_what_load_did_outlives_the_namespace_as_on_a_host(sysroot: Path,
                                                            tmp_path: Path) -> None:
    """load in one fakecfs run, status and unload in later ones: the kernel keeps the
    modules and the dlmfs mount on record, and every run mounts it again."""
    with node_shell(sysroot, "n1") as sh:
        configured(sh, tmp_path)
        init(sh, "load")
    assert read_attr(sysroot / "fakecfs/fsmounts") == "ocfs2_dlmfs /dlm\n"
    with node_shell(sysroot, "n1") as sh:
        configured(sh, tmp_path)
        assert init(sh, "status").startswith(LOADED)
        assert sh.ok("stat", "-f", "-c", "%t", "/dlm") == "76a9f425\n"
        dlmfs = next(line for line in sh.ok("cat", "/proc/modules").splitlines()
                     if line.startswith("ocfs2_dlmfs "))
        assert dlmfs.split()[2] == "1"  # held by the mount
        busy = sh.run("modprobe", "-r", "ocfs2_dlmfs")
        assert busy.rc == 1 and "in use" in busy.err
        assert "Unmounting ocfs2_dlmfs filesystem: OK" in init(sh, "unload")
    assert read_attr(sysroot / "fakecfs/fsmounts") == ""
    with node_shell(sysroot, "n1") as sh:
        assert " /dlm " not in sh.ok("cat", "/proc/mounts")
        assert "ocfs2_dlmfs" not in sh.ok("cat", "/proc/modules")


def test_modules_are_the_kernels_and_outlive_one_run(sysroot: Path) -> None:
    with node_shell(sysroot, "n1") as sh:
        sh.ok("modprobe", "ocfs2")
        busy = sh.run("modprobe", "-r", "ocfs2_stackglue")
        assert busy.rc == 1 and "Module ocfs2_stackglue is in use" in busy.err
        unknown = sh.run("modprobe", "e1000")
        assert unknown.rc == 1 and "FATAL: Module e1000 not found" in unknown.err
        assert sh.run("modprobe", "-q", "e1000").err == ""
    # a new namespace, the same kernel: ocfs2 is still loaded
    with node_shell(sysroot, "n2") as sh:
        assert "\tocfs2\n" in sh.ok("cat", "/proc/filesystems")
        sh.ok("rmmod", "ocfs2")
        assert "ocfs2 " not in sh.ok("lsmod")
    assert "ocfs2 " not in read_attr(sysroot / "fakecfs/modules")
