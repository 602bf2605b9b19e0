"""What mount.ocfs2 and umount do, with the "mounted" flag that makes them count right.

Upstream, every ``mount.ocfs2`` takes one persistent reference on the volume's heartbeat
region, but the kernel drops references only once per *superblock*: at put_super it runs
``ocfs2_hb_ctl -K -u UUID`` once, however many mounts (second mounts of the device, bind
mounts, ``--rbind`` copies) shared that superblock. N mounts of one device leave N-1
references behind and heartbeat never stops (ocfs2-tools.md §3.8).

The fix, planned in 2008 and never built, is a per-region flag (:mod:`hbctl.semaphores`
says where it lives and why):

* the first mount of a device takes one persistent reference and sets the flag; later
  mounts see the flag and take nothing — all mounts hold that one reference together;
* tools (fsck, tunefs, ``ocfs2_hb_ctl -S`` by hand) always take their own reference;
* the stop that comes from put_super — ``ocfs2_hb_ctl -K -u UUID`` without a service, or
  with the mount's service ``"ocfs2"`` — clears the flag and drops the mount's reference.
  With no flag set it drops one reference anyway: then the mount was made by the C
  ``mount.ocfs2``, which took its own (upstream counting, unchanged). Tool stops always
  drop one. At zero, heartbeat stops (rmdir, IPC_RMID) and the flag set goes too.

All flag reads and writes happen under the region's mutex (sem 0 of the C tools' set), so
the C ``ocfs2_hb_ctl -S/-K/-I`` interleave with us in any order; they just never see the
flag. For put_super to clear the flag the kernel's ``hb_ctl_path`` must name *our*
``ocfs2_hb_ctl``: with the C one the mount's reference is still dropped (and at 0 the
region and the refcount set go), but the flag set stays; it names a refcount set that no
longer exists, so it reads as clear, and the next stop at zero by us removes it.

The mount itself:

* against fakecfs (``HBCTL_SYSROOT`` with ``fakecfs/mounts``), the emulated mount(2) and
  umount(2) are one write(2) each to that control file: ``mount DEV DIR OPTIONS``,
  ``bind SRC DST``, ``rbind SRC DST``, ``umount DIR``. The mounts are virtual: DIR is a
  name in the emulated kernel's mount table, not a directory on this host;
* on a real host (sysroot ``/``), ``mount -i -t ocfs2`` (``-i``: mount(8) must not call
  the C mount.ocfs2, which would take a second reference), ``mount --bind/--rbind`` and
  ``umount``; the real kernel then runs ``hb_ctl_path`` at put_super. This path is only
  testable in the real-kernel lane.

On a user stack (pcmk, cman) there is no heartbeat region and no flag: the mount joins the
volume's group through ocfs2_controld with the service "ocfs2", which the daemon keeps
once however many mounts (upstream's own answer to the leak), and put_super's ``-K -u
UUID`` removes it (hbctl.userstack).

After a mount with local heartbeat, as mount.ocfs2's ``change_local_hb_io_priority``:
the program ``hb_ctl_path`` names is run as ``-P -d DEVICE`` (real-time I/O priority for
the heartbeat thread), with this process's environment; its status is ignored (upstream's
``-P`` exits 1 even when it worked).

``-o remount`` (as mount.ocfs2 with MS_REMOUNT) joins nothing and takes no reference: it
only changes the mount's options (ro/rw); the kernel refuses a change of heartbeat mode.

Not done: /etc/mtab lines (mount.ocfs2 writes them only where /etc/mtab is a file, not
the usual symlink to /proc/self/mounts; the emulated table is ``fakecfs/mounts``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hbctl import regions, semaphores
from hbctl.errors import Code, O2cbError
from hbctl.mtab import escape, unescape
from hbctl.stack import OS_CONFIGFS, ConfigfsIO
from hbctl.sysroot import Sysroot

MOUNT_SERVICE = "ocfs2"  # mount.ocfs2's r_service, and the kernel's -K default
CLASSIC = "o2cb"
EMULATED_MOUNTS = "fakecfs/mounts"  # fakecfs's control file, under the sysroot
FSTYPE = "ocfs2"
HB_NONE = "heartbeat=none"
HB_LOCAL = "heartbeat=local"
HB_GLOBAL = "heartbeat=global"


class MountError(Exception):
    """A refused or failed mount/umount: one line for the user (``errno``: the syscall's)."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


# -- the refcount with the flag -----------------------------------------------------------


def is_mount_service(service: str | None) -> bool:
    """Whether a stop with ``service`` is the mount's (put_super's) stop."""
    return service is None or service == MOUNT_SERVICE


def _region_exists(sysroot: Sysroot, cluster: str, region: str) -> bool:
    return os.path.isdir(regions.region_dir(sysroot, cluster, region))


def mount_start_heartbeat(
    sysroot: Sysroot,
    cluster: str,
    region: str,
    device: str,
    desc: regions.HeartbeatGeometry,
    fs: ConfigfsIO = OS_CONFIGFS,
) -> bool:
    """A mount's start: the first mount takes a reference and sets the flag.

    Returns whether this call took the reference (and so must undo it if the mount
    fails). Local heartbeat mode only; a flagged region whose directory was removed
    by hand is started again without a second reference.
    """
    sems = semaphores.mutex_down_lookup(region)
    try:
        if semaphores.mounted_flag(sems):
            if not _region_exists(sysroot, cluster, region):
                with contextlib.suppress(O2cbError):
                    regions.create_region(sysroot, cluster, region, device, desc, fs)
            return False
        try:
            regions.create_region(sysroot, cluster, region, device, desc, fs)
        except O2cbError as e:
            if e.code is not Code.REGION_EXISTS:
                raise
        try:
            sems.get_ref(True)
        except O2cbError:
            if sems.refs() == 0:
                with contextlib.suppress(O2cbError):
                    regions.remove_region(sysroot, cluster, region, fs)
            raise
        try:
            semaphores.set_mounted_flag(sems)
        except O2cbError:
            sems.drop_ref(True)
            if sems.refs() == 0:
                with contextlib.suppress(O2cbError):
                    regions.remove_region(sysroot, cluster, region, fs)
            raise
        return True
    finally:
        sems.mutex_up()


def _stop(sysroot: Sysroot, cluster: str, region: str, persist: bool, mount: bool,
          fs: ConfigfsIO) -> None:
    sems = semaphores.mutex_down_lookup(region)
    destroyed = False
    try:
        if mount and semaphores.mounted_flag(sems):
            semaphores.clear_mounted_flag(region)
        refs = sems.refs()
        if refs:
            sems.drop_ref(persist)
            refs -= 1
        if refs == 0:
            regions.remove_region(sysroot, cluster, region, fs)
            # Removing the set releases our mutex too; waiters get EIDRM and look again.
            destroyed = True
            sems.destroy()
            semaphores.clear_mounted_flag(region)  # a stale one, if any: leave nothing
    finally:
        if not destroyed:
            sems.mutex_up()


def mount_stop_heartbeat(
    sysroot: Sysroot, cluster: str, region: str, fs: ConfigfsIO = OS_CONFIGFS
) -> None:
    """put_super's stop: clear the flag, drop the mount's reference; at 0 stop.

    Without the flag this is upstream's stop (the mount took its own reference).
    At zero: rmdir the region, then remove the refcount set and the flag set. If the
    rmdir fails the sets survive (the flag already cleared) and the error is raised.
    """
    _stop(sysroot, cluster, region, True, True, fs)


def tool_stop_heartbeat(
    sysroot: Sysroot, cluster: str, region: str, persist: bool = True,
    fs: ConfigfsIO = OS_CONFIGFS,
) -> None:
    """A tool's stop: libo2cb's (drop one, never touch the flag), but at zero the
    flag set is removed with the refcount set."""
    _stop(sysroot, cluster, region, persist, False, fs)


@dataclass(frozen=True)
class Joined:
    """What a mount's group join did: the cluster, its mode, and the reference taken."""

    cluster: str
    is_global: bool
    took_ref: bool


def mount_group_join(
    sysroot: Sysroot, stack: str, volume: Any, region: str, device: str,
    desc: regions.HeartbeatGeometry, fs: ConfigfsIO = OS_CONFIGFS,
) -> Joined:
    """mount.ocfs2's ``o2cb_begin_group_join``, flagged (global mode: nothing to do)."""
    cluster, is_global = regions.classic_checks(sysroot, stack, volume, fs)
    if is_global:
        return Joined(cluster, True, False)
    return Joined(cluster, False, mount_start_heartbeat(sysroot, cluster, region, device,
                                                        desc, fs))


def tool_group_leave(
    sysroot: Sysroot, stack: str, volume: Any, region: str, persist: bool = True,
    fs: ConfigfsIO = OS_CONFIGFS,
) -> None:
    """A tool's ``o2cb_group_leave`` (``ocfs2_hb_ctl -K ... SERVICE``): drop one."""
    cluster, is_global = regions.classic_checks(sysroot, stack, volume, fs)
    if not is_global:
        tool_stop_heartbeat(sysroot, cluster, region, persist, fs)


def mount_group_leave(
    sysroot: Sysroot, stack: str, volume: Any, region: str, fs: ConfigfsIO = OS_CONFIGFS
) -> None:
    """The kernel's ``ocfs2_hb_ctl -K -u UUID`` (service "ocfs2"): the flagged stop."""
    cluster, is_global = regions.classic_checks(sysroot, stack, volume, fs)
    if not is_global:
        mount_stop_heartbeat(sysroot, cluster, region, fs)


# -- the mount table ------------------------------------------------------------------------


@dataclass(frozen=True)
class MountRecord:
    """One ocfs2 mount: what ``hbctl status`` shows as holding a device."""

    device: str
    dir: str
    options: str
    superblock: str | None  # fakecfs's superblock id; None on a real host
    uuid: str | None


def parse_emulated_mounts(text: str) -> list[MountRecord]:
    """fakecfs's ``mounts``: ``DEVICE DIR ocfs2 OPTIONS SUPERBLOCK UUID`` per line."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 6 and f[2] == FSTYPE:
            out.append(MountRecord(unescape(f[0]), unescape(f[1]), f[3], f[4], f[5]))
    return out


def parse_proc_mounts(text: str, uuid_of: Callable[[str], str | None]) -> list[MountRecord]:
    """/proc/mounts lines of type ocfs2; ``uuid_of(device)`` reads a device's UUID."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4 and f[2] == FSTYPE:
            device = unescape(f[0])
            out.append(MountRecord(device, unescape(f[1]), f[3], None, uuid_of(device)))
    return out


def emulated(sysroot: Sysroot) -> bool:
    """Whether ``sysroot`` is a fakecfs kernel with the emulated mount table."""
    return os.path.exists(sysroot.path(EMULATED_MOUNTS))


def list_mounts(sysroot: Sysroot) -> list[MountRecord]:
    """Every ocfs2 mount of this (emulated or real) kernel; [] when there is no table."""
    if emulated(sysroot):
        with open(sysroot.path(EMULATED_MOUNTS), encoding="utf-8") as f:
            return parse_emulated_mounts(f.read())
    if sysroot.emulated:
        return []

    def uuid_of(device: str) -> str | None:
        from hbctl.devices import read_volume
        from hbctl.ondisk import OnDiskError

        try:
            return read_volume(device).uuid
        except OnDiskError:
            return None

    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            return parse_proc_mounts(f.read(), uuid_of)
    except OSError:
        return []


# -- the syscalls: emulated (a control write) or real (mount(8)) ---------------------------


def control_command(verb: str, *args: str) -> str:
    """One line for fakecfs's control file (paths escaped like /proc/mounts)."""
    return " ".join([verb, *(escape(a) for a in args)]) + "\n"


def _control(sysroot: Sysroot, line: str) -> None:
    """One write(2) of ``line`` to the control file; OSError carries the kernel's errno."""
    fd = os.open(sysroot.path(EMULATED_MOUNTS), os.O_WRONLY)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def mount_argv(device: str, dir_: str, options: Sequence[str]) -> list[str]:
    """mount(8) for the real host: ``-i`` so the C mount.ocfs2 is not run a second time."""
    return ["mount", "-i", "-t", FSTYPE, "-o", ",".join(options), device, dir_]


def bind_argv(src: str, dst: str, recursive: bool) -> list[str]:
    return ["mount", "--rbind" if recursive else "--bind", src, dst]


def umount_argv(dir_: str) -> list[str]:
    return ["umount", dir_]


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _syscall(sysroot: Sysroot, line: str, argv: list[str], what: str, runner: Runner) -> None:
    if emulated(sysroot):
        try:
            _control(sysroot, line)
        except OSError as e:
            raise MountError(f"{what}: {e.strerror} (the emulated kernel's log says why)",
                             e.errno or 0) from e
        return
    if sysroot.emulated:
        raise MountError(f"{what}: {sysroot.root} has no emulated mount table "
                         f"({EMULATED_MOUNTS}); is it a fakecfs mount?")
    done = runner(argv)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip()
        raise MountError(f"{what}: {' '.join(argv)} failed" + (f": {detail}" if detail else ""))


@dataclass(frozen=True)
class MountOutcome:
    """What ``mount`` did: the volume, its heartbeat option, and the reference taken."""

    uuid: str
    heartbeat: str  # "local", "global" or "none"
    took_ref: bool
    user_stack: str | None = None  # the label, for a volume of a user stack
    io_priority: list[str] | None = None  # the -P call made after the mount, if any
    remount: bool = False  # only the options changed (heartbeat is then the mount's own)


def heartbeat_option_of(options: Sequence[str]) -> str:
    """The ``heartbeat=`` value among mount options ("unchanged" when there is none)."""
    found = [o.split("=", 1)[1] for o in options if o.startswith("heartbeat=")]
    return found[-1] if found else "unchanged"


def io_priority_argv(sysroot: Sysroot, device: str) -> list[str] | None:
    """mount.ocfs2's ``hb_ctl_path -P -d DEVICE``; None when the sysctl is unreadable."""
    try:
        with open(sysroot.hb_ctl_path_file, encoding="utf-8") as f:
            path = f.read().strip()
    except OSError:
        return None
    return [path, "-P", "-d", device] if path else None


def mount(
    sysroot: Sysroot,
    device: str,
    dir_: str,
    options: Sequence[str] = (),
    runner: Runner = _run,
) -> MountOutcome:
    """``mount.ocfs2 DEVICE DIR``: check the volume, join heartbeat (flagged), mount(2).

    Refused like mount.ocfs2: a device that is not ocfs2, a running stack other than the
    volume's, a volume for a cluster that is not registered (or not the first one).
    A user-stack volume (pcmk, cman) joins through ocfs2_controld instead
    (:func:`_mount_user_stack`): one "ocfs2" service for all its mounts, which the
    kernel's put_super ``-K -u UUID`` removes.
    A local-mount volume is mounted with ``heartbeat=none`` and no cluster join.
    If mount(2) fails the reference this call took is given back.
    """
    from hbctl.devices import read_volume_with_sector
    from hbctl.ondisk import OnDiskError
    from hbctl.stack import o2cb_init

    device = os.path.abspath(device)
    dir_ = os.path.abspath(dir_)
    try:
        volume, desc = read_volume_with_sector(device)
    except OnDiskError as e:
        raise MountError(f"{device} is not an ocfs2 volume: {e.reason}") from e
    what = f"mount {device} on {dir_}"
    if "remount" in options:
        # MS_REMOUNT: no group join, no reference; the kernel keeps the heartbeat mode.
        opts = [o for o in options if o != "remount"]
        _syscall(sysroot, control_command("remount", dir_, ",".join(opts)),
                 mount_argv(device, dir_, ["remount", *opts]), f"remount {dir_}", runner)
        return MountOutcome(volume.uuid, heartbeat_option_of(options), took_ref=False,
                            remount=True)
    if not volume.local and (volume.stack or CLASSIC) != CLASSIC:
        return _mount_user_stack(sysroot, volume, device, dir_, options, what, runner)
    if volume.local:
        opts = [HB_NONE, *options]
        _syscall(sysroot, control_command("mount", device, dir_, ",".join(opts)),
                 mount_argv(device, dir_, opts), what, runner)
        return MountOutcome(volume.uuid, "none", took_ref=False)
    try:
        stack = o2cb_init(sysroot)
        joined = mount_group_join(sysroot, stack, volume, volume.uuid, device, desc)
    except O2cbError as e:
        raise MountError(f"{what}: {_join_error(sysroot, volume, e)}") from e
    hb = "global" if joined.is_global else "local"
    opts = [HB_GLOBAL if joined.is_global else HB_LOCAL, *options]
    try:
        _syscall(sysroot, control_command("mount", device, dir_, ",".join(opts)),
                 mount_argv(device, dir_, opts), what, runner)
    except MountError:
        # o2cb_complete_group_join(error): give back what this mount took.
        if joined.took_ref:
            with contextlib.suppress(O2cbError):
                mount_stop_heartbeat(sysroot, joined.cluster, volume.uuid)
        raise
    priority = None
    if not joined.is_global:
        # change_local_hb_io_priority: its result is ignored, as mount.ocfs2 ignores it.
        priority = io_priority_argv(sysroot, device)
        if priority is not None:
            with contextlib.suppress(OSError):
                runner(priority)
    return MountOutcome(volume.uuid, hb, took_ref=joined.took_ref, io_priority=priority)


def _mount_user_stack(sysroot: Sysroot, volume: Any, device: str, dir_: str,
                      options: Sequence[str], what: str, runner: Runner) -> MountOutcome:
    """mount.ocfs2 on a user stack: the running label set to the volume's, the "ocfs2"
    service joined through ocfs2_controld, mount(2) with ``cluster_stack=``, and the
    result (0 or mount(2)'s errno) reported on the join's connection."""
    from hbctl import userstack
    from hbctl.stack import o2cb_init, setup_stack

    label = volume.stack
    try:
        setup_stack(sysroot, label)
        stack = o2cb_init(sysroot)
        cluster = regions.user_checks(stack, volume)
        join = userstack.begin_group_join(sysroot, stack, volume.uuid, cluster, device,
                                          MOUNT_SERVICE)
    except O2cbError as e:
        raise MountError(f"{what}: {_join_error(sysroot, volume, e)} while trying to join "
                         "the group") from e
    opts = [f"cluster_stack={label}", *options]
    try:
        _syscall(sysroot, control_command("mount", device, dir_, ",".join(opts)),
                 mount_argv(device, dir_, opts), what, runner)
    except MountError as e:
        # The daemon removes the service again (the kernel will never run -K for it).
        with contextlib.suppress(O2cbError):
            userstack.complete_group_join(sysroot, join, e.errno or 1)
        raise
    try:
        userstack.complete_group_join(sysroot, join, 0)
    except O2cbError as e:
        raise MountError(f"{what}: mounted, but ocfs2_controld did not take the result: "
                         f"{e.message}") from e
    return MountOutcome(volume.uuid, "none", took_ref=False, user_stack=label)


def _join_error(sysroot: Sysroot, volume: Any, e: O2cbError) -> str:
    if e.code is Code.INVALID_CLUSTER_NAME:
        try:
            running = regions.list_clusters(sysroot)
        except O2cbError:
            running = []
        have = f"registered: {running[0]!r}" if running else "no cluster is registered"
        return (f"the volume belongs to cluster {volume.cluster_name!r}, which is not the "
                f"registered cluster ({have}; hbctl cluster register)")
    if e.code is Code.INVALID_STACK_NAME:
        return f"cluster stack mismatch: {e.detail or e.message}"
    return e.message + (f" ({e.detail})" if e.detail else "")


def bind(sysroot: Sysroot, src: str, dst: str, recursive: bool = False,
         runner: Runner = _run) -> None:
    """``mount --bind SRC DST`` (``--rbind`` with ``recursive``): no reference at all.

    A bind mount shares the source's superblock, so it needs none of its own: the
    superblock's last mount, whichever it is, ends in the one put_super stop.
    """
    src, dst = os.path.abspath(src), os.path.abspath(dst)
    verb = "rbind" if recursive else "bind"
    _syscall(sysroot, control_command(verb, src, dst), bind_argv(src, dst, recursive),
             f"{verb} {src} on {dst}", runner)


def umount(sysroot: Sysroot, dir_: str, runner: Runner = _run) -> None:
    """``umount DIR``: the kernel does the rest (put_super runs ``hb_ctl_path -K``)."""
    dir_ = os.path.abspath(dir_)
    _syscall(sysroot, control_command("umount", dir_), umount_argv(dir_),
             f"umount {dir_}", runner)
