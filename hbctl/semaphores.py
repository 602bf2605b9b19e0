"""libo2cb's per-region SysV semaphore set: the heartbeat mutex and refcount.

Every user of a heartbeat region on a node (mount.ocfs2, ocfs2_hb_ctl, fsck…)
agrees through one SysV semaphore set per region, found by a key anyone can
compute from the region name (the upper-case UUID):

* key   = CRC-32 (zlib's) of the ASCII region name, as a signed 32-bit ``key_t``;
* set   = ``semget(key, 2, IPC_CREAT)`` with permission bits 000 (root only),
          created lazily, initial values 0/0, by whoever comes first;
* sem 0 = the region's mutex (0 free, 1 held), taken with the atomic pair
          ``[{0, 0, SEM_UNDO}, {0, +1, SEM_UNDO}]`` (wait for zero, then take);
          SEM_UNDO releases it if the holder dies;
* sem 1 = the number of references; persistent ones (mount, hb_ctl) use no
          undo, transient ones (fsck, tunefs) use SEM_UNDO so a crash drops them.

To interoperate with the C tools byte for byte we issue exactly these calls.
The calls go through ctypes to libc: ``sysv_ipc`` cannot create a set of two
semaphores (its Semaphore objects are one-semaphore sets) and cannot submit
several sembufs in one semop, which the mutex needs to be atomic.

The "mounted" flag (ocfs2-tools' never-built step 3) lives in a *second* set,
because the first one cannot carry it:

* our ``semget(key, 3, ...)`` fails EINVAL on a set the C tools made with 2,
  and a C tool that makes the set first makes it with 2;
* a C ``-K`` that drops the count to 0 removes only the 2-semaphore set, and
  any encoding of the flag inside sem 1 (an offset, a high bit) would make the
  C tools' ``-I`` lie and their ``-K`` stop at the wrong count.

So the flag set is keyed by CRC-32 of ``"<UUID>:mounted"`` (:func:`flag_key`;
the C tools never compute it) and holds the *identity* of the refcount set it
belongs to: the refcount set's semid + 1, split over three semaphores of 15,
15 and 2 bits (SEMVMX is 32767). The flag is set iff the flag set exists and
names the current refcount set. That makes a flag orphaned by a C tool
harmless: if a C ``-K`` removed the refcount set (its count hit 0) the next
set has another semid and the old flag reads as clear. The flag set is only
touched under the region's mutex (sem 0 of the refcount set), is made without
SEM_UNDO (it outlives mount.ocfs2, as the mount's reference does) and is
removed, never zeroed, when cleared: an unmounted region leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import zlib

from hbctl.errors import Code, O2cbError, from_sem

IPC_CREAT = 0o1000
IPC_RMID = 0
GETVAL = 12
SEM_UNDO = 0x1000

NSEMS = 2
SEM_MUTEX = 0
SEM_REFS = 1


class _Sembuf(ctypes.Structure):
    _fields_ = [
        ("sem_num", ctypes.c_ushort),
        ("sem_op", ctypes.c_short),
        ("sem_flg", ctypes.c_short),
    ]


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.semget.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.semget.restype = ctypes.c_int
        lib.semop.argtypes = [ctypes.c_int, ctypes.POINTER(_Sembuf), ctypes.c_size_t]
        lib.semop.restype = ctypes.c_int
        # semctl is variadic; GETVAL and IPC_RMID take no fourth argument.
        lib.semctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.semctl.restype = ctypes.c_int
        _libc = lib
    return _libc


def region_key(region: str) -> int:
    """The SysV key of a region's set: zlib CRC-32 of the name as signed int32.

    Case matters: the region name is the upper-case UUID, and a lower-case
    spelling is a different (empty) set.
    """
    crc = zlib.crc32(region.encode("ascii"))
    return crc - (1 << 32) if crc >= (1 << 31) else crc


def semget(key: int, nsems: int = NSEMS, flags: int = IPC_CREAT) -> int:
    """``semget(key, nsems, flags)``; OSError on failure. Mode bits are 000."""
    while True:
        semid = _lib().semget(key, nsems, flags)
        if semid >= 0:
            return int(semid)
        e = ctypes.get_errno()
        if e != errno.EINTR:
            raise OSError(e, os.strerror(e))


def _semop(semid: int, ops: list[tuple[int, int, int]]) -> None:
    """One atomic semop of ``ops``; EINTR is retried, other errors raise OSError.

    Returning to the interpreter between retries lets Python signal handlers
    run, so Ctrl-C still interrupts a blocked mutex wait.
    """
    arr = (_Sembuf * len(ops))(*(_Sembuf(n, op, flg) for n, op, flg in ops))
    while True:
        if _lib().semop(semid, arr, len(ops)) == 0:
            return
        e = ctypes.get_errno()
        if e != errno.EINTR:
            raise OSError(e, os.strerror(e))


def _semctl(semid: int, semnum: int, cmd: int) -> int:
    while True:
        r = _lib().semctl(semid, semnum, cmd)
        if r >= 0:
            return int(r)
        e = ctypes.get_errno()
        if e != errno.EINTR:
            raise OSError(e, os.strerror(e))


class RegionSemaphores:
    """An open handle on one region's set (the semid) and the calls libo2cb makes.

    A plain class (dataclasses would cost ``ocfs2_hb_ctl`` ~10 ms of start-up).
    """

    __slots__ = ("region", "semid")

    def __init__(self, region: str, semid: int) -> None:
        self.region = region
        self.semid = semid

    def __repr__(self) -> str:
        return f"RegionSemaphores({self.region!r}, semid={self.semid})"

    @classmethod
    def open(cls, region: str) -> RegionSemaphores:
        """``o2cb_get_semid``: create or find the set; failure is BAD_SEM."""
        try:
            return cls(region, semget(region_key(region)))
        except OSError as e:
            raise O2cbError(Code.BAD_SEM, f"semget {region}: {e.strerror}") from e

    def mutex_down(self) -> None:
        """Wait for sem 0 to be free and take it, atomically, with undo."""
        try:
            _semop(self.semid, [(SEM_MUTEX, 0, SEM_UNDO), (SEM_MUTEX, 1, SEM_UNDO)])
        except OSError as e:
            raise from_sem(e, "mutex down") from e

    def mutex_up(self) -> None:
        try:
            _semop(self.semid, [(SEM_MUTEX, -1, SEM_UNDO)])
        except OSError as e:
            raise from_sem(e, "mutex up") from e

    def get_ref(self, persist: bool) -> None:
        """+1 on sem 1; a non-persistent reference is undone when we exit."""
        try:
            _semop(self.semid, [(SEM_REFS, 1, 0 if persist else SEM_UNDO)])
        except OSError as e:
            raise from_sem(e, "get ref") from e

    def drop_ref(self, persist: bool) -> None:
        try:
            _semop(self.semid, [(SEM_REFS, -1, 0 if persist else SEM_UNDO)])
        except OSError as e:
            raise from_sem(e, "drop ref") from e

    def refs(self) -> int:
        """GETVAL of sem 1."""
        try:
            return _semctl(self.semid, SEM_REFS, GETVAL)
        except OSError as e:
            raise from_sem(e, "GETVAL") from e

    def mutex_value(self) -> int:
        """GETVAL of sem 0 (1 while someone holds the mutex); for status/tests."""
        try:
            return _semctl(self.semid, SEM_MUTEX, GETVAL)
        except OSError as e:
            raise from_sem(e, "GETVAL") from e

    def destroy(self) -> None:
        """IPC_RMID; EIDRM (someone raced us to it) counts as success, as in libo2cb."""
        try:
            _semctl(self.semid, 0, IPC_RMID)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                raise O2cbError(Code.PERMISSION_DENIED, "IPC_RMID") from e
            if e.errno == errno.EIDRM:
                return
            raise O2cbError(Code.INTERNAL_FAILURE, f"IPC_RMID: {e.strerror}") from e


def mutex_down_lookup(region: str) -> RegionSemaphores:
    """Open the region's set and take its mutex.

    A stopper that drops the last reference removes the whole set while others
    may be waiting on its mutex; they get EIDRM and must look the key up again
    (a fresh set is created), exactly as libo2cb loops.
    """
    while True:
        sems = RegionSemaphores.open(region)
        try:
            sems.mutex_down()
        except O2cbError as e:
            if e.code is Code.NO_SEM:
                continue
            raise
        return sems


def region_refs(region: str) -> int:
    """``o2cb_num_region_refs``: sem 1 without the mutex; creates the set if absent."""
    sems = RegionSemaphores.open(region)
    try:
        return sems.refs()
    except O2cbError as e:
        if e.code is Code.NO_SEM:
            return 0
        raise


def peek_refs(region: str) -> int | None:
    """The reference count if the region's set exists, else None; never creates it.

    For status views: unlike :func:`region_refs` (the C tools' ``-I``), looking
    must not leave an empty set behind.
    """
    try:
        semid = semget(region_key(region), 0, 0)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise O2cbError(Code.BAD_SEM, f"semget {region}: {e.strerror}") from e
    try:
        return RegionSemaphores(region, semid).refs()
    except O2cbError as e:
        if e.code in (Code.NO_SEM, Code.SERVICE_UNAVAILABLE):
            return None
        raise


# -- the "mounted" flag -----------------------------------------------------------

FLAG_SUFFIX = ":mounted"
FLAG_NSEMS = 3
_FLAG_BITS = (15, 15, 2)  # semid + 1 < 2**32, each part <= SEMVMX (32767)
FLAG_MODE = 0o600
IPC_EXCL = 0o2000


def flag_key(region: str) -> int:
    """The key of a region's flag set: :func:`region_key` of ``"<region>:mounted"``.

    A CRC of 0 would be IPC_PRIVATE (a new set each time); 1 is used instead.
    """
    return region_key(region + FLAG_SUFFIX) or 1


def encode_owner(semid: int) -> list[int]:
    """The flag set's values for a refcount set ``semid`` (never all zero)."""
    value = semid + 1
    parts = []
    for bits in _FLAG_BITS:
        parts.append(value & ((1 << bits) - 1))
        value >>= bits
    if value:
        raise ValueError(f"semid {semid} does not fit the flag encoding")
    return parts


def decode_owner(values: list[int]) -> int:
    """Inverse of :func:`encode_owner`; -1 for all zeros (a set not yet written)."""
    value, shift = 0, 0
    for part, bits in zip(values, _FLAG_BITS, strict=True):
        value |= part << shift
        shift += bits
    return value - 1


def _flag_semid(region: str) -> int | None:
    """The flag set's semid if it exists (never creates it)."""
    try:
        return semget(flag_key(region), 0, 0)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise O2cbError(Code.BAD_SEM, f"semget {region}{FLAG_SUFFIX}: {e.strerror}") from e


def _flag_owner(region: str) -> int | None:
    """The refcount semid the flag set names, or None without a (readable) flag set."""
    semid = _flag_semid(region)
    if semid is None:
        return None
    try:
        return decode_owner([_semctl(semid, n, GETVAL) for n in range(FLAG_NSEMS)])
    except OSError as e:
        if e.errno in (errno.EIDRM, errno.EINVAL):
            return None
        raise from_sem(e, "GETVAL flag") from e


def mounted_flag(sems: RegionSemaphores) -> bool:
    """Whether the region is flagged mounted (call with ``sems``'s mutex held)."""
    return _flag_owner(sems.region) == sems.semid


def set_mounted_flag(sems: RegionSemaphores) -> None:
    """Flag the region mounted for the refcount set ``sems`` (mutex held).

    A stale flag set (naming an older refcount set) is replaced.
    """
    clear_mounted_flag(sems.region)
    try:
        semid = semget(flag_key(sems.region), FLAG_NSEMS, IPC_CREAT | IPC_EXCL | FLAG_MODE)
    except OSError as e:
        raise O2cbError(Code.BAD_SEM, f"semget {sems.region}{FLAG_SUFFIX}: {e.strerror}") from e
    # One atomic semop writes all three parts (an op of 0 waits for zero: a no-op
    # on a fresh set), so no reader ever sees half an identity.
    try:
        _semop(semid, [(n, v, 0) for n, v in enumerate(encode_owner(sems.semid))])
    except OSError as e:
        with contextlib.suppress(OSError):
            _semctl(semid, 0, IPC_RMID)
        raise from_sem(e, "set flag") from e


def clear_mounted_flag(region: str) -> None:
    """Remove the region's flag set if there is one (mutex held); EIDRM is success."""
    semid = _flag_semid(region)
    if semid is None:
        return
    try:
        _semctl(semid, 0, IPC_RMID)
    except OSError as e:
        if e.errno in (errno.EIDRM, errno.EINVAL):
            return
        if e.errno in (errno.EPERM, errno.EACCES):
            raise O2cbError(Code.PERMISSION_DENIED, "IPC_RMID flag") from e
        raise O2cbError(Code.INTERNAL_FAILURE, f"IPC_RMID flag: {e.strerror}") from e


def peek_mounted_flag(region: str) -> bool:
    """The flag for status views: never creates either set, takes no mutex."""
    owner = _flag_owner(region)
    if owner is None:
        return False
    try:
        semid = semget(region_key(region), 0, 0)
    except OSError:
        return False
    return owner == semid

