"""The real-kernel lane's guest side: runs inside the QEMU guest against Linux's own configfs.

``python -m tests.kernel.guest TASK [ARGS]`` speaks JSON lines prefixed ``@@`` on
``/dev/ttyS1`` (the host's Unix socket) and reads commands from it. Tasks:

* ``catalogue IMAGE``: replay every non-extension catalogue case on the real configfs and
  report each step's result (the recording that tests/catalogue/kernel-results.json holds);
* ``hbctl DEV``: hbctl cluster register, ocfs2_hb_ctl -S/-I/-K (ours) by device and by UUID
  beside the C tool, with the real o2hb's debugfs livenodes;
* ``interop DEV DEAD_THRESHOLD``: heartbeat with a fakecfs node on the host on one image,
  starting and stopping on the host's command, reporting every livenodes change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import IO

CONFIGFS = "/sys/kernel/config"
DEBUGFS = "/sys/kernel/debug"
VENV_BIN = Path(sys.executable).parent
C_HB_CTL = "/sbin/ocfs2_hb_ctl"
CLUSTER = "demo"
# The guest is node 0 ("guest"), the host's fakecfs node is node 1 ("host"): with two nodes
# the kernel's quorum keeps the lowest node up, so the guest never fences itself when the
# host's node dies (and o2net never connects: nothing listens on the host's address).
CLUSTER_CONF = f"""\
cluster:
\tnode_count = 2
\theartbeat_mode = local
\tname = {CLUSTER}

node:
\tip_port = 7777
\tip_address = 127.0.0.1
\tnumber = 0
\tname = guest
\tcluster = {CLUSTER}

node:
\tip_port = 7777
\tip_address = 127.0.0.2
\tnumber = 1
\tname = host
\tcluster = {CLUSTER}
"""


class Channel:
    """The ttyS1 line to the host, raw (no echo, no CR/LF translation)."""

    def __init__(self, path: str = "/dev/ttyS1") -> None:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self.fd = fd
        self.reader: IO[bytes] = os.fdopen(os.dup(fd), "rb", buffering=0)
        self._buf = b""

    def say(self, kind: str, **fields: object) -> None:
        data = b"@@" + json.dumps({"kind": kind, **fields}).encode() + b"\n"
        while data:
            data = data[os.write(self.fd, data):]

    def command(self) -> str:
        while b"\n" not in self._buf:
            self._buf += os.read(self.fd, 4096)
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode().strip()


def task_catalogue(ch: Channel, image: str) -> None:
    from tests.catalogue.catalogue import SyscallReplay, cleanup, load
    from tests.catalogue.recorded import unexpand

    for case in load():
        if "extension" in case.tags:
            continue
        runner = SyscallReplay(CONFIGFS, image)
        steps: list[str] = []
        started = time.monotonic()
        try:
            for step in case.steps:
                steps.append(unexpand(runner.run(step), image))
        finally:
            runner.close()
        took = time.monotonic() - started
        try:
            cleanup(CONFIGFS)
            clean = "ok"
        except OSError as exc:
            clean = f"{type(exc).__name__}: {exc}"
        ch.say("case", name=case.name, results=steps, seconds=round(took, 3), cleanup=clean)
    ch.say("done")


def run(*argv: str) -> dict[str, object]:
    """Run a tool; its argv, exit status, output and wall time."""
    started = time.monotonic()
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    return {"argv": list(argv), "rc": proc.returncode, "out": proc.stdout, "err": proc.stderr,
            "seconds": round(time.monotonic() - started, 2)}


def read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="latin-1")
    except OSError:
        return None


def register(dead_threshold: int | None = None) -> dict[str, object]:
    conf = Path("/tmp/cluster.conf")
    conf.write_text(CLUSTER_CONF, encoding="ascii")
    extra = [] if dead_threshold is None else ["--dead-threshold", str(dead_threshold)]
    return run(str(VENV_BIN / "hbctl"), "cluster", "register", "--config", str(conf),
               "--node", "guest", *extra, CLUSTER)


def region_state(uuid: str) -> dict[str, object]:
    rdir = f"{CONFIGFS}/cluster/{CLUSTER}/heartbeat/{uuid}"
    return {"exists": os.path.isdir(rdir),
            **{a: read_text(f"{rdir}/{a}") for a in ("block_bytes", "start_block", "blocks",
                                                    "dev", "pid")},
            "livenodes": read_text(f"{DEBUGFS}/o2hb/{uuid}/livenodes")}


def surfaces(uuid: str) -> dict[str, object]:
    """Every file of the o2hb debugfs tree and of /sys/fs/o2cb, /sys/fs/ocfs2 (paths without
    the leading /, the region's name as UUID): its mode and, for the files that do not change
    by the second, its content."""
    out: dict[str, object] = {}
    for top in (f"{DEBUGFS}/o2hb", "/sys/fs/o2cb", "/sys/fs/ocfs2"):
        for dirpath, _, files in os.walk(top):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                mode = f"{os.stat(path).st_mode & 0o7777:04o}"
                text = None if name == "elapsed_time_in_ms" else read_text(path)
                out[path.lstrip("/").replace(uuid, "UUID")] = [mode, text]
    return out


def task_hbctl(ch: Channel, dev: str) -> None:
    """hbctl and our ocfs2_hb_ctl on real configfs, beside the C tool, by device and UUID."""
    from ocfs2fmt.blockdev import read_volume

    uuid = read_volume(dev).uuid
    ours = str(VENV_BIN / "ocfs2_hb_ctl")
    hbctl = str(VENV_BIN / "hbctl")
    steps: list[dict[str, object]] = []

    def step(label: str, result: dict[str, object]) -> None:
        result["label"] = label
        steps.append(result)

    def refs(label: str) -> None:
        step(f"{label}: ours -I -d", run(ours, "-I", "-d", dev))
        step(f"{label}: C -I -d", run(C_HB_CTL, "-I", "-d", dev))
        step(f"{label}: ours -I -u", run(ours, "-I", "-u", uuid))
        step(f"{label}: C -I -u", run(C_HB_CTL, "-I", "-u", uuid))

    step("register", register())
    node = f"{CONFIGFS}/cluster/{CLUSTER}/node"
    step("nodes", {"local": {n: read_text(f"{node}/{n}/local") for n in ("guest", "host")},
                   "num": {n: read_text(f"{node}/{n}/num") for n in ("guest", "host")}})
    step("ours -S -d", run(ours, "-S", "-d", dev, "o2cb"))
    step("started", region_state(uuid))
    step("surfaces", {"files": surfaces(uuid)})
    refs("1")
    step("ours -S -u", run(ours, "-S", "-u", uuid, "o2cb"))
    refs("2")
    step("C -S -d", run(C_HB_CTL, "-S", "-d", dev, "o2cb"))
    step("hbctl start -d", run(hbctl, "start", "-d", dev))
    refs("4")
    step("status", run(hbctl, "status", "--json"))
    step("hbctl stop -u", run(hbctl, "stop", "-u", uuid))
    step("C -K -u", run(C_HB_CTL, "-K", "-u", uuid, "o2cb"))
    step("ours -K -u", run(ours, "-K", "-u", uuid, "o2cb"))
    refs("1 again")
    step("running", region_state(uuid))
    step("ours -K -d", run(ours, "-K", "-d", dev, "o2cb"))
    step("stopped", region_state(uuid))
    refs("0")
    ch.say("hbctl", uuid=uuid, steps=steps)
    ch.say("done")


def task_mount(ch: Channel, dev: str) -> None:
    """hbctl mount/umount on the real kernel: two mounts of one device share one reference;
    the last umount's put_super runs hb_ctl_path (our ocfs2_hb_ctl -K) and heartbeat stops."""
    from ocfs2fmt.blockdev import read_volume

    uuid = read_volume(dev).uuid
    ours = str(VENV_BIN / "ocfs2_hb_ctl")
    hbctl = str(VENV_BIN / "hbctl")
    calls = Path("/tmp/hb-ctl-calls")
    Path("/tmp/lane-hb-ctl").write_text(
        f'echo "$@" >> {calls}\nexec {ours} "$@"\n', encoding="ascii")
    Path("/proc/sys/fs/ocfs2/nm/hb_ctl_path").write_text("/lane/hb_ctl\n", encoding="ascii")
    steps: list[dict[str, object]] = []

    def step(label: str, result: dict[str, object]) -> None:
        result["label"] = label
        steps.append(result)

    def state(label: str) -> None:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[2] == "ocfs2"]
        step(label, {"refs": run(ours, "-I", "-u", uuid)["out"], "mounts": mounts,
                     "region": os.path.isdir(f"{CONFIGFS}/cluster/{CLUSTER}/heartbeat/{uuid}"),
                     "hb_ctl_calls": read_text(str(calls))})

    step("register", register())
    for d in ("/tmp/m1", "/tmp/m2"):
        os.mkdir(d)
    step("mount m1", run(hbctl, "mount", dev, "/tmp/m1"))
    state("after mount m1")
    Path("/tmp/m1/hello").write_text("written on the real ocfs2\n", encoding="ascii")
    step("mount m2", run(hbctl, "mount", dev, "/tmp/m2"))
    state("after mount m2")
    step("read through m2", {"text": read_text("/tmp/m2/hello")})
    step("umount m2", run(hbctl, "umount", "/tmp/m2"))
    state("after umount m2")
    step("umount m1", run(hbctl, "umount", "/tmp/m1"))
    state("after umount m1")
    ch.say("mount", uuid=uuid, steps=steps)
    ch.say("done")


def task_interop(ch: Channel, dev: str, dead_threshold: str) -> None:
    """The kernel node of a two-node heartbeat with the host's fakecfs node, on command.

    Reports every change of the real o2hb's livenodes as it happens ("live"); commands from
    the host: "start" (our ocfs2_hb_ctl -S), "stop" (-K, a clean leave), "quit".
    """
    from ocfs2fmt.blockdev import read_volume

    uuid = read_volume(dev).uuid
    ours = str(VENV_BIN / "ocfs2_hb_ctl")
    reg = register(int(dead_threshold))
    if reg["rc"] != 0:
        raise RuntimeError(f"register failed: {reg}")
    ch.say("registered", uuid=uuid,
           dead_threshold=read_text(f"{CONFIGFS}/cluster/{CLUSTER}/heartbeat/dead_threshold"))
    lock = threading.Lock()

    def say(kind: str, **fields: object) -> None:
        with lock:
            ch.say(kind, **fields)

    def watch() -> None:
        last: list[int] | None = None
        path = f"{DEBUGFS}/o2hb/{uuid}/livenodes"
        while True:
            text = read_text(path)
            nodes = [int(x) for x in text.split()] if text else []
            if nodes != last:
                say("live", nodes=nodes, at=round(time.monotonic(), 3))
                last = nodes
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    while True:
        command = ch.command()
        if command == "start":
            result = run(ours, "-S", "-d", dev, "o2cb")
            say("started", **result)
        elif command == "stop":
            result = run(ours, "-K", "-d", dev, "o2cb")
            say("stopped", **result)
        elif command == "quit":
            say("done")
            return


TASKS: dict[str, Callable[..., None]] = {
    "catalogue": task_catalogue, "hbctl": task_hbctl, "interop": task_interop,
    "mount": task_mount,
}


def main(argv: list[str]) -> int:
    ch = Channel()
    os.environ.pop("HBCTL_SYSROOT", None)  # the guest's own kernel is the real one
    ch.say("hello", uname=os.uname().release, python=sys.version.split()[0],
           uptime=float(Path("/proc/uptime").read_text().split()[0]))
    try:
        task = TASKS[argv[0]]
        task(ch, *argv[1:])
    except BaseException as exc:
        import traceback

        ch.say("error", text="".join(traceback.format_exception(exc)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
