"""The region semaphore set, on real SysV semaphores.

Every scenario runs in its own IPC namespace (``unshare --ipc``, needs root) so
tests neither see nor leave sets on the host and can read
``/proc/sysvipc/sem`` knowing every line is theirs. A scenario is a small
script run by the venv's Python inside the namespace; it forks its own workers
and prints one JSON document the test asserts on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from typing import Any

import pytest

from hbctl.semaphores import region_key

UUID = "B7E82B346F634EEA831B1E24655B60BE"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private IPC namespace",
)

# Common prelude of every scenario script.
PRELUDE = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from hbctl import semaphores as S
    from hbctl.errors import Code, O2cbError
    UUID = "B7E82B346F634EEA831B1E24655B60BE"

    def proc_sem():
        with open("/proc/sysvipc/sem") as f:
            rows = [line.split() for line in f.read().splitlines()[1:]]
        return [{"key": int(r[0]), "semid": int(r[1]), "perms": int(r[2], 8),
                 "nsems": int(r[3])} for r in rows]

    def vals(s):
        return [s.mutex_value(), s.refs()]

    def wait_child(pid):
        _, status = os.waitpid(pid, 0)
        return status
    """
)


def run_scenario(body: str, timeout: float = 60) -> Any:
    """Run PRELUDE + body in a fresh IPC namespace; return the JSON it prints last."""
    script = PRELUDE + textwrap.dedent(body)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        ["unshare", "--ipc", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_key_is_signed_crc32_of_the_uuid_text() -> None:
    assert region_key(UUID) == 0x3C8A5F59
    # case matters: the lower-case spelling is a different set (spec §1)
    assert region_key(UUID.lower()) & 0xFFFFFFFF == 0x5644B32F
    # keys at or above 2**31 are negative key_t values
    neg = next(f"{i:032X}" for i in range(1000) if zlib.crc32(f"{i:032X}".encode()) >= 1 << 31)
    assert region_key(neg) == zlib.crc32(neg.encode()) - (1 << 32) < 0


def test_set_has_two_semaphores_mode_000_and_the_c_tools_key() -> None:
    neg = next(f"{i:032X}" for i in range(1000) if zlib.crc32(f"{i:032X}".encode()) >= 1 << 31)
    out = run_scenario(
        f"""
        a = S.RegionSemaphores.open(UUID)
        b = S.RegionSemaphores.open({neg!r})
        again = S.RegionSemaphores.open(UUID)
        print(json.dumps({{"sets": proc_sem(), "a": a.semid, "again": again.semid,
                           "vals": vals(a)}}))
        """
    )
    by_key = {s["key"]: s for s in out["sets"]}
    assert set(by_key) == {0x3C8A5F59, region_key(neg)}
    for s in out["sets"]:
        # what `semget(key, 2, IPC_CREAT)` of the C tools makes: 2 sems, perms 0
        assert s["nsems"] == 2
        assert s["perms"] == 0
    assert by_key[0x3C8A5F59]["semid"] == out["a"] == out["again"]
    assert out["vals"] == [0, 0]


def test_concurrent_refs_from_many_processes_are_not_lost() -> None:
    out = run_scenario(
        """
        NPROC, CYCLES = 20, 50
        pids = []
        for i in range(NPROC):
            pid = os.fork()
            if pid == 0:
                s = S.RegionSemaphores.open(UUID)
                for c in range(CYCLES):
                    s.mutex_down()
                    s.get_ref(persist=True)
                    s.get_ref(persist=(c % 2 == 0))
                    s.mutex_up()
                    s.mutex_down()
                    s.drop_ref(persist=True)
                    s.mutex_up()
                os._exit(0)
            pids.append(pid)
        statuses = [wait_child(p) for p in pids]
        s = S.RegionSemaphores.open(UUID)
        print(json.dumps({"statuses": statuses, "vals": vals(s)}))
        """
    )
    assert out["statuses"] == [0] * 20
    # each worker leaves its 25 persistent extra refs; its 25 SEM_UNDO ones
    # went away when it exited
    assert out["vals"] == [0, 20 * 25]


def test_mutex_excludes_across_processes() -> None:
    out = run_scenario(
        """
        r, w = os.pipe()
        pids = []
        for i in range(8):
            pid = os.fork()
            if pid == 0:
                s = S.RegionSemaphores.open(UUID)
                for _ in range(20):
                    s.mutex_down()
                    os.write(w, b"(")
                    time.sleep(0.0005)
                    os.write(w, b")")
                    s.mutex_up()
                os._exit(0)
            pids.append(pid)
        [wait_child(p) for p in pids]
        os.close(w)
        data = b""
        while chunk := os.read(r, 4096):
            data += chunk
        print(json.dumps({"trace": data.decode()}))
        """
    )
    assert out["trace"] == "()" * 160


def test_sigkill_releases_the_mutex_and_undo_refs_but_not_persistent_ones() -> None:
    out = run_scenario(
        """
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            s = S.RegionSemaphores.open(UUID)
            s.mutex_down()
            s.get_ref(persist=False)
            s.get_ref(persist=False)
            s.get_ref(persist=True)
            os.write(w, b"x")
            time.sleep(60)
            os._exit(1)
        os.read(r, 1)
        s = S.RegionSemaphores.open(UUID)
        held = vals(s)
        os.kill(pid, signal.SIGKILL)
        wait_child(pid)
        after = vals(s)
        # the mutex is free again: we can take it without blocking
        s.mutex_down()
        taken = vals(s)
        s.mutex_up()
        print(json.dumps({"held": held, "after": after, "taken": taken}))
        """
    )
    assert out["held"] == [1, 3]
    assert out["after"] == [0, 1]
    assert out["taken"] == [1, 1]


def test_persistent_refs_survive_the_process_and_region_refs_reads_them() -> None:
    out = run_scenario(
        """
        for persist in (True, True, False):
            pid = os.fork()
            if pid == 0:
                s = S.mutex_down_lookup(UUID)
                s.get_ref(persist=persist)
                s.mutex_up()
                os._exit(0)
            wait_child(pid)
        before = proc_sem()
        refs = S.region_refs(UUID)
        other = S.region_refs("00000000000000000000000000000000")
        print(json.dumps({"refs": refs, "other": other, "before": len(before),
                          "after": len(proc_sem())}))
        """
    )
    assert out["refs"] == 2
    # region_refs of an unknown region is 0 and, like the C tool, creates its set
    assert out["other"] == 0
    assert (out["before"], out["after"]) == (1, 2)


def test_waiter_retries_when_the_set_is_removed_under_it() -> None:
    out = run_scenario(
        """
        holder = S.mutex_down_lookup(UUID)
        holder.get_ref(persist=True)
        old = holder.semid
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, b"w")
            s = S.mutex_down_lookup(UUID)  # blocks on the held mutex
            os.write(w, json.dumps({"semid": s.semid, "vals": vals(s)}).encode())
            s.mutex_up()
            os._exit(0)
        os.read(r, 1)
        time.sleep(0.3)  # let the child block in semop
        holder.destroy()  # a stopper removing the set at refcount 0
        wait_child(pid)
        os.close(w)
        child = json.loads(os.read(r, 4096))
        print(json.dumps({"old": old, "child": child, "sets": proc_sem()}))
        """
    )
    assert out["child"]["semid"] != out["old"]
    assert out["child"]["vals"] == [1, 0]  # fresh set, its mutex held by the child
    assert [s["key"] for s in out["sets"]] == [0x3C8A5F59]


def test_semop_on_a_removed_set_maps_like_libo2cb() -> None:
    out = run_scenario(
        """
        s = S.RegionSemaphores.open(UUID)
        s.destroy()
        try:
            s.get_ref(persist=True)
            code = None
        except O2cbError as e:
            code = e.code.name
        print(json.dumps({"code": code}))
        """
    )
    # EINVAL (the id is gone) is "Unable to access cluster service"
    assert out["code"] == "SERVICE_UNAVAILABLE"


def test_non_root_is_denied_by_mode_000() -> None:
    out = run_scenario(
        """
        S.RegionSemaphores.open(UUID)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.setgid(65534); os.setuid(65534)
            try:
                S.RegionSemaphores.open(UUID).get_ref(persist=True)
                res = "took a ref"
            except O2cbError as e:
                res = e.code.name
            os.write(w, res.encode())
            os._exit(0)
        wait_child(pid)
        print(json.dumps({"res": os.read(r, 100).decode()}))
        """
    )
    # semget asks for no permission bits, so it succeeds; semop fails EACCES
    assert out["res"] == "PERMISSION_DENIED"
