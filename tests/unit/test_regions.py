"""Region start/stop/refs: libo2cb's order of configfs operations and refcount steps.

Semaphores are real: each scenario runs in its own IPC namespace
(``unshare --ipc``) as a function of this module called in a subprocess.

configfs is a stand-in, :class:`FakeConfigfs`: a few dozen lines that
materialise the attributes configfs creates on mkdir and log every operation,
so a test can assert the exact sequence. It is temporary: the fakecfs
integration tests (a real FUSE mount of the emulated kernel) replace it.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hbctl.errors import Code, O2cbError
from hbctl.sysroot import Sysroot

UUID = "B7E82B346F634EEA831B1E24655B60BE"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# -- the stand-in configfs ---------------------------------------------------------------

_DEFAULT_ATTRS = {
    "cluster": {
        "idle_timeout_ms": "30000\n",
        "keepalive_delay_ms": "2000\n",
        "reconnect_delay_ms": "2000\n",
        "fence_method": "reset\n",
    },
    "node": {"num": "0\n", "ipv4_port": "0\n", "ipv4_address": "0.0.0.0\n", "local": "0\n"},
    "region": {"block_bytes": "0\n", "start_block": "0\n", "blocks": "0\n", "dev": "", "pid": ""},
}


@dataclass
class FakeConfigfs:
    """ConfigfsIO over a dict, with configfs's auto-created attributes and an op log.

    ``fail`` maps an attribute or item name (last path component) to the errno
    its write or mkdir should fail with.
    """

    root: str
    dirs: set[str] = field(default_factory=set)
    attrs: dict[str, str] = field(default_factory=dict)
    log: list[tuple[str, ...]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dirs.add(f"{self.root}/sys/kernel/config/cluster")

    def rel(self, path: str) -> str:
        return path.split("/cluster/", 1)[1] if "/cluster/" in path else path

    def _err(self, e: int, path: str) -> OSError:
        return OSError(e, os.strerror(e), path)

    def mkdir(self, path: str) -> None:
        self.log.append(("mkdir", self.rel(path)))
        parent, name = path.rsplit("/", 1)
        if name in self.fail:
            raise self._err(self.fail[name], path)
        if parent not in self.dirs:
            raise self._err(errno.ENOENT, path)
        if path in self.dirs:
            raise self._err(errno.EEXIST, path)
        self.dirs.add(path)
        kind = parent.rsplit("/", 1)[1]
        if kind == "cluster":
            self.dirs |= {f"{path}/node", f"{path}/heartbeat"}
            self.attrs[f"{path}/heartbeat/mode"] = "local\n"
            self.attrs[f"{path}/heartbeat/dead_threshold"] = "31\n"
            attrs = _DEFAULT_ATTRS["cluster"]
        else:
            attrs = _DEFAULT_ATTRS["node" if kind == "node" else "region"]
        for a, v in attrs.items():
            self.attrs[f"{path}/{a}"] = v

    def rmdir(self, path: str) -> None:
        self.log.append(("rmdir", self.rel(path)))
        if path not in self.dirs:
            raise self._err(errno.ENOENT, path)
        inside = [d for d in self.dirs if d.startswith(path + "/")]
        if any(d.count("/") == path.count("/") + 2 for d in inside):
            raise self._err(errno.ENOTEMPTY, path)  # an item still has children
        self.dirs -= {path, *inside}
        for a in [a for a in self.attrs if a.startswith(path + "/")]:
            del self.attrs[a]

    def write_attr(self, path: str, value: bytes) -> None:
        text = value.decode()
        self.log.append(("write", self.rel(path), text))
        if path not in self.attrs:
            raise self._err(errno.ENOENT, path)
        name = path.rsplit("/", 1)[1]
        if name in self.fail:
            raise self._err(self.fail[name], path)
        if name == "dev":
            os.fstat(int(text))  # the fd must be open in the writer while it writes
        self.attrs[path] = text

    def read_attr(self, path: str, limit: int) -> bytes:
        self.log.append(("read", self.rel(path)))
        if path not in self.attrs:
            raise self._err(errno.ENOENT, path)
        return self.attrs[path].encode()[:limit]

    def list_dirs(self, path: str) -> list[str]:
        if path not in self.dirs:
            raise self._err(errno.ENOENT, path)
        depth = path.count("/") + 1
        return sorted(
            d.rsplit("/", 1)[1]
            for d in self.dirs
            if d.startswith(path + "/") and d.count("/") == depth
        )

    def open_device(self, path: str) -> int:
        fd = os.open(path, os.O_RDWR)
        self.log.append(("open_device", path))
        return fd

    def close(self, fd: int) -> None:
        self.log.append(("close",))
        os.close(fd)


@dataclass(frozen=True)
class Desc:
    block_bytes: int = 512
    start_block: int = 2184
    blocks: int = 255


@dataclass(frozen=True)
class Vol:
    stack: str | None = "o2cb"
    cluster_name: str | None = "ocfs2"
    global_heartbeat: bool = False


def world(cluster: str | None = "ocfs2", mode: str = "local") -> tuple[Sysroot, FakeConfigfs, str]:
    """An emulated sysroot path, a fake configfs with one cluster, a device file."""
    root = tempfile.mkdtemp(prefix="hbctl-regions-")
    os.makedirs(f"{root}/sys/kernel/config")
    fs = FakeConfigfs(root)
    if cluster:
        fs.mkdir(f"{root}/sys/kernel/config/cluster/{cluster}")
        fs.attrs[f"{root}/sys/kernel/config/cluster/{cluster}/heartbeat/mode"] = mode + "\n"
    dev = f"{root}/disk.img"
    Path(dev).write_bytes(b"\0" * 4096)
    fs.log.clear()
    return Sysroot(root), fs, dev


def sem_rows() -> list[list[str]]:
    with open("/proc/sysvipc/sem") as f:
        return [line.split() for line in f.read().splitlines()[1:]]


# -- scenarios (run inside a private IPC namespace) -----------------------------------------


def scenario_start_stop_sequence() -> None:
    from hbctl import regions, semaphores

    sysroot, fs, dev = world()
    regions.start_heartbeat(sysroot, "ocfs2", UUID, dev, Desc(), fs=fs)
    r = f"ocfs2/heartbeat/{UUID}"
    assert fs.log == [
        ("read", "ocfs2/heartbeat/mode"),
        ("mkdir", r),
        ("write", f"{r}/block_bytes", "512"),
        ("write", f"{r}/start_block", "2184"),
        ("write", f"{r}/blocks", "255"),
        ("open_device", dev),
        ("write", f"{r}/dev", fs.log[6][2]),
        ("close",),
    ], fs.log
    assert fs.log[6][2].isdigit()
    s = semaphores.RegionSemaphores.open(UUID)
    assert (s.mutex_value(), s.refs()) == (0, 1)

    # a second start: EEXIST, one more reference, nothing written
    fs.log.clear()
    regions.start_heartbeat(sysroot, "ocfs2", UUID, dev, Desc(), fs=fs)
    assert fs.log == [("read", "ocfs2/heartbeat/mode"), ("mkdir", r)]
    assert regions.region_refs(UUID) == 2

    # stop: 2 -> 1, the region stays
    fs.log.clear()
    regions.stop_heartbeat(sysroot, "ocfs2", UUID, fs=fs)
    assert fs.log == []
    assert (s.mutex_value(), s.refs()) == (0, 1)

    # last stop: rmdir the region, then the set is gone
    regions.stop_heartbeat(sysroot, "ocfs2", UUID, fs=fs)
    assert fs.log == [("rmdir", r)]
    assert f"{sysroot.root}/sys/kernel/config/cluster/{r}" not in fs.dirs
    assert sem_rows() == []


def scenario_attribute_failure_rolls_back() -> None:
    from hbctl import regions, semaphores

    sysroot, fs, dev = world()
    fs.fail["blocks"] = errno.EINVAL
    try:
        regions.start_heartbeat(sysroot, None, UUID, dev, Desc(), fs=fs)
    except O2cbError as e:
        assert e.code is Code.INTERNAL_FAILURE, e
    else:
        raise AssertionError("start should fail")
    r = f"ocfs2/heartbeat/{UUID}"
    assert [op[:2] for op in fs.log[-2:]] == [("write", f"{r}/blocks"), ("rmdir", r)]
    # the set stays, count unchanged, mutex released (spec §3.4, trace 1b)
    s = semaphores.RegionSemaphores.open(UUID)
    assert (s.mutex_value(), s.refs()) == (0, 0)
    assert len(sem_rows()) == 1


def scenario_device_open_failure() -> None:
    from hbctl import regions

    sysroot, fs, _dev = world()
    try:
        regions.start_heartbeat(sysroot, "ocfs2", UUID, "/nonexistent/dev", Desc(), fs=fs)
    except O2cbError as e:
        assert e.code is Code.SERVICE_UNAVAILABLE, e
    else:
        raise AssertionError("start should fail")
    assert fs.log[-1] == ("rmdir", f"ocfs2/heartbeat/{UUID}")
    assert regions.region_refs(UUID) == 0


def scenario_stop_with_region_gone_keeps_the_set() -> None:
    from hbctl import regions, semaphores

    sysroot, fs, dev = world()
    regions.start_heartbeat(sysroot, "ocfs2", UUID, dev, Desc(), fs=fs)
    fs.rmdir(f"{sysroot.root}/sys/kernel/config/cluster/ocfs2/heartbeat/{UUID}")
    try:
        regions.stop_heartbeat(sysroot, "ocfs2", UUID, fs=fs)
    except O2cbError as e:
        assert e.code is Code.SERVICE_UNAVAILABLE, e
    else:
        raise AssertionError("stop should fail")
    s = semaphores.RegionSemaphores.open(UUID)
    assert (s.mutex_value(), s.refs()) == (0, 0)


def scenario_transient_ref_dies_with_its_process() -> None:
    from hbctl import regions

    sysroot, fs, dev = world()
    pid = os.fork()
    if pid == 0:
        regions.start_heartbeat(sysroot, "ocfs2", UUID, dev, Desc(), persist=False, fs=fs)
        os._exit(0 if regions.region_refs(UUID) == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert regions.region_refs(UUID) == 0
    # the child's region is in its copy of the fake; recreate it here and
    # check that a stop at count 0 removes region and set (a dead fsck's leftovers)
    fs.mkdir(f"{sysroot.root}/sys/kernel/config/cluster/ocfs2/heartbeat/{UUID}")
    regions.stop_heartbeat(sysroot, "ocfs2", UUID, fs=fs)
    assert sem_rows() == []


def scenario_global_mode() -> None:
    from hbctl import regions

    # group join on a global volume in global mode: nothing but reads, no set
    sysroot, fs, dev = world(mode="global")
    vol = Vol(global_heartbeat=True)
    regions.begin_group_join(sysroot, "o2cb", vol, UUID, dev, Desc(), fs=fs)
    regions.group_leave(sysroot, "o2cb", vol, UUID, fs=fs)
    assert all(op[0] == "read" for op in fs.log), fs.log
    assert sem_rows() == []
    # start_heartbeat itself: a region it creates gets a ref, an existing one not
    regions.start_heartbeat(sysroot, "ocfs2", UUID, dev, Desc(), fs=fs)
    regions.start_heartbeat(sysroot, "ocfs2", UUID, dev, Desc(), fs=fs)
    assert regions.region_refs(UUID) == 1


def scenario_group_join_local_takes_a_ref() -> None:
    from hbctl import regions

    sysroot, fs, dev = world()
    regions.begin_group_join(sysroot, "o2cb", Vol(), UUID, dev, Desc(), fs=fs)
    assert regions.region_refs(UUID) == 1
    regions.group_leave(sysroot, "o2cb", Vol(), UUID, fs=fs)
    assert sem_rows() == []


def run_in_ipcns(name: str) -> None:
    proc = subprocess.run(
        ["unshare", "--ipc", sys.executable, "-c", f"import test_regions as t; t.{name}()"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": f"{HERE}:{ROOT}"},
    )
    assert proc.returncode == 0, proc.stderr


SCENARIOS = [n for n in list(globals()) if n.startswith("scenario_")]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private IPC namespace",
)
@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name: str) -> None:
    run_in_ipcns(name)


# -- validation and checks that touch no semaphore --------------------------------------


@pytest.mark.parametrize(
    ("clusters", "mode", "vol", "stack", "code"),
    [
        (["ocfs2"], "local", Vol(cluster_name="other"), "o2cb", Code.INVALID_CLUSTER_NAME),
        ([], "local", Vol(), "o2cb", Code.INVALID_CLUSTER_NAME),
        (["ocfs2"], "global", Vol(), "o2cb", Code.INVALID_HEARTBEAT_MODE),
        (["ocfs2"], "local", Vol(global_heartbeat=True), "o2cb", Code.INVALID_HEARTBEAT_MODE),
        (["ocfs2"], "local", Vol(stack="pcmk"), "o2cb", Code.INVALID_STACK_NAME),
        (["ocfs2"], "local", Vol(stack=None, cluster_name=None), "pcmk", Code.INVALID_STACK_NAME),
        (["ocfs2"], "local", Vol(stack="o2cb", cluster_name=None), "o2cb", Code.INVALID_STACK_NAME),
    ],
)
def test_group_join_validation(
    clusters: list[str], mode: str, vol: Vol, stack: str, code: Code
) -> None:
    from hbctl import regions

    sysroot, fs, dev = world(cluster=clusters[0] if clusters else None, mode=mode)
    with pytest.raises(O2cbError) as info:
        regions.begin_group_join(sysroot, stack, vol, UUID, dev, Desc(), fs=fs)
    assert info.value.code is code
    assert not any(op[0] in ("mkdir", "write") for op in fs.log)


@pytest.mark.parametrize(
    ("desc", "code"),
    [
        (Desc(block_bytes=8192), Code.INVALID_BLOCK_SIZE),
        (Desc(blocks=0), Code.INVALID_BLOCK_COUNT),
        (Desc(blocks=256), Code.INVALID_BLOCK_COUNT),
    ],
)
def test_bad_geometry_is_refused_before_any_syscall(desc: Desc, code: Code) -> None:
    from hbctl import regions

    sysroot, fs, dev = world()
    with pytest.raises(O2cbError) as info:
        regions.create_region(sysroot, "ocfs2", UUID, dev, desc, fs=fs)
    assert info.value.code is code
    assert fs.log == []


def test_default_cluster_is_the_last_directory_listed(tmp_path: Path) -> None:
    from hbctl import regions
    from hbctl.stack import OS_CONFIGFS

    base = tmp_path / "sys/kernel/config/cluster"
    base.mkdir(parents=True)
    (base / "an_attribute").write_text("x")  # files are attributes, not clusters
    assert regions.list_clusters(Sysroot(str(tmp_path)), OS_CONFIGFS) == []
    (base / "alpha").mkdir()
    (base / "beta").mkdir()
    listed = [e.name for e in os.scandir(base) if e.is_dir()]
    assert regions.default_cluster(Sysroot(str(tmp_path))) == listed[-1]


def test_hb_thread_pid_reads_the_pid_attribute() -> None:
    from hbctl import regions

    sysroot, fs, _dev = world()
    path = f"{sysroot.root}/sys/kernel/config/cluster/ocfs2/heartbeat/{UUID}"
    fs.mkdir(path)
    assert regions.hb_thread_pid(sysroot, None, UUID, fs=fs) == 0  # empty until started
    fs.attrs[f"{path}/pid"] = "4242\n"
    assert regions.hb_thread_pid(sysroot, None, UUID, fs=fs) == 4242


# -- o2cb_init over plain files ----------------------------------------------------------


def _sysroot(tmp_path: Path, stack: str | None, rev: str | None) -> Sysroot:
    (tmp_path / "sys/fs/ocfs2").mkdir(parents=True)
    (tmp_path / "sys/fs/o2cb").mkdir(parents=True)
    (tmp_path / "sys/kernel/config").mkdir(parents=True)
    if stack is not None:
        (tmp_path / "sys/fs/ocfs2/cluster_stack").write_text(stack)
    if rev is not None:
        (tmp_path / "sys/fs/o2cb/interface_revision").write_text(rev)
    return Sysroot(str(tmp_path))


@pytest.mark.parametrize(
    ("stack", "rev", "result"),
    [
        ("o2cb\n", "5\n", "o2cb"),
        ("o2cb", "3", "o2cb"),
        ("pcmk\n", "5\n", "pcmk"),
        (None, "5\n", "o2cb"),  # no stackglue: classic, and no modprobe
        ("o2cb\n", "6\n", Code.BAD_VERSION),
        ("o2cb\n", None, Code.SERVICE_UNAVAILABLE),
        ("o2cb\n", "", Code.INTERNAL_FAILURE),
        ("", "5\n", Code.SERVICE_UNAVAILABLE),
        ("o2cb2\n", "5\n", Code.INTERNAL_FAILURE),
    ],
)
def test_o2cb_init(tmp_path: Path, stack: str | None, rev: str | None, result: object) -> None:
    from hbctl.stack import o2cb_init

    sysroot = _sysroot(tmp_path, stack, rev)
    if isinstance(result, Code):
        with pytest.raises(O2cbError) as info:
            o2cb_init(sysroot)
        assert info.value.code is result
    else:
        assert o2cb_init(sysroot) == result


def test_o2cb_init_needs_configfs(tmp_path: Path) -> None:
    from hbctl.stack import o2cb_init

    sysroot = _sysroot(tmp_path, "o2cb\n", "5\n")
    (tmp_path / "sys/kernel/config").rmdir()
    with pytest.raises(O2cbError) as info:
        o2cb_init(sysroot)
    assert info.value.code is Code.SERVICE_UNAVAILABLE
