"""Driving emulated nodes through configfs directly (no hbctl), for fakecfs's own tests."""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.fakecfs_fixtures import read_attr, write_attr


def mkfs(path: Path, size: str = "64M", *extra: str) -> Path:
    """A real ocfs2 image made by mkfs.ocfs2 (cluster 'demo', 4K blocks, 4 slots)."""
    path.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    subprocess.run(
        ["mkfs.ocfs2", "-q", "-F", "-b", "4096", "-C", "4096", "-N", "4", "-J", "size=4M",
         "-L", "tests", "--cluster-stack=o2cb", "--cluster-name=demo", *extra, str(path)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )
    return path


@dataclass
class Region:
    uuid: str
    block_bytes: int
    start_block: int
    blocks: int

    @classmethod
    def of(cls, image: Path) -> Region:
        from ocfs2fmt.blockdev import read_volume_with_sector

        volume, desc = read_volume_with_sector(str(image))
        return cls(volume.uuid, desc.block_bytes, desc.start_block, desc.blocks)


def configure(sysroot: Path, cluster: str, nodes: int, local: int,
              dead_threshold: int | None = None) -> Path:
    """mkdir the cluster and nodes n0..n{nodes-1} (127.0.0.x:7777), node ``local`` local."""
    cdir = sysroot / "sys/kernel/config/cluster" / cluster
    cdir.mkdir()
    if dead_threshold is not None:
        write_attr(cdir / "heartbeat/dead_threshold", str(dead_threshold))
    for n in range(nodes):
        ndir = cdir / "node" / f"n{n}"
        ndir.mkdir()
        write_attr(ndir / "ipv4_port", "7777")
        write_attr(ndir / "ipv4_address", f"127.0.0.{n + 1}")
        write_attr(ndir / "num", str(n))
        write_attr(ndir / "local", "1" if n == local else "0")
    return cdir


def start_region(cdir: Path, region: Region, image: Path) -> None:
    """libo2cb's order: mkdir, block_bytes, start_block, blocks, then dev (blocks until steady)."""
    rdir = cdir / "heartbeat" / region.uuid
    rdir.mkdir()
    write_attr(rdir / "block_bytes", str(region.block_bytes))
    write_attr(rdir / "start_block", str(region.start_block))
    write_attr(rdir / "blocks", str(region.blocks))
    fd = os.open(image, os.O_RDWR)
    try:
        write_attr(rdir / "dev", str(fd))
    finally:
        os.close(fd)


def dev_write_errno(rdir: Path, device: Path) -> int:
    """The dev write (the start: blocks until steady); 0, or the errno it failed with."""
    fd = os.open(device, os.O_RDWR)
    try:
        dev = os.open(rdir / "dev", os.O_WRONLY)
        try:
            os.write(dev, str(fd).encode())
        except OSError as exc:
            return exc.errno or 0
        finally:
            os.close(dev)
    finally:
        os.close(fd)
    return 0


def start_regions(jobs: list[tuple[Path, Region, Path]]) -> None:
    """Start several nodes at once (each dev write blocks until that node is steady)."""
    errors: list[BaseException] = []

    def one(job: tuple[Path, Region, Path]) -> None:
        try:
            start_region(*job)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def livenodes(sysroot: Path, uuid: str) -> list[int]:
    text = read_attr(sysroot / "sys/kernel/debug/o2hb" / uuid / "livenodes")
    return [int(x) for x in text.split()]
