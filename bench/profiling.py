"""Where fakecfs's and our ocfs2_hb_ctl's time goes (``python -m bench --profile``).

* The daemon: fakecfs runs in the foreground under cProfile while the C client does
  ``stat`` of a full attribute path N times; the top functions by own time say whether the
  time is pyfuse3's per-request machinery, trio's scheduling or our handlers.
* Start-up: ``python -X importtime`` of the modules ``ocfs2_hb_ctl -I -u`` imports, the
  slowest by own time (nothing is run: ``-I`` would create a semaphore set on the host).
"""

from __future__ import annotations

import io
import pstats
import subprocess
import sys
import time
from pathlib import Path

from .build import build
from .fusebench import ATTR, ATTR_DIR, is_mounted, lazy_unmount

IMPORTS_OF_INFO = "import hbctl.compat, hbctl.errors, hbctl.stack, hbctl.sysroot, " \
    "hbctl.semaphores, signal"


def profile_daemon(workdir: Path, n: int, top: int = 22) -> str:
    """cProfile of fakecfs serving ``n`` full-path stats; the top functions as text."""
    mnt = workdir / "profiled"
    mnt.mkdir(parents=True, exist_ok=True)
    out = workdir / "fakecfs.prof"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "fakecfs.cli", "mount",
         str(mnt)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (is_mounted(mnt) and (mnt / "sys").exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fakecfs under cProfile did not mount")
            time.sleep(0.02)
        (mnt / ATTR_DIR).mkdir()
        path = str(mnt / ATTR_DIR / ATTR)
        t0 = time.perf_counter()
        subprocess.run([str(build("hammer")), "stat", path, str(n)], check=True,
                       capture_output=True)
        elapsed = time.perf_counter() - t0
    finally:
        # SIGTERM is what `fakecfs umount` sends; sent here because the daemon is our child
        # (until we reap it, `fakecfs umount` would see its zombie as a daemon still alive).
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        lazy_unmount(mnt)
    buf = io.StringIO()
    stats = pstats.Stats(str(out), stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    text = buf.getvalue()
    # Drop pstats' preamble down to the column header line.
    text = text[text.find("   ncalls"):] if "   ncalls" in text else text
    head = (f"fakecfs under cProfile: {n} x stat of a full attribute path in {elapsed:.2f} s "
            f"({elapsed / n * 1e6:.0f} us per stat, cProfile overhead included)\n")
    return head + text


def import_times(top: int = 15) -> str:
    """The slowest imports (own time) of what ``ocfs2_hb_ctl -I -u`` loads, site included."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORTS_OF_INFO],
                         capture_output=True, text=True, check=True)
    rows = []
    for line in res.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative, name = line[len("import time:"):].split("|")
        rows.append((int(self_us), int(cumulative), name.rstrip()))
    total = sum(r[0] for r in rows)
    lines = [f"imports of ocfs2_hb_ctl -I (site included): {len(rows)} modules, "
             f"{total / 1000:.1f} ms own time in total; slowest:",
             f"{'self ms':>8} {'cumul ms':>9}  module"]
    for own, cumul, module in sorted(rows, reverse=True)[:top]:
        lines.append(f"{own / 1000:8.1f} {cumul / 1000:9.1f}  {module}")
    return "\n".join(lines)
