"""Differential test: the C ``ocfs2_hb_ctl`` and ours, seen from the emulated kernel.

The same scenario (start, start, refs, stop, stop) is driven once with each tool against
a fresh fakecfs mount that traces every configfs operation (``fakecfs mount --trace``).
Per step, the two runs must produce the same operations — op, path, value, result, in
order — and leave the same semaphore values. This pins down libo2cb's order of writes,
the values written, and the refcount protocol, not just the end state.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat.ctools import (
    C_HB_CTL,
    O2CB,
    PY_HB_CTL,
    cluster_conf,
    loop_device,
    node_shell,
    require_ctools,
    trace_lines,
)
from tests.fakecfs_fixtures import fakecfs_mount, require_fuse
from tests.nodes import Region, mkfs

SCENARIO = [("-S", True), ("-S", True), ("-I", False), ("-K", True), ("-K", True)]

Step = tuple[str, list[tuple[object, ...]], tuple[int, int] | None, str]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_ctools()
    require_fuse()
    return mkfs(tmp_path_factory.mktemp("img") / "vol.img")


def normalized(op: dict[str, object]) -> tuple[object, ...]:
    """An operation as compared. The ``dev`` value is the writer's own fd number: any
    decimal fd is the same protocol, so it is checked for form, then compared as "<fd>"."""
    value = op["value"]
    if op["op"] == "write" and str(op["path"]).endswith("/dev"):
        assert str(value).isdigit(), op
        value = "<fd>"
    return (op["op"], op["path"], value, op["result"])


def drive(tool: str, workdir: Path, uuid: str, target: list[str]) -> list[Step]:
    """Run SCENARIO with ``tool``; per step: (action, operations, semaphores, output)."""
    workdir.mkdir()
    trace = workdir / "trace.jsonl"
    conf = cluster_conf(workdir / "cluster.conf")
    steps: list[Step] = []
    with fakecfs_mount(workdir / "sysroot", "--hb-interval-ms", "50",
                       "--trace", str(trace)) as sysroot, node_shell(sysroot, "n1") as sh:
        sh.ok(O2CB, f"--config-file={conf}", "register-cluster", "demo")
        seen = len(trace_lines(trace))
        for action, with_service in SCENARIO:
            out = sh.ok(tool, action, *target, *(["ocfs2"] if with_service else []))
            ops = trace_lines(trace)
            steps.append((action, [normalized(o) for o in ops[seen:]], sh.sem(uuid), out))
            seen = len(ops)
        sh.ok(O2CB, f"--config-file={conf}", "unregister-cluster", "demo")
    return steps


def check_same(c: list[Step], py: list[Step], region: Region) -> None:
    uuid = region.uuid
    assert [s[0] for s in c] == [a for a, _ in SCENARIO]
    for c_step, py_step in zip(c, py, strict=True):
        assert c_step == py_step, f"step {c_step[0]} differs"
    rdir = f"/sys/kernel/config/cluster/demo/heartbeat/{uuid}"
    # And what they agree on is libo2cb's protocol (spec ocfs2-tools.md §2.5, §3.6).
    first_start = c[0][1]
    assert [(op, path) for op, path, _, _ in first_start] == [
        ("mkdir", rdir), ("write", f"{rdir}/block_bytes"),
        ("write", f"{rdir}/start_block"), ("write", f"{rdir}/blocks"),
        ("write", f"{rdir}/dev"),
    ]
    assert [value for _, _, value, _ in first_start] == [
        None, "512", str(region.start_block), "255", "<fd>"]  # no newlines, decimal
    assert [result for _, _, _, result in first_start][:4] == [0, 3, len(
        str(region.start_block)), 3]
    assert int(str(first_start[4][3])) > 0  # the dev write returned once steady
    assert [s[2] for s in c] == [(0, 1), (0, 2), (0, 2), (0, 1), None]
    assert c[1][1] == []  # second start: mkdir fails EEXIST in the VFS, only sem 1 moves
    assert c[2][3] == f"{uuid}: 2 refs\n"
    assert c[3][1] == []
    assert c[4][1] == [("rmdir", rdir, None, 0)]


def test_same_operations_and_semaphores_by_device(tmp_path: Path, image: Path) -> None:
    region = Region.of(image)
    target = ["-d", str(image)]
    c = drive(C_HB_CTL, tmp_path / "c", region.uuid, target)
    py = drive(PY_HB_CTL, tmp_path / "py", region.uuid, target)
    check_same(c, py, region)


def test_same_operations_and_semaphores_by_uuid(tmp_path: Path, image: Path) -> None:
    region = Region.of(image)
    uuid = region.uuid
    with loop_device(image):
        c = drive(C_HB_CTL, tmp_path / "c", uuid, ["-u", uuid])
        py = drive(PY_HB_CTL, tmp_path / "py", uuid, ["-u", uuid])
    check_same(c, py, region)
