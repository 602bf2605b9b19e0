"""The real-kernel lane: Debian's 6.1 kernel under QEMU (KVM where real, TCG otherwise).

1. The catalogue replayed on the kernel's own configfs must give exactly the committed
   recording (tests/catalogue/kernel-results.json); FAKECFS_KERNEL_RECORD=1 re-records it.
2. hbctl and our ocfs2_hb_ctl on real configfs, by device and by UUID, beside the C tool.
3. Wire interop: a fakecfs node on the host and the kernel node in the guest, one image.

Skips (with the reason) only where qemu or the kernel package cannot be had.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.catalogue.catalogue import load
from tests.catalogue.recorded import RECORDING, SURFACES, load_recording, recorded_results
from tests.kernel import lane, scenarios
from tests.kernel.conftest import SUMMARY

pytestmark = pytest.mark.slow


def test_catalogue_on_the_real_kernel_matches_the_recording(artefacts: lane.Artefacts,
                                                             workdir: Path) -> None:
    run = scenarios.run_catalogue(artefacts, workdir)
    assert run.cleanup_failures == {}
    cases = [c for c in load() if "extension" not in c.tags]
    if os.environ.get("FAKECFS_KERNEL_RECORD") == "1":
        scenarios.write_recording(scenarios.recording_of(run, artefacts), RECORDING)
    recording = load_recording()
    changed = []
    for case in cases:
        try:
            want = recorded_results(case, recording)
        except ValueError as exc:
            changed.append(str(exc))
            continue
        got = run.results.get(case.name)
        if got != want:
            changed.append(f"{case.name}: recorded {want}, kernel now {got}")
    extensions = [c.name for c in load() if "extension" in c.tags]
    steps = sum(len(c.steps) for c in cases)
    SUMMARY.append(f"catalogue: {len(cases) - len(changed)}/{len(cases)} cases ({steps} steps) "
                   f"identical to the recording on {run.kernel} ({run.accel}, boot "
                   f"{run.boot_seconds:.1f} s, total {run.total_seconds:.1f} s); "
                   f"extensions not run: {', '.join(extensions)}")
    assert changed == [], "the kernel's answers changed; re-record with FAKECFS_KERNEL_RECORD=1"


def test_hbctl_and_ocfs2_hb_ctl_on_real_configfs(artefacts: lane.Artefacts,
                                                  workdir: Path) -> None:
    disk = scenarios.ocfs2_disk(workdir / "vol.img")
    out = scenarios.run_task(artefacts, workdir, "hbctl", disk)
    uuid = out["hbctl"]["uuid"]
    steps = {s["label"]: s for s in out["hbctl"]["steps"]}
    failed = {k: s for k, s in steps.items() if s.get("rc", 0) != 0}
    assert failed == {}

    assert steps["nodes"]["local"] == {"guest": "1\n", "host": "0\n"}
    assert steps["nodes"]["num"] == {"guest": "0\n", "host": "1\n"}
    started = steps["started"]
    assert started["exists"]
    assert (started["block_bytes"], started["blocks"], started["dev"]) == ("512\n", "255\n",
                                                                           "vda\n")
    assert started["pid"].strip().isdigit()
    assert started["livenodes"].split() == ["0"]  # the real o2hb sees itself live
    for n, label in ((1, "1"), (2, "2"), (4, "4"), (1, "1 again"), (0, "0")):
        for who in ("ours -I -d", "C -I -d", "ours -I -u", "C -I -u"):
            assert steps[f"{label}: {who}"]["out"] == f"{uuid}: {n} refs\n", (label, who)
    files = steps["surfaces"]["files"]
    if os.environ.get("FAKECFS_KERNEL_RECORD") == "1":
        SURFACES.write_text(json.dumps({"kernel": out["hello"]["uname"], "files": files},
                                       indent=1, sort_keys=True) + "\n", encoding="utf-8")
    assert files == load_recording(SURFACES)["files"], "the kernel's o2hb/o2cb files changed"
    status = json.loads(steps["status"]["out"])
    assert status["clusters"][0]["cluster"] == "demo"
    assert steps["running"]["exists"]
    assert not steps["stopped"]["exists"]  # the last -K removed the region
    start = steps["ours -S -d"]["seconds"]
    SUMMARY.append(f"hbctl on real configfs: register, -S -d (dev write {start:.1f} s), "
                   f"-S -u, C -S, hbctl start/stop, -K -u/-d; refs agree with the C tool at "
                   f"1, 2, 4, 1, 0; debugfs livenodes '0' (total {out['total_seconds']:.0f} s)")


def test_wire_interop_fakecfs_node_and_real_o2hb(artefacts: lane.Artefacts,
                                                  workdir: Path) -> None:
    from tests.kernel.interop import run_interop

    run = run_interop(artefacts, workdir, dead_threshold=3)
    t = run.times
    interval = run.interval_ms / 1000
    SUMMARY.append(f"interop (interval {run.interval_ms} ms both sides, dead_threshold "
                   f"{run.dead_threshold} both sides; death expected after about "
                   f"{run.dead_threshold * interval:.0f} s):")
    SUMMARY.extend(f"  {event}: {seconds:.2f} s" for event, seconds in t.items())
    # Joins: each side sees the other by the time its own start has returned, or soon after.
    assert t["host sees guest join"] < 2 * interval + 1
    assert t["guest sees host join"] < 2 * interval + 1
    # A clean leave is seen within an iteration or two, well before a death would be.
    for event in ("guest notices host's clean leave", "host notices guest's clean leave"):
        assert 0 <= t[event] < 2 * interval + 1, event
    # A death is declared after dead_threshold missed iterations, not before.
    for event in ("guest notices host's death", "host notices guest's death"):
        assert (run.dead_threshold - 1) * interval <= t[event], event
        assert t[event] < (run.dead_threshold + 1) * interval + 2, event


def test_hbctl_mount_on_real_ocfs2_and_put_super_runs_our_hb_ctl(artefacts: lane.Artefacts,
                                                                  workdir: Path) -> None:
    disk = scenarios.ocfs2_disk(workdir / "vol.img")
    out = scenarios.run_task(artefacts, workdir, "mount", disk)
    uuid = out["mount"]["uuid"]
    steps = {s["label"]: s for s in out["mount"]["steps"]}
    failed = {k: s for k, s in steps.items() if s.get("rc", 0) != 0}
    assert failed == {}
    one, zero = f"{uuid}: 1 refs\n", f"{uuid}: 0 refs\n"
    # Two mounts of one device share one superblock and one heartbeat reference.
    assert steps["after mount m1"]["refs"] == one
    assert steps["after mount m2"]["mounts"] == ["/tmp/m1", "/tmp/m2"]
    assert steps["after mount m2"]["refs"] == one
    assert steps["read through m2"]["text"] == "written on the real ocfs2\n"
    # stackglue while an o2cb volume is mounted (fakecfs: tests/mount/test_mount_lifecycle.py)
    stack = {k: v for k, v in steps["stack while mounted"].items() if k != "label"}
    assert stack == {"active": "o2cb\n", "write pcmk": "EBUSY", "write o2cb": "ok"}
    assert steps["after umount m2"]["refs"] == one
    assert steps["after umount m2"]["hb_ctl_calls"] is None  # the superblock lives on
    # The last umount: the kernel's put_super ran hb_ctl_path = our ocfs2_hb_ctl -K -u UUID.
    last = steps["after umount m1"]
    assert last["hb_ctl_calls"] == f"-K -u {uuid}\n"
    assert (last["refs"], last["mounts"], last["region"]) == (zero, [], False)
    SUMMARY.append(f"hbctl mount on real ocfs2: two mounts, one reference; put_super ran our "
                   f"ocfs2_hb_ctl {last['hb_ctl_calls'].strip()} and heartbeat stopped "
                   f"(mount {steps['mount m1']['seconds']:.1f} s, last umount "
                   f"{steps['umount m1']['seconds']:.1f} s)")


def test_user_stack_files_and_ocfs2_control_on_the_real_kernel(artefacts: lane.Artefacts,
                                                              workdir: Path) -> None:
    """dlm + ocfs2_stack_user loaded in the guest: the user-stack script's answers (held
    against fakecfs in every make test by tests/catalogue/test_userstack_recorded.py)."""
    from tests.catalogue.userstack_script import USERSTACK_RECORDING

    modules = scenarios.user_stack_modules(artefacts)
    disk = scenarios.ocfs2_disk(workdir / "vol.img")
    out = scenarios.run_task(artefacts, workdir, "userstack", disk, args=(str(modules),))
    got = out["userstack"]
    assert got["before"]["loaded_cluster_plugins"] == "o2cb\n"
    if os.environ.get("FAKECFS_KERNEL_RECORD") == "1":
        USERSTACK_RECORDING.write_text(json.dumps(
            {"kernel": out["hello"]["uname"], "devices": got["devices"], "steps": got["steps"],
             "down": got["down"]}, indent=1) + "\n", encoding="utf-8")
    recorded = load_recording(USERSTACK_RECORDING)
    assert (got["steps"], got["down"]) == (recorded["steps"], recorded["down"]), \
        "the kernel's user-stack answers changed; re-record with FAKECFS_KERNEL_RECORD=1"
