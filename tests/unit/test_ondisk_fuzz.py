"""ocfs2fmt.ondisk against hostile bytes: any device content gives a Volume or an
OnDiskError, never another exception (every block device on the host gets probed).

The seeds are real mkfs.ocfs2 images: a 512-byte-block one (extent-mapped system dir)
and a 4096-byte-block one (inline system dir). Mutations land mostly in the blocks the
parser actually reads, where they can steer it somewhere new.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocfs2fmt.ondisk import OnDiskError, Volume, parse_volume

FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class Seed:
    """An image's parsed-from prefix and the byte ranges the parser reads."""

    def __init__(self, path: Path) -> None:
        ranges: list[tuple[int, int]] = []
        with open(path, "rb") as f:
            def read(off: int, n: int) -> bytes:
                ranges.append((off, n))
                return os.pread(f.fileno(), n, off)

            self.volume = parse_volume(read, str(path))
            end = max(off + n for off, n in ranges)
            self.data = os.pread(f.fileno(), end, 0)
        self.ranges = ranges


@pytest.fixture(scope="module")
def seeds(ocfs2_image: Callable[[str], Path]) -> list[Seed]:
    return [Seed(ocfs2_image("b512")), Seed(ocfs2_image("b4096"))]


def check(data: bytes, min_block_size: int = 512) -> Volume | None:
    """The contract: a Volume whose methods also only raise OnDiskError, or OnDiskError."""
    try:
        v = parse_volume(lambda off, n: data[off:off + n], "/dev/fuzz", min_block_size)
    except OnDiskError as e:
        assert "\n" not in str(e) and str(e).startswith("/dev/fuzz: ")
        return None
    for sector in (512, 4096):
        with contextlib.suppress(OnDiskError):
            v.to_json(sector)
    return v


@FUZZ
@given(which=st.integers(0, 1), cut=st.floats(0, 1))
def test_any_truncation(seeds: list[Seed], which: int, cut: float) -> None:
    seed = seeds[which]
    n = int(len(seed.data) * cut)
    v = check(seed.data[:n])
    if n == len(seed.data):
        assert v == dataclasses.replace(seed.volume, device="/dev/fuzz")


@st.composite
def flips(draw: st.DrawFn, seed: Seed) -> list[tuple[int, int]]:
    out = []
    for _ in range(draw(st.integers(1, 8))):
        off, n = draw(st.sampled_from(seed.ranges))
        out.append((off + draw(st.integers(0, n - 1)), draw(st.integers(0, 7))))
    return out


@FUZZ
@given(data=st.data(), which=st.integers(0, 1))
def test_bit_flips_in_read_blocks(seeds: list[Seed], data: st.DataObject, which: int) -> None:
    seed = seeds[which]
    img = bytearray(seed.data)
    for off, bit in data.draw(flips(seed)):
        img[off] ^= 1 << bit
    check(bytes(img))


@FUZZ
@given(data=st.data(), which=st.integers(0, 1), width=st.sampled_from([1, 2, 4, 8]),
       value=st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2, 255, 2**16 - 1])))
def test_extreme_field_values(
    seeds: list[Seed], data: st.DataObject, which: int, width: int, value: int
) -> None:
    seed = seeds[which]
    off, n = data.draw(st.sampled_from(seed.ranges))
    pos = off + data.draw(st.integers(0, n // width - 1)) * width
    img = bytearray(seed.data)
    img[pos:pos + width] = struct.pack("<Q", value)[:width] if width == 8 else (
        (value % (1 << (8 * width))).to_bytes(width, "little"))
    check(bytes(img), min_block_size=data.draw(st.sampled_from([512, 1024, 4096])))


@FUZZ
@given(data=st.data(), which=st.integers(0, 1), garbage=st.binary(min_size=1, max_size=600))
def test_garbage_over_read_blocks(
    seeds: list[Seed], data: st.DataObject, which: int, garbage: bytes
) -> None:
    seed = seeds[which]
    off, n = data.draw(st.sampled_from(seed.ranges))
    pos = off + data.draw(st.integers(0, n - 1))
    img = bytearray(seed.data)
    img[pos:pos + len(garbage)] = garbage
    check(bytes(img))


@FUZZ
@given(blob=st.binary(max_size=20000), bs=st.sampled_from([512, 1024, 2048, 4096]))
def test_random_bytes_behind_a_signature(blob: bytes, bs: int) -> None:
    """Pure garbage, and garbage that gets past the superblock signature check."""
    check(blob)
    img = bytearray(blob.ljust(3 * bs, b"\0"))
    img[2 * bs:2 * bs + 6] = b"OCFSV2"
    check(bytes(img))
