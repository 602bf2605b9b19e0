"""o2hb: the ``heartbeat`` group and its regions (``fs/ocfs2/cluster/heartbeat.c``, 6.1).

The configfs side of the disk heartbeat: ``dead_threshold`` and ``mode`` (silently ignored
once any region exists), region mkdir/rmdir, and the region attributes with the 6.1
parsers (``simple_strtoul``: EINVAL on bad input, overflow wraps). Writing ``dev`` is the
start; it cannot finish here because it blocks on disk I/O, so the store validates what it
can and returns a :class:`StartHeartbeat` effect that the shell carries out (resolve the
writer's fd, check the device, run the heartbeat, wait for steady state). rmdir returns a
:class:`StopHeartbeat` effect. Pure code: no I/O.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .configfs import AttrSpec, ConfigGroup, ConfigItem
from .kparse import kstrtoull, strtol_strict, strtoul_strict
from .tree import KernelError

if TYPE_CHECKING:
    from .o2nm import Cluster

MAX_REGION_NAME_LEN = 32
MAX_REGIONS = 32
MIN_DEAD_THRESHOLD = 2
DEFAULT_DEAD_THRESHOLD = 31
MODES = ("local", "global")
INT_MAX = 0x7FFFFFFF
MAX_NODES = 255


class O2hbGlobals:
    """Module-wide o2hb state: it outlives any one cluster directory, as in the kernel."""

    def __init__(self) -> None:
        self.dead_threshold = DEFAULT_DEAD_THRESHOLD
        self.mode = 0  # index into MODES
        self.regions: list[Region] = []  # o2hb_all_regions, until each region's release

    @property
    def global_mode(self) -> bool:
        return self.mode == 1


@dataclass(frozen=True)
class StartHeartbeat:
    """Effect of a ``dev`` write: start ``region`` on the writer's file descriptor ``fd``."""

    region: Region
    fd: int
    node_num: int
    count: int


@dataclass(frozen=True)
class StopHeartbeat:
    """Effect of a region rmdir: stop its heartbeat, then release it."""

    region: Region


def _as_hb(item: ConfigItem) -> HeartbeatGroup:
    assert isinstance(item, HeartbeatGroup)
    return item


def _store_dead_threshold(item: ConfigItem, data: bytes) -> None:
    value = strtoul_strict(data, 10)  # 6.1; newer kernels use kstrtoul (ERANGE on overflow)
    hb = _as_hb(item).hb
    # o2hb_dead_threshold_set: ignored (with success) when <= 2 or once regions exist.
    if value > MIN_DEAD_THRESHOLD and not hb.regions:
        hb.dead_threshold = value & 0xFFFFFFFF


def _store_mode(item: ConfigItem, data: bytes) -> None:
    length = len(data) - 1 if data.endswith(b"\n") else len(data)
    if not length:
        raise KernelError(errno.EINVAL)
    hb = _as_hb(item).hb
    given = data[:length].split(b"\0")[0].decode("latin-1").lower()
    for i, name in enumerate(MODES):
        # strncasecmp(page, name, len): a case-insensitive prefix match.
        if name.startswith(given) and (len(given) == length or len(given) >= len(name)):
            if not hb.regions:
                hb.mode = i
            return  # success even when regions exist and nothing changed
    raise KernelError(errno.EINVAL)


class HeartbeatGroup(ConfigGroup):
    """``cluster/<name>/heartbeat``: dead_threshold, mode, and the regions."""

    attr_specs = (
        AttrSpec("dead_threshold", lambda g: f"{_as_hb(g).hb.dead_threshold}\n",
                 _store_dead_threshold),
        AttrSpec("mode", lambda g: f"{MODES[_as_hb(g).hb.mode]}\n", _store_mode),
    )

    def __init__(self, hb: O2hbGlobals, cluster: Cluster) -> None:
        self.hb: O2hbGlobals = hb
        self.cluster = cluster
        super().__init__("heartbeat", default=True)

    def make_item(self, name: str) -> ConfigItem:
        if len(name.encode()) > MAX_REGION_NAME_LEN:
            raise KernelError(errno.ENAMETOOLONG)
        num = 0
        if self.hb.global_mode:
            used = {r.region_num for r in self.hb.regions}
            num = next((i for i in range(MAX_REGIONS) if i not in used), MAX_REGIONS)
            if num >= MAX_REGIONS:
                raise KernelError(errno.EFBIG)
        region = Region(name, self, num)
        self.hb.regions.append(region)
        return region

    def drop_item(self, child: ConfigItem) -> object:
        assert isinstance(child, Region)
        return StopHeartbeat(child)

    def release(self, region: Region) -> None:
        """o2hb_region_release: the region leaves o2hb_all_regions (thresholds unfreeze)."""
        if region in self.hb.regions:
            self.hb.regions.remove(region)


def _as_region(item: ConfigItem) -> Region:
    assert isinstance(item, Region)
    return item


def _writable(item: ConfigItem) -> Region:
    region = _as_region(item)
    if region.started:
        raise KernelError(errno.EINVAL, "region already started")
    return region


def _store_block_bytes(item: ConfigItem, data: bytes) -> None:
    region = _writable(item)
    value = strtoul_strict(data, 0)
    if value > 4096 or value < 512:
        raise KernelError(errno.ERANGE)
    if value & (value - 1):
        raise KernelError(errno.EINVAL, "block_bytes must be a power of two")
    region.block_bytes = value


def _store_start_block(item: ConfigItem, data: bytes) -> None:
    region = _writable(item)
    try:
        region.start_block = kstrtoull(data, 0)
    except KernelError as exc:
        raise KernelError(errno.EINVAL) from exc


def _store_blocks(item: ConfigItem, data: bytes) -> None:
    region = _writable(item)
    value = strtoul_strict(data, 0)
    if value > MAX_NODES or value == 0:
        raise KernelError(errno.ERANGE)
    region.blocks = value


def _store_dev(item: ConfigItem, data: bytes) -> object:
    region = _writable(item)
    node_num = region.group.cluster.this_node()
    if node_num == MAX_NODES:
        raise KernelError(errno.EINVAL, "the local node is not configured")
    fd = strtol_strict(data, 0)
    if fd < 0 or fd >= INT_MAX:
        raise KernelError(errno.EINVAL)
    return StartHeartbeat(region, fd, node_num, len(data))


class Region(ConfigItem):
    """``heartbeat/<region>``: geometry, then ``dev`` starts it; ``pid`` is read-only."""

    attr_specs = (
        AttrSpec("block_bytes", lambda r: f"{_as_region(r).block_bytes}\n", _store_block_bytes),
        AttrSpec("start_block", lambda r: f"{_as_region(r).start_block}\n", _store_start_block),
        AttrSpec("blocks", lambda r: f"{_as_region(r).blocks}\n", _store_blocks),
        AttrSpec("dev", lambda r: _as_region(r).dev_show(), _store_dev),
        AttrSpec("pid", lambda r: _as_region(r).pid_show()),
    )

    def __init__(self, name: str, group: HeartbeatGroup, region_num: int) -> None:
        self.group = group
        self.region_num: int = region_num
        self.block_bytes: int = 0
        self.start_block: int = 0
        self.blocks: int = 0
        self.started = False  # hr_bdev set: from the dev store until stop or failed start
        self.dev_name: str | None = None
        self.pid: int | None = None
        self.steady = False
        self.runner: object | None = None  # the shell's heartbeat task, opaque here
        super().__init__(name)

    def require_geometry(self) -> None:
        """Step 6 of the dev store: blocks, start_block and block_bytes must all be set."""
        if not (self.blocks and self.start_block and self.block_bytes):
            raise KernelError(errno.EINVAL, "block_bytes, start_block and blocks must be set")

    def begin_start(self, dev_name: str) -> None:
        self.started = True
        self.dev_name = dev_name

    def start_done(self, pid: int) -> None:
        self.pid = pid
        self.steady = True

    def start_failed(self) -> None:
        """The dev store failed after taking the device: attributes are writable again."""
        self.started = False
        self.dev_name = None
        self.pid = None
        self.steady = False
        self.runner = None

    def stopped(self) -> None:
        """The heartbeat thread is gone (rmdir, fencing or loss of the local node)."""
        self.pid = None
        self.runner = None

    def dev_show(self) -> str:
        return f"{self.dev_name}\n" if self.started and self.dev_name else ""

    def pid_show(self) -> str:
        return f"{self.pid}\n" if self.pid is not None else ""
