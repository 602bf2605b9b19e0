"""The container entrypoint on the host, in private namespaces: a node in seconds, no Docker.

`unshare --mount --ipc --uts --pid --fork` gives the entrypoint what a container gives it
(its own mounts, semaphores, hostname, and PID 1), so its logic is checked here quickly: the
surfaces bound at their real paths (the C ocfs2_hb_ctl finds them), registration from
cluster.conf by hostname, heartbeat on the shared image, the command's exit status passed
on, and a SIGTERM to PID 1 (what `docker stop` sends) ending in a clean leave on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.container.lane import Volume
from tests.fakecfs_fixtures import require_fuse

pytestmark = pytest.mark.mount

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "container" / "entrypoint.py"
PRELOAD = ROOT / "fakecfs" / "preload" / "fakecfs_preload.so"
BIN = Path(sys.executable).parent


def requirements() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (private mount namespaces over /sys and /proc)")
    require_fuse()
    for tool in ("mkfs.ocfs2", "ocfs2_hb_ctl", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing")
    if not PRELOAD.exists():
        pytest.skip("the statfs shim is not built (make -C fakecfs/preload)")


def run_node(tmp_path: Path, command: str, hostname: str = "node1",
             **extra: str | None) -> subprocess.CompletedProcess[str]:
    """The entrypoint as PID 1 of fresh namespaces, running ``command`` as its CMD."""
    env = {
        "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HBCTL_SYSROOT": str(tmp_path / "sysroot"),
        "OCFS2_CLUSTER_CONF": str(ROOT / "container" / "cluster.conf"),
        "HEARTBEAT_DEVICE": str(tmp_path / "shared.img"),
        "FAKECFS_HB_INTERVAL_MS": "100",
        "O2CB_HEARTBEAT_THRESHOLD": "5",
        "LD_PRELOAD": str(PRELOAD),
        "LANG": "C.UTF-8",
    }
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    # A private /run, as a container has: the entrypoint keeps its state there.
    script = (f'mount -t tmpfs tmpfs /run && hostname {hostname} && '
              f'exec "$0" {ENTRYPOINT} sh -c "$1"')
    return subprocess.run(
        ["unshare", "--mount", "--ipc", "--uts", "--pid", "--fork", "--mount-proc",
         "--propagation", "private", "sh", "-c", script, sys.executable, command],
        env=env, capture_output=True, text=True, timeout=120, check=False)


def test_node_serves_hbctl_and_the_c_tools_and_passes_the_status_on(tmp_path: Path) -> None:
    requirements()
    volume = Volume.make(tmp_path / "shared.img")
    before = volume.outside_heartbeat_digest()
    proc = run_node(tmp_path, "echo BEGIN; hbctl status --json; "
                              "ocfs2_hb_ctl -I -d \"$HEARTBEAT_DEVICE\"; "
                              "cat /sys/fs/ocfs2/cluster_stack /sys/fs/o2cb/interface_revision; "
                              "ls /sys/kernel/config/cluster/demo/node; "
                              "test -d /sys/fs/cgroup && echo cgroup-kept; "
                              "cat /run/fakecfs-node/ready; echo; echo END; exit 3")
    assert proc.returncode == 3, proc.stderr
    out = proc.stdout.split("BEGIN\n", 1)[1].split("END\n", 1)[0]  # the command's output
    status, end = json.JSONDecoder().raw_decode(out)
    rest = out[end:]
    (cluster,) = status["clusters"]
    assert cluster["local_node"] == "node1" and cluster["dead_threshold"] == 5
    (region,) = cluster["regions"]
    assert region["uuid"] == volume.uuid and region["refs"] == 1
    assert [n["name"] for n in region["live_nodes"]] == ["node1"]
    lines = rest.split("\n")
    assert f"{volume.uuid}: 1 refs" in lines  # the unmodified C tool, at the real paths
    assert "o2cb" in lines
    assert {"node1", "node2", "node3"} <= set(lines)
    assert "cgroup-kept" in lines  # /sys/fs was shadowed, not replaced
    ready = json.loads(lines[-2])
    assert ready["node"] == "node1"
    assert ready["started"] <= ready["mounted"] <= ready["heartbeat_start"] <= ready["ready"]
    assert "node node1 is up" in proc.stderr
    assert volume.generations() == {1: 0}  # stopped cleanly when the command ended
    assert volume.outside_heartbeat_digest() == before


def test_sigterm_to_pid_1_is_a_clean_leave(tmp_path: Path) -> None:
    requirements()
    volume = Volume.make(tmp_path / "shared.img")
    proc = run_node(tmp_path, "kill -TERM 1; sleep 30", hostname="node2")
    assert proc.returncode == 128 + 15, proc.stderr
    assert "signal SIGTERM: stopping the node" in proc.stderr
    assert "heartbeat stopped" in proc.stdout + proc.stderr
    assert volume.generations() == {2: 0}


def test_unknown_host_is_refused_with_the_reason(tmp_path: Path) -> None:
    requirements()
    Volume.make(tmp_path / "shared.img")
    proc = run_node(tmp_path, "true", hostname="stranger")
    assert proc.returncode == 1
    assert ("'stranger' is not a node of cluster 'demo'" in proc.stderr
            and "--hostname NODE" in proc.stderr), proc.stderr
    assert not (tmp_path / "sysroot" / "sys").exists()  # unmounted again


def test_the_init_script_can_bring_the_node_up_instead(tmp_path: Path) -> None:
    """O2CB_BRINGUP=init-script: Debian's /etc/init.d/o2cb online registers the cluster
    (timeouts from /etc/default/o2cb), then heartbeat starts as usual; offline at the end."""
    requirements()
    if not os.access("/etc/init.d/o2cb", os.X_OK):
        pytest.skip("/etc/init.d/o2cb missing (Debian's ocfs2-tools ships it)")
    volume = Volume.make(tmp_path / "shared.img")
    proc = run_node(tmp_path, "echo BEGIN; hbctl status --json; echo END",
                    O2CB_BRINGUP="init-script", O2CB_HEARTBEAT_THRESHOLD=None)
    assert proc.returncode == 0, proc.stderr
    assert 'Registering O2CB cluster "demo": OK' in proc.stdout
    assert "Setting O2CB cluster timeouts : OK" in proc.stdout
    status = json.loads(proc.stdout.split("BEGIN\n", 1)[1].split("END\n", 1)[0])
    (cluster,) = status["clusters"]
    assert cluster["local_node"] == "node1"
    assert cluster["dead_threshold"] == 31  # Debian's /etc/default/o2cb
    (region,) = cluster["regions"]
    assert region["uuid"] == volume.uuid and region["refs"] == 1
    # offline at the end: unregistered after the clean stop of heartbeat
    assert 'Unregistering O2CB cluster "demo": OK' in proc.stdout
    assert volume.generations() == {1: 0}


def test_init_script_bringup_refuses_an_environment_threshold(tmp_path: Path) -> None:
    requirements()
    Volume.make(tmp_path / "shared.img")
    proc = run_node(tmp_path, "true", O2CB_BRINGUP="init-script")
    assert proc.returncode == 1
    assert "set O2CB_HEARTBEAT_THRESHOLD there" in proc.stderr
