"""Debian's ocfs2-tools, unmodified, against fakecfs through ``fakecfs run``.

Every test drives the real C binaries (o2cb, ocfs2_hb_ctl, mounted.ocfs2) inside a
``fakecfs run --node`` namespace and checks both what they print and what they leave in the
emulated kernel: configfs items and attributes, debugfs live nodes, the SysV semaphores and
``hbctl status --json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.ctools import (
    C_HB_CTL,
    HBCTL,
    MOUNTED,
    O2CB,
    PY_HB_CTL,
    cluster_conf,
    give_to_user,
    loop_device,
    node_shell,
    require_ctools,
    sem_key,
    user_node_shell,
    user_workdir,
)
from tests.fakecfs_fixtures import FAKECFS, fakecfs_mount, read_attr
from tests.nodes import Region, mkfs

pytestmark = pytest.mark.usefixtures("ctools")


@pytest.fixture
def ctools() -> None:
    require_ctools()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mkfs(tmp_path_factory.mktemp("img") / "local.img")


@pytest.fixture(scope="module")
def global_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mkfs(tmp_path_factory.mktemp("img") / "global.img", "64M", "--global-heartbeat")


def cdir(sysroot: Path, cluster: str = "demo") -> Path:
    return sysroot / "sys/kernel/config/cluster" / cluster


def regions_in(sysroot: Path) -> list[str]:
    return sorted(p.name for p in (cdir(sysroot) / "heartbeat").iterdir() if p.is_dir())


@pytest.fixture
def registered(sysroot: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """sysroot with cluster 'demo' (n1 local) registered by the C o2cb; unregistered after."""
    conf = cluster_conf(tmp_path / "cluster.conf")
    with node_shell(sysroot, "n1") as sh:
        sh.ok(O2CB, f"--config-file={conf}", "register-cluster", "demo")
    yield sysroot, conf
    with node_shell(sysroot, "n1") as sh:
        sh.run(O2CB, f"--config-file={conf}", "unregister-cluster", "demo")


# -- o2cb: cluster registration --------------------------------------------------------


def test_o2cb_register_list_unregister(sysroot: Path, tmp_path: Path) -> None:
    conf = cluster_conf(tmp_path / "cluster.conf")
    with node_shell(sysroot, "n2") as sh:
        r = sh.run(O2CB, f"--config-file={conf}", "-v", "register-cluster", "demo")
        assert r.rc == 0, r.err
        assert "Cluster 'demo' registered" in r.out + r.err
        c = cdir(sysroot)
        assert sorted(p.name for p in (c / "node").iterdir()) == ["n1", "n2"]
        # o2cb_add_node's writes, read back from the emulated o2nm items.
        for name, num, local in (("n1", 0, "0"), ("n2", 1, "1")):
            node = c / "node" / name
            assert read_attr(node / "num") == f"{num}\n"
            assert read_attr(node / "ipv4_address") == f"127.0.0.{num + 1}\n"
            assert read_attr(node / "ipv4_port") == "7777\n"
            assert read_attr(node / "local") == f"{local}\n"  # hostname n2 is the local node
        assert read_attr(c / "heartbeat/mode") == "local\n"
        status = sh.status()
        (cluster,) = status["clusters"]
        assert cluster["cluster"] == "demo" and cluster["local_node"] == "n2"
        assert cluster["mode"] == "local" and cluster["regions"] == []

        online = sh.ok(O2CB, f"--config-file={conf}", "cluster-status", "demo")
        assert online == "Cluster 'demo' is online\n"
        assert sh.ok(O2CB, f"--config-file={conf}", "list-clusters").split() == ["demo"]
        # Registering again is idempotent (EEXIST on every mkdir, attributes compared).
        sh.ok(O2CB, f"--config-file={conf}", "register-cluster", "demo")
        assert sorted(p.name for p in (c / "node").iterdir()) == ["n1", "n2"]

        # heartbeat-mode edits the config file only; the running cluster keeps its mode.
        sh.ok(O2CB, f"--config-file={conf}", "heartbeat-mode", "demo", "global")
        assert "heartbeat_mode = global" in conf.read_text()
        assert read_attr(c / "heartbeat/mode") == "local\n"

        r = sh.run(O2CB, f"--config-file={conf}", "-v", "unregister-cluster", "demo")
        assert r.rc == 0, r.err
        assert "Cluster 'demo' unregistered" in r.out + r.err
        assert not c.exists()
        assert sh.status()["clusters"] == []
        r = sh.run(O2CB, f"--config-file={conf}", "cluster-status", "demo")
        assert (r.rc, r.out) == (1, "offline\n")


def test_unregister_refused_while_a_region_runs(registered: tuple[Path, Path],
                                               image: Path) -> None:
    sysroot, conf = registered
    with node_shell(sysroot) as sh:
        sh.ok(C_HB_CTL, "-S", "-d", str(image), "ocfs2")
        r = sh.run(O2CB, f"--config-file={conf}", "unregister-cluster", "demo")
        assert r.rc != 0
        assert "heartbeat region" in r.err.lower()
        assert cdir(sysroot).is_dir()
        sh.ok(C_HB_CTL, "-K", "-d", str(image), "ocfs2")


# -- ocfs2_hb_ctl by device --------------------------------------------------------------


def test_hb_ctl_by_device(registered: tuple[Path, Path], image: Path) -> None:
    sysroot, _ = registered
    region = Region.of(image)
    uuid = region.uuid
    rdir = cdir(sysroot) / "heartbeat" / uuid
    with node_shell(sysroot) as sh:
        r = sh.run(C_HB_CTL, "-S", "-d", str(image), "ocfs2")
        assert (r.rc, r.out, r.err) == (0, "", "")
        # libo2cb's writes, as the emulated o2hb region now shows them.
        assert regions_in(sysroot) == [uuid]
        assert read_attr(rdir / "block_bytes") == "512\n"  # BLKSSZGET fails on a file
        assert read_attr(rdir / "start_block") == f"{region.start_block}\n"
        assert read_attr(rdir / "blocks") == "255\n"
        assert read_attr(rdir / "dev") == f"{image.name}\n"
        pid = int(read_attr(rdir / "pid"))
        assert pid > 0
        # The region is steady (the dev write returned) and sees this node (n1 = 0).
        assert read_attr(sysroot / "sys/kernel/debug/o2hb" / uuid / "livenodes").split() == ["0"]
        assert sh.sem(uuid) == (0, 1)
        assert sh.refs(C_HB_CTL, "-d", str(image)) == f"{uuid}: 1 refs\n"

        sh.ok(C_HB_CTL, "-S", "-d", str(image), "ocfs2")  # EEXIST: one more reference
        assert sh.sem(uuid) == (0, 2)
        assert sh.refs(C_HB_CTL, "-u", uuid) == f"{uuid}: 2 refs\n"
        (cluster,) = sh.status()["clusters"]
        (reg,) = cluster["regions"]
        assert reg["uuid"] == uuid and reg["refs"] == 2 and reg["pid"] == pid
        assert [n["name"] for n in reg["live_nodes"]] == ["n1"]

        # -P runs ionice on the region's heartbeat thread (here: the daemon).
        r = sh.run(C_HB_CTL, "-P", "-d", str(image), "-n", "3")
        assert (r.out, r.err) == ("", "")
        # Upstream quirk: adjust_priority treats waitpid's return (the child pid) as an
        # error, so -P exits 1 even though ionice succeeded (see docs/compatibility.md).
        assert r.rc == 1
        assert sh.ok("ionice", "-p", str(pid)).strip() == "realtime: prio 3"

        sh.ok(C_HB_CTL, "-K", "-d", str(image), "ocfs2")
        assert sh.sem(uuid) == (0, 1)
        assert regions_in(sysroot) == [uuid]
        sh.ok(C_HB_CTL, "-K", "-d", str(image), "ocfs2")
        # Last reference: region removed (its thread and debugfs dir too), set destroyed.
        assert regions_in(sysroot) == []
        assert not (sysroot / "sys/kernel/debug/o2hb" / uuid).exists()
        assert sem_key(uuid) not in sh.sem_keys()
        assert sh.status()["clusters"][0]["regions"] == []


def test_hb_ctl_errors_match_upstream(registered: tuple[Path, Path], image: Path,
                                     tmp_path: Path) -> None:
    sysroot, _ = registered
    uuid = Region.of(image).uuid
    with node_shell(sysroot) as sh:
        # -u scans /proc/partitions: an image file is not there.
        r = sh.run(C_HB_CTL, "-S", "-u", uuid, "ocfs2")
        assert r.rc == 1
        assert r.err == "ocfs2_hb_ctl: Directory entry not found while starting heartbeat\n"
        junk = tmp_path / "junk.img"
        junk.write_bytes(bytes(1 << 20))
        for tool in (C_HB_CTL, PY_HB_CTL):
            r = sh.run(tool, "-S", "-d", str(junk), "ocfs2")
            assert r.rc == 1 and "while reading uuid" in r.err, (tool, r)
        assert regions_in(sysroot) == []
        # Without the shim the FUSE configfs reports FUSE's magic and libo2cb refuses it.
        r = sh.run("env", "-u", "LD_PRELOAD", C_HB_CTL, "-I", "-u", uuid)
        assert r.rc == 1
        assert r.err.startswith("ocfs2_hb_ctl: Unable to access cluster service "
                                "Cannot initialize cluster")


# -- ocfs2_hb_ctl by UUID (a loop device, found through /proc/partitions) ---------------


def test_hb_ctl_by_uuid_on_a_loop_device(registered: tuple[Path, Path], image: Path) -> None:
    sysroot, _ = registered
    uuid = Region.of(image).uuid
    rdir = cdir(sysroot) / "heartbeat" / uuid
    with loop_device(image) as dev, node_shell(sysroot) as sh:
        sh.ok(C_HB_CTL, "-S", "-u", uuid, "ocfs2")
        assert read_attr(rdir / "dev") == f"{os.path.basename(dev)}\n"  # the kernel's name
        assert read_attr(rdir / "block_bytes") == "512\n"  # the loop device's sector size
        assert sh.refs(C_HB_CTL, "-u", uuid) == f"{uuid}: 1 refs\n"
        assert sh.refs(C_HB_CTL, "-d", dev) == f"{uuid}: 1 refs\n"
        pid = int(read_attr(rdir / "pid"))
        sh.run(C_HB_CTL, "-P", "-u", uuid)
        assert sh.ok("ionice", "-p", str(pid)).strip() == "realtime: prio 0"
        # The kernel's own call form at put_super: -K -u UUID, no service.
        sh.ok(C_HB_CTL, "-K", "-u", uuid)
        assert regions_in(sysroot) == []
        assert sem_key(uuid) not in sh.sem_keys()


# -- global heartbeat: o2cb start-heartbeat / stop-heartbeat ------------------------------


def test_global_heartbeat(sysroot: Path, tmp_path: Path, global_image: Path) -> None:
    uuid = Region.of(global_image).uuid
    conf = cluster_conf(tmp_path / "cluster.conf", mode="global", regions=[uuid])
    o2cb = [O2CB, f"--config-file={conf}", "-v"]
    with loop_device(global_image) as dev, node_shell(sysroot) as sh:
        sh.ok(*o2cb, "register-cluster", "demo")
        assert read_attr(cdir(sysroot) / "heartbeat/mode") == "global\n"
        r = sh.run(*o2cb, "start-heartbeat", "demo")
        assert r.rc == 0 and "Global heartbeat started" in r.out + r.err, r
        assert regions_in(sysroot) == [uuid]
        rdir = cdir(sysroot) / "heartbeat" / uuid
        assert read_attr(rdir / "dev") == f"{os.path.basename(dev)}\n"
        debug = sysroot / "sys/kernel/debug/o2hb"
        assert read_attr(debug / "livenodes").split() == ["0"]
        assert read_attr(debug / "live_regions").split() == ["0"]  # region number 0: steady
        assert sh.sem(uuid) == (0, 1)
        # A second start finds the region and takes no reference in global mode;
        # ocfs2_hb_ctl -S/-K (what mount/umount run) touch nothing in global mode.
        sh.ok(*o2cb, "start-heartbeat", "demo")
        sh.ok(C_HB_CTL, "-S", "-d", dev, "ocfs2")
        sh.ok(C_HB_CTL, "-K", "-d", dev, "ocfs2")
        assert sh.refs(C_HB_CTL, "-u", uuid) == f"{uuid}: 1 refs\n"
        assert regions_in(sysroot) == [uuid]
        (cluster,) = sh.status()["clusters"]
        assert cluster["mode"] == "global"
        assert [reg["uuid"] for reg in cluster["regions"]] == [uuid]

        r = sh.run(*o2cb, "stop-heartbeat", "demo")
        assert r.rc == 0 and "Global heartbeat stopped" in r.out + r.err, r
        assert regions_in(sysroot) == []
        assert sem_key(uuid) not in sh.sem_keys()
        sh.ok(*o2cb, "unregister-cluster", "demo")
        assert not cdir(sysroot).exists()


# -- mounted.ocfs2 -------------------------------------------------------------------------


def test_mounted_ocfs2(registered: tuple[Path, Path], image: Path) -> None:
    sysroot, _ = registered
    uuid = Region.of(image).uuid
    with node_shell(sysroot) as sh:
        sh.ok(C_HB_CTL, "-S", "-d", str(image), "ocfs2")
        out = sh.ok(MOUNTED, "-d", str(image))
        row = out.splitlines()[1].split()
        assert row == [str(image), "o2cb", "demo", uuid, "tests"]
        # -f lists the nodes in the slot map, which only a mounting kernel writes:
        # heartbeat alone is "Not mounted" (docs/compatibility.md).
        out = sh.ok(MOUNTED, "-f", str(image))
        assert re.search(rf"^{re.escape(str(image))}\s+o2cb\s+demo\s+Not mounted$", out, re.M)
        sh.ok(C_HB_CTL, "-K", "-d", str(image), "ocfs2")


def test_mounted_ocfs2_scans_loop_devices(sysroot: Path, image: Path) -> None:
    uuid = Region.of(image).uuid
    with loop_device(image) as dev, node_shell(sysroot) as sh:
        out = sh.ok(MOUNTED, "-d")
        rows = [line.split() for line in out.splitlines()[1:]]
        assert [dev, "o2cb", "demo", uuid, "tests"] in rows


# -- as an ordinary user, in a user namespace --------------------------------------------


def test_ordinary_user_in_a_user_namespace(tmp_path: Path, image: Path) -> None:
    work = user_workdir(tmp_path)
    try:
        img = work / "vol.img"
        subprocess.run(["cp", "--sparse=always", str(image), str(img)], check=True)
        conf = cluster_conf(work / "cluster.conf")
        give_to_user(img, conf)
        uuid = Region.of(img).uuid
        with user_node_shell(work) as sh:
            assert sh.ok("id", "-u").strip() == "0"  # mapped root
            assert sh.ok("hostname").strip() == "n1"
            sh.ok(O2CB, f"--config-file={conf}", "register-cluster", "demo")
            assert sh.ok("cat", "/sys/kernel/config/cluster/demo/node/n1/local") == "1\n"
            sh.ok(C_HB_CTL, "-S", "-d", str(img), "ocfs2")
            assert sh.refs(C_HB_CTL, "-d", str(img)) == f"{uuid}: 1 refs\n"
            assert sh.refs(PY_HB_CTL, "-d", str(img)) == f"{uuid}: 1 refs\n"
            assert sh.sem(uuid) == (0, 1)
            assert sh.ok("cat", f"/sys/kernel/debug/o2hb/{uuid}/livenodes").split() == ["0"]
            assert uuid in sh.ok("ls", "/sys/kernel/config/cluster/demo/heartbeat").split()
            sh.ok(C_HB_CTL, "-K", "-d", str(img), "ocfs2")
            assert sem_key(uuid) not in sh.sem_keys()
            assert uuid not in sh.ok("ls", "/sys/kernel/config/cluster/demo/heartbeat")
            sh.ok(O2CB, f"--config-file={conf}", "unregister-cluster", "demo")
            assert sh.ok("ls", "/sys/kernel/config/cluster") == ""
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


def test_ordinary_user_against_roots_mount(tmp_path: Path, image: Path) -> None:
    """``fakecfs run`` as nobody makes its own user namespace; root's allow_other mount is
    visible there, read-only in effect (its entries belong to the real root)."""
    work = user_workdir(tmp_path)
    uuid = Region.of(image).uuid
    try:
        conf = cluster_conf(work / "cluster.conf")
        with fakecfs_mount(work / "sysroot", "--hb-interval-ms", "50") as sysroot:
            with node_shell(sysroot) as sh:
                sh.ok(O2CB, f"--config-file={conf}", "register-cluster", "demo")
            proc = subprocess.run(
                ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                 FAKECFS, "run", str(sysroot), "--node", "n1", "--",
                 "sh", "-c", f"id -u; hostname; cat /sys/kernel/config/cluster/demo/node/n1/num;"
                 f" {C_HB_CTL} -I -u {uuid}; {HBCTL} status --json"],
                capture_output=True, text=True, check=False, cwd=work,
                env={"PATH": os.environ["PATH"]},
            )
            assert proc.returncode == 0, proc.stderr
            lines = proc.stdout.split("\n")
            assert lines[:4] == ["0", "n1", "0", f"{uuid}: 0 refs"]
            status = json.loads("\n".join(lines[4:]))
            assert status["clusters"][0]["local_node"] == "n1"
            with node_shell(sysroot) as sh:
                sh.ok(O2CB, f"--config-file={conf}", "unregister-cluster", "demo")
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


# -- fakecfs run itself ----------------------------------------------------------------


def fakecfs_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FAKECFS, "run", *args], capture_output=True, text=True, check=False)


def test_run_places_the_surfaces_and_the_shim(sysroot: Path) -> None:
    script = (
        "stat -f -c %t /sys/kernel/config; "  # the shim's answer: configfs magic
        "env -u LD_PRELOAD stat -f -c %t /sys/kernel/config; "  # FUSE's, without it
        "cat /sys/fs/o2cb/interface_revision /sys/fs/ocfs2/cluster_stack "
        "/proc/sys/fs/ocfs2/nm/hb_ctl_path; ls /sys/kernel/debug/o2hb; "
        "test -d /sys/fs/cgroup && test -e /sys/kernel/mm && echo mirrored; hostname"
    )
    host_before = os.uname().nodename
    surfaces = {"/sys/kernel/config", "/config", "/sys/fs/ocfs2", "/sys/fs/o2cb", "/sys/fs",
                "/sys/kernel", "/proc/sys/fs", "/proc/sys/fs/ocfs2", "/sys/kernel/debug/o2hb"}
    mounted_before = host_mountpoints() & surfaces
    r = fakecfs_run(str(sysroot), "--node", "n7", "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["62656570", "65735546"]
    assert lines[2:5] == ["5", "o2cb", "/sbin/ocfs2_hb_ctl"]
    assert "livenodes" in lines[5:]
    assert lines[-2:] == ["mirrored", "n7"]  # sysfs's own entries still there
    # Nothing leaked to the host: no mount on those paths, the hostname unchanged.
    assert host_mountpoints() & surfaces == mounted_before
    assert os.uname().nodename == host_before


def host_mountpoints() -> set[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return {line.split()[4] for line in f}


def test_run_exit_status_and_errors(sysroot: Path, tmp_path: Path) -> None:
    assert fakecfs_run(str(sysroot), "--", "sh", "-c", "exit 7").returncode == 7
    assert fakecfs_run(str(sysroot), "true").returncode == 0  # '--' is optional
    r = fakecfs_run(str(sysroot))
    assert r.returncode == 1 and "no command given" in r.stderr
    r = fakecfs_run(str(tmp_path), "--", "true")
    assert r.returncode == 1 and "is not a live fakecfs mount" in r.stderr
    r = fakecfs_run(str(sysroot), "--", "no-such-command-here")
    assert r.returncode == 127 and "no-such-command-here" in r.stderr
    r = fakecfs_run("--node", "n3", str(sysroot), "--", "hostname")  # options first
    assert (r.returncode, r.stdout) == (0, "n3\n")
    r = fakecfs_run(str(sysroot), "--device", str(tmp_path / "gone.img"), "--", "true")
    assert r.returncode == 1 and "--device" in r.stderr and "No such file" in r.stderr
    r = fakecfs_run(str(sysroot), "--device", str(tmp_path), "--", "true")  # a directory
    assert r.returncode == 1 and "not an image file or block device" in r.stderr


def test_run_builds_the_shim_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    from fakecfs import run

    source = tmp_path / "fakecfs_preload.c"
    shutil.copy(run.PRELOAD_SOURCE, source)
    monkeypatch.setattr(run, "PRELOAD_DIR", str(tmp_path))
    monkeypatch.setattr(run, "PRELOAD_SOURCE", str(source))
    built = run.preload_library()
    assert built == str(tmp_path / run.PRELOAD_NAME)
    assert Path(built).read_bytes()[:4] == b"\x7fELF"
    mtime = os.stat(built).st_mtime_ns
    assert run.preload_library() == built and os.stat(built).st_mtime_ns == mtime  # fresh
    source.write_text("#error broken\n")
    os.utime(source, ns=(mtime + 10**9, mtime + 10**9))  # newer than the library
    with pytest.raises(run.RunError, match=r"building .* failed"):
        run.preload_library()


def test_run_nodes_do_not_share_semaphores(sysroot: Path) -> None:
    """--node gives each run its own IPC namespace: n1's sets are invisible to n2."""
    with node_shell(sysroot, "n1") as n1, node_shell(sysroot, "n2") as n2:
        n1.ok(C_HB_CTL, "-I", "-u", "B7E82B346F634EEA831B1E24655B60BE")  # creates the set
        assert n1.sem_keys() == [sem_key("B7E82B346F634EEA831B1E24655B60BE")]
        assert n2.sem_keys() == []
        assert (n1.ok("hostname"), n2.ok("hostname")) == ("n1\n", "n2\n")


def test_run_without_any_mount_namespace_says_so(sysroot: Path) -> None:
    """No CAP_SYS_ADMIN and no user namespaces left: a clear message and exit 1.

    Made real without touching the host: inside a throwaway user namespace, its own
    user.max_user_namespaces is set to 0 and every capability is dropped.
    """
    script = ("echo 0 > /proc/sys/user/max_user_namespaces && "
              'exec setpriv --bounding-set=-all --inh-caps=-all --no-new-privs "$@"')
    r = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh",
                        FAKECFS, "run", str(sysroot), "--", "true"],
                       capture_output=True, text=True, check=False)
    if "max_user_namespaces" in r.stderr and "fakecfs run" not in r.stderr:
        pytest.skip(f"cannot build the no-namespace setting here: {r.stderr.strip()}")
    assert r.returncode == 1
    assert r.stderr.startswith("fakecfs run: no mount namespace available (")
    assert "unshare(CLONE_NEWNS) failed" in r.stderr
