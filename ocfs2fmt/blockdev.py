"""Reading an ocfs2 volume from a real device or image file (the shell over `ondisk`).

``pread`` plus the logical sector size (``BLKSSZGET``), which decides both the smallest
block size probed and the heartbeat slot size. The emulated kernel uses this to find the
UUID and heartbeat area behind a ``dev`` write and at put_super; the userland uses it to
read what ``ocfs2_hb_ctl`` reads. Image files count as disks of 512-byte sectors.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

from ocfs2fmt.ondisk import HeartbeatDesc, OnDiskError, Volume, parse_volume

DEFAULT_SECTOR_SIZE = 512  # OCFS2_MIN_BLOCKSIZE: what libocfs2 assumes when BLKSSZGET fails
BLKSSZGET = 0x1268  # <linux/fs.h>



def sector_size(path: str) -> int:
    """Logical sector size: BLKSSZGET on a block device, 512 for files or on failure."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return DEFAULT_SECTOR_SIZE
    try:
        return sector_size_fd(fd)
    finally:
        os.close(fd)


def sector_size_fd(fd: int) -> int:
    """BLKSSZGET on an open block device; 512 for a file or when the ioctl fails."""
    try:
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            return DEFAULT_SECTOR_SIZE
        buf = fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4)
    except OSError:
        return DEFAULT_SECTOR_SIZE
    (size,) = struct.unpack("<i", buf)
    return size if size > 0 else DEFAULT_SECTOR_SIZE


def _open_device(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        code = "NAMED_DEVICE_NOT_FOUND" if e.errno == errno.ENOENT else "IO"
        raise OnDiskError(path, f"cannot open: {e.strerror}", code) from e


def read_volume_fd(fd: int, path: str, sectsize: int | None = None) -> Volume:
    """The ocfs2 volume on the open ``fd`` (``path`` names it in errors)."""
    if sectsize is None:
        sectsize = sector_size_fd(fd)
    # Block sizes below the sector size are not probed: libocfs2 reads with O_DIRECT,
    # which the kernel refuses below the logical sector size.
    return parse_volume(lambda off, n: os.pread(fd, n, off), path, min_block_size=sectsize)


def read_volume(path: str) -> Volume:
    """The ocfs2 volume on ``path`` (block device or image file); OnDiskError if none."""
    fd = _open_device(path)
    try:
        return read_volume_fd(fd, path)
    finally:
        os.close(fd)


def read_volume_with_sector(path: str) -> tuple[Volume, HeartbeatDesc]:
    """The volume and its heartbeat region on this device: ``ocfs2_hb_ctl``'s ``get_desc``.

    Raises OnDiskError for everything the C tool reports as "... while reading uuid",
    including a block size smaller than the device's sector size.
    """
    fd = _open_device(path)
    try:
        sectsize = sector_size_fd(fd)
        volume = read_volume_fd(fd, path, sectsize)
    finally:
        os.close(fd)
    return volume, volume.heartbeat(sectsize)
