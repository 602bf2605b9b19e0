"""libo2cb's view of the kernel: ``o2cb_init`` and the configfs I/O primitives.

``o2cb_init`` is what every C tool runs before touching the cluster: it reads
the cluster stack label (``/sys/fs/ocfs2/cluster_stack``), checks the o2nm
interface revision (``<= 5``) and finds configfs. :func:`o2cb_init` does the
same against a :class:`~hbctl.sysroot.Sysroot` and returns the stack name.

Unlike libo2cb it never forks ``/sbin/modprobe`` when the stack file is
missing (libo2cb's ``perform_modprobe`` child keeps running the caller when the
exec fails, so the tool runs several times over): a missing file means the
classic stack, as libo2cb concludes after its modprobe attempt, and loading
modules is left to the administrator.

:class:`ConfigfsIO` is the handful of path operations libo2cb performs on
configfs (mkdir/rmdir of items, one-``write()`` attribute stores without a
newline, reads until EOF, directory listings). :class:`OsConfigfs` does them
with plain syscalls; the same code therefore drives the real kernel's configfs
and a fakecfs mount, and tests may pass a recording stand-in.
"""

from __future__ import annotations

import errno
import os
import stat

from hbctl.errors import Code, O2cbError, from_attr_open, from_attr_write
from hbctl.sysroot import KernelUnavailable, Sysroot

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Protocol

CLASSIC_STACK = "o2cb"
STACK_LABEL_LEN = 4
O2NM_API_VERSION = 5
DIR_MODE = 0o755

# Older kernels kept the revision elsewhere; libo2cb falls back in this order.
_OLD_REVISION_FILES = (
    "sys/o2cb/interface_revision",
    "proc/fs/ocfs2_nodemanager/interface_revision",
)


if TYPE_CHECKING:

    class ConfigfsIO(Protocol):
        """The path operations libo2cb performs on configfs; OSError on failure."""

        def mkdir(self, path: str) -> None: ...
        def rmdir(self, path: str) -> None: ...
        def write_attr(self, path: str, value: bytes) -> None: ...
        def read_attr(self, path: str, limit: int) -> bytes: ...
        def list_dirs(self, path: str) -> list[str]: ...
        def open_device(self, path: str) -> int: ...
        def close(self, fd: int) -> None: ...

else:
    # At run time the protocol is only a name for annotations: importing typing for it
    # would cost ocfs2_hb_ctl ~4 ms of start-up.
    ConfigfsIO = object


class OsConfigfs:
    """ConfigfsIO with plain syscalls, in libo2cb's exact shape."""

    def mkdir(self, path: str) -> None:
        os.mkdir(path, DIR_MODE)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def write_attr(self, path: str, value: bytes) -> None:
        # O_WRONLY only: no O_CREAT (an attribute the kernel lacks is an
        # error, not a new file) and no O_TRUNC (configfs has no truncate).
        fd = os.open(path, os.O_WRONLY)
        try:
            view = memoryview(value)
            while view:
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    continue
                except InterruptedError:  # pragma: no cover - PEP 475 retries already
                    continue
                view = view[n:]
        finally:
            os.close(fd)

    def read_attr(self, path: str, limit: int) -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            out = b""
            while len(out) < limit:
                chunk = os.read(fd, limit - len(out))
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            os.close(fd)

    def list_dirs(self, path: str) -> list[str]:
        names = []
        with os.scandir(path) as it:
            for entry in it:
                try:
                    if stat.S_ISDIR(os.lstat(entry.path).st_mode):
                        names.append(entry.name)
                except OSError:
                    continue  # vanished or unreadable: libo2cb skips it too
        return names

    def open_device(self, path: str) -> int:
        return os.open(path, os.O_RDWR)

    def close(self, fd: int) -> None:
        os.close(fd)


OS_CONFIGFS = OsConfigfs()


def write_attr(fs: ConfigfsIO, path: str, value: str) -> None:
    """``o2cb_set_attribute``: value without newline; errors mapped like libo2cb."""
    data = value.encode()
    try:
        fs.write_attr(path, data)
    except OSError as e:
        # We cannot tell open from write failures through the protocol, so
        # classify by errno: the ones open() gives map as open errors.
        if e.errno in (errno.EIO,):
            raise from_attr_write(e, path) from e
        if e.errno in (
            errno.ENOENT,
            errno.ENOTDIR,
            errno.EISDIR,
            errno.EACCES,
            errno.EPERM,
            errno.EROFS,
        ):
            raise from_attr_open(e, path) from e
        raise from_attr_write(e, path) from e


def read_attr(fs: ConfigfsIO, path: str, limit: int = 15) -> str:
    """``o2cb_get_attribute``: up to ``limit`` bytes, errors mapped like libo2cb."""
    try:
        return fs.read_attr(path, limit).decode(errors="replace")
    except OSError as e:
        if e.errno == errno.EIO:
            raise O2cbError(Code.IO, path) from e
        raise from_attr_open(e, path) from e


def determine_stack(sysroot: Sysroot) -> str:
    """The running cluster stack's 4-char label (``o2cb``, ``pcmk``, ``cman``)."""
    try:
        with open(sysroot.cluster_stack_file, encoding="ascii", errors="replace") as f:
            line = f.readline(99)
    except FileNotFoundError:
        # Kernels without stackglue have no file: classic o2cb.
        return CLASSIC_STACK
    except OSError as e:
        raise O2cbError(Code.SERVICE_UNAVAILABLE, f"{sysroot.cluster_stack_file}: {e}") from e
    if not line:
        raise O2cbError(Code.SERVICE_UNAVAILABLE, f"{sysroot.cluster_stack_file} is empty")
    if line.endswith("\n"):
        line = line[:-1]
    if len(line) != STACK_LABEL_LEN:
        raise O2cbError(Code.INTERNAL_FAILURE, f"bad stack label {line!r}")
    return line


def setup_stack(sysroot: Sysroot, label: str) -> None:
    """``o2cb_setup_stack`` (mount.ocfs2): make ``label`` the running stack if it is not.

    The kernel refuses the write with EBUSY while another stack holds a mount.
    """
    if determine_stack(sysroot) == label:
        return
    try:
        with open(sysroot.cluster_stack_file, "w", encoding="ascii") as f:
            f.write(label)
    except OSError as e:
        raise from_attr_write(e, sysroot.cluster_stack_file) from e


def parse_revision(text: str) -> int | None:
    """``sscanf("%u")`` of the revision file: None when there is nothing at all."""
    s = text.lstrip()
    if not s:
        return None
    digits = ""
    for ch in s:
        if not ch.isdigit():
            break
        digits += ch
    # sscanf matching nothing leaves the value unset; libo2cb then compares
    # garbage. We read it as 0 (accepted) rather than guess.
    return int(digits) if digits else 0


def check_interface_revision(sysroot: Sysroot, fs: ConfigfsIO = OS_CONFIGFS) -> int:
    """Read the o2nm interface revision; a revision above 5 is BAD_VERSION."""
    candidates = [sysroot.interface_revision_file]
    candidates += [sysroot.path(p) for p in _OLD_REVISION_FILES]
    last: O2cbError | None = None
    for path in candidates:
        try:
            text = fs.read_attr(path, 15).decode(errors="replace")
        except OSError as e:
            if e.errno == errno.EIO:
                raise O2cbError(Code.IO, path) from e
            last = from_attr_open(e, path)
            if last.code is Code.SERVICE_UNAVAILABLE:
                continue
            raise last from e
        rev = parse_revision(text)
        if rev is None:
            raise O2cbError(Code.INTERNAL_FAILURE, f"{path} is empty")
        if rev > O2NM_API_VERSION:
            raise O2cbError(Code.BAD_VERSION, f"interface revision {rev} > {O2NM_API_VERSION}")
        return rev
    assert last is not None
    raise last


def configfs_path(sysroot: Sysroot) -> str:
    """Where configfs is; SERVICE_UNAVAILABLE if it is not there."""
    try:
        return sysroot.configfs()
    except KernelUnavailable as e:
        raise O2cbError(Code.SERVICE_UNAVAILABLE, str(e)) from e


def o2cb_init(sysroot: Sysroot, fs: ConfigfsIO = OS_CONFIGFS) -> str:
    """libo2cb's ``o2cb_init``: stack label, revision, configfs. Returns the stack."""
    stack = determine_stack(sysroot)
    check_interface_revision(sysroot, fs)
    configfs_path(sysroot)
    return stack
