"""The real-kernel lane's host side: fetch Debian's 6.1 kernel, build a tiny initramfs, boot it.

The guest is a busybox initramfs holding only the kernel modules and an /init
(``init.sh``); everything else (Python, the project, ocfs2-tools) is the host's own tree,
shared read-only over 9p, so nothing is copied and the guest runs exactly the code under
test. Per boot, a shell script is appended to the cached initramfs as an uncompressed cpio.
The guest's results come back over a second serial port (``/dev/ttyS1``) connected to a
Unix socket this module listens on; the same line also carries commands to the guest.

Nothing is installed into the host except qemu (apt-get, when missing and root): the
kernel and busybox packages are downloaded with ``apt-get download`` and unpacked with
``dpkg-deb --fsys-tarfile`` into a cache keyed by their file names and this lane's inputs.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("FAKECFS_KERNEL_CACHE", "/var/cache/fakecfs-kernel-lane"))
QEMU = "qemu-system-x86_64"

# Wanted modules; their dependencies are read from each .ko's modinfo `depends=`.
WANTED = [
    "virtio_pci", "virtio_blk", "9pnet_virtio", "9p",
    "configfs", "ocfs2_nodemanager", "ocfs2_stackglue", "ocfs2_dlm", "ocfs2_stack_o2cb",
    # The filesystem itself: it sets /sys/fs/ocfs2/max_locking_protocol, as on a real host.
    "ocfs2",
    # device-mapper targets for the fault scenarios (error is built into dm-mod)
    "dm-mod", "dm-delay", "dm-flakey",
]
MODULE_DIRS = [
    "kernel/drivers/virtio", "kernel/drivers/block", "kernel/net/9p", "kernel/fs/9p",
    "kernel/fs/netfs", "kernel/fs/fscache", "kernel/fs/configfs", "kernel/fs/ocfs2",
    "kernel/fs/jbd2", "kernel/fs/quota", "kernel/drivers/md",
]


class LaneUnavailable(Exception):
    """qemu or the kernel package cannot be had here (the only reason to skip the lane)."""


@dataclass(frozen=True)
class Artefacts:
    kernel_version: str
    vmlinuz: Path
    initrd: Path


# --- cpio (newc), enough for an initramfs -------------------------------------------------

def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 1) -> bytes:
    nameb = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nameb), 0]
    header = b"070701" + b"".join(f"{v:08X}".encode() for v in fields)
    out = header + nameb
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An uncompressed newc archive of (name, mode, data); directories have data b""."""
    body = b"".join(_cpio_entry(n, m, d, i + 1) for i, (n, m, d) in enumerate(entries))
    body += _cpio_entry("TRAILER!!!", 0, b"", 0)
    return body + b"\0" * (-len(body) % 512)


# --- fetching and unpacking ----------------------------------------------------------------

def _depends_of_meta_package() -> str | None:
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                         capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        name = line.split(":", 1)[-1].strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-6.1."):
            return name
    return None


def kernel_package() -> str:
    """linux-image-6.1.*-amd64 that linux-image-amd64 depends on (apt's lists; as root,
    one ``apt-get update`` when they are empty), else the newest cached download."""
    name = _depends_of_meta_package()
    if name is None and os.geteuid() == 0 and not list(CACHE.glob("debs/linux-image-*.deb")):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        name = _depends_of_meta_package()
    if name is not None:
        return name
    cached = sorted(glob.glob(str(CACHE / "debs/linux-image-6.1.*-amd64_*.deb")))
    if cached:
        return Path(cached[-1]).name.split("_")[0]
    raise LaneUnavailable("apt-cache names no linux-image-6.1.*-amd64 and none is cached")


def download(package: str) -> Path:
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        proc = subprocess.run(["apt-get", "download", "-q", package], cwd=debs,
                              capture_output=True, text=True, check=False)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            raise LaneUnavailable(f"apt-get download {package} failed: {proc.stderr.strip()}")
    return found[-1]


def _members(deb: Path, wanted: list[str]) -> dict[str, bytes]:
    """Files of a .deb whose path starts with one of ``wanted`` (dpkg-deb --fsys-tarfile)."""
    proc = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                          check=True)
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        for member in tar:
            name = member.name.lstrip("./")
            if member.isfile() and any(name.startswith(w) for w in wanted):
                handle = tar.extractfile(member)
                assert handle is not None
                out[name] = handle.read()
    return out


def module_depends(ko: bytes) -> list[str]:
    """The ``depends=`` list from a module's .modinfo strings."""
    at = ko.find(b"\0depends=")
    if at < 0:
        return []
    value = ko[at + 9: ko.index(b"\0", at + 9)].decode()
    return [d for d in value.split(",") if d]


def load_order(modules: dict[str, bytes], wanted: list[str]) -> list[str]:
    """Dependencies first (no modules.dep in the package: depmod runs at install)."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path or name not in modules:
            raise LaneUnavailable(f"module {name}: missing or cyclic ({' -> '.join(path)})")
        for dep in module_depends(modules[name]):
            visit(dep, (*path, name))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def build() -> Artefacts:
    """vmlinuz + initramfs for the current kernel package, cached under CACHE."""
    kpkg = kernel_package()
    try:
        kdeb = download(kpkg)
    except LaneUnavailable:
        # Offline with an older kernel cached: use it rather than skip the lane.
        cached = sorted(CACHE.glob("debs/linux-image-6.1.*-amd64_*.deb"))
        if not cached:
            raise
        kdeb = cached[-1]
        kpkg = kdeb.name.split("_")[0]
    bdeb = download("busybox-static")
    init = (HERE / "init.sh").read_bytes()
    key = hashlib.sha256(b"|".join([kdeb.name.encode(), bdeb.name.encode(), init,
                                    ",".join(WANTED).encode()])).hexdigest()[:16]
    out = CACHE / key
    version = kpkg.removeprefix("linux-image-")
    art = Artefacts(version, out / "vmlinuz", out / "initrd.img")
    if art.vmlinuz.exists() and art.initrd.exists():
        os.utime(out)  # in use: kept by the sweep below
        return art
    # Builds for other inputs (an older init.sh or kernel) go once unused for a day: another
    # checkout on this machine (a branch with other modules) may be booting one right now.
    for old in CACHE.iterdir():
        if (old.is_dir() and old.name != "debs" and len(old.name) == 16 and "." not in old.name
                and time.time() - old.stat().st_mtime > 86400):
            shutil.rmtree(old, ignore_errors=True)
    kfiles = _members(kdeb, ["boot/vmlinuz-", *(f"lib/modules/{version}/{d}"
                                                for d in MODULE_DIRS)])
    busybox = _members(bdeb, ["bin/busybox"])["bin/busybox"]
    modules = {Path(n).name.removesuffix(".ko"): d for n, d in kfiles.items()
               if n.endswith(".ko")}
    order = load_order(modules, WANTED)
    entries: list[tuple[str, int, bytes]] = [
        (d, 0o40755, b"") for d in ("bin", "proc", "sys", "dev", "host", "lane",
                                   "lane/modules")]
    entries += [("bin/busybox", 0o100755, busybox), ("init", 0o100755, init),
                ("lane/modprobe", 0o100755, b"#!/bin/sh\nexit 0\n"),
                ("lane/modules.order", 0o100644, "\n".join(order).encode() + b"\n")]
    entries += [(f"lane/modules/{m}.ko", 0o100644, modules[m]) for m in order]
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    vmlinuz = next(d for n, d in kfiles.items() if n.startswith("boot/vmlinuz-"))
    (tmp / "vmlinuz").write_bytes(vmlinuz)
    packed = gzip.compress(cpio(entries), compresslevel=6, mtime=0)
    # Zero-padded to 512 bytes, so an uncompressed cpio appended later is unpacked too.
    (tmp / "initrd.img").write_bytes(packed + b"\0" * (-len(packed) % 512))
    (tmp / "modules.order").write_text("\n".join(order) + "\n")
    if out.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(out)
    return art


# --- qemu ----------------------------------------------------------------------------------

def ensure_tool(binary: str, package: str) -> str:
    """The path of a host tool, apt-get installing its package when missing (root only)."""
    path = shutil.which(binary, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path:
        return path
    if os.geteuid() != 0:
        raise LaneUnavailable(f"{binary} is not installed and we are not root to apt-get it")
    try:
        proc = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                               package], capture_output=True, text=True,
                              check=False, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        why = proc.stderr[-300:]
    except OSError as exc:  # no apt-get: not Debian
        why = str(exc)
    path = shutil.which(binary, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not path:
        raise LaneUnavailable(f"{binary} is missing and apt-get install {package} "
                              f"failed: {why}")
    return path


def ensure_qemu() -> str:
    return ensure_tool(QEMU, "qemu-system-x86")


def accelerator() -> tuple[list[str], str]:
    """KVM where it is real hardware virtualisation; TCG otherwise (a PVM /dev/kvm included)."""
    kvm_real = (os.access("/dev/kvm", os.R_OK | os.W_OK)
                and not os.path.exists("/sys/module/kvm_pvm")
                and (os.path.exists("/sys/module/kvm_intel")
                     or os.path.exists("/sys/module/kvm_amd")))
    if kvm_real:
        return ["-accel", "kvm", "-cpu", "host"], "kvm"
    return ["-accel", "tcg,thread=multi", "-cpu", "max"], "tcg"


class Guest:
    """One booted guest: its qemu process, its console log, and the ttyS1 line channel."""

    def __init__(self, proc: subprocess.Popen[bytes], conn: socket.socket, console: Path,
                 workdir: Path, accel: str, started: float) -> None:
        self.proc = proc
        self.conn = conn
        self.console = console
        self.workdir = workdir
        self.accel = accel
        self.started = started
        self._buf = b""

    def send(self, line: str) -> None:
        self.conn.sendall(line.encode() + b"\n")

    def messages(self, timeout: float) -> Iterator[tuple[float, dict[str, object]]]:
        """(host monotonic time of arrival, message) for each JSON line the guest prints."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                raw = raw.strip(b"\r")
                if raw.startswith(b"@@"):
                    yield time.monotonic(), json.loads(raw[2:])
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"guest said nothing for {timeout:.0f} s; console:\n"
                                   + self.console_tail())
            self.conn.settimeout(min(left, 1.0))
            try:
                chunk = self.conn.recv(65536)
            except TimeoutError:
                if self.proc.poll() is not None:
                    raise RuntimeError("guest powered off; console:\n"
                                       + self.console_tail()) from None
                continue
            if not chunk:
                raise RuntimeError("guest closed its channel; console:\n" + self.console_tail())
            self._buf += chunk

    def expect(self, kind: str, timeout: float) -> tuple[float, dict[str, object]]:
        for at, msg in self.messages(timeout):
            if msg.get("kind") == "error":
                raise RuntimeError(f"guest failed: {msg.get('text')}")
            if msg.get("kind") == kind:
                return at, msg
        raise AssertionError("unreachable")

    def console_tail(self, lines: int = 40) -> str:
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self, timeout: float = 30.0) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.conn.close()


def boot(art: Artefacts, workdir: Path, script: str, disks: tuple[Path, ...] = (),
         hostname: str = "guest", memory: str = "512M", monitor: Path | None = None) -> Guest:
    """Boot the guest; it runs ``script`` (sh, in the host tree, cwd = the repo) and powers off.

    Disks are virtio (/dev/vda, /dev/vdb, ...) with cache=none and no file locking, so the
    host may write the same image at the same time. ``monitor`` is a Unix socket path for
    QEMU's human monitor (``stop``/``cont`` freeze the whole machine).
    """
    qemu = ensure_qemu()
    workdir.mkdir(parents=True, exist_ok=True)
    run = f"cd {REPO}\n{script}\n"
    extra = cpio([("lane/run.sh", 0o100755, run.encode())])
    initrd = workdir / "initrd.img"
    initrd.write_bytes(art.initrd.read_bytes() + extra)
    sock_path = workdir / "ttyS1.sock"
    sock_path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    accel, accel_name = accelerator()
    console = workdir / "console.log"
    args = [qemu, *accel, "-m", memory, "-smp", "1", "-nographic", "-no-reboot",
            "-nic", "none", "-kernel", str(art.vmlinuz), "-initrd", str(initrd),
            "-append", f"console=ttyS0 quiet panic=-1 lane.hostname={hostname} lane.repo={REPO}",
            "-serial", f"file:{console}",
            "-chardev", f"socket,id=lane,path={sock_path}",
            "-device", "isa-serial,chardev=lane",
            "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,"
                       "multidevs=remap",
            # The repository again, on its own: under /tmp it would be hidden in the guest.
            "-virtfs", f"local,path={REPO},mount_tag=repo,security_model=none,readonly=on,"
                       "multidevs=remap"]
    if monitor is not None:
        monitor.unlink(missing_ok=True)
        args += ["-monitor", f"unix:{monitor},server=on,wait=off"]
    for disk in disks:
        args += ["-drive", f"file={disk},format=raw,if=virtio,cache=none,file.locking=off"]
    started = time.monotonic()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "qemu.err", "wb"))  # noqa: SIM115
    server.settimeout(30)
    try:
        conn, _ = server.accept()
    except TimeoutError:
        proc.kill()
        raise RuntimeError("qemu did not connect its serial socket: "
                           + (workdir / "qemu.err").read_text()) from None
    finally:
        server.close()
    return Guest(proc, conn, console, workdir, accel_name, started)
