"""The Python floor for ``ocfs2_hb_ctl -I -u UUID``: its work with nothing else.

    python -I -S bench/hbfloor.py UUID       (HBCTL_SYSROOT=MOUNTPOINT)

What the tool must do for ``-I`` (o2cb_init's reads: cluster_stack, interface_revision,
the configfs cluster directory; then the region's semaphore set: ``semget(crc32(UUID), 2,
IPC_CREAT)`` and ``GETVAL`` of semaphore 1), importing only ``os``, ``zlib`` and ``ctypes``,
in an interpreter started with ``-I -S`` (no site, no venv, no editable-install finder).
Timed beside our real ``-I`` and the C tool, it says how close a Python ``-I`` can get.
A measurement only: no error messages, no validation (exit 1 on any failure).
"""

import ctypes
import os
import sys
import zlib

IPC_CREAT = 0o1000
GETVAL = 12


def main() -> int:
    uuid = sys.argv[1]
    root = os.environ.get("HBCTL_SYSROOT", "/")
    with open(os.path.join(root, "sys/fs/ocfs2/cluster_stack"), "rb") as f:
        if f.read().strip() != b"o2cb":
            return 1
    with open(os.path.join(root, "sys/fs/o2cb/interface_revision"), "rb") as f:
        if int(f.read()) != 5:
            return 1
    if not os.path.isdir(os.path.join(root, "sys/kernel/config/cluster")):
        return 1
    libc = ctypes.CDLL(None, use_errno=True)
    key = ctypes.c_int32(zlib.crc32(uuid.encode("ascii"))).value
    semid = libc.semget(key, 2, IPC_CREAT)
    if semid < 0:
        return 1
    refs = libc.semctl(semid, 1, GETVAL)
    if refs < 0:
        return 1
    sys.stdout.write(f"{uuid}: {refs} refs\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
