"""``hbctl doctor``'s I/O: gather a :class:`~hbctl.doctor.Snapshot`, apply fixes safely.

Gathering reads configfs (clusters, nodes, regions and their ``dev``), the semaphore sets of
this IPC namespace (``/proc/sysvipc/sem``, values by ``semctl``; nothing is ever created),
the mount table (fakecfs's or ``/proc/mounts``), the volumes discovery finds (to name the
volume of a set whose region is gone) and the ocfs2 tools running in this IPC namespace.

A fix of a region takes the region's mutex (libo2cb's sem 0, as every start and stop does),
gathers that region again and applies the action only if the core still asks for exactly
it. A start that raced ahead has taken its reference by then; one that comes later waits on
the mutex and, if the fix removed the set, looks the key up again and starts afresh, as it
would after any ``-K``. The kernel adds its own guard: a mounted region cannot be removed
(EBUSY).
"""

from __future__ import annotations

import contextlib
import os
import socket

from hbctl import semaphores
from hbctl.doctor import (
    TOOL_NAMES,
    Action,
    ClearFlag,
    ClusterView,
    DropRefs,
    RegionView,
    RemoveSets,
    SemSetView,
    SetLocalNode,
    Snapshot,
    StopRegion,
    diagnose,
)
from hbctl.errors import O2cbError, from_rmdir
from hbctl.mounting import MountRecord, emulated, list_mounts
from hbctl.stack import OS_CONFIGFS, configfs_path, write_attr
from hbctl.sysroot import Sysroot

SYSVIPC_SEM = "/proc/sysvipc/sem"


# -- gathering ----------------------------------------------------------------------------


def _sem_rows(path: str = SYSVIPC_SEM) -> list[tuple[int, int, int, int]]:
    """(key, semid, perms, nsems) of every set in this IPC namespace."""
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    rows = []
    for line in lines:
        fields = line.split()
        with contextlib.suppress(ValueError, IndexError):
            rows.append((int(fields[0]), int(fields[1]), int(fields[2], 8), int(fields[3])))
    return rows


def _mutex_held(uuid: str) -> bool:
    try:
        semid = semaphores.semget(semaphores.region_key(uuid), 0, 0)
        return semaphores.RegionSemaphores(uuid, semid).mutex_value() > 0
    except (OSError, O2cbError):
        return False


def running_tools(proc: str = "/proc") -> tuple[tuple[int, str], ...]:
    """ocfs2 tools that take references, running in this IPC namespace (not ourselves)."""
    try:
        own_ns = os.readlink(f"{proc}/self/ns/ipc")
    except OSError:
        own_ns = None
    me = os.getpid()
    found = []
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"{proc}/{name}/comm", encoding="utf-8", errors="replace") as f:
                comm = f.read().strip()
            if comm not in TOOL_NAMES:
                continue
            if own_ns is not None and os.readlink(f"{proc}/{name}/ns/ipc") != own_ns:
                continue
        except OSError:
            continue
        found.append((int(name), comm))
    return tuple(sorted(found))


def device_gone(device: str | None, pid: int | None, emulated: bool) -> bool:
    """Is the device a region heartbeats on gone? Only when that is certain.

    The kernel shows a block device's name: it is gone when ``/sys/class/block/NAME`` is.
    fakecfs may show an image file's basename, which it keeps open in the daemon (the
    region's ``pid``): the image is gone when every such descriptor reads ``(deleted)``.
    An image name fakecfs holds no descriptor for is not judged.
    """
    if not device or os.path.exists(f"/sys/class/block/{device}"):
        return False
    targets = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    mine = [t for t in targets
            if os.path.basename(t.removesuffix(" (deleted)")) == device]
    if not mine:
        return not emulated
    return all(t.endswith(" (deleted)") for t in mine)


def known_volumes() -> dict[int, str]:
    """refcount/flag keys of every volume discovery finds, mapped to their UUIDs."""
    from hbctl.devices import list_volumes

    keys: dict[int, str] = {}
    with contextlib.suppress(Exception):  # discovery is best effort here
        for _, volume in list_volumes():
            keys[semaphores.region_key(volume.uuid)] = volume.uuid
            keys[semaphores.flag_key(volume.uuid)] = volume.uuid
    return keys


def _mounts(sysroot: Sysroot) -> list[MountRecord]:
    """The ocfs2 mounts; under ``fakecfs run`` (real paths, FAKECFS_SYSROOT set) the
    emulated mount table, which /proc/mounts does not show."""
    emulated_root = os.environ.get("FAKECFS_SYSROOT")
    if not sysroot.emulated and emulated_root:
        fake = Sysroot(emulated_root)
        if emulated(fake):
            return list_mounts(fake)
    return list_mounts(sysroot)


def gather(sysroot: Sysroot, *, own_mutex: str | None = None,
           discover: bool = True) -> Snapshot:
    """Observe everything doctor judges. ``own_mutex``: a region whose mutex we hold
    (always a known volume, even when discovery is skipped)."""
    from hbctl.cli import status_data

    data = status_data(sysroot)
    mount_uuids = [m.uuid for m in _mounts(sysroot)]
    clusters = []
    regions = []
    for c in data["clusters"]:
        clusters.append(ClusterView(c["cluster"], c["local_node"],
                                    tuple(n["name"] for n in c["nodes"])))
        for r in c["regions"]:
            uuid = r["uuid"]
            regions.append(RegionView(
                cluster=c["cluster"], uuid=uuid, global_mode=c["mode"] == "global",
                refs=r["refs"], mutex_held=uuid != own_mutex and _mutex_held(uuid),
                flag=r["mounted"], mounts=mount_uuids.count(uuid), device=r["device"],
                device_gone=device_gone(r["device"], r["pid"], sysroot.emulated),
            ))
    in_configfs = {r.uuid for r in regions}
    names: dict[int, str] = {}
    known = in_configfs | {u for u in [*mount_uuids, own_mutex] if u}
    for uuid in known:
        names[semaphores.region_key(uuid)] = uuid
        names[semaphores.flag_key(uuid)] = uuid
    if discover:
        names = {**known_volumes(), **names}
    sets = []
    for key, semid, perms, nsems in _sem_rows():
        uuid = names.get(key)
        if uuid is not None and uuid in in_configfs:
            continue  # judged with its region
        if uuid is not None and key == semaphores.region_key(uuid):
            refs = None
            with contextlib.suppress(OSError, O2cbError):
                refs = semaphores.RegionSemaphores(uuid, semid).refs()
            sets.append(SemSetView(key, nsems, "refs", uuid, refs, mount_uuids.count(uuid)))
        elif uuid is not None:
            sets.append(SemSetView(key, nsems, "flag", uuid, None, mount_uuids.count(uuid)))
        elif nsems == semaphores.NSEMS and perms & 0o777 == 0:
            sets.append(SemSetView(key, nsems, "unknown"))
    return Snapshot(tuple(clusters), tuple(regions), tuple(sets), running_tools(),
                    socket.gethostname())


# -- fixing -------------------------------------------------------------------------------


def _uuid_of(action: Action) -> str | None:
    return None if isinstance(action, SetLocalNode) else action.uuid


def apply(sysroot: Sysroot, action: Action) -> str:
    """Carry out ``action`` if it is still needed; return what happened (one line)."""
    uuid = _uuid_of(action)
    if uuid is None:
        assert isinstance(action, SetLocalNode)
        if action not in [f.action for f in diagnose(gather(sysroot, discover=False))]:
            return "no longer needed"
        base = f"{configfs_path(sysroot)}/cluster/{action.cluster}/node/{action.node}"
        write_attr(OS_CONFIGFS, f"{base}/local", "1")
        return "done"
    sems = semaphores.mutex_down_lookup(uuid)
    destroyed = False
    try:
        fresh = diagnose(gather(sysroot, own_mutex=uuid, discover=False))
        current = [f for f in fresh if f.action == action]
        if not current:
            return "no longer needed"
        if current[0].blocked:
            return f"not done: {current[0].blocked}"
        if isinstance(action, ClearFlag):
            semaphores.clear_mounted_flag(uuid)
        elif isinstance(action, DropRefs):
            for _ in range(sems.refs() - action.keep):
                sems.drop_ref(True)
        elif isinstance(action, (StopRegion, RemoveSets)):
            if isinstance(action, StopRegion):
                _rmdir_region(sysroot, action.cluster, uuid)
            semaphores.clear_mounted_flag(uuid)
            # Removing the set releases our mutex too; waiters get EIDRM and look again.
            destroyed = True
            sems.destroy()
        return "done"
    finally:
        if not destroyed:
            sems.mutex_up()


def _rmdir_region(sysroot: Sysroot, cluster: str, uuid: str) -> None:
    path = f"{configfs_path(sysroot)}/cluster/{cluster}/heartbeat/{uuid}"
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise from_rmdir(e, path) from e  # EBUSY: the kernel says it is still mounted
