"""The real o2hb under faults, host side: one guest boot per scenario of faultreactions.py.

The guest's kernel is node 0 on a device-mapper device over /dev/vda; a fakecfs mount on the
host is node 1 on the same image (2000 ms, the kernel's fixed period; dead_threshold 3 on
both, the smallest that leaves a write timeout longer than one period: 4000 ms). Both start
together; once each sees the other and the guest has written after its steady state (so its
write timeout is armed), the fault is applied: a new dm table in the guest, QEMU's monitor
``stop``/``cont``, or a fakecfs fault on the host node. A fence ends the guest (the kernel
restarts the machine; QEMU runs with -no-reboot and exits), and the kernel's lines up to it
are in the console log with the kernel's timestamps, measured from the marker the guest
writes to /dev/kmsg as the table goes live.

``python -m tests.kernel.faultlane [SCENARIO ...]`` re-records tests/catalogue/kernel-faults.json.
"""

from __future__ import annotations

import datetime
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.kernel import lane
from tests.kernel.faultreactions import (
    BY_NAME,
    RECORDING,
    SCENARIOS,
    Scenario,
    console_lines,
    distinct,
    is_cluster_line,
)
from tests.kernel.interop import GUEST, HOST, INTERVAL_MS, _fakecfs, _GuestView, _HostNode
from tests.kernel.scenarios import guest_command, ocfs2_disk

DEAD_THRESHOLD = 4
INTERVAL_S = INTERVAL_MS / 1000
WRITE_TIMEOUT_S = (DEAD_THRESHOLD - 1) * INTERVAL_S
DELAY_MS = int(5 * WRITE_TIMEOUT_S * 1000)
PEER_DEAD_MS = 9000  # the peer's misconfigured hb_dead_ms (ours: 4 x 2000 = 8000)


def _slot_seq(image: Path, region: Any, node: int) -> int:
    from fakecfs.hbdisk import decode_block

    with open(image, "rb", buffering=0) as f:
        f.seek((region.start_block + node) * region.block_bytes)
        return decode_block(f.read(region.block_bytes)).seq


def _monitor(path: Path, command: str) -> str:
    """One command on QEMU's human monitor; its answer (read up to the next prompt, so the
    command has run before the connection closes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.settimeout(10)
        buf = b""
        while not buf.endswith(b"(qemu) "):
            buf += s.recv(4096)  # the banner and the first prompt
        s.sendall(command.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"(qemu) "):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf.decode(errors="replace")


def _table(template: str, reg: dict[str, Any]) -> str:
    slot1 = (reg["start_block"] + HOST) * reg["block_bytes"] // 512
    return template.format(S=reg["sectors"], DEV="/dev/vda", SLOT1=slot1, AFTER=slot1 + 1,
                           REST=reg["sectors"] - slot1 - 1, DELAY=DELAY_MS)


def _wait(pred: Any, timeout: float, what: str, guest: lane.Guest | None = None) -> float:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        if guest is not None and guest.proc.poll() is not None:
            raise AssertionError(f"guest ended while waiting for {what}")
        time.sleep(0.02)
    return time.monotonic()


def run_scenario(art: lane.Artefacts, workdir: Path, sc: Scenario) -> dict[str, Any]:
    """Boot, apply the scenario's fault, observe; the reaction as recorded."""
    lane.ensure_tool("dmsetup", "dmsetup")
    image = ocfs2_disk(workdir / "shared.img")
    mon = workdir / "monitor.sock"
    guest = lane.boot(art, workdir, guest_command("faults", "/dev/vda", str(DEAD_THRESHOLD)),
                      disks=(image,), monitor=mon)
    view = _GuestView(guest)
    outcome: dict[str, Any] = {}
    times: dict[str, float] = {}
    try:
        _, reg = view.wait(lambda m: m.get("kind") == "registered", 120, "registration")
        if sc.name == "eio-start":
            guest.send(f"table {_table(sc.table or '', reg)}")
            view.wait(lambda m: m.get("kind") == "applied", 30, "table")
            guest.send("start")
            _, msg = view.wait(lambda m: m.get("kind") == "started", 60, "start")
            outcome["dev_errno"] = msg["errno"]
            times["dev write returned"] = float(msg["seconds"])
            guest.send("quit")
            view.wait(lambda m: m.get("kind") == "done", 30, "quit")
            return _reaction(guest, sc, outcome, times)
        with _fakecfs(workdir / "sysroot") as mnt:
            host = _HostNode(mnt, image, DEAD_THRESHOLD)
            started: list[float] = []
            starter = threading.Thread(target=lambda: started.append(host.start()))
            starter.start()
            guest.send("start")
            _, msg = view.wait(lambda m: m.get("kind") == "started", 90, "start")
            assert msg["errno"] == 0, msg
            starter.join(90)
            assert started, "the host's dev write did not return"
            view.until_live(lambda n: HOST in n, 60, "host live")
            host.until_live(lambda n: GUEST in n, 60, "guest live")
            # A guest write after its steady state: its write timeout is armed.
            seq = _slot_seq(image, host.region, GUEST)
            _wait(lambda: _slot_seq(image, host.region, GUEST) != seq, 3 * INTERVAL_S + 10,
                  "a guest write after steady state", guest)
            if sc.table is not None:
                guest.send(f"table {_table(sc.table, reg)}")
                view.wait(lambda m: m.get("kind") == "applied", 30, "table")
                applied = time.monotonic()
                _observe_fence(guest, host, applied, outcome, times)
            elif sc.name == "freeze":
                _freeze(guest, host, mon, outcome, times)
            elif sc.peer == "corrupt":
                _peer_corrupt(guest, view, host, mnt, outcome, times)
    finally:
        guest.kill()
        guest.close(5)
    return _reaction(guest, sc, outcome, times)


def _observe_fence(guest: lane.Guest, host: _HostNode, applied: float,
                   outcome: dict[str, Any], times: dict[str, float]) -> None:
    """Until the guest fences (QEMU exits) and the host declares it dead, or a while."""
    limit = applied + WRITE_TIMEOUT_S + (DEAD_THRESHOLD + 2) * INTERVAL_S + 15
    dead_at = None
    while time.monotonic() < limit and (guest.proc.poll() is None or dead_at is None):
        if dead_at is None and GUEST not in host.live():
            dead_at = time.monotonic()
        time.sleep(0.02)
    outcome["fenced"] = guest.proc.poll() is not None
    outcome["peer declared dead"] = dead_at is not None
    if dead_at is not None:
        times["peer declares it dead (host clock)"] = round(dead_at - applied, 2)


def _freeze(guest: lane.Guest, host: _HostNode, mon: Path, outcome: dict[str, Any],
            times: dict[str, float]) -> None:
    _monitor(mon, "stop")
    stopped = time.monotonic()
    assert "paused" in _monitor(mon, "info status")
    dead = host.until_live(lambda n: GUEST not in n, (DEAD_THRESHOLD + 3) * INTERVAL_S + 15,
                           "the frozen guest declared dead")
    times["peer declares it dead (host clock)"] = round(dead - stopped, 2)
    outcome["peer declared dead"] = True
    # Stay stopped past the write timeout, counted from the stop, by a margin of a period.
    _wait(lambda: time.monotonic() - stopped >= WRITE_TIMEOUT_S + 2 * INTERVAL_S, 60,
          "the stall")
    times["stopped for (host clock)"] = round(time.monotonic() - stopped, 2)
    _monitor(mon, "cont")
    resumed = time.monotonic()
    # Watched past a write timeout and a rejoin, in case it fences late.
    limit = resumed + WRITE_TIMEOUT_S + 3 * INTERVAL_S + 5
    back_at = None
    while time.monotonic() < limit and guest.proc.poll() is None:
        if back_at is None and GUEST in host.live():
            back_at = time.monotonic()
        time.sleep(0.02)
    outcome["fenced"] = guest.proc.poll() is not None
    outcome["live again after thaw"] = back_at is not None
    if back_at is not None:
        times["peer sees it live again after cont (host clock)"] = round(back_at - resumed, 2)


def _peer_corrupt(guest: lane.Guest, view: _GuestView, host: _HostNode, mnt: Path,
                  outcome: dict[str, Any], times: dict[str, float]) -> None:
    from fakecfs.control import Faults

    faults = Faults(mnt)
    faults.corrupt(host.region.uuid)
    corrupted = time.monotonic()
    dead = view.until_live(lambda n: HOST not in n, (DEAD_THRESHOLD + 3) * INTERVAL_S + 15,
                           "the corrupt peer declared dead")
    outcome["peer declared dead"] = True
    times["declares the corrupt peer dead (host clock)"] = round(dead - corrupted, 2)
    faults.clear("corrupt", host.region.uuid)
    faults.deadms(host.region.uuid, PEER_DEAD_MS)
    cleared = time.monotonic()
    back = view.until_live(lambda n: HOST in n, 6 * INTERVAL_S + 15, "the peer live again")
    outcome["peer live again"] = True
    times["peer live again after good blocks (host clock)"] = round(back - cleared, 2)
    outcome["fenced"] = guest.proc.poll() is not None


def _reaction(guest: lane.Guest, sc: Scenario, outcome: dict[str, Any],
              times: dict[str, float]) -> dict[str, Any]:
    """The recorded reaction: the kernel's cluster lines after the fault (the marker), with
    their time from it; the fence's time in intervals."""
    return reaction_of(guest.console.read_text(errors="replace"), sc, outcome, times)


def reaction_of(console: str, sc: Scenario, outcome: dict[str, Any],
                times: dict[str, float]) -> dict[str, Any]:
    lines = console_lines(console)
    # The last marker the guest wrote: the fault applied, else the start that returned
    # (a freeze, a peer's fault), else the start that failed.
    marks = [(t, m) for t, m in lines if m.startswith("lane: ")]
    since, mark = marks[-1] if marks else (0.0, "")
    after = [(round(t - since, 3), m) for t, m in lines
             if t >= since and is_cluster_line(m) and not m.startswith("lane: ")]
    intervals: dict[str, float] = {}
    if mark.startswith("lane: fault applied"):
        for t, m in after:
            if "fencing this system" in m:
                intervals["fence after the fault"] = round(t / INTERVAL_S, 1)
                break
    return {"what": sc.what, "outcome": outcome, "lines": distinct([m for _, m in after]),
            "log": [f"+{t:.3f} s {m}" for t, m in after],
            "intervals": intervals, "host_times_s": times}


def update(art: lane.Artefacts, reactions: dict[str, dict[str, Any]]) -> None:
    """Write these scenarios' reactions into the recording, keeping the others."""
    old = json.loads(RECORDING.read_text()) if RECORDING.exists() else {}
    scen = {**old.get("scenarios", {}), **reactions}
    data = {"kernel": art.kernel_version, "package": lane.download(lane.kernel_package()).name,
            "recorded": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "interval_ms": INTERVAL_MS, "dead_threshold": DEAD_THRESHOLD,
            "scenarios": {s.name: scen[s.name] for s in SCENARIOS if s.name in scen}}
    RECORDING.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def timed(art: lane.Artefacts, workdir: Path, name: str) -> dict[str, Any]:
    began = time.monotonic()
    reaction = run_scenario(art, workdir / name, BY_NAME[name])
    reaction["lane_seconds"] = round(time.monotonic() - began, 1)
    return reaction


def main(argv: list[str]) -> int:
    art = lane.build()
    for name in argv or [s.name for s in SCENARIOS]:
        reaction = timed(art, Path("/var/tmp/fakecfs-kernel-faults"), name)
        update(art, {name: reaction})
        print(f"{name}: {json.dumps(reaction)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
