"""Run test code in a private network namespace, so its abstract sockets are its own.

``@ocfs2_controld_sock`` is one name per network namespace: tests that listen on it, or
clients that connect to it, must not meet another test's daemon (or a real one). A thread
may have a network namespace of its own (unshare(CLONE_NEWNET) acts on the calling thread),
and a socket stays in the namespace it was created in, whichever thread uses it later.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def netns_usable() -> str | None:
    """None when this process may make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "a private network namespace needs root (CAP_SYS_ADMIN)"
    return None


def in_private_netns(fn: Callable[[], T]) -> T:
    """Call ``fn`` on a thread that first moves into a new network namespace."""
    why = netns_usable()
    if why:
        pytest.skip(why)
    out: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
            out.append(fn())
        except BaseException as e:  # handed to the caller's thread
            error.append(e)

    thread = threading.Thread(target=body, name="private-netns")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return out[0]
