"""The ocfs2 on-disk format, as far as heartbeat needs it (core: bytes in, facts out).

Given a way to read bytes from a device, `parse_volume` does what libocfs2's
``ocfs2_open`` + ``ocfs2_fill_heartbeat_desc`` + ``ocfs2_fill_cluster_desc`` do for
``ocfs2_hb_ctl``: probe the superblock at block sizes 512..4096, sanity-check it,
find ``heartbeat`` in the system directory (inline or extent-mapped, any tree depth),
and read the heartbeat file's single extent. `Volume.heartbeat` turns that into the
region the kernel heartbeats on: 255 sector-sized slots from the file's first byte.

Nothing here opens a file or calls an ioctl: the reader is passed in (see
`ocfs2fmt.blockdev.read_volume` for the shell over a real path). Every way the bytes can
be wrong ends in `OnDiskError`, never in an IndexError or struct.error: the device
is untrusted input (any block device on the host is probed when looking for a UUID).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Reader = Callable[[int, int], bytes]
"""read(offset, length) -> up to length bytes (fewer only at the end of the device)."""

SUPER_BLKNO = 2
BLOCK_SIZES = (512, 1024, 2048, 4096)
MAX_HB_BLOCKS = 255  # O2NM_MAX_NODES: a region always has 255 slots

INODE_SIGNATURE = b"INODE01\0"
EXTENT_BLOCK_SIGNATURE = b"EXBLK01\0"
SUPER_SIGNATURE = b"OCFSV2"
OCFS1_SIGNATURE = b"OracleCFS"
OCFS1_MAJOR_VERSION = 2

# s_feature_incompat bits (spec §5.2)
INCOMPAT_HEARTBEAT_DEV = 0x0002
INCOMPAT_LOCAL_MOUNT = 0x0008
INCOMPAT_USERSPACE_STACK = 0x0080
INCOMPAT_CLUSTERINFO = 0x4000
# What libocfs2 1.8.7 opens read-only: every defined bit 0x2..0x8000 (HEARTBEAT_DEV
# allowed because ocfs2_hb_ctl passes OCFS2_FLAG_HEARTBEAT_DEV_OK).
INCOMPAT_SUPPORTED = 0xFFFE

DYN_INLINE_DATA = 0x1
STACKFLAG_GLOBAL_HEARTBEAT = 0x01

# dinode offsets
_DI_SIZE = 0x20
_DI_BLKNO = 0x50
_DI_DYN_FEATURES = 0x76
_DI_ID2 = 0xC0
_INLINE_DATA = 0xC8
# superblock offsets (absolute within block 2)
_SB_INCOMPAT_ETC = 0xDC  # compat, incompat, ro_compat, root, sysdir, bbits, cbits, slots
_SB_LABEL = 0x110
_SB_UUID = 0x150
_SB_CI_STACK = 0x160
_SB_CI_FLAGS = 0x164
_SB_CI_CLUSTER = 0x168
# extent lists: header 16 bytes, records 16 bytes each
_EB_LIST = 0x30
_EXTENT_REC = 16
MAX_TREE_DEPTH = 5  # OCFS2_MAX_PATH_DEPTH
# A real system dir is a few dozen blocks even with 255 slots; refuse to wander
# through gigabytes because a corrupt i_size or extent says so.
MAX_DIR_BLOCKS = 1 << 14
_DIRENT_HEADER = 12

# com_err texts of libocfs2's error table, so a CLI can print exactly what the C tools
# print (`ocfs2_hb_ctl: <text> while reading uuid`).
COM_ERR = {
    "NAMED_DEVICE_NOT_FOUND": "Device name specified was not found",
    "IO": "I/O error on channel",
    "SHORT_READ": "Attempt to read block from filesystem resulted in short read",
    "INVALID_ARGUMENT": "Invalid argument passed to OCFS2 library",
    "OCFS_REV": "Device contains an OCFS volume",
    "BAD_MAGIC": "Bad magic number in superblock",
    "UNEXPECTED_BLOCK_SIZE": "Filesystem has unexpected block size",
    "CORRUPT_SUPERBLOCK": "The OCFS2 superblock is corrupt",
    "UNSUPP_FEATURE": "Unsupported feature(s) found",
    "BAD_INODE_MAGIC": "Bad magic number in inode",
    "BAD_BLKNO": "Invalid block number",
    "BAD_EXTENT_BLOCK_MAGIC": "Bad magic number in extent block",
    "CORRUPT_EXTENT_BLOCK": "Extent block is corrupt",
    "DIR_CORRUPTED": "OCFS2 directory corrupted",
    "FILE_NOT_FOUND": "File not found by ocfs2_lookup",
    "BAD_HEARTBEAT_FILE": "Invalid heartbeat file",
    "BLOCK_SIZE_TOO_SMALL_FOR_HARDWARE": (
        "The block size is smaller than the sector size on this device"
    ),
}


class OnDiskError(Exception):
    """A device that is not a usable ocfs2 volume; str() is one line naming it.

    ``code`` is the libocfs2 error name without ``OCFS2_ET_`` (a key of `COM_ERR`),
    ``com_err`` the C library's text for it.
    """

    def __init__(self, device: str, reason: str, code: str) -> None:
        super().__init__(f"{device}: {reason}")
        self.device = device
        self.reason = reason
        self.code = code

    @property
    def com_err(self) -> str:
        return COM_ERR.get(self.code, self.reason)


@dataclass(frozen=True)
class HeartbeatDesc:
    """The disk region o2hb heartbeats on, in the units configfs wants."""

    block_bytes: int
    start_block: int
    blocks: int


@dataclass(frozen=True)
class Volume:
    """What heartbeat needs to know about one ocfs2 volume."""

    uuid: str  # 32 upper-case hex chars: the region name
    label: str
    block_size: int
    cluster_size: int
    stack: str | None  # "o2cb", "pcmk", ...; None when the cluster info is not valid
    cluster_name: str | None
    global_heartbeat: bool
    local: bool
    heartbeat_device: bool
    incompat: int
    compat: int
    ro_compat: int
    max_slots: int
    hb_blkno: int  # first fs block of the heartbeat file's extent
    hb_clusters: int
    device: str = ""  # the name errors are reported against

    def heartbeat(self, sector_size: int) -> HeartbeatDesc:
        """The region on a device with this sector size (ocfs2_fill_heartbeat_desc)."""
        name = self.device or self.uuid
        if sector_size < 1 or sector_size & (sector_size - 1):
            raise OnDiskError(name, f"bad sector size {sector_size}", "INVALID_ARGUMENT")
        sector_bits = sector_size.bit_length() - 1
        block_bits = self.block_size.bit_length() - 1
        if block_bits < sector_bits:
            raise OnDiskError(
                name,
                f"block size {self.block_size} is smaller than the sector size {sector_size}",
                "BLOCK_SIZE_TOO_SMALL_FOR_HARDWARE",
            )
        blocks = self.hb_clusters * self.cluster_size // self.block_size
        if blocks < MAX_HB_BLOCKS:
            raise OnDiskError(
                name,
                f"heartbeat file has {blocks} blocks (need at least {MAX_HB_BLOCKS})",
                "BAD_HEARTBEAT_FILE",
            )
        start = (self.hb_blkno << block_bits) >> sector_bits
        return HeartbeatDesc(block_bytes=sector_size, start_block=start, blocks=MAX_HB_BLOCKS)

    def to_json(self, sector_size: int) -> dict[str, Any]:
        hb = self.heartbeat(sector_size)
        return {
            "uuid": self.uuid,
            "label": self.label,
            "block_size": self.block_size,
            "cluster_size": self.cluster_size,
            "stack": self.stack,
            "cluster_name": self.cluster_name,
            "local": self.local,
            "global_heartbeat": self.global_heartbeat,
            "heartbeat_device": self.heartbeat_device,
            "heartbeat": {
                "block_bytes": hb.block_bytes,
                "start_block": hb.start_block,
                "blocks": hb.blocks,
            },
        }


def uuid_to_region(uuid_bytes: bytes) -> str:
    """The region name libocfs2 and the kernel derive from s_uuid: ``%02X`` per byte."""
    return uuid_bytes.hex().upper()


def _cstr(raw: bytes) -> str:
    """A NUL-terminated on-disk string (bytes are not trusted to be UTF-8)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class _Device:
    """Block reads over the reader, turning every failure into OnDiskError."""

    def __init__(self, read: Reader, name: str) -> None:
        self._read = read
        self.name = name

    def error(self, reason: str, code: str) -> OnDiskError:
        return OnDiskError(self.name, reason, code)

    def read_exact(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > 1 << 63:
            raise self.error(f"offset {offset} is beyond any device", "BAD_BLKNO")
        try:
            data = self._read(offset, length)
        except OSError as e:
            raise self.error(f"read error at byte {offset}: {e.strerror or e}", "IO") from e
        if len(data) < length:
            raise self.error(f"short read at byte {offset + len(data)}", "SHORT_READ")
        return bytes(data[:length])

    def block(self, blkno: int, block_size: int) -> bytes:
        return self.read_exact(blkno * block_size, block_size)


@dataclass(frozen=True)
class _Geometry:
    block_size: int
    block_bits: int
    cluster_bits: int

    @property
    def blocks_per_cluster(self) -> int:
        return 1 << (self.cluster_bits - self.block_bits)


def parse_volume(read: Reader, name: str, min_block_size: int = 512) -> Volume:
    """Open the volume the way ``ocfs2_hb_ctl`` does (libocfs2 ``ocfs2_open``, read-only,
    heartbeat devices allowed) and find its heartbeat file.

    ``min_block_size``: block sizes below it are not probed. The shell passes the device
    sector size, because libocfs2 reads with O_DIRECT and a 512-byte read on a 4K-sector
    device fails, so such a volume is "Bad magic number in superblock" there too.
    """
    dev = _Device(read, name)
    _check_not_ocfs1(dev)
    bs, sb = _probe_superblock(dev, min_block_size)
    (compat, incompat, ro_compat, root_blkno, sysdir_blkno, block_bits, cluster_bits,
     max_slots) = struct.unpack_from("<IIIQQIIH", sb, _SB_INCOMPAT_ETC)
    (i_blkno,) = struct.unpack_from("<Q", sb, _DI_BLKNO)

    def corrupt(what: str) -> OnDiskError:
        return dev.error(f"corrupt superblock ({what})", "CORRUPT_SUPERBLOCK")

    if block_bits == 0:
        raise corrupt("block size bits is 0")
    if i_blkno != SUPER_BLKNO:
        raise corrupt(f"superblock says it is block {i_blkno}, not {SUPER_BLKNO}")
    if not 12 <= cluster_bits <= 20:
        raise corrupt(f"cluster size bits {cluster_bits} not in 12..20")
    if root_blkno == 0 or sysdir_blkno == 0:
        raise corrupt("no root or system directory")
    if max_slots > MAX_HB_BLOCKS:
        raise corrupt(f"{max_slots} slots")
    if block_bits > 12 or 1 << block_bits != bs:
        raise dev.error(
            f"superblock found at block size {bs} says block size bits {block_bits}",
            "UNEXPECTED_BLOCK_SIZE",
        )
    if incompat & ~INCOMPAT_SUPPORTED:
        raise dev.error(
            f"unsupported incompat features 0x{incompat & ~INCOMPAT_SUPPORTED:x}",
            "UNSUPP_FEATURE",
        )
    geo = _Geometry(bs, block_bits, cluster_bits)

    stack: str | None = None
    cluster_name: str | None = None
    global_hb = False
    if incompat & (INCOMPAT_USERSPACE_STACK | INCOMPAT_CLUSTERINFO):
        stack = _cstr(sb[_SB_CI_STACK:_SB_CI_STACK + 4])
        cluster_name = _cstr(sb[_SB_CI_CLUSTER:_SB_CI_CLUSTER + 16])
        global_hb = bool(sb[_SB_CI_FLAGS] & STACKFLAG_GLOBAL_HEARTBEAT)

    sysdir = _read_inode(dev, geo, sysdir_blkno, "system directory")
    hb_ino = _lookup(dev, geo, sysdir, b"heartbeat")
    if hb_ino is None:
        raise dev.error("no heartbeat file in the system directory", "FILE_NOT_FOUND")
    hb = _read_inode(dev, geo, hb_ino, "heartbeat file")
    depth, _count, nrecs = struct.unpack_from("<HHH", hb, _DI_ID2)
    if depth != 0 or nrecs != 1:
        raise dev.error(
            f"heartbeat file has {nrecs} extents at depth {depth} "
            "(need exactly one at depth 0)",
            "BAD_HEARTBEAT_FILE",
        )
    _cpos, hb_clusters, _res, _flags, hb_blkno = struct.unpack_from(
        "<IHBBQ", hb, _DI_ID2 + 16
    )
    volume = Volume(
        uuid=uuid_to_region(sb[_SB_UUID:_SB_UUID + 16]),
        label=_cstr(sb[_SB_LABEL:_SB_LABEL + 64]),
        block_size=bs,
        cluster_size=1 << cluster_bits,
        stack=stack,
        cluster_name=cluster_name,
        global_heartbeat=global_hb,
        local=bool(incompat & INCOMPAT_LOCAL_MOUNT),
        heartbeat_device=bool(incompat & INCOMPAT_HEARTBEAT_DEV),
        incompat=incompat,
        compat=compat,
        ro_compat=ro_compat,
        max_slots=max_slots,
        hb_blkno=hb_blkno,
        hb_clusters=hb_clusters,
        device=name,
    )
    # The sector-independent half of ocfs2_fill_heartbeat_desc: a file too small for
    # 255 slots is refused at open time, whatever the device.
    blocks = (hb_clusters << cluster_bits) >> block_bits
    if blocks < MAX_HB_BLOCKS:
        raise dev.error(
            f"heartbeat file has {blocks} blocks (need at least {MAX_HB_BLOCKS})",
            "BAD_HEARTBEAT_FILE",
        )
    return volume


def _check_not_ocfs1(dev: _Device) -> None:
    head = dev.read_exact(0, 512)
    (major,) = struct.unpack_from("<I", head, 4)
    if major == OCFS1_MAJOR_VERSION or head[8:8 + len(OCFS1_SIGNATURE)] == OCFS1_SIGNATURE:
        raise dev.error("device contains an OCFS (version 1) volume", "OCFS_REV")


def _probe_superblock(dev: _Device, min_block_size: int) -> tuple[int, bytes]:
    for bs in BLOCK_SIZES:
        if bs < min_block_size:
            continue
        try:
            block = dev.block(SUPER_BLKNO, bs)
        except OnDiskError:
            continue  # libocfs2 treats an I/O error here like a bad magic: next size
        if block.startswith(SUPER_SIGNATURE):
            return bs, block
    raise dev.error(
        "not an ocfs2 volume (no OCFSV2 signature at any block size)", "BAD_MAGIC"
    )


def _read_inode(dev: _Device, geo: _Geometry, blkno: int, what: str) -> bytes:
    if blkno <= SUPER_BLKNO:
        raise dev.error(f"{what} at invalid block {blkno}", "BAD_BLKNO")
    block = dev.block(blkno, geo.block_size)
    if not block.startswith(INODE_SIGNATURE):
        raise dev.error(f"{what} (block {blkno}) is not an inode", "BAD_INODE_MAGIC")
    return block


def _lookup(dev: _Device, geo: _Geometry, dir_inode: bytes, name: bytes) -> int | None:
    """Inode number of ``name`` in a directory, by a linear walk of its entries."""
    (size,) = struct.unpack_from("<Q", dir_inode, _DI_SIZE)
    (dyn,) = struct.unpack_from("<H", dir_inode, _DI_DYN_FEATURES)
    if dyn & DYN_INLINE_DATA:
        (id_count,) = struct.unpack_from("<H", dir_inode, _DI_ID2)
        length = min(id_count, size, geo.block_size - _INLINE_DATA)
        return _find_entry(dev, dir_inode[_INLINE_DATA:_INLINE_DATA + length], name)
    nblocks = -(-size // geo.block_size)
    if nblocks > MAX_DIR_BLOCKS:
        raise dev.error(f"directory of {size} bytes is implausibly large", "DIR_CORRUPTED")
    visited: set[int] = set()
    for cpos, clusters, blkno in _leaf_extents(dev, geo, dir_inode, _DI_ID2, visited):
        first = cpos * geo.blocks_per_cluster
        for j in range(clusters * geo.blocks_per_cluster):
            if first + j >= nblocks:
                break
            found = _find_entry(dev, dev.block(blkno + j, geo.block_size), name)
            if found is not None:
                return found
    return None


def _find_entry(dev: _Device, chunk: bytes, name: bytes) -> int | None:
    off = 0
    while off + _DIRENT_HEADER <= len(chunk):
        ino, rec_len, name_len, _ftype = struct.unpack_from("<QHBB", chunk, off)
        if (
            rec_len < _DIRENT_HEADER
            or rec_len % 4
            or off + rec_len > len(chunk)
            or name_len + _DIRENT_HEADER > rec_len
        ):
            raise dev.error(
                f"corrupt directory entry at offset {off} (rec_len {rec_len})",
                "DIR_CORRUPTED",
            )
        start = off + _DIRENT_HEADER
        if ino and chunk[start:start + name_len] == name:
            return int(ino)
        off += rec_len
    return None


def _leaf_extents(
    dev: _Device, geo: _Geometry, block: bytes, list_off: int, visited: set[int],
    expect_depth: int | None = None,
) -> Iterator[tuple[int, int, int]]:
    """(cpos, clusters, blkno) of every leaf record under the extent list in ``block``,
    descending through EXBLK01 blocks; loops and inconsistent depths are errors."""
    depth, count, nrecs = struct.unpack_from("<HHH", block, list_off)
    capacity = (len(block) - list_off - 16) // _EXTENT_REC
    if (
        depth > MAX_TREE_DEPTH
        or (expect_depth is not None and depth != expect_depth)
        or nrecs > count
        or count > capacity
    ):
        raise dev.error(
            f"corrupt extent list (depth {depth}, {nrecs} of {count} records used)",
            "CORRUPT_EXTENT_BLOCK",
        )
    for i in range(nrecs):
        rec = list_off + 16 + i * _EXTENT_REC
        if depth == 0:
            cpos, clusters, _r, _f, blkno = struct.unpack_from("<IHBBQ", block, rec)
            yield cpos, clusters, blkno
            continue
        _cpos, _int_clusters, child = struct.unpack_from("<IIQ", block, rec)
        if child in visited or child <= SUPER_BLKNO:
            raise dev.error(
                f"corrupt extent list (extent block {child} is invalid or seen twice)",
                "CORRUPT_EXTENT_BLOCK",
            )
        visited.add(child)
        eb = dev.block(child, geo.block_size)
        if not eb.startswith(EXTENT_BLOCK_SIGNATURE):
            raise dev.error(
                f"block {child} is not an extent block", "BAD_EXTENT_BLOCK_MAGIC"
            )
        yield from _leaf_extents(dev, geo, eb, _EB_LIST, visited, depth - 1)
