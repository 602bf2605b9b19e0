"""ocfs2fmt.ondisk: synthetic volumes built byte by byte, and real mkfs.ocfs2 images
checked against debugfs.ocfs2's own reading of them."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ocfs2fmt.ondisk import (
    COM_ERR,
    HeartbeatDesc,
    OnDiskError,
    Volume,
    parse_volume,
    uuid_to_region,
)

UUID = bytes.fromhex("b7e82b346f634eea831b1e24655b60be")
CLUSTERINFO = 0x4000
USERSPACE_STACK = 0x0080
INLINE_DATA = 0x0040


# --- a synthetic volume, byte by byte ----------------------------------------------


def dirent(ino: int, name: bytes, rec_len: int | None = None) -> bytes:
    need = (len(name) + 12 + 3) & ~3
    rec_len = need if rec_len is None else rec_len
    return struct.pack("<QHBB", ino, rec_len, len(name), 1) + name + bytes(rec_len - 12 - len(name))


def dir_chunk(entries: list[tuple[int, bytes]], size: int) -> bytes:
    """Entries packed into ``size`` bytes, the last one stretched to the end."""
    out = b""
    for i, (ino, name) in enumerate(entries):
        if i == len(entries) - 1:
            out += dirent(ino, name, size - len(out))
        else:
            out += dirent(ino, name)
    assert len(out) == size
    return out


def extent_list(depth: int, recs: list[tuple[int, int, int]], count: int) -> bytes:
    head = struct.pack("<HHH", depth, count, len(recs)) + bytes(10)
    body = b""
    for cpos, clusters, blkno in recs:
        if depth == 0:
            body += struct.pack("<IHBBQ", cpos, clusters, 0, 0, blkno)
        else:
            body += struct.pack("<IIQ", cpos, clusters, blkno)
    return head + body


@dataclass
class Synth:
    """A small ocfs2-shaped device: superblock, system dir, heartbeat inode."""

    bs: int = 4096
    cbits: int = 12
    nblocks: int = 200
    incompat: int = CLUSTERINFO | INLINE_DATA
    stack: bytes = b"o2cb"
    cluster: bytes = b"ocfs2"
    stackflags: int = 0
    max_slots: int = 4
    label: bytes = b"vol1"
    sysdir_blkno: int = 6
    hb_blkno: int = 10
    hb_extents: list[tuple[int, int, int]] = field(default_factory=lambda: [(0, 256, 100)])
    hb_depth: int = 0
    img: bytearray = field(default_factory=bytearray)
    next_free_block: int = 40

    def __post_init__(self) -> None:
        self.img = bytearray(self.nblocks * self.bs)

    def put(self, blkno: int, data: bytes) -> None:
        assert len(data) <= self.bs
        self.img[blkno * self.bs:blkno * self.bs + len(data)] = data

    def alloc(self) -> int:
        self.next_free_block += 1
        return self.next_free_block

    def inode(self, *, size: int, dyn: int, id2: bytes, blkno: int) -> bytes:
        di = bytearray(self.bs)
        di[0:8] = b"INODE01\0"
        struct.pack_into("<Q", di, 0x20, size)
        struct.pack_into("<I", di, 0x2C, 0x11)
        struct.pack_into("<Q", di, 0x50, blkno)
        struct.pack_into("<H", di, 0x76, dyn)
        di[0xC0:0xC0 + len(id2)] = id2
        return bytes(di)

    def superblock(self) -> None:
        sb = bytearray(self.bs)
        sb[0:8] = b"OCFSV2\0\0"
        struct.pack_into("<Q", sb, 0x50, 2)
        struct.pack_into("<HH", sb, 0xC0, 0, 90)
        struct.pack_into(
            "<IIIQQIIH", sb, 0xDC, 3, self.incompat, 1, 5, self.sysdir_blkno,
            self.bs.bit_length() - 1, self.cbits, self.max_slots,
        )
        sb[0x110:0x110 + len(self.label)] = self.label
        sb[0x150:0x160] = UUID
        sb[0x160:0x164] = self.stack.ljust(4, b"\0")
        sb[0x164] = self.stackflags
        sb[0x168:0x168 + len(self.cluster)] = self.cluster
        self.put(2, bytes(sb))

    def heartbeat_inode(self) -> None:
        count = (self.bs - 0xC0 - 16) // 16
        id2 = extent_list(self.hb_depth, self.hb_extents, count)
        size = sum(c for _, c, _ in self.hb_extents) << self.cbits
        self.put(self.hb_blkno, self.inode(size=size, dyn=0, id2=id2, blkno=self.hb_blkno))

    def entries(self, hb_name: bytes = b"heartbeat") -> list[tuple[int, bytes]]:
        return [(self.sysdir_blkno, b"."), (self.sysdir_blkno, b".."), (11, b"global_bitmap"),
                (12, b"slot_map"), (self.hb_blkno, hb_name), (13, b"orphan_dir:0000")]

    def inline_sysdir(self, entries: list[tuple[int, bytes]] | None = None) -> Synth:
        n = self.bs - 0xC8
        data = dir_chunk(entries or self.entries(), n)
        id2 = struct.pack("<H", n) + bytes(6) + data
        self.put(self.sysdir_blkno, self.inode(size=n, dyn=1, id2=id2, blkno=self.sysdir_blkno))
        return self

    def extent_sysdir(self, depth: int = 0, ndirblocks: int = 4) -> Synth:
        """A system dir of ``ndirblocks`` one-block extents, heartbeat in the last one,
        under an extent tree of ``depth`` (interior nodes split their records in two)."""
        assert self.cbits == self.bs.bit_length() - 1, "one block per cluster keeps it simple"
        leaves = []
        for i in range(ndirblocks):
            blk = self.alloc()
            if i == ndirblocks - 1:
                entries = [(self.hb_blkno, b"heartbeat")]
            else:
                entries = [(0, b"heartbeat"), (20 + i, f"file{i}".encode())]  # deleted entry
            self.put(blk, dir_chunk(entries, self.bs))
            leaves.append((i, 1, blk))
        top = self.tree(depth, leaves, (self.bs - 0xC0 - 16) // 16)
        self.put(self.sysdir_blkno, self.inode(size=ndirblocks * self.bs, dyn=0, id2=top,
                                               blkno=self.sysdir_blkno))
        return self

    def tree(self, depth: int, leaves: list[tuple[int, int, int]], count: int) -> bytes:
        if depth == 0:
            return extent_list(0, leaves, count)
        halves = [leaves[: len(leaves) // 2], leaves[len(leaves) // 2:]]
        recs = []
        for half in (h for h in halves if h):
            blk = self.alloc()
            eb = bytearray(self.bs)
            eb[0:8] = b"EXBLK01\0"
            sub = self.tree(depth - 1, half, (self.bs - 0x30 - 16) // 16)
            eb[0x30:0x30 + len(sub)] = sub
            self.put(blk, bytes(eb))
            recs.append((half[0][0], len(half), blk))
        return extent_list(depth, recs, count)

    def build(self) -> bytes:
        self.superblock()
        self.heartbeat_inode()
        if not any(self.img[self.sysdir_blkno * self.bs:][:8]):
            self.inline_sysdir()
        return bytes(self.img)


def reader(img: bytes) -> Callable[[int, int], bytes]:
    return lambda off, n: img[off:off + n]


def file_volume(path: Path) -> Volume:
    """parse_volume over a real file, read with pread (images are 64 MiB)."""
    with open(path, "rb") as f:
        return parse_volume(lambda off, n: os.pread(f.fileno(), n, off), str(path))


def parse(img: bytes, name: str = "/dev/test", min_block_size: int = 512) -> Volume:
    return parse_volume(reader(img), name, min_block_size)


def error_of(img: bytes, min_block_size: int = 512) -> OnDiskError:
    with pytest.raises(OnDiskError) as info:
        parse(img, min_block_size=min_block_size)
    err = info.value
    assert "\n" not in str(err) and str(err).startswith("/dev/test: ")
    assert err.code in COM_ERR
    return err


# --- synthetic: what is read -------------------------------------------------------


def test_inline_system_dir_gives_every_field() -> None:
    v = parse(Synth().build())
    assert v == Volume(
        uuid="B7E82B346F634EEA831B1E24655B60BE", label="vol1", block_size=4096,
        cluster_size=4096, stack="o2cb", cluster_name="ocfs2", global_heartbeat=False,
        local=False, heartbeat_device=False, incompat=CLUSTERINFO | INLINE_DATA, compat=3,
        ro_compat=1, max_slots=4, hb_blkno=100, hb_clusters=256, device="/dev/test",
    )
    assert v.heartbeat(512) == HeartbeatDesc(512, 800, 255)
    assert v.heartbeat(4096) == HeartbeatDesc(4096, 100, 255)


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
@pytest.mark.parametrize("ndirblocks", [1, 5])
def test_extent_mapped_system_dir_at_any_depth(depth: int, ndirblocks: int) -> None:
    s = Synth().extent_sysdir(depth=depth, ndirblocks=ndirblocks)
    assert parse(s.build()).hb_blkno == 100


def test_entry_beyond_i_size_is_not_seen() -> None:
    s = Synth().extent_sysdir(ndirblocks=3)
    img = bytearray(s.build())
    struct.pack_into("<Q", img, 6 * 4096 + 0x20, 2 * 4096)  # heartbeat is in block 3 of 3
    assert error_of(bytes(img)).code == "FILE_NOT_FOUND"


def test_extent_tree_loop_is_an_error_not_a_hang() -> None:
    s = Synth().extent_sysdir(depth=2, ndirblocks=4)
    img = bytearray(s.build())
    # point the inode's first interior record at itself... via the first child block
    (child,) = struct.unpack_from("<Q", img, 6 * 4096 + 0xD0 + 8)
    struct.pack_into("<Q", img, child * 4096 + 0x40 + 8, child)
    err = error_of(bytes(img))
    assert err.code == "CORRUPT_EXTENT_BLOCK"


def test_extent_block_shared_by_two_records_is_refused() -> None:
    """A DAG would not loop (depths decrease) but could multiply reads exponentially."""
    s = Synth().extent_sysdir(depth=1, ndirblocks=2)
    img = bytearray(s.build())
    (child,) = struct.unpack_from("<Q", img, 6 * 4096 + 0xD0 + 8)
    struct.pack_into("<Q", img, 6 * 4096 + 0xE0 + 8, child)  # second record -> same block
    err = error_of(bytes(img))
    assert err.code == "CORRUPT_EXTENT_BLOCK" and "seen twice" in str(err)


def test_extent_block_depth_must_decrease() -> None:
    s = Synth().extent_sysdir(depth=1, ndirblocks=2)
    img = bytearray(s.build())
    (child,) = struct.unpack_from("<Q", img, 6 * 4096 + 0xD0 + 8)
    struct.pack_into("<H", img, child * 4096 + 0x30, 1)
    assert "corrupt extent list" in str(error_of(bytes(img)))


def test_extent_block_needs_its_signature() -> None:
    s = Synth().extent_sysdir(depth=1, ndirblocks=2)
    img = bytearray(s.build())
    (child,) = struct.unpack_from("<Q", img, 6 * 4096 + 0xD0 + 8)
    img[child * 4096:child * 4096 + 8] = b"GARBAGE!"
    assert error_of(bytes(img)).code == "BAD_EXTENT_BLOCK_MAGIC"


@pytest.mark.parametrize(
    ("incompat", "stack", "flags", "want"),
    [
        (CLUSTERINFO, b"o2cb", 1, ("o2cb", "ocfs2", True)),
        (CLUSTERINFO, b"o2cb", 0, ("o2cb", "ocfs2", False)),
        (USERSPACE_STACK, b"pcmk", 0, ("pcmk", "ocfs2", False)),
        (0, b"o2cb", 1, (None, None, False)),  # info present but not flagged valid
    ],
)
def test_cluster_info_only_when_flagged_valid(
    incompat: int, stack: bytes, flags: int, want: tuple[str | None, str | None, bool]
) -> None:
    v = parse(Synth(incompat=incompat, stack=stack, stackflags=flags).build())
    assert (v.stack, v.cluster_name, v.global_heartbeat) == want


def test_local_and_heartbeat_device_flags() -> None:
    v = parse(Synth(incompat=0x8 | 0x2).build())
    assert v.local and v.heartbeat_device


def test_full_length_names_are_not_overrun() -> None:
    v = parse(Synth(cluster=b"c" * 16, label=b"L" * 64, stack=b"cman").build())
    assert v.cluster_name == "c" * 16 and v.label == "L" * 64 and v.stack == "cman"


def test_deleted_entry_named_heartbeat_is_skipped() -> None:
    s = Synth()
    entries = [(0, b"heartbeat"), *s.entries()]
    assert parse(s.inline_sysdir(entries).build()).hb_blkno == 100


@pytest.mark.parametrize(("bs", "cbits", "hb_blkno"), [(512, 12, 296), (1024, 12, 284),
                                                       (2048, 13, 278), (4096, 20, 273)])
def test_descriptor_follows_block_and_sector_size(bs: int, cbits: int, hb_blkno: int) -> None:
    clusters = -(-256 * bs >> cbits)  # 256 fs blocks rounded up to clusters, like mkfs
    s = Synth(bs=bs, cbits=cbits, nblocks=64, hb_extents=[(0, clusters, hb_blkno)])
    v = parse(s.build())
    assert v.block_size == bs and v.cluster_size == 1 << cbits
    assert v.heartbeat(512) == HeartbeatDesc(512, hb_blkno * bs // 512, 255)
    if bs == 4096:
        assert v.heartbeat(4096) == HeartbeatDesc(4096, hb_blkno, 255)
    else:
        with pytest.raises(OnDiskError) as info:
            v.heartbeat(4096)
        assert info.value.code == "BLOCK_SIZE_TOO_SMALL_FOR_HARDWARE"


# --- synthetic: what is refused ------------------------------------------------------


def test_zeroes_are_not_a_volume() -> None:
    err = error_of(bytes(64 * 1024))
    assert err.code == "BAD_MAGIC"
    assert str(err) == "/dev/test: not an ocfs2 volume (no OCFSV2 signature at any block size)"
    assert err.com_err == "Bad magic number in superblock"


def test_tiny_device_is_a_short_read() -> None:
    err = error_of(bytes(100))
    assert (err.code, str(err)) == ("SHORT_READ", "/dev/test: short read at byte 100")


def test_reader_errors_become_ondisk_errors() -> None:
    def broken(off: int, n: int) -> bytes:
        raise OSError(5, "Input/output error")

    with pytest.raises(OnDiskError) as info:
        parse_volume(broken, "/dev/bad")
    assert info.value.code == "IO" and "Input/output error" in str(info.value)


@pytest.mark.parametrize("where", ["major", "signature"])
def test_ocfs1_volume_is_refused(where: str) -> None:
    img = bytearray(Synth().build())
    if where == "major":
        struct.pack_into("<I", img, 4, 2)
    else:
        img[8:17] = b"OracleCFS"
    assert error_of(bytes(img)).code == "OCFS_REV"


def test_block_sizes_below_the_sector_are_not_probed() -> None:
    img = Synth(bs=512, nblocks=400, hb_extents=[(0, 32, 296)]).build()
    assert parse(img).block_size == 512
    assert error_of(img, min_block_size=4096).code == "BAD_MAGIC"


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "code"),
    [
        (0xF8, "<I", 0, "CORRUPT_SUPERBLOCK"),  # block size bits 0
        (0xF8, "<I", 9, "UNEXPECTED_BLOCK_SIZE"),  # says 512 where 4096 was probed
        (0xF8, "<I", 40, "UNEXPECTED_BLOCK_SIZE"),
        (0x50, "<Q", 3, "CORRUPT_SUPERBLOCK"),  # i_blkno
        (0xFC, "<I", 11, "CORRUPT_SUPERBLOCK"),  # cluster bits
        (0xFC, "<I", 21, "CORRUPT_SUPERBLOCK"),
        (0xE8, "<Q", 0, "CORRUPT_SUPERBLOCK"),  # root
        (0xF0, "<Q", 0, "CORRUPT_SUPERBLOCK"),  # sysdir
        (0x100, "<H", 256, "CORRUPT_SUPERBLOCK"),  # slots
        (0xE0, "<I", 0x10000 | CLUSTERINFO, "UNSUPP_FEATURE"),
        (0xE0, "<I", 0x1, "UNSUPP_FEATURE"),
        (0xF0, "<Q", 1 << 62, "BAD_BLKNO"),  # sysdir far beyond any device
        (0xF0, "<Q", 150, "BAD_INODE_MAGIC"),  # sysdir on an empty block
        (0xF0, "<Q", 10**6, "SHORT_READ"),  # beyond this device
    ],
)
def test_superblock_sanity(offset: int, fmt: str, value: int, code: str) -> None:
    img = bytearray(Synth().build())
    struct.pack_into(fmt, img, 2 * 4096 + offset, value)
    assert error_of(bytes(img)).code == code


def test_unsupported_ro_compat_is_fine_read_only() -> None:
    img = bytearray(Synth().build())
    struct.pack_into("<I", img, 2 * 4096 + 0xE4, 0xFFFF0000)
    assert parse(bytes(img)).ro_compat == 0xFFFF0000


def test_missing_heartbeat_entry() -> None:
    s = Synth()
    err = error_of(s.inline_sysdir(s.entries(hb_name=b"heartbeaT")).build())
    assert err.code == "FILE_NOT_FOUND" and "no heartbeat file" in str(err)


@pytest.mark.parametrize("rec_len", [0, 8, 14, 1 << 15])
def test_corrupt_dir_entry(rec_len: int) -> None:
    s = Synth()
    data = bytearray(dir_chunk(s.entries(), 4096 - 0xC8))
    struct.pack_into("<H", data, 8, rec_len)  # the "." entry
    id2 = struct.pack("<H", len(data)) + bytes(6) + data
    s.put(6, s.inode(size=len(data), dyn=1, id2=id2, blkno=6))
    assert error_of(s.build()).code == "DIR_CORRUPTED"


def test_heartbeat_inode_needs_its_signature() -> None:
    img = bytearray(Synth().build())
    img[10 * 4096:10 * 4096 + 8] = bytes(8)
    assert error_of(bytes(img)).code == "BAD_INODE_MAGIC"


@pytest.mark.parametrize(
    ("extents", "depth", "what"),
    [
        ([(0, 128, 100), (128, 128, 300)], 0, "2 extents at depth 0"),
        ([], 0, "0 extents at depth 0"),
        ([(0, 256, 100)], 1, "1 extents at depth 1"),
    ],
)
def test_heartbeat_file_must_be_one_extent(
    extents: list[tuple[int, int, int]], depth: int, what: str
) -> None:
    err = error_of(Synth(hb_extents=extents, hb_depth=depth).build())
    assert err.code == "BAD_HEARTBEAT_FILE"
    assert str(err) == f"/dev/test: heartbeat file has {what} (need exactly one at depth 0)"
    assert err.com_err == "Invalid heartbeat file"


def test_heartbeat_file_must_hold_255_blocks() -> None:
    assert parse(Synth(hb_extents=[(0, 255, 100)]).build()).hb_clusters == 255
    err = error_of(Synth(hb_extents=[(0, 254, 100)]).build())
    assert err.code == "BAD_HEARTBEAT_FILE" and "254 blocks" in str(err)


def test_heartbeat_rejects_a_bogus_sector_size() -> None:
    v = parse(Synth().build())
    for bad in (0, -512, 1000):
        with pytest.raises(OnDiskError):
            v.heartbeat(bad)


def test_uuid_to_region_and_json() -> None:
    assert uuid_to_region(UUID) == "B7E82B346F634EEA831B1E24655B60BE"
    assert uuid_to_region(bytes(range(16))) == "000102030405060708090A0B0C0D0E0F"
    j = parse(Synth(stackflags=1).build()).to_json(512)
    assert j == {
        "uuid": "B7E82B346F634EEA831B1E24655B60BE", "label": "vol1", "block_size": 4096,
        "cluster_size": 4096, "stack": "o2cb", "cluster_name": "ocfs2", "local": False,
        "global_heartbeat": True, "heartbeat_device": False,
        "heartbeat": {"block_bytes": 512, "start_block": 800, "blocks": 255},
    }


# --- real images against debugfs.ocfs2 ---------------------------------------------


def debugfs(img: Path, request: str) -> str:
    if shutil.which("debugfs.ocfs2") is None:
        pytest.skip("debugfs.ocfs2 is not installed")
    out = subprocess.run(["debugfs.ocfs2", "-R", request, str(img)], check=True,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return out.stdout


def field_of(text: str, pattern: str) -> str | None:
    m = re.search(pattern, text, re.M)
    return m.group(1) if m else None


@dataclass
class DebugfsFacts:
    uuid: str
    label: str
    block_bits: int
    cluster_bits: int
    incompat: int
    max_slots: int
    stack: str | None
    cluster_name: str | None
    global_heartbeat: bool
    hb_depth: int
    hb_recs: list[tuple[int, int, int]]
    sysdir_inline: bool


def debugfs_facts(img: Path) -> DebugfsFacts:
    stats = debugfs(img, "stats")
    hb = debugfs(img, "stat //heartbeat")
    sysdir = debugfs(img, "stat //")
    stack = field_of(stats, r"^\s*Cluster stack: (.*?)\s*$")
    recs = [tuple(int(x) for x in m) for m in
            re.findall(r"^\s*\d+\s+(\d+)\s+(\d+)\s+(\d+)\s+0x", hb, re.M)]
    return DebugfsFacts(
        uuid=field_of(stats, r"UUID: ([0-9A-F]{32})") or "",
        label=field_of(stats, r"^\s*Label: (.*?)\s*$") or "",
        block_bits=int(field_of(stats, r"Block Size Bits: (\d+)") or -1),
        cluster_bits=int(field_of(stats, r"Cluster Size Bits: (\d+)") or -1),
        incompat=int(field_of(stats, r"Feature Incompat: (\d+)") or -1),
        max_slots=int(field_of(stats, r"Max Node Slots: (\d+)") or -1),
        stack=None if stack in (None, "classic o2cb") else stack,
        cluster_name=field_of(stats, r"^\s*Cluster name: (\S+)"),
        global_heartbeat="Globalheartbeat" in (field_of(stats, r"Cluster flags: (.*)") or ""),
        hb_depth=int(field_of(hb, r"Tree Depth: (\d+)") or -1),
        hb_recs=recs,  # type: ignore[arg-type]
        sysdir_inline="InlineData" in (field_of(sysdir, r"Dynamic Features: (.*)") or ""),
    )


REAL_VARIANTS = ["b512", "b1024", "b2048", "b4096", "local", "global", "pcmk", "classic",
                 "noinline", "hbdev"]


@pytest.mark.parametrize("variant", REAL_VARIANTS)
def test_real_image_matches_debugfs(variant: str, ocfs2_image: Callable[[str], Path]) -> None:
    img = ocfs2_image(variant)
    facts = debugfs_facts(img)
    v = file_volume(img)

    assert v.uuid == facts.uuid and len(v.uuid) == 32
    assert v.label == facts.label == variant
    assert v.block_size == 1 << facts.block_bits
    assert v.cluster_size == 1 << facts.cluster_bits
    assert v.incompat == facts.incompat
    assert v.max_slots == facts.max_slots
    assert (v.stack, v.cluster_name, v.global_heartbeat) == (
        facts.stack, facts.cluster_name, facts.global_heartbeat)
    assert facts.hb_depth == 0 and len(facts.hb_recs) == 1
    cpos, clusters, blkno = facts.hb_recs[0]
    assert (cpos, v.hb_clusters, v.hb_blkno) == (0, clusters, blkno)

    # the descriptor, from debugfs's numbers: 255 sector-sized slots at the file's start
    blocks = (clusters << facts.cluster_bits) >> facts.block_bits
    assert blocks >= 255
    for sector in (512, 1024, 2048, 4096):
        if facts.block_bits < sector.bit_length() - 1:
            with pytest.raises(OnDiskError):
                v.heartbeat(sector)
        else:
            want = HeartbeatDesc(sector, (blkno << facts.block_bits) // sector, 255)
            assert v.heartbeat(sector) == want


@pytest.mark.parametrize(
    ("variant", "desc512"),
    [("b512", (512, 296, 255)), ("b1024", (512, 568, 255)), ("b4096", (512, 2184, 255)),
     ("hbdev", (512, 296, 255))],
)
def test_real_images_give_the_spec_table(
    variant: str, desc512: tuple[int, int, int], ocfs2_image: Callable[[str], Path]
) -> None:
    """Spec §5.4 (measured on 256 MiB images; 64 MiB images lay out the same here)."""
    v = file_volume(ocfs2_image(variant))
    assert v.heartbeat(512) == HeartbeatDesc(*desc512)


def test_real_images_cover_both_system_dir_kinds(ocfs2_image: Callable[[str], Path]) -> None:
    """The suite above must exercise inline and extent-mapped system directories."""
    kinds = {variant: debugfs_facts(ocfs2_image(variant)).sysdir_inline
             for variant in ("b512", "b4096", "noinline")}
    assert kinds == {"b512": False, "b4096": True, "noinline": False}


def test_real_flags(ocfs2_image: Callable[[str], Path]) -> None:
    def vol(variant: str) -> Volume:
        return file_volume(ocfs2_image(variant))

    assert vol("local").local and not vol("b4096").local
    assert vol("hbdev").heartbeat_device and vol("hbdev").max_slots == 0
    assert vol("global").global_heartbeat
    assert vol("b4096").cluster_name == "webfarm1"
    assert vol("classic").stack is None
