"""The "mounted" flag: where it lives, how it is read, and the counting rules it gives.

The flag set sits beside the C tools' 2-semaphore refcount set under its own key and
names that set's identity; these tests run on real SysV semaphores, each scenario in
a private IPC namespace (``unshare --ipc``) so nothing is left on the host and every
line of ``/proc/sysvipc/sem`` is the scenario's own. The counting rules run against a
real fakecfs mount (the emulated configfs) with a real mkfs image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hbctl.semaphores import decode_owner, encode_owner, flag_key, region_key

ROOT = Path(__file__).resolve().parents[2]
UUID = "B7E82B346F634EEA831B1E24655B60BE"

needs_ns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private IPC namespace",
)

PRELUDE = textwrap.dedent(
    """
    import json, os, sys
    from hbctl import semaphores as S
    UUID = "B7E82B346F634EEA831B1E24655B60BE"

    def sets():
        with open("/proc/sysvipc/sem") as f:
            rows = [line.split() for line in f.read().splitlines()[1:]]
        return sorted([int(r[0]) & 0xFFFFFFFF, int(r[3])] for r in rows)
    """
)


def run_scenario(body: str, env: dict[str, str] | None = None, prefix: str = "") -> Any:
    script = PRELUDE + prefix + textwrap.dedent(body)
    proc = subprocess.run(
        ["unshare", "--ipc", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- pure -------------------------------------------------------------------------------------


@pytest.mark.parametrize("semid", [0, 1, 32766, 32767, 32768, 1 << 30, (1 << 31) - 1])
def test_owner_encoding_round_trips_within_semvmx(semid: int) -> None:
    parts = encode_owner(semid)
    assert decode_owner(parts) == semid
    assert all(0 <= p <= 32767 for p in parts)
    assert any(parts)  # a fresh all-zero set never looks like an owner


def test_zero_values_decode_as_no_owner() -> None:
    assert decode_owner([0, 0, 0]) == -1


def test_flag_key_differs_from_every_refcount_key_the_c_tools_compute() -> None:
    assert flag_key(UUID) != region_key(UUID)
    assert flag_key(UUID) == region_key(UUID + ":mounted")


# -- the flag set on real semaphores -------------------------------------------------------------


@needs_ns
def test_flag_lives_in_a_second_set_and_clearing_removes_it() -> None:
    out = run_scenario(
        """
        s = S.RegionSemaphores.open(UUID)
        before = [S.mounted_flag(s), S.peek_mounted_flag(UUID)]
        S.set_mounted_flag(s)
        during = [S.mounted_flag(s), S.peek_mounted_flag(UUID), sets(), s.refs()]
        S.set_mounted_flag(s)  # setting twice leaves one set
        twice = sets()
        S.clear_mounted_flag(UUID)
        S.clear_mounted_flag(UUID)  # clearing twice is harmless
        after = [S.mounted_flag(s), S.peek_mounted_flag(UUID), sets()]
        print(json.dumps({"before": before, "during": during, "twice": twice,
                          "after": after}))
        """
    )
    key = region_key(UUID) & 0xFFFFFFFF
    fkey = flag_key(UUID) & 0xFFFFFFFF
    assert out["before"] == [False, False]
    # the C tools' set keeps 2 semaphores and its count; the flag set has 3
    assert out["during"] == [True, True, sorted([[key, 2], [fkey, 3]]), 0]
    assert out["twice"] == out["during"][2]
    assert out["after"] == [False, False, [[key, 2]]]


@needs_ns
def test_a_flag_orphaned_by_a_c_style_stop_reads_clear_on_the_next_set() -> None:
    """The C -K at 0 removes only the 2-sem set: the flag names a set that is gone."""
    out = run_scenario(
        """
        s = S.RegionSemaphores.open(UUID)
        S.set_mounted_flag(s)
        s.destroy()  # what the C tool does at 0 refs
        orphan = [S.peek_mounted_flag(UUID), sets()]
        fresh = S.RegionSemaphores.open(UUID)
        stale = S.mounted_flag(fresh)
        S.set_mounted_flag(fresh)  # replaces the stale flag set
        now = [S.mounted_flag(fresh), len(sets())]
        print(json.dumps({"orphan": orphan, "stale": stale, "now": now,
                          "ids": [s.semid, fresh.semid]}))
        """
    )
    assert out["orphan"][0] is False
    assert out["stale"] is False
    assert out["now"] == [True, 2]
    assert out["ids"][0] != out["ids"][1]


@needs_ns
def test_peek_never_creates_a_set() -> None:
    out = run_scenario(
        """
        r = [S.peek_mounted_flag(UUID), S.peek_refs(UUID), sets()]
        print(json.dumps(r))
        """
    )
    assert out == [False, None, []]


# -- the counting rules, on the emulated configfs ------------------------------------------------


@pytest.fixture
def volume(sysroot: Path, tmp_path: Path) -> dict[str, str]:
    """A registered one-node cluster 'demo' and a fresh mkfs image for it."""
    from tests.nodes import configure, mkfs

    image = mkfs(tmp_path / "vol.img")
    configure(sysroot, "demo", nodes=1, local=0)
    return {"HBCTL_SYSROOT": str(sysroot), "HBCTL_DEVICES": str(image), "IMAGE": str(image)}


RULES = """
from hbctl import mounting as M, regions as R
from ocfs2fmt.blockdev import read_volume_with_sector
from hbctl.sysroot import from_env
root = from_env()
image = os.environ["IMAGE"]
vol, desc = read_volume_with_sector(image)
U = vol.uuid

def state():
    return {"refs": S.peek_refs(U), "flag": S.peek_mounted_flag(U),
            "region": os.path.isdir(R.region_dir(root, "demo", U)), "sets": len(sets())}

def join():
    return M.mount_group_join(root, "o2cb", vol, U, image, desc).took_ref

def put_super():
    M.mount_group_leave(root, "o2cb", vol, U)
"""


@needs_ns
def test_mounts_share_one_reference_and_one_put_super_stop_ends_heartbeat(
    volume: dict[str, str],
) -> None:
    out = run_scenario("""
        steps = {}
        steps["first"] = [join(), state()]
        steps["second"] = [join(), state()]
        steps["third"] = [join(), state()]
        put_super()
        steps["put"] = state()
        print(json.dumps(steps))
        """, volume, RULES)
    assert out["first"] == [True, {"refs": 1, "flag": True, "region": True, "sets": 2}]
    assert out["second"] == [False, out["first"][1]]
    assert out["third"] == [False, out["first"][1]]
    assert out["put"] == {"refs": None, "flag": False, "region": False, "sets": 0}


@needs_ns
def test_tool_refs_are_their_own_and_the_last_stop_whoever_makes_it_ends_everything(
    volume: dict[str, str],
) -> None:
    out = run_scenario("""
        steps = {}
        R.begin_group_join(root, "o2cb", vol, U, image, desc, persist=True)  # ocfs2_hb_ctl -S
        steps["tool"] = state()
        steps["mount"] = [join(), state()]   # the region runs, but the flag is not set yet
        put_super()                          # clears the flag, drops the mount's ref
        steps["put"] = state()
        steps["again"] = [join(), state()]   # a new mount takes a new reference
        M.tool_group_leave(root, "o2cb", vol, U)  # the tool lets go
        steps["tool_gone"] = state()
        put_super()
        steps["end"] = state()
        print(json.dumps(steps))
        """, volume, RULES)
    assert out["tool"] == {"refs": 1, "flag": False, "region": True, "sets": 1}
    assert out["mount"] == [True, {"refs": 2, "flag": True, "region": True, "sets": 2}]
    assert out["put"] == {"refs": 1, "flag": False, "region": True, "sets": 1}
    assert out["again"] == [True, {"refs": 2, "flag": True, "region": True, "sets": 2}]
    assert out["tool_gone"] == {"refs": 1, "flag": True, "region": True, "sets": 2}
    assert out["end"] == {"refs": None, "flag": False, "region": False, "sets": 0}


@needs_ns
def test_put_super_without_the_flag_drops_one_like_upstream(volume: dict[str, str]) -> None:
    """Mounts made by the C mount.ocfs2 (+1 each, no flag) keep upstream's counting."""
    out = run_scenario("""
        for _ in range(2):
            R.begin_group_join(root, "o2cb", vol, U, image, desc, persist=True)
        put_super()
        one = state()
        put_super()
        print(json.dumps([one, state()]))
        """, volume, RULES)
    assert out == [{"refs": 1, "flag": False, "region": True, "sets": 1},
                   {"refs": None, "flag": False, "region": False, "sets": 0}]


@needs_ns
def test_a_tool_stop_reaching_zero_removes_a_stale_flag_set_too(volume: dict[str, str]) -> None:
    out = run_scenario("""
        join()
        M.tool_group_leave(root, "o2cb", vol, U)  # -K by hand takes the mount's ref away
        print(json.dumps(state()))
        """, volume, RULES)
    # Nothing pins the region here (no emulated mount), so the stop at 0 removes it all.
    assert out == {"refs": None, "flag": False, "region": False, "sets": 0}


# -- hbctl.mounting's pure parts: the real host's mount(8) and /proc/mounts ----------------------


def test_real_host_mount_runs_mount8_without_the_c_helper() -> None:
    from hbctl import mounting as M

    # -i: mount(8) must not run the C mount.ocfs2, which would take a second reference
    assert M.mount_argv("/dev/sdb1", "/srv", ["heartbeat=local", "noatime"]) == \
        ["mount", "-i", "-t", "ocfs2", "-o", "heartbeat=local,noatime", "/dev/sdb1", "/srv"]
    assert M.bind_argv("/srv", "/b", False) == ["mount", "--bind", "/srv", "/b"]
    assert M.bind_argv("/srv", "/b", True) == ["mount", "--rbind", "/srv", "/b"]
    assert M.umount_argv("/srv") == ["umount", "/srv"]


def test_proc_mounts_and_the_emulated_table_parse_to_the_same_records() -> None:
    from hbctl import mounting as M

    proc = ("/dev/sda1 / ext4 rw 0 0\n"
            "/dev/sdb1 /srv/my\\040data ocfs2 rw,heartbeat=local 0 0\n")
    assert M.parse_proc_mounts(proc, lambda dev: UUID) == [
        M.MountRecord("/dev/sdb1", "/srv/my data", "rw,heartbeat=local", None, UUID)]
    emulated = f"/tmp/x.img /srv/my\\040data ocfs2 rw,heartbeat=local sb1 {UUID}\n"
    assert M.parse_emulated_mounts(emulated) == [
        M.MountRecord("/tmp/x.img", "/srv/my data", "rw,heartbeat=local", "sb1", UUID)]
    assert M.control_command("bind", "/a b", "/c") == "bind /a\\040b /c\n"


def test_only_the_mounts_service_is_put_supers_stop() -> None:
    from hbctl.mounting import is_mount_service

    assert is_mount_service(None) and is_mount_service("ocfs2")
    assert not is_mount_service("fsck.ocfs2") and not is_mount_service("hbctl")


def test_a_sysroot_without_the_emulated_table_is_a_clear_error(tmp_path: Path) -> None:
    from hbctl import mounting as M
    from hbctl.sysroot import Sysroot

    with pytest.raises(M.MountError, match="no emulated mount table"):
        M.umount(Sysroot(str(tmp_path)), "/mnt/a")
    with pytest.raises(M.MountError, match="is not an ocfs2 volume"):
        junk = tmp_path / "junk"
        junk.write_bytes(b"\0" * 8192)
        M.mount(Sysroot(str(tmp_path)), str(junk), "/mnt/a")
