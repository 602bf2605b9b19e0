"""``hbctl doctor`` on states made on purpose with Debian's binaries, inside one node.

Each scenario runs in ``fakecfs run --node`` (the node's own IPC namespace, the surfaces at
their real paths, so doctor sees what it would see on a host), makes a broken state the way
it happens in the field, checks what doctor reports, lets ``--fix`` repair it and checks
that nothing is left: no region in configfs, no semaphore set.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.compat.ctools import (
    C_HB_CTL,
    HBCTL,
    O2CB,
    NodeShell,
    cluster_conf,
    daemon_node,
    loop_device,
    node_shell,
    require_ctools,
)
from tests.fakecfs_fixtures import fakecfs_mount, read_attr, wait_for, write_attr
from tests.nodes import Region, mkfs

pytestmark = pytest.mark.usefixtures("ctools")


@pytest.fixture
def ctools() -> None:
    require_ctools()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_ctools()
    return mkfs(tmp_path_factory.mktemp("img") / "vol.img")


def doctor(sh: NodeShell, *args: str, devices: Path | None = None) -> tuple[int, Any]:
    env = ["env", f"HBCTL_DEVICES={devices}"] if devices else []
    r = sh.run(*env, HBCTL, "doctor", "--json", *args)
    assert r.rc in (0, 1), r.err
    return r.rc, json.loads(r.out)


def found(report: Any) -> list[tuple[str, str]]:
    return [(f["kind"], f["subject"]) for f in report["findings"]]


def regions(sysroot: Path) -> list[str]:
    hb = sysroot / "sys/kernel/config/cluster/demo/heartbeat"
    return sorted(p.name for p in hb.iterdir() if p.is_dir())


def registered(sh: NodeShell, tmp_path: Path) -> None:
    sh.ok(O2CB, f"--config-file={cluster_conf(tmp_path / 'cluster.conf')}",
          "register-cluster", "demo")


def test_a_killed_tools_reference_and_a_tool_that_still_runs(
        sysroot: Path, tmp_path: Path, image: Path) -> None:
    uuid = Region.of(image).uuid
    with node_shell(sysroot, "n1") as sh:
        registered(sh, tmp_path)
        assert doctor(sh) == (0, {"sysroot": "/", "fix": False, "healthy": True,
                                  "findings": []})
        # A script that started heartbeat and was killed before its ocfs2_hb_ctl -K.
        assert sh.run("sh", "-c", f"{C_HB_CTL} -S -d {image} script && kill -9 $$").rc != 0
        assert sh.sem(uuid) == (0, 1)
        rc, report = doctor(sh)
        assert rc == 1 and found(report) == [("leaked-references", uuid)]
        (f,) = report["findings"]
        assert f["message"].startswith(f"Region {uuid} has 1 reference(s) but no mount")
        assert f["fix"].startswith(f"stop heartbeat on {uuid}") and f["result"] is None

        # While an ocfs2 tool runs in the node, --fix touches nothing.
        tool = tmp_path / "tunefs.ocfs2"
        shutil.copy("/bin/sleep", tool)
        pid = int(sh.ok("sh", "-c", f"{tool} 60 >/dev/null 2>&1 & echo $!"))
        try:
            rc, report = doctor(sh, "--fix")
            assert rc == 1
            assert report["findings"][0]["blocked"] == (
                f"tunefs.ocfs2 (pid {pid}) is running in this node; run doctor again when "
                "it ends")
            assert regions(sysroot) == [uuid] and sh.sem(uuid) == (0, 1)
        finally:
            os.kill(pid, 9)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the tool to be reaped")

        rc, report = doctor(sh, "--fix")
        assert rc == 0 and report["healthy"] and report["findings"][0]["result"] == "done"
        assert regions(sysroot) == [] and sh.sem(uuid) is None
        assert doctor(sh)[0] == 0


def test_upstreams_two_mount_leak_made_with_debians_binaries(
        tmp_path: Path, image: Path) -> None:
    """Two mount.ocfs2 take two references; the kernel's single put_super -K drops one."""
    uuid = Region.of(image).uuid
    mnt = tmp_path / "node"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    # put_super runs the kernel's default helper, Debian's /sbin/ocfs2_hb_ctl.
    with loop_device(image) as dev, daemon_node(mnt, "n1", "--hb-interval-ms", "50") as sh:
        registered(sh, tmp_path)
        sh.ok("mount.ocfs2", dev, str(a))
        sh.ok("mount.ocfs2", dev, str(b))
        assert sh.sem(uuid) == (0, 2)
        assert doctor(sh)[0] == 0  # two upstream mounts may hold two references

        sh.ok("umount", str(a))  # not the last mount: no put_super, one reference too many
        rc, report = doctor(sh)
        assert rc == 1 and found(report) == [("leaked-references", uuid)]
        assert report["findings"][0]["fix"] == f"drop the references of {uuid} down to 1"
        rc, report = doctor(sh, "--fix")
        assert rc == 0 and sh.sem(uuid) == (0, 1) and regions(mnt) == [uuid]
        sh.ok("umount", str(b))  # put_super: the C -K drops the last one: heartbeat stops
        assert regions(mnt) == [] and sh.sem(uuid) is None

        # The same leak after both umounts: fixed by stopping the heartbeat.
        sh.ok("mount.ocfs2", dev, str(a))
        sh.ok("mount.ocfs2", dev, str(b))
        sh.ok("umount", str(a))
        sh.ok("umount", str(b))
        assert sh.sem(uuid) == (0, 1) and regions(mnt) == [uuid]
        rc, report = doctor(sh, "--fix")
        assert (rc, found(report)) == (0, [("leaked-references", uuid)])
        assert regions(mnt) == [] and sh.sem(uuid) is None


def test_a_region_left_by_a_killed_start(tmp_path: Path, image: Path) -> None:
    uuid = Region.of(image).uuid
    # A slow heartbeat: the start's dev write waits several seconds for steady heartbeat.
    with fakecfs_mount(tmp_path / "sysroot", "--hb-interval-ms", "1000") as sysroot, \
            node_shell(sysroot, "n1") as sh:
        registered(sh, tmp_path)
        rdir = sysroot / "sys/kernel/config/cluster/demo/heartbeat" / uuid
        killed = sh.run("sh", "-c", f"{C_HB_CTL} -S -d {image} script & p=$!; "
                        f"while [ ! -e {rdir}/dev ]; do sleep 0.01; done; "
                        "kill -9 $p; wait $p")
        assert killed.rc == 137, killed
        assert regions(sysroot) == [uuid] and sh.sem(uuid) == (0, 0)
        rc, report = doctor(sh, "--fix")
        assert found(report) == [("region-without-references", uuid)]
        assert rc == 0 and regions(sysroot) == [] and sh.sem(uuid) is None


def test_a_removed_image(sysroot: Path, tmp_path: Path, image: Path) -> None:
    uuid = Region.of(image).uuid
    copy = tmp_path / "doomed.img"
    shutil.copy(image, copy)
    with node_shell(sysroot, "n1") as sh:
        registered(sh, tmp_path)
        sh.ok(C_HB_CTL, "-S", "-d", str(copy), "script")
        assert doctor(sh, devices=copy)[1]["findings"][0]["kind"] == "leaked-references"
        copy.unlink()
        rc, report = doctor(sh)
        assert rc == 1 and found(report) == [("device-gone", uuid)]
        assert report["findings"][0]["message"] == (
            f"Region {uuid} heartbeats on doomed.img, which is gone: nothing can use it "
            "and its writes go nowhere.")
        rc, report = doctor(sh, "--fix")
        assert rc == 0 and regions(sysroot) == [] and sh.sem(uuid) is None


def test_no_local_node_and_semaphores_without_a_region(
        sysroot: Path, tmp_path: Path, image: Path) -> None:
    uuid = Region.of(image).uuid
    with node_shell(sysroot, "n1") as sh:
        registered(sh, tmp_path)
        local = sysroot / "sys/kernel/config/cluster/demo/node/n1/local"
        write_attr(local, "0")
        rc, report = doctor(sh, "--fix")
        assert found(report) == [("no-local-node", "demo")] and rc == 0
        assert read_attr(local) == "1\n"

        # Heartbeat stopped behind libo2cb's back: the set still counts a reference.
        sh.ok(C_HB_CTL, "-S", "-d", str(image), "script")
        (sysroot / "sys/kernel/config/cluster/demo/heartbeat" / uuid).rmdir()
        rc, report = doctor(sh)  # the volume is not known: named by key only, not fixed
        assert rc == 1 and [f["kind"] for f in report["findings"]] == ["unknown-semaphores"]
        rc, report = doctor(sh, "--fix", devices=image)
        assert found(report) == [("semaphores-without-region", uuid)] and rc == 0
        assert sh.sem(uuid) is None
