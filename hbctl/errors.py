"""Error codes of the C tools, with their exact com_err messages.

The C ocfs2-tools report failures through com_err error tables
(``libo2cb/o2cb_err.et`` and ``libocfs2/ocfs2_err.et``) and print them as
``"<prog>: <message> <context>"``. A drop-in ``ocfs2_hb_ctl`` must print the
same words, so every failure in hbctl's heartbeat stack is an :class:`O2cbError`
carrying one of these codes; the message text is the table's, verbatim.

Two tables define codes with the same text ("I/O error on channel", "Memory
allocation failed"): the enum value holds the table name too, so the codes stay
distinct members.
"""

from __future__ import annotations

import enum
import errno as _errno
import os


class Code(enum.Enum):
    """A com_err code: (error table, message)."""

    # libo2cb/o2cb_err.et
    INVALID_CLUSTER_NAME = ("o2cb", "Cluster name is invalid")
    NO_MEMORY = ("o2cb", "Memory allocation failed")
    IO = ("o2cb", "I/O error on channel")
    SERVICE_UNAVAILABLE = ("o2cb", "Unable to access cluster service")
    INTERNAL_FAILURE = ("o2cb", "Internal logic failure")
    PERMISSION_DENIED = ("o2cb", "Insufficient permissions to access cluster service")
    CLUSTER_EXISTS = ("o2cb", "Cluster already exists")
    NODE_EXISTS = ("o2cb", "Node already exists")
    REGION_EXISTS = ("o2cb", "Heartbeat region already exists")
    REGION_IN_USE = ("o2cb", "Heartbeat region in use")
    INVALID_BLOCK_SIZE = ("o2cb", "Block size is invalid")
    INVALID_BLOCK_COUNT = ("o2cb", "Block count is invalid")
    HOSTNAME_UNKNOWN = ("o2cb", "Could not determine local host name")
    CONFIGURATION_ERROR = ("o2cb", "Configuration error discovered")
    INVALID_NODE_NUM = ("o2cb", "Node number is invalid")
    MODULE_NOT_LOADED = ("o2cb", "Node manager kernel module is not loaded")
    BAD_SEM = ("o2cb", "Could not access heartbeat region semaphore set")
    NO_SEM = ("o2cb", "Region semaphore set destroyed")
    BAD_VERSION = ("o2cb", "Revision of OCFS2-Tools is out of date.")
    INVALID_STACK_NAME = ("o2cb", "Cluster stack is invalid")
    UNKNOWN_REGION = ("o2cb", "Heartbeat region could not be found")
    INVALID_HEARTBEAT_MODE = ("o2cb", "Heartbeat mode is invalid")

    # libocfs2/ocfs2_err.et (the ones ocfs2_hb_ctl can meet)
    OCFS2_IO = ("ocfs", "I/O error on channel")
    OCFS2_NO_MEMORY = ("ocfs", "Memory allocation failed")
    OCFS2_BAD_MAGIC = ("ocfs", "Bad magic number in superblock")
    OCFS2_CORRUPT_SUPERBLOCK = ("ocfs", "The OCFS2 superblock is corrupt")
    OCFS2_FILE_NOT_FOUND = ("ocfs", "Directory entry not found")
    OCFS2_BAD_HEARTBEAT_FILE = ("ocfs", "Invalid heartbeat file")
    OCFS2_BLOCK_SIZE_TOO_SMALL_FOR_HARDWARE = (
        "ocfs",
        "The block size is smaller than the sector size on this device",
    )
    OCFS2_NO_IONICE = ("ocfs", "Unable to find ionice(1)")
    OCFS2_CANNOT_DETERMINE_SECTOR_SIZE = ("ocfs", "Unable to determine the sector size")

    @property
    def message(self) -> str:
        return self.value[1]


class O2cbError(Exception):
    """A failure with a com_err code; ``str()`` is the C tool's message.

    ``detail`` is for humans and logs (which path, which errno); it never
    appears in the drop-in CLI's output, which must match the C tool.
    """

    def __init__(self, code: Code, detail: str | None = None) -> None:
        super().__init__(code.message)
        self.code = code
        self.detail = detail

    @property
    def message(self) -> str:
        return self.code.message

    def __repr__(self) -> str:
        extra = f", {self.detail!r}" if self.detail else ""
        return f"O2cbError({self.code.name}{extra})"


def com_err(prog: str, message: str, context: str) -> str:
    """The line com_err(3) prints: ``"prog: message context\\n"``.

    Context is printed verbatim, so a context that ends in a newline yields a
    blank line after the message, as ``ocfs2_hb_ctl``'s "Cannot initialize
    cluster\\n" does.
    """
    return f"{prog}: {message} {context}\n"


# errno -> code, as libo2cb maps the errno of open(2) on a configfs attribute
# (o2cb_set_attribute / o2cb_get_attribute) and of mkdir/rmdir of items.
_ATTR_OPEN = {
    _errno.ENOTDIR: Code.SERVICE_UNAVAILABLE,
    _errno.ENOENT: Code.SERVICE_UNAVAILABLE,
    _errno.EISDIR: Code.SERVICE_UNAVAILABLE,
    _errno.EACCES: Code.PERMISSION_DENIED,
    _errno.EPERM: Code.PERMISSION_DENIED,
    _errno.EROFS: Code.PERMISSION_DENIED,
}


def from_attr_open(err: OSError, path: str) -> O2cbError:
    """Map an open(2)/read failure on a configfs attribute."""
    code = _ATTR_OPEN.get(err.errno or 0, Code.INTERNAL_FAILURE)
    return O2cbError(code, f"{path}: {os.strerror(err.errno or 0)}")


def from_attr_write(err: OSError, path: str) -> O2cbError:
    """Map a write(2) failure on a configfs attribute (EIO is special)."""
    code = Code.IO if err.errno == _errno.EIO else Code.INTERNAL_FAILURE
    return O2cbError(code, f"write {path}: {os.strerror(err.errno or 0)}")


def _from_dir_op(err: OSError, op: str, path: str, special: dict[int, Code]) -> O2cbError:
    """libo2cb's errno mapping for mkdir/rmdir of configfs items; ``special`` comes first."""
    e = err.errno or 0
    if e in special:
        code = special[e]
    elif e in (_errno.EACCES, _errno.EPERM, _errno.EROFS):
        code = Code.PERMISSION_DENIED
    elif e == _errno.ENOMEM:
        code = Code.NO_MEMORY
    elif e in (_errno.ENOTDIR, _errno.ENOENT):
        code = Code.SERVICE_UNAVAILABLE
    else:
        code = Code.INTERNAL_FAILURE
    return O2cbError(code, f"{op} {path}: {os.strerror(e)}")


def from_mkdir(err: OSError, path: str, exists: Code) -> O2cbError:
    """Map mkdir(2) of a configfs item; ``exists`` is what EEXIST means here."""
    return _from_dir_op(err, "mkdir", path, {_errno.EEXIST: exists})


def from_rmdir(err: OSError, path: str) -> O2cbError:
    """Map rmdir(2) of a configfs item (a region or node still in use is busy)."""
    busy = Code.REGION_IN_USE
    return _from_dir_op(err, "rmdir", path, {_errno.ENOTEMPTY: busy, _errno.EBUSY: busy})


def from_sem(err: OSError, what: str) -> O2cbError:
    """Map a semop/semctl failure as libo2cb's o2cb_semop_err does."""
    e = err.errno or 0
    if e == _errno.EACCES:
        code = Code.PERMISSION_DENIED
    elif e == _errno.EIDRM:
        code = Code.NO_SEM
    elif e == _errno.EINVAL:
        code = Code.SERVICE_UNAVAILABLE
    elif e == _errno.ENOMEM:
        code = Code.NO_MEMORY
    else:
        code = Code.INTERNAL_FAILURE
    return O2cbError(code, f"{what}: {os.strerror(e)}")
