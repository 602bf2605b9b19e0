"""``fakecfs cluster up|status|down``: N nodes on one image in one command, and back."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.fakecfs_fixtures import FAKECFS, require_fuse


def fakecfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FAKECFS, *args], capture_output=True, text=True, timeout=300)


def test_cluster_up_status_down(tmp_path: Path) -> None:
    require_fuse()
    if os.geteuid() != 0:
        pytest.skip("fakecfs cluster needs root")
    work = tmp_path / "c"
    bad = fakecfs("cluster", "up", str(work), "--nodes", "0")
    assert bad.returncode == 1 and "o2nm allows 1 to 255" in bad.stderr
    try:
        up = fakecfs("cluster", "up", str(work), "--nodes", "6", "--hb-interval-ms", "100",
                     "--dead-threshold", "11", "--wave", "3")
        assert up.returncode == 0, up.stderr
        assert "6 nodes up, all see all" in up.stdout
        status = json.loads(fakecfs("cluster", "status", str(work), "--json").stdout)
        assert [n["live"] for n in status["nodes"]] == [list(range(6))] * 6
        assert all(n["running"] for n in status["nodes"])
        # a node's commands run in its own namespaces: its hostname, its own refcount
        holder = status["nodes"][4]["holder"]
        out = subprocess.run(
            ["nsenter", "--ipc", "--uts", "--target", str(holder), "sh", "-c",
             f"hostname; HBCTL_SYSROOT={work}/node4 HBCTL_DEVICES={status['image']} "
             f"{Path(FAKECFS).parent / 'hbctl'} refs -u {status['uuid']}"],
            capture_output=True, text=True, check=True).stdout.split("\n")
        assert out[:2] == ["node4", f"{status['uuid']}: 1 refs"]
        again = fakecfs("cluster", "up", str(work))
        assert again.returncode == 1 and "already up" in again.stderr
        text = fakecfs("cluster", "status", str(work)).stdout
        assert "node5    running" in text
    finally:
        down = fakecfs("cluster", "down", str(work))
    assert down.returncode == 0, down.stderr
    with open("/proc/mounts", encoding="utf-8") as f:
        assert str(work) not in f.read()
    gone = fakecfs("cluster", "status", str(work))
    assert gone.returncode == 1 and "no cluster here" in gone.stderr
    for node in status["nodes"]:  # the namespace holders are gone (or zombies being reaped)
        try:
            state = Path(f"/proc/{node['holder']}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        assert state in ("gone", "Z", "X")


def test_cluster_bench(tmp_path: Path) -> None:
    require_fuse()
    if os.geteuid() != 0:
        pytest.skip("fakecfs cluster needs root")
    out = fakecfs("cluster", "bench", str(tmp_path / "b"), "--nodes", "3", "--hb-interval-ms",
                  "100", "--dead-threshold", "11", "--sample-s", "1", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["nodes"] == 3 and report["death_rule_s"] == 1.1
    # the survivors' detection, as the kernel's rule (after the last write, so never much
    # sooner than the rule after the kill; later only on a loaded machine)
    assert 1.1 - 0.2 <= report["death_detected_s"]["min"] <= report["death_detected_s"]["max"]
    assert report["death_detected_s"]["max"] <= 1.1 + 3.0
    assert report["cpu_per_node"]["max"] > 0 and report["rss_per_node_mib"]["min"] > 5
    with open("/proc/mounts", encoding="utf-8") as f:
        assert str(tmp_path / "b") not in f.read()
