"""Wire interop, host side: a fakecfs node (node 1) and the guest's real o2hb (node 0)
heartbeat on one image, and each notices the other join, leave cleanly, and die.

The image is fully allocated and shared with qemu as cache=none without file locking, so
the guest's O_DIRECT bios and fakecfs's writes meet on the same disk blocks. fakecfs runs
at the kernel's fixed 2000 ms interval, both sides with the same small dead_threshold.
Each measured time runs from the cause (a start or stop returning, a SIGKILL) to the moment
the other side's livenodes show it; the guest's changes arrive over its serial line.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.kernel import lane
from tests.kernel.scenarios import guest_command, ocfs2_disk

INTERVAL_MS = 2000  # the kernel's O2HB_REGION_TIMEOUT_MS, fixed in 6.1
GUEST, HOST = 0, 1


@dataclass
class InteropRun:
    dead_threshold: int
    interval_ms: int = INTERVAL_MS
    times: dict[str, float] = field(default_factory=dict)  # event -> seconds
    log: list[str] = field(default_factory=list)


class _GuestView:
    """The guest's messages, pumped by a thread; its latest livenodes."""

    def __init__(self, guest: lane.Guest) -> None:
        self.guest = guest
        self.q: queue.Queue[tuple[float, dict[str, Any]] | BaseException] = queue.Queue()
        self.live: list[int] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for item in self.guest.messages(3600):
                self.q.put(item)
        except BaseException as exc:  # the guest died or said nothing: reported by wait()
            self.q.put(exc)

    def wait(self, want: Callable[[dict[str, Any]], bool], timeout: float,
             what: str) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"guest: no {what} within {timeout:.0f} s") from None
            if isinstance(item, BaseException):
                raise AssertionError(f"guest: waiting for {what}: {item}") from item
            at, msg = item
            if msg.get("kind") == "error":
                raise AssertionError(f"guest failed: {msg.get('text')}")
            if msg.get("kind") == "live":
                self.live = list(msg["nodes"])
            if want(msg):
                return at, msg

    def until_live(self, pred: Callable[[list[int]], bool], timeout: float,
                   what: str) -> float:
        if pred(self.live):
            return time.monotonic()
        at, _ = self.wait(lambda m: m.get("kind") == "live" and pred(list(m["nodes"])),
                          timeout, what)
        return at


class _HostNode:
    """One fakecfs mount playing node 1."""

    def __init__(self, mnt: Path, image: Path, dead_threshold: int) -> None:
        from tests.nodes import Region, configure

        self.mnt = mnt
        self.image = image
        self.region = Region.of(image)
        self.cdir = configure(mnt, "demo", nodes=2, local=HOST, dead_threshold=dead_threshold)

    def start(self) -> float:
        from tests.nodes import start_region

        start_region(self.cdir, self.region, self.image)
        return time.monotonic()

    def stop(self) -> float:
        os.rmdir(self.cdir / "heartbeat" / self.region.uuid)
        return time.monotonic()

    def live(self) -> list[int]:
        from tests.nodes import livenodes

        try:
            return livenodes(self.mnt, self.region.uuid)
        except OSError:
            return []

    def until_live(self, pred: Callable[[list[int]], bool], timeout: float, what: str) -> float:
        deadline = time.monotonic() + timeout
        while not pred(self.live()):
            if time.monotonic() > deadline:
                raise AssertionError(f"host: no {what} within {timeout:.0f} s "
                                     f"(livenodes {self.live()})")
            time.sleep(0.02)
        return time.monotonic()


@contextlib.contextmanager
def _fakecfs(mnt: Path) -> Iterator[Path]:
    from tests.fakecfs_fixtures import fakecfs_mount

    with fakecfs_mount(mnt, "--hb-interval-ms", str(INTERVAL_MS)) as path:
        yield path


def _kill_daemon(mnt: Path) -> float:
    from fakecfs.daemon import daemon_pid

    pid = daemon_pid(str(mnt))
    assert pid is not None, f"no fakecfs daemon for {mnt}"
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def run_interop(art: lane.Artefacts, workdir: Path, dead_threshold: int = 3,
                timeout: float = 60.0) -> InteropRun:
    image = ocfs2_disk(workdir / "shared.img")
    result = InteropRun(dead_threshold)
    t = result.times
    guest = lane.boot(art, workdir, guest_command("interop", "/dev/vda", str(dead_threshold)),
                      disks=(image,), hostname="guest")
    view = _GuestView(guest)
    try:
        view.wait(lambda m: m.get("kind") == "registered", 120, "registration")
        with _fakecfs(workdir / "sysroot1") as mnt1:
            host = _HostNode(mnt1, image, dead_threshold)
            # Both start at once, as two nodes mounting together would.
            host_ready: list[float] = []
            began = time.monotonic()
            starter = threading.Thread(target=lambda: host_ready.append(host.start()))
            starter.start()
            guest.send("start")
            g_ready, msg = view.wait(lambda m: m.get("kind") == "started", timeout, "start")
            assert msg["rc"] == 0, msg
            t["guest dev write (kernel, peer joining)"] = float(msg["seconds"])
            starter.join(timeout)
            assert host_ready, "the host's dev write did not return"
            t["host dev write (fakecfs, peer joining)"] = host_ready[0] - began
            t["host sees guest join"] = host.until_live(lambda n: GUEST in n, timeout,
                                                        "guest live") - g_ready
            t["guest sees host join"] = view.until_live(lambda n: HOST in n, timeout,
                                                        "host live") - host_ready[0]

            left = host.stop()
            t["guest notices host's clean leave"] = view.until_live(
                lambda n: HOST not in n, timeout, "host gone") - left
            back = host.start()
            view.until_live(lambda n: HOST in n, timeout, "host back")
            result.log.append(f"host restarted, guest saw it after "
                              f"{time.monotonic() - back:.1f} s")

            guest.send("stop")
            g_left, msg = view.wait(lambda m: m.get("kind") == "stopped", timeout, "stop")
            assert msg["rc"] == 0, msg
            t["host notices guest's clean leave"] = host.until_live(
                lambda n: GUEST not in n, timeout, "guest gone") - g_left
            guest.send("start")
            g_ready, msg = view.wait(lambda m: m.get("kind") == "started", timeout, "restart")
            assert msg["rc"] == 0, msg
            host.until_live(lambda n: GUEST in n, timeout, "guest back")

            killed = _kill_daemon(mnt1)
            t["guest notices host's death"] = view.until_live(
                lambda n: HOST not in n, timeout, "host dead") - killed
        with _fakecfs(workdir / "sysroot2") as mnt2:
            host = _HostNode(mnt2, image, dead_threshold)
            host.start()
            host.until_live(lambda n: GUEST in n, timeout, "guest live again")
            view.until_live(lambda n: HOST in n, timeout, "host live again")
            guest.kill()
            killed = time.monotonic()
            t["host notices guest's death"] = host.until_live(
                lambda n: GUEST not in n, timeout, "guest dead") - killed
            host.stop()
    finally:
        guest.kill()
        guest.close(5)
        subprocess.run(["sync"], check=False)
    return result
