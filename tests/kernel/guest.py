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

import errno
import json
import os
import stat
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
    from hbctl.devices import read_volume

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
    from hbctl.devices import read_volume

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
    step("stack while mounted", _stack_while_mounted())
    step("umount m2", run(hbctl, "umount", "/tmp/m2"))
    state("after umount m2")
    step("umount m1", run(hbctl, "umount", "/tmp/m1"))
    state("after umount m1")
    ch.say("mount", uuid=uuid, steps=steps)
    ch.say("done")


def _stack_while_mounted() -> dict[str, object]:
    """stackglue with an o2cb volume mounted: the active plugin, and cluster_stack writes."""
    out: dict[str, object] = {"active": read_text("/sys/fs/ocfs2/active_cluster_plugin")}
    for label in ("pcmk", "o2cb\n"):
        try:
            fd = os.open("/sys/fs/ocfs2/cluster_stack", os.O_WRONLY)
            try:
                os.write(fd, label.encode())
            finally:
                os.close(fd)
            out[f"write {label.strip()}"] = "ok"
        except OSError as e:
            out[f"write {label.strip()}"] = errno.errorcode.get(e.errno or 0, str(e.errno))
    return out


def task_interop(ch: Channel, dev: str, dead_threshold: str) -> None:
    """The kernel node of a two-node heartbeat with the host's fakecfs node, on command.

    Reports every change of the real o2hb's livenodes as it happens ("live"); commands from
    the host: "start" (our ocfs2_hb_ctl -S), "stop" (-K, a clean leave), "quit".
    """
    from hbctl.devices import read_volume

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


def _misc_device(name: str) -> str | None:
    """The /dev node of misc device ``name`` (devtmpfs names it; udev is not running)."""
    minor = None
    with open("/proc/misc", encoding="ascii") as f:
        for line in f:
            fields = line.split()
            if fields[1:2] == [name]:
                minor = int(fields[0])
    if minor is None:
        return None
    for dirpath, _, files in os.walk("/dev"):
        for entry in files:
            path = os.path.join(dirpath, entry)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 10 \
                    and os.minor(st.st_rdev) == minor:
                return path
    return None


def task_userstack(ch: Channel, _dev: str, modules: str) -> None:
    """Load fs/dlm and ocfs2_stack_user (the host put them in the folder ``modules``), then
    run the user-stack script (tests/catalogue/userstack_script.py) on the kernel's files."""
    import ctypes

    from tests.catalogue.userstack_script import run_script

    before = {name: read_text(f"/sys/fs/ocfs2/{name}")
              for name in ("loaded_cluster_plugins", "cluster_stack")}
    libc = ctypes.CDLL(None, use_errno=True)
    for name in ("dlm", "ocfs2_stack_user"):
        data = Path(modules, f"{name}.ko").read_bytes()
        if libc.syscall(175, data, len(data), b"") != 0:  # init_module (x86_64)
            raise OSError(ctypes.get_errno(), f"init_module {name}")
    control, dlm_control = _misc_device("ocfs2_control"), _misc_device("dlm-control")
    if control is None or dlm_control is None:
        raise RuntimeError(f"misc devices not found: {control}, {dlm_control}")
    steps = run_script("/sys/fs/ocfs2", control, dlm_control, "/proc/misc")
    ch.say("userstack", before=before, devices=[control, dlm_control], steps=steps,
           down=_down_phase_in_child(control))
    ch.say("done")


def _down_phase_in_child(control: str) -> list[list[str]]:
    """The down phase in a child: a kernel oops kills it mid-step; say which step and why."""
    import json as _json

    from tests.catalogue.userstack_script import down_phase

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(rfd)

        def report(step: str, result: str | None) -> None:
            line = ["try", step] if result is None else ["done", step, result]
            os.write(wfd, (_json.dumps(line) + "\n").encode())

        down_phase(control, report)
        os._exit(0)
    os.close(wfd)
    # Not a plain read to EOF and waitpid: a task killed by an oops while holding
    # ocfs2_control's mutex may hang in its exit (closing that very device).
    import select

    buf, lines = b"", []
    while True:
        ready, _, _ = select.select([rfd], [], [], 30)
        if not ready:
            break
        chunk = os.read(rfd, 4096)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            lines.append(_json.loads(line))
    os.close(rfd)
    reaped, status = os.waitpid(pid, os.WNOHANG)
    if not reaped:
        status = -1  # still there: stuck in its exit
    out = [[line[1], line[2]] for line in lines if line[0] == "done"]
    tried = [line[1] for line in lines if line[0] == "try"]
    if status == -1 or os.WIFSIGNALED(status) or os.WEXITSTATUS(status):
        oops = ""
        log = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
        for line in log.splitlines():
            if "detected buffer overflow" in line:
                oops = line.split("]", 1)[-1].strip()
                break
        fate = "stuck" if status == -1 else "killed"
        out.append([tried[-1] if tried else "?", f"{fate}: {oops or 'no oops line found'}"])
    return out


TASKS: dict[str, Callable[..., None]] = {
    "catalogue": task_catalogue, "hbctl": task_hbctl, "interop": task_interop,
    "mount": task_mount, "userstack": task_userstack,
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
