"""Heartbeat regions: start, stop and count users, as libo2cb does.

A region is ``<configfs>/cluster/<cluster>/heartbeat/<UUID>``; creating it and
writing ``dev`` starts the kernel's (or fakecfs's) disk heartbeat, removing it
stops it. Users of a region are counted in its semaphore set
(:mod:`hbctl.semaphores`): starting takes a reference, stopping drops one, and
only the stop that leaves zero removes the region and the set.

Everything here issues libo2cb's calls in libo2cb's order, so the C tools and
hbctl can share one node:

* :func:`create_region` — mkdir, ``block_bytes``, ``start_block``, ``blocks``,
  open the device ``O_RDWR``, write our fd number to ``dev``, close; on any
  failure after the mkdir, rmdir.
* :func:`start_heartbeat` / :func:`stop_heartbeat` — the refcounted pair under
  the region's semaphore mutex (``o2cb_start_heartbeat``/``o2cb_stop_heartbeat``).
* :func:`begin_group_join` / :func:`group_leave` — what ``ocfs2_hb_ctl -S/-K``
  and mount call: validate the volume's stack, cluster name and heartbeat mode
  against the running cluster, then start/stop only in local heartbeat mode
  (in global mode the regions belong to ``o2cb start-heartbeat``).
"""

from __future__ import annotations

import contextlib
import errno
from typing import Any, Protocol

from hbctl import semaphores
from hbctl.errors import Code, O2cbError, from_attr_open, from_mkdir, from_rmdir
from hbctl.stack import (
    CLASSIC_STACK,
    OS_CONFIGFS,
    ConfigfsIO,
    configfs_path,
    read_attr,
    write_attr,
)
from hbctl.sysroot import Sysroot

MAX_BLOCK_BYTES = 4096
MAX_BLOCKS = 255
GLOBAL_TAG = "global"
LOCAL_TAG = "local"


class HeartbeatGeometry(Protocol):
    """Where a region's heartbeat blocks are (hbctl.ondisk.HeartbeatDesc fits)."""

    @property
    def block_bytes(self) -> int: ...
    @property
    def start_block(self) -> int: ...
    @property
    def blocks(self) -> int: ...


# -- paths and listings --------------------------------------------------------


def cluster_dir(sysroot: Sysroot, cluster: str) -> str:
    return f"{configfs_path(sysroot)}/cluster/{cluster}"


def heartbeat_dir(sysroot: Sysroot, cluster: str) -> str:
    return f"{cluster_dir(sysroot, cluster)}/heartbeat"


def region_dir(sysroot: Sysroot, cluster: str, region: str) -> str:
    return f"{heartbeat_dir(sysroot, cluster)}/{region}"


def list_dir(fs: ConfigfsIO, path: str) -> list[str]:
    """``o2cb_list_dir``: subdirectories, the last one readdir returned first."""
    try:
        names = fs.list_dirs(path)
    except OSError as e:
        code = {
            errno.ENOTDIR: Code.SERVICE_UNAVAILABLE,
            errno.ENOENT: Code.SERVICE_UNAVAILABLE,
            errno.ENOMEM: Code.NO_MEMORY,
            errno.EACCES: Code.PERMISSION_DENIED,
        }.get(e.errno or 0, Code.INTERNAL_FAILURE)
        raise O2cbError(code, f"opendir {path}: {e.strerror}") from e
    # libo2cb builds its list by prepending, so index 0 is the last entry.
    return list(reversed(names))


def list_clusters(sysroot: Sysroot, fs: ConfigfsIO = OS_CONFIGFS) -> list[str]:
    return list_dir(fs, f"{configfs_path(sysroot)}/cluster")


def default_cluster(sysroot: Sysroot, fs: ConfigfsIO = OS_CONFIGFS) -> str:
    """``clusters[0]``: the cluster libo2cb uses when none is named."""
    clusters = list_clusters(sysroot, fs)
    if not clusters:
        # libo2cb formats a NULL name here and fails on the paths later.
        raise O2cbError(Code.SERVICE_UNAVAILABLE, "no cluster is registered")
    return clusters[0]


def list_regions(sysroot: Sysroot, cluster: str, fs: ConfigfsIO = OS_CONFIGFS) -> list[str]:
    return list_dir(fs, heartbeat_dir(sysroot, cluster))


def global_heartbeat_mode(
    sysroot: Sysroot, cluster: str | None, fs: ConfigfsIO = OS_CONFIGFS
) -> bool:
    """Whether ``heartbeat/mode`` reads ``global``; a missing attribute is local."""
    cluster = cluster or default_cluster(sysroot, fs)
    try:
        value = read_attr(fs, f"{heartbeat_dir(sysroot, cluster)}/mode")
    except O2cbError as e:
        if e.code is Code.SERVICE_UNAVAILABLE:
            return False
        raise
    return value.rstrip() == GLOBAL_TAG


def hb_thread_pid(
    sysroot: Sysroot, cluster: str | None, region: str, fs: ConfigfsIO = OS_CONFIGFS
) -> int:
    """``o2cb_get_hb_thread_pid``: the region's ``pid`` attribute, atoi'd (empty = 0)."""
    cluster = cluster or default_cluster(sysroot, fs)
    text = read_attr(fs, f"{region_dir(sysroot, cluster, region)}/pid")
    digits = ""
    for ch in text.strip():
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


# -- region items --------------------------------------------------------------


def create_region(
    sysroot: Sysroot,
    cluster: str | None,
    region: str,
    device: str,
    desc: HeartbeatGeometry,
    fs: ConfigfsIO = OS_CONFIGFS,
) -> None:
    """``o2cb_create_heartbeat_region``: make the region and start its heartbeat.

    REGION_EXISTS if the directory is already there (the caller decides what
    that means). The ``dev`` write blocks in the kernel until heartbeat is
    steady (about three intervals).
    """
    if desc.block_bytes > MAX_BLOCK_BYTES:
        raise O2cbError(Code.INVALID_BLOCK_SIZE, f"block_bytes {desc.block_bytes}")
    if desc.blocks == 0 or desc.blocks > MAX_BLOCKS:
        raise O2cbError(Code.INVALID_BLOCK_COUNT, f"blocks {desc.blocks}")
    cluster = cluster or default_cluster(sysroot, fs)
    path = region_dir(sysroot, cluster, region)
    try:
        fs.mkdir(path)
    except OSError as e:
        raise from_mkdir(e, path, Code.REGION_EXISTS) from e
    try:
        write_attr(fs, f"{path}/block_bytes", str(int(desc.block_bytes)))
        write_attr(fs, f"{path}/start_block", str(int(desc.start_block)))
        write_attr(fs, f"{path}/blocks", str(int(desc.blocks)))
        try:
            fd = fs.open_device(device)
        except OSError as e:
            # Same mapping as an attribute open (ENOENT: "Unable to access
            # cluster service", EACCES: "Insufficient permissions ...").
            raise from_attr_open(e, device) from e
        try:
            # The kernel resolves this number in *our* fd table (fget), so it
            # must stay open until the write returns.
            write_attr(fs, f"{path}/dev", str(int(fd)))
        finally:
            fs.close(fd)
    except BaseException:
        # The original error is the one to report.
        with contextlib.suppress(OSError):
            fs.rmdir(path)
        raise


def remove_region(
    sysroot: Sysroot, cluster: str | None, region: str, fs: ConfigfsIO = OS_CONFIGFS
) -> None:
    """``o2cb_remove_heartbeat_region``: rmdir the region (stops its heartbeat)."""
    cluster = cluster or default_cluster(sysroot, fs)
    path = region_dir(sysroot, cluster, region)
    try:
        fs.rmdir(path)
    except OSError as e:
        raise from_rmdir(e, path) from e


# -- the refcounted pair ---------------------------------------------------------


def start_heartbeat(
    sysroot: Sysroot,
    cluster: str | None,
    region: str,
    device: str,
    desc: HeartbeatGeometry,
    persist: bool = True,
    fs: ConfigfsIO = OS_CONFIGFS,
) -> None:
    """``o2cb_start_heartbeat``: create the region if needed and take a reference.

    Local mode: an existing region just gets one more reference (its geometry
    is not checked, as in libo2cb). Global mode: only a region this call
    created gets a reference. If the reference cannot be taken the region is
    removed again.
    """
    sems = semaphores.mutex_down_lookup(region)
    try:
        is_global = global_heartbeat_mode(sysroot, cluster, fs)
        try:
            create_region(sysroot, cluster, region, device, desc, fs)
        except O2cbError as e:
            if e.code is not Code.REGION_EXISTS:
                raise
            if is_global:
                return
        try:
            sems.get_ref(persist)
        except O2cbError:
            with contextlib.suppress(O2cbError):
                remove_region(sysroot, cluster, region, fs)
            raise
    finally:
        sems.mutex_up()


def stop_heartbeat(
    sysroot: Sysroot,
    cluster: str | None,
    region: str,
    persist: bool = True,
    fs: ConfigfsIO = OS_CONFIGFS,
) -> None:
    """``o2cb_stop_heartbeat``: drop a reference; at zero remove region and set.

    A count already at zero (a SEM_UNDO holder died) also removes the region.
    If the rmdir fails the set survives, the mutex is released and the error
    is raised.
    """
    sems = semaphores.mutex_down_lookup(region)
    destroyed = False
    try:
        refs = sems.refs()
        if refs:
            sems.drop_ref(persist)
            refs -= 1
        if refs == 0:
            remove_region(sysroot, cluster, region, fs)
            # Removing the set also releases the mutex we hold; waiters get
            # EIDRM and look the key up again.
            destroyed = True
            sems.destroy()
    finally:
        if not destroyed:
            sems.mutex_up()


def region_refs(region: str) -> int:
    """``o2cb_num_region_refs``: the reference count (creates an empty set if none)."""
    return semaphores.region_refs(region)


# -- group join / leave (validation against the volume) --------------------------


def _text(value: Any) -> str | None:
    """A volume field as libo2cb sees it: empty means absent."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.rstrip(b"\0").decode(errors="replace")
    value = str(value)
    return value or None


def validate_stack(running_stack: str, disk_stack: str | None, disk_cluster: str | None) -> None:
    """``o2cb_validate_cluster_stack``: the volume's stack (default o2cb) must be running."""
    if disk_stack and not disk_cluster:
        raise O2cbError(Code.INVALID_STACK_NAME, "stack without cluster name on disk")
    wanted = disk_stack or CLASSIC_STACK
    if wanted != running_stack:
        raise O2cbError(
            Code.INVALID_STACK_NAME, f"volume wants {wanted!r}, {running_stack!r} is running"
        )


def validate_cluster(
    sysroot: Sysroot, volume: Any, fs: ConfigfsIO = OS_CONFIGFS
) -> tuple[str, bool]:
    """Name and mode checks of classic group join/leave; returns (cluster, global).

    The volume's cluster name (or the default cluster when the volume has
    none) must be ``clusters[0]``, and the running heartbeat mode must equal
    the volume's global-heartbeat flag.
    """
    clusters = list_clusters(sysroot, fs)
    cluster = _text(getattr(volume, "cluster_name", None))
    if cluster is None and clusters:
        cluster = clusters[0]
    # No cluster registered at all is also "Cluster name is invalid".
    if cluster is None or not clusters or clusters[0] != cluster:
        raise O2cbError(
            Code.INVALID_CLUSTER_NAME,
            f"volume is for cluster {cluster!r}, running: {clusters[:1]}",
        )
    is_global = global_heartbeat_mode(sysroot, cluster, fs)
    if bool(getattr(volume, "global_heartbeat", False)) != is_global:
        raise O2cbError(Code.INVALID_HEARTBEAT_MODE, f"running mode global={is_global}")
    return cluster, is_global


def classic_checks(
    sysroot: Sysroot, running_stack: str, volume: Any, fs: ConfigfsIO = OS_CONFIGFS
) -> tuple[str, bool]:
    """What classic group join and leave check first: stack, cluster name, heartbeat mode.

    Returns (cluster, global mode).
    """
    validate_stack(
        running_stack,
        _text(getattr(volume, "stack", None)),
        _text(getattr(volume, "cluster_name", None)),
    )
    if running_stack != CLASSIC_STACK:
        raise O2cbError(Code.SERVICE_UNAVAILABLE, f"stack {running_stack!r} is not supported")
    return validate_cluster(sysroot, volume, fs)


def user_start(sysroot: Sysroot, running_stack: str, volume: Any, region: str, device: str,
               service: str) -> None:
    """``o2cb_begin_group_join`` + ``o2cb_complete_group_join(0)`` on a user stack."""
    from hbctl import userstack

    cluster = user_checks(running_stack, volume)
    userstack.start(sysroot, running_stack, region, cluster, device, service)


def user_stop(sysroot: Sysroot, running_stack: str, volume: Any, region: str,
              service: str) -> None:
    """``o2cb_group_leave`` on a user stack: remove ``service`` from ocfs2_controld."""
    from hbctl import userstack

    user_checks(running_stack, volume)
    userstack.group_leave(sysroot, region, service)


def user_checks(running_stack: str, volume: Any) -> str:
    """The stack check of every group operation; the cluster is the volume's own."""
    disk_stack = _text(getattr(volume, "stack", None))
    disk_cluster = _text(getattr(volume, "cluster_name", None))
    validate_stack(running_stack, disk_stack, disk_cluster)
    assert disk_cluster is not None  # a user-stack volume always names its cluster
    return disk_cluster


def begin_group_join(
    sysroot: Sysroot,
    running_stack: str,
    volume: Any,
    region: str,
    device: str,
    desc: HeartbeatGeometry,
    persist: bool = True,
    fs: ConfigfsIO = OS_CONFIGFS,
) -> None:
    """Classic ``o2cb_begin_group_join``: validate, then start if local mode.

    ``volume`` is an :class:`hbctl.ondisk.Volume` (``stack``, ``cluster_name``,
    ``global_heartbeat``). User stacks (pcmk, cman) are not handled here.
    """
    cluster, is_global = classic_checks(sysroot, running_stack, volume, fs)
    if not is_global:
        start_heartbeat(sysroot, cluster, region, device, desc, persist, fs)


def group_leave(
    sysroot: Sysroot,
    running_stack: str,
    volume: Any,
    region: str,
    persist: bool = True,
    fs: ConfigfsIO = OS_CONFIGFS,
) -> None:
    """Classic ``o2cb_group_leave``: validate, then stop if local mode."""
    cluster, is_global = classic_checks(sysroot, running_stack, volume, fs)
    if not is_global:
        stop_heartbeat(sysroot, cluster, region, persist, fs)
