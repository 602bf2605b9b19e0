"""hbctl doctor's core: observed states made on purpose, findings and fixes (no I/O)."""

from __future__ import annotations

from hbctl.doctor import (
    ClearFlag,
    ClusterView,
    DropRefs,
    Finding,
    RegionView,
    RemoveSets,
    SemSetView,
    SetLocalNode,
    Snapshot,
    StopRegion,
    diagnose,
)

U = "B7E82B346F634EEA831B1E24655B60BE"
CLUSTER = ClusterView("demo", "n1", ("n1", "n2"))


def judge(*regions: RegionView, sets: tuple[SemSetView, ...] = (),
          tools: tuple[tuple[int, str], ...] = (),
          clusters: tuple[ClusterView, ...] = (CLUSTER,), host: str = "n1") -> list[Finding]:
    return diagnose(Snapshot(clusters, regions, sets, tools, host))


def kinds(findings: list[Finding]) -> list[tuple[str, object]]:
    return [(f.kind, f.action) for f in findings]


def region(**kw: object) -> RegionView:
    return RegionView(**{"cluster": "demo", "uuid": U, "device": "loop0", **kw})  # type: ignore[arg-type]


def test_healthy_states_have_no_findings() -> None:
    assert judge(region(refs=1, flag=True, mounts=3)) == []  # mounted flag: 1 for all
    assert judge(region(refs=2, mounts=2)) == []  # upstream: one per mount.ocfs2
    assert judge(region(refs=1, mounts=2)) == []  # a bind took none
    assert judge(region(global_mode=True, refs=None)) == []  # global: no semaphores
    assert judge() == []


def test_a_reference_no_mount_or_tool_holds_is_leaked() -> None:
    (f,) = judge(region(refs=1))
    assert (f.kind, f.action, f.blocked) == ("leaked-references", StopRegion("demo", U), None)
    assert "1 reference(s) but no mount" in f.message


def test_upstreams_two_mount_leak_while_one_mount_remains_keeps_its_share() -> None:
    # two mount.ocfs2, one umount (no put_super yet): 2 refs for 1 mount
    assert kinds(judge(region(refs=2, mounts=1))) == [
        ("leaked-references", DropRefs("demo", U, 1))]
    assert kinds(judge(region(refs=3, flag=True, mounts=2))) == [
        ("leaked-references", DropRefs("demo", U, 1))]


def test_a_stale_flag_is_cleared_before_the_references_go() -> None:
    assert kinds(judge(region(refs=1, flag=True))) == [
        ("stale-mounted-flag", ClearFlag(U)), ("leaked-references", StopRegion("demo", U))]


def test_regions_without_references_or_semaphores() -> None:
    assert kinds(judge(region(refs=0))) == [
        ("region-without-references", StopRegion("demo", U))]
    assert kinds(judge(region(refs=None))) == [
        ("region-without-semaphores", StopRegion("demo", U))]
    (f,) = judge(region(refs=None, mounts=1))  # mounted: reported, never stopped
    assert f.action is None and f.blocked and "mounted" in f.blocked


def test_a_vanished_device_stops_heartbeat_unless_mounted() -> None:
    (f,) = judge(region(refs=1, device_gone=True))
    assert (f.kind, f.action) == ("device-gone", StopRegion("demo", U))
    assert "loop0" in f.message
    (f,) = judge(region(refs=1, device_gone=True, mounts=1, flag=True))
    assert f.action is None and "unmount" in (f.blocked or "")
    (f,) = judge(region(global_mode=True, refs=None, device_gone=True))
    assert f.action == StopRegion("demo", U)


def test_nothing_is_fixed_while_a_tool_runs_or_the_mutex_is_held() -> None:
    (f,) = judge(region(refs=1), tools=((42, "tunefs.ocfs2"),))
    assert f.action == StopRegion("demo", U)
    assert f.blocked == "tunefs.ocfs2 (pid 42) is running in this node; run doctor again " \
        "when it ends"
    (f,) = judge(region(refs=0, mutex_held=True))
    assert f.blocked == "the region's mutex is held"


def test_semaphore_sets_without_a_region() -> None:
    refs = SemSetView(key=-5, nsems=2, kind="refs", uuid=U, refs=1)
    flag = SemSetView(key=7, nsems=3, kind="flag", uuid=U)
    unknown = SemSetView(key=0x1234, nsems=2, kind="unknown")
    found = judge(sets=(refs, flag, unknown))
    assert kinds(found) == [("semaphores-without-region", RemoveSets(U)),
                            ("stale-mounted-flag", RemoveSets(U)),
                            ("unknown-semaphores", None)]
    assert "0xfffffffb counts 1 reference(s)" in found[0].message
    assert "ipcrm -S 0x00001234" in found[2].message
    (f,) = judge(sets=(SemSetView(key=-5, nsems=2, kind="refs", uuid=U, refs=1, mounts=1),))
    assert f.blocked == "the volume is mounted"


def test_a_cluster_without_a_local_node() -> None:
    lost = ClusterView("demo", None, ("n1", "n2"))
    (f,) = judge(clusters=(lost,), host="n2")
    assert (f.kind, f.action, f.blocked) == ("no-local-node", SetLocalNode("demo", "n2"), None)
    (f,) = judge(clusters=(lost,), host="elsewhere")
    assert f.action is None and "--node NAME" in (f.blocked or "")


def test_json_shape() -> None:
    (f,) = judge(region(refs=0))
    assert f.to_json() == {
        "kind": "region-without-references", "subject": U, "message": f.message,
        "fix": f"stop heartbeat on {U} (rmdir the region, remove its semaphores)",
        "blocked": None,
    }
