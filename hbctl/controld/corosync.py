"""corosync's client libraries through ctypes: CPG process groups and one cmap key.

There is no Python binding for libcpg/libcmap on PyPI or in Debian, so this is the plain
ctypes mapping of the few calls ocfs2_controld needs (corosync 3, ``libcpg.so.4``,
``libcmap.so.4``): one CPG handle per group (a handle joins one group), ``cpg_fd_get`` for a
descriptor trio can wait on, ``cpg_dispatch(CS_DISPATCH_ALL)`` to run the confchg callback,
``cpg_local_get`` for our node id and cmap's ``totem.cluster_name``. The libraries talk to
the corosync of the caller's network namespace (libqb IPC on abstract sockets).

Nothing here knows about trio or the daemon; ``hbctl.controld.membership`` drives it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from dataclasses import dataclass

CS_OK = 1
CS_ERR_TRY_AGAIN = 6
CS_DISPATCH_ALL = 2
CPG_MAX_NAME_LENGTH = 128

_CS_ERRORS = {
    2: "CS_ERR_LIBRARY", 3: "CS_ERR_VERSION", 4: "CS_ERR_INIT", 5: "CS_ERR_TIMEOUT",
    6: "CS_ERR_TRY_AGAIN", 7: "CS_ERR_INVALID_PARAM", 8: "CS_ERR_NO_MEMORY",
    9: "CS_ERR_BAD_HANDLE", 10: "CS_ERR_BUSY", 11: "CS_ERR_ACCESS", 12: "CS_ERR_NOT_EXIST",
    13: "CS_ERR_NAME_TOO_LONG", 14: "CS_ERR_EXIST", 15: "CS_ERR_NO_SPACE",
    18: "CS_ERR_NO_RESOURCES", 19: "CS_ERR_NOT_SUPPORTED",
}


class CorosyncError(Exception):
    """A corosync library call that did not return CS_OK."""

    def __init__(self, call: str, code: int) -> None:
        super().__init__(f"{call}: {_CS_ERRORS.get(code, code)}")
        self.call = call
        self.code = code


class _CpgName(ctypes.Structure):
    _fields_ = [("length", ctypes.c_uint32), ("value", ctypes.c_char * CPG_MAX_NAME_LENGTH)]


class _CpgAddress(ctypes.Structure):
    _fields_ = [("nodeid", ctypes.c_uint32), ("pid", ctypes.c_uint32),
                ("reason", ctypes.c_uint32)]


_DELIVER_FN = ctypes.CFUNCTYPE(
    None, ctypes.c_uint64, ctypes.POINTER(_CpgName), ctypes.c_uint32, ctypes.c_uint32,
    ctypes.c_void_p, ctypes.c_size_t)
_CONFCHG_FN = ctypes.CFUNCTYPE(
    None, ctypes.c_uint64, ctypes.POINTER(_CpgName),
    ctypes.POINTER(_CpgAddress), ctypes.c_size_t,
    ctypes.POINTER(_CpgAddress), ctypes.c_size_t,
    ctypes.POINTER(_CpgAddress), ctypes.c_size_t)


class _CpgCallbacks(ctypes.Structure):
    _fields_ = [("deliver", _DELIVER_FN), ("confchg", _CONFCHG_FN)]


@dataclass(frozen=True)
class Address:
    nodeid: int
    pid: int
    reason: int = 0


@dataclass(frozen=True)
class Confchg:
    """One CPG configuration change of one group, as corosync delivered it."""

    group: str
    members: tuple[Address, ...]
    left: tuple[Address, ...]
    joined: tuple[Address, ...]


def _load(name: str) -> ctypes.CDLL:
    path = ctypes.util.find_library(name) or f"lib{name}.so.4"
    return ctypes.CDLL(path, use_errno=True)


_libs: dict[str, ctypes.CDLL] = {}


def _lib(name: str) -> ctypes.CDLL:
    """libcpg or libcmap, loaded once; OSError if the library is not installed."""
    if name not in _libs:
        lib = _load(name)
        if name == "cpg":
            lib.cpg_initialize.argtypes = [ctypes.POINTER(ctypes.c_uint64),
                                           ctypes.POINTER(_CpgCallbacks)]
            for fn in ("cpg_finalize",):
                getattr(lib, fn).argtypes = [ctypes.c_uint64]
            lib.cpg_fd_get.argtypes = [ctypes.c_uint64, ctypes.POINTER(ctypes.c_int)]
            lib.cpg_dispatch.argtypes = [ctypes.c_uint64, ctypes.c_int]
            lib.cpg_join.argtypes = [ctypes.c_uint64, ctypes.POINTER(_CpgName)]
            lib.cpg_leave.argtypes = [ctypes.c_uint64, ctypes.POINTER(_CpgName)]
            lib.cpg_local_get.argtypes = [ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint)]
        else:
            lib.cmap_initialize.argtypes = [ctypes.POINTER(ctypes.c_uint64)]
            lib.cmap_finalize.argtypes = [ctypes.c_uint64]
            lib.cmap_get_string.argtypes = [ctypes.c_uint64, ctypes.c_char_p,
                                            ctypes.POINTER(ctypes.c_void_p)]
        _libs[name] = lib
    return _libs[name]


def _check(call: str, code: int) -> None:
    if code != CS_OK:
        raise CorosyncError(call, code)


def _addresses(ptr: ctypes._Pointer[_CpgAddress], n: int) -> tuple[Address, ...]:
    return tuple(Address(ptr[i].nodeid, ptr[i].pid, ptr[i].reason) for i in range(n))


class CpgGroup:
    """One CPG handle joined to one group; confchgs go to ``on_confchg`` from ``dispatch``."""

    def __init__(self, name: str, on_confchg: Callable[[Confchg], None]) -> None:
        raw = name.encode()
        if len(raw) > CPG_MAX_NAME_LENGTH:
            raise ValueError(f"CPG group name too long: {name}")
        self.name = name
        self._cpg = _lib("cpg")
        self._cpg_name = _CpgName(len(raw), raw)
        self._on_confchg = on_confchg
        # Keep the C callbacks referenced for as long as the handle lives.
        self._callbacks = _CpgCallbacks(_DELIVER_FN(self._deliver), _CONFCHG_FN(self._confchg))
        handle = ctypes.c_uint64()
        _check("cpg_initialize", self._cpg.cpg_initialize(ctypes.byref(handle),
                                                          ctypes.byref(self._callbacks)))
        self.handle = handle.value
        self.closed = False

    def _deliver(self, *args: object) -> None:
        pass  # ocfs2_controld sends no messages of its own through CPG here

    def _confchg(self, handle: int, name: ctypes._Pointer[_CpgName],
                 members: ctypes._Pointer[_CpgAddress], n_members: int,
                 left: ctypes._Pointer[_CpgAddress], n_left: int,
                 joined: ctypes._Pointer[_CpgAddress], n_joined: int) -> None:
        group = name.contents.value[: name.contents.length].decode(errors="replace")
        self._on_confchg(Confchg(group, _addresses(members, n_members),
                                 _addresses(left, n_left), _addresses(joined, n_joined)))

    def fd(self) -> int:
        fd = ctypes.c_int()
        _check("cpg_fd_get", self._cpg.cpg_fd_get(self.handle, ctypes.byref(fd)))
        return fd.value

    def local_nodeid(self) -> int:
        nodeid = ctypes.c_uint()
        _check("cpg_local_get", self._cpg.cpg_local_get(self.handle, ctypes.byref(nodeid)))
        return nodeid.value

    def join(self) -> int:
        """``cpg_join``; returns the CS code so the caller can retry CS_ERR_TRY_AGAIN."""
        return int(self._cpg.cpg_join(self.handle, ctypes.byref(self._cpg_name)))

    def leave(self) -> int:
        return int(self._cpg.cpg_leave(self.handle, ctypes.byref(self._cpg_name)))

    def dispatch(self) -> None:
        """Run every pending callback; CorosyncError when corosync went away."""
        _check("cpg_dispatch", self._cpg.cpg_dispatch(self.handle, CS_DISPATCH_ALL))

    def finalize(self) -> None:
        if not self.closed:
            self.closed = True
            self._cpg.cpg_finalize(self.handle)


def cluster_name() -> str:
    """cmap's ``totem.cluster_name`` (what libo2cb's ``user_list_clusters`` asks)."""
    cmap = _lib("cmap")
    libc = ctypes.CDLL(None)
    handle = ctypes.c_uint64()
    _check("cmap_initialize", cmap.cmap_initialize(ctypes.byref(handle)))
    try:
        value = ctypes.c_void_p()
        _check("cmap_get_string",
               cmap.cmap_get_string(handle.value, b"totem.cluster_name", ctypes.byref(value)))
        if not value.value:
            raise CorosyncError("cmap_get_string", 12)
        try:
            return ctypes.string_at(value.value).decode(errors="replace")
        finally:
            libc.free(value)
    finally:
        cmap.cmap_finalize(handle.value)
