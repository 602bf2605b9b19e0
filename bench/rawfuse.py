"""The /dev/fuse floor: attrfs's tree answered by a plain Python loop over /dev/fuse.

    python -m bench.rawfuse MOUNTPOINT       (root: it calls mount(2) itself)

No libfuse, no pyfuse3, no event loop: one thread reads a request with ``readv``, unpacks
the header with ``struct``, answers with one ``write``. Same tree, same answers and same
mount options as attrfs (C) and bench.pyattrfs (pyfuse3), so the three differ only in the
machinery between the kernel and the handlers. This is a measurement, not a proposal for
a FUSE library: it answers only what the bench's client makes the kernel ask (INIT,
LOOKUP, GETATTR, OPEN, READ, FLUSH, RELEASE, FORGET; everything else is ENOSYS).

The protocol structures are those of <linux/fuse.h> (protocol 7.31 replies).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct
import sys
import time
from types import FrameType

from .pyattrfs import ROOT, TREE

# opcodes, <linux/fuse.h>
LOOKUP, FORGET, GETATTR, OPEN, READ, RELEASE, FLUSH, INIT = 1, 2, 3, 14, 15, 18, 25, 26
OPENDIR, RELEASEDIR, DESTROY, BATCH_FORGET = 27, 29, 38, 42
NO_REPLY = {FORGET, BATCH_FORGET}
FOPEN_DIRECT_IO = 1

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, ext, pad
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
INIT_IN = struct.Struct("<IIII")  # major, minor, max_readahead, flags
INIT_OUT = struct.Struct("<IIIIHHIIHHI7I")  # 64 bytes
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # fuse_attr, 88 bytes
ENTRY_OUT = struct.Struct("<QQQQII")  # nodeid, generation, entry/attr valid (+nsec)
ATTR_OUT = struct.Struct("<QII")  # attr_valid, attr_valid_nsec, dummy
OPEN_OUT = struct.Struct("<QII")  # fh, open_flags, padding
READ_IN = struct.Struct("<QQI")  # fh, offset, size (the rest unused)
BUFSIZE = 135168  # >= max_write + headers, what libfuse reads with

MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2


def _attrs() -> dict[int, bytes]:
    """Every inode's packed fuse_attr (the tree never changes)."""
    now = time.time_ns()
    sec, nsec = divmod(now, 10**9)
    out = {}
    for i, (_parent, _name, contents) in enumerate(TREE):
        ino = i + ROOT
        if contents is None:
            mode, nlink, size = 0o040755, 2, 0
        else:
            mode, nlink, size = 0o100644, 1, 4096
        out[ino] = ATTR.pack(ino, size, 0, sec, sec, sec, nsec, nsec, nsec, mode, nlink,
                             0, 0, 0, 4096, 0)
    return out


requests = 0  # answered or not; SIGUSR1 prints it, as attrfs does


def serve(fd: int) -> None:
    """Answer requests on ``fd`` until the mount goes away (ENODEV)."""
    global requests
    attrs = _attrs()
    children = {(parent, name.encode()): i + ROOT for i, (parent, name, _) in enumerate(TREE)
                if i}
    buf = bytearray(BUFSIZE)
    view = memoryview(buf)
    hdr_size = IN_HEADER.size
    write = os.write
    while True:
        try:
            n = os.readv(fd, [buf])
        except OSError as exc:
            if exc.errno in (errno.EINTR, errno.ENOENT, errno.EAGAIN):
                continue  # ENOENT: the request was interrupted before we read it
            if exc.errno == errno.ENODEV:
                return  # unmounted
            raise
        requests += 1
        _len, opcode, unique, nodeid, *_ = IN_HEADER.unpack_from(buf)
        error = 0
        payload = b""
        if opcode == LOOKUP:
            name = bytes(view[hdr_size:n - 1])
            ino = children.get((nodeid, name))
            if ino is None:
                error = -errno.ENOENT
            else:
                payload = ENTRY_OUT.pack(ino, 0, 0, 0, 0, 0) + attrs[ino]
        elif opcode == GETATTR:
            payload = ATTR_OUT.pack(0, 0, 0) + attrs[nodeid]
        elif opcode == OPEN:
            if TREE[nodeid - ROOT][2] is None:
                error = -errno.EISDIR
            else:
                payload = OPEN_OUT.pack(nodeid, FOPEN_DIRECT_IO, 0)
        elif opcode == READ:
            fh, off, size = READ_IN.unpack_from(buf, hdr_size)
            payload = (TREE[fh - ROOT][2] or b"")[off:off + size]
        elif opcode in (FLUSH, RELEASE, RELEASEDIR):
            pass
        elif opcode == OPENDIR:
            payload = OPEN_OUT.pack(0, 0, 0)
        elif opcode in NO_REPLY:
            continue
        elif opcode == INIT:
            _major, minor, max_readahead, _flags = INIT_IN.unpack_from(buf, hdr_size)
            payload = INIT_OUT.pack(7, min(minor, 31), max_readahead, 0, 12, 9, 4096, 1,
                                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        elif opcode == DESTROY:
            write(fd, OUT_HEADER.pack(OUT_HEADER.size, 0, unique))
            return
        else:
            error = -errno.ENOSYS
        if error:
            write(fd, OUT_HEADER.pack(OUT_HEADER.size, error, unique))
        else:
            write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(payload), 0, unique) + payload)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m bench.rawfuse MOUNTPOINT", file=sys.stderr)
        return 2
    mountpoint = os.path.abspath(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    data = (f"fd={fd},rootmode=40000,user_id={os.getuid()},group_id={os.getgid()},"
            "default_permissions,allow_other")
    if libc.mount(b"rawfuse", mountpoint.encode(), b"fuse.rawfuse", MS_NOSUID | MS_NODEV,
                  data.encode()) != 0:
        print(f"rawfuse: mount: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1

    def unmount(signum: int, frame: FrameType | None) -> None:
        libc.umount2(mountpoint.encode(), MNT_DETACH)
        os._exit(0)

    def report(signum: int, frame: FrameType | None) -> None:
        os.write(2, f"requests: {requests}\n".encode())

    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGTERM, unmount)
    signal.signal(signal.SIGINT, unmount)
    try:
        serve(fd)
    finally:
        libc.umount2(mountpoint.encode(), MNT_DETACH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
