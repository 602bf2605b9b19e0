"""Where userland meets the emulated VFS: the mount syscalls and the usermode helper.

The shell around :mod:`fakecfs.vfs` (the pure mount table):

* :class:`MountSyscalls` carries out the control file's commands. ``mount`` resolves the
  device as the *caller* sees it (its cwd and root, through ``/proc/PID``), identifies it
  (``st_rdev`` of a block device, ``(st_dev, st_ino)`` of an image file), reuses the
  device's superblock or makes one: read the ocfs2 superblock (in a thread), refuse what
  ocfs2 and ``o2cb_cluster_check`` refuse, pin the heartbeat region named by the UUID
  (o2dlm's ``o2hb_register_callback``: region rmdir gives EBUSY, debugfs ``pinned`` 1)
  and take the cluster stack (``active_cluster_plugin`` shows it). ``umount`` drops one
  mount; the superblock's last one runs put_super: unpin, release the stack, then the
  helper. Commands are serialised (the kernel's namespace lock): the umount that runs
  the helper returns only after it, and the next mount waits.
* :func:`call_usermodehelper` runs the program ``hb_ctl_path`` names as the kernel does
  (``ocfs2_leave_group``, UMH_WAIT_PROC): argv ``[path, "-K", "-u", UUID]``, environment
  ``HOME=/`` and ``PATH=/sbin:/bin:/usr/sbin:/usr/bin``, cwd ``/``, no stdin, in a new
  session. Its result is the kernel's: a wait status (>= 0), or ``-errno`` when it could
  not be executed; only the latter is logged, in the kernel's words (``ocfs2: Error -2
  running user helper "..."``). fakecfs adds a log line with the exit status and output of
  a helper that failed, which the kernel would not show.

Where the helper runs: a daemon that knows its mountpoint starts it through
:mod:`fakecfs.helperns`, in the daemon's IPC/UTS namespaces (the node's: the refcount it
changes is the node's) but in a private mount namespace where the surfaces sit at their
real paths, the statfs shim is preloaded and the superblock's device is findable by UUID
(``/proc/partitions`` + ``/dev/NAME``, bound to the descriptor the mount opened). So
``/sbin/ocfs2_hb_ctl`` -- Debian's C tool or ours -- reaches this emulated kernel with
nothing written to ``hb_ctl_path``. The superblock keeps its device open from the first
mount to put_super, as the kernel keeps the block device; an image file unlinked
meanwhile is a device that vanished: it is not offered, and the helper fails to find it,
as it would on a kernel.

A user-stack volume (pcmk, cman) takes the user plugin instead of a heartbeat region: in
controld mode its live connection needs a daemon holding ``ocfs2_control`` (ESRCH
otherwise, :mod:`fakecfs.stack_user`); fs/dlm's lockspace join, which a real kernel also
needs (dlm_controld), is taken as done. Its put_super runs the same helper.
:meth:`MountSyscalls.crash` is the emergency restart: every mount gone, no put_super.

Not emulated: global heartbeat mode's pinning (the kernel pins every region while there
are at most three quorum regions); only a ``heartbeat=local`` mount pins its own region.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from hbctl.devices import read_volume_fd
from hbctl.ondisk import OnDiskError, Volume

from .heartbeat import HeartbeatRunner
from .helperns import HELPER_ENV, launcher_argv
from .o2hb import Region
from .run import PACKAGE_PARENT, preload_hint
from .sysfiles import ValueFile
from .tree import FileEntry, KernelError
from .vfs import (
    CONTROL_DIR,
    MOUNTS_FILE,
    BindRequest,
    DeviceKey,
    MountCommand,
    MountFacts,
    MountRequest,
    MountTable,
    RemountRequest,
    Superblock,
    UmountRequest,
    check_new_superblock,
    heartbeat_option,
    parse_command,
    stack_option,
)

if TYPE_CHECKING:
    from .kernel import Kernel

log = logging.getLogger("fakecfs.vfs")


# -- the usermode helper ------------------------------------------------------------------


def helper_argv(hb_ctl_path: str, uuid: str) -> list[str]:
    """``ocfs2_leave_group``'s argv: the kernel's ``-K -u UUID``, no service."""
    return [hb_ctl_path, "-K", "-u", uuid]


async def call_usermodehelper(argv: list[str], env: dict[str, str],
                               sysroot: str | None = None,
                               devices: Sequence[tuple[str, int]] = ()) -> int:
    """Run ``argv`` and wait (UMH_WAIT_PROC): a wait status, or -errno if not run.

    With ``sysroot``, through :mod:`fakecfs.helperns` (the node's view of this kernel,
    ``devices`` (label, open fd) findable by UUID); otherwise directly.
    """
    if sysroot is None:
        return await _run_helper(argv, env, ())
    status_r, status_w = os.pipe()
    try:
        launcher = launcher_argv(sys.executable, sysroot, status_w, devices, argv)
        # The launcher's own interpreter must find this package (and the shim this daemon
        # knows of); the helper gets only env.
        extra = {"PYTHONPATH": PACKAGE_PARENT}
        shim = preload_hint()
        if shim is not None:
            extra["FAKECFS_PRELOAD"] = shim
        ret = await _run_helper(launcher, {**env, **extra},
                                (status_w, *(fd for _label, fd in devices)))
        os.close(status_w)
        status_w = -1
        failed = os.read(status_r, 64)
    finally:
        if status_w >= 0:
            os.close(status_w)
        os.close(status_r)
    if failed:  # the launcher's execve of the helper failed: the kernel's -errno
        return -(int(failed) or errno.ENOEXEC)
    return ret


async def _run_helper(argv: list[str], env: dict[str, str], fds: Sequence[int]) -> int:
    try:
        done = await trio.run_process(
            argv, env=env, cwd="/", stdin=subprocess.DEVNULL, capture_stdout=True,
            capture_stderr=True, check=False, start_new_session=True, pass_fds=tuple(fds),
        )
    except OSError as e:
        return -(e.errno or errno.ENOEXEC)
    rc = done.returncode
    status = rc << 8 if rc >= 0 else -rc  # a signal death is its number, as in wait(2)
    out = (done.stdout + done.stderr).decode(errors="replace").strip()
    if status:
        log.warning("(fakecfs) user helper %s exited with wait status %d%s", argv[-4:],
                    status, f": {out}" if out else "")
    elif "(fakecfs)" in out:
        log.warning("%s", out)
    return status


async def leave_group(hb_ctl_path: str, uuid: str, sysroot: str | None = None,
                      devices: Sequence[tuple[str, int]] = ()) -> int:
    """``ocfs2_leave_group``: run the helper, log as the kernel does if it could not run."""
    argv = helper_argv(hb_ctl_path, uuid)
    started = trio.current_time()
    ret = await call_usermodehelper(argv, dict(HELPER_ENV), sysroot, devices)
    log.info("user helper %s: status %d after %.0f ms", " ".join(argv), ret,
             (trio.current_time() - started) * 1000)
    if ret < 0:
        log.error('ocfs2: Error %d running user helper "%s %s %s %s"', ret, *argv)
    return ret


# -- the control file ---------------------------------------------------------------------


class MountsFile(FileEntry):
    """``fakecfs/mounts``: read the mount table; write one command per write(2)."""

    def __init__(self, table: MountTable) -> None:
        super().__init__(name=MOUNTS_FILE, mode=stat.S_IFREG | 0o644)
        self.table = table

    def size(self) -> int:
        return 4096

    def check_open(self, read: bool, write: bool) -> None:
        if self.dead:
            raise KernelError(errno.ENOENT)

    def show(self) -> bytes:
        return self.table.render().encode("utf-8")

    def store(self, data: bytes) -> object:
        return MountCommand(parse_command(data), len(data))


# -- the syscalls ---------------------------------------------------------------------------


def _caller_path(pid: int, path: str) -> str:
    """``path`` as process ``pid`` sees it (its cwd for a relative one, its root)."""
    if not path.startswith("/"):
        try:
            path = os.path.join(os.readlink(f"/proc/{pid}/cwd"), path)
        except OSError as e:
            raise KernelError(errno.ENOENT, f"cannot resolve {path!r} for pid {pid}") from e
    if pid > 0:
        seen = f"/proc/{pid}/root{path}"
        if os.path.exists(seen):
            return seen
    return path


def _device_key(path: str, strict: bool) -> DeviceKey:
    try:
        st = os.stat(path)
    except OSError as e:
        raise KernelError(e.errno or errno.ENOENT, f"{path}: {e.strerror}") from e
    if stat.S_ISBLK(st.st_mode):
        return DeviceKey("blk", st.st_rdev)
    if stat.S_ISREG(st.st_mode) and not strict:
        return DeviceKey("file", st.st_dev, st.st_ino)
    raise KernelError(errno.ENOTBLK, f"{path} is not a block device")


def _open_volume(path: str) -> tuple[int, Volume]:
    """Open ``path`` and read its ocfs2 superblock (thread I/O): the fd stays open (the
    superblock holds its device until put_super); an open failure keeps its errno."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fd, read_volume_fd(fd, path)
    except BaseException:
        os.close(fd)
        raise


def _vanished(fd: int) -> bool:
    """An image file unlinked since the mount: the device is gone for everyone else."""
    try:
        st = os.fstat(fd)
    except OSError:
        return True
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 0


class MountSyscalls:
    """The emulated mount(2)/umount(2) of one kernel, and its put_super."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.table = MountTable()
        self._lock = trio.Lock()
        self._device_fds: dict[str, int] = {}  # superblock id -> its open device
        control = kernel.root.subdir(CONTROL_DIR)
        control.add(MountsFile(self.table))
        control.add(ValueFile("README", lambda: _README, mode=0o444))

    async def execute(self, command: MountCommand, pid: int) -> int:
        try:
            return await self._execute(command, pid)
        except KernelError as e:
            # The kernel's dmesg line for a refused mount/remount/umount.
            log.warning("ocfs2: %s (%s)", e.message or errno.errorcode.get(e.errno, e.errno),
                        type(command.request).__name__.removesuffix("Request").lower())
            raise

    async def _execute(self, command: MountCommand, pid: int) -> int:
        async with self._lock:
            req = command.request
            if isinstance(req, MountRequest):
                await self._mount(req, pid)
            elif isinstance(req, BindRequest):
                made = (self.table.rbind if req.recursive else self.table.bind)(req.src, req.dst)
                for m in made:
                    log.info("bind %s: %s on %s (%s)", req.src, m.device, m.dir, m.sb.sid)
            elif isinstance(req, RemountRequest):
                changed = self.table.remount(req.dir, req.options)
                log.info("remount %s (%s): %s", req.dir, changed[0].sb.sid,
                         ",".join(changed[0].options))
            elif isinstance(req, UmountRequest):
                m, last = self.table.umount(req.dir)
                log.info("umount %s (%s, %d mounts left)", m.dir, m.sb.sid,
                         len(self.table.mounts_of(m.sb)))
                if last is not None:
                    await self._put_super(last)
        return command.count

    async def unmount_all(self) -> None:
        """Unmount everything, newest first (a shutting-down machine's umount -a)."""
        async with self._lock:
            while self.table.mounts:
                # The deepest directory first, so no umount finds mounts below it.
                deepest = max(len(m.dir) for m in self.table.mounts)
                target = [m for m in self.table.mounts if len(m.dir) == deepest][-1]
                _, last = self.table.umount(target.dir)
                if last is not None:
                    with trio.move_on_after(30):
                        await self._put_super(last)

    async def _mount(self, req: MountRequest, pid: int) -> None:
        path = _caller_path(pid, req.device)
        key = _device_key(path, self.kernel.options.strict)
        hb = heartbeat_option(req.options)
        sb = self.table.superblock(key)
        if sb is None:
            try:
                fd, volume = await trio.to_thread.run_sync(_open_volume, path)
            except OnDiskError as e:
                raise KernelError(errno.EINVAL, f"{req.device}: not ocfs2: {e.reason}") from e
            except OSError as e:
                raise KernelError(e.errno or errno.EIO, f"{req.device}: {e.strerror}") from e
            try:
                facts = self._facts(volume, hb, stack_option(req.options))
                plugin = check_new_superblock(facts)
                if plugin == "user":
                    self.kernel.stackglue.load_plugin(plugin)  # request_module(...)
                    # user_cluster_connect: in controld mode a daemon must hold
                    # ocfs2_control. fs/dlm's lockspace join (dlm_controld) is not emulated.
                    try:
                        self.kernel.user_stack.attach(
                            volume.uuid, controld=not self.kernel.options.recover_callbacks)
                    except KernelError as e:
                        log.error("%s", e.message)
                        raise
            except KernelError:
                os.close(fd)
                raise
            sb = self.table.new_superblock(key, req.device, volume.uuid, bool(plugin),
                                           plugin or "o2cb")
            self._device_fds[sb.sid] = fd
            self._get_super(sb, hb)
        self.table.attach(sb, req.dir, req.device, req.options)
        log.info("mount %s on %s (%s, %s, %d mounts)", req.device, req.dir, sb.sid, sb.uuid,
                 len(self.table.mounts_of(sb)))

    def _facts(self, volume: Volume, hb: str, stack_opt: str | None) -> MountFacts:
        cluster = self.kernel.subsystem.cluster
        this_node = cluster.this_node() if cluster is not None else 255
        live: set[int] = set()
        if cluster is not None:
            own = cluster.heartbeat.lookup(volume.uuid)
            regions = [own] if hb == "local" else list(self.kernel.hb.regions)
            for region in regions:
                if isinstance(region, Region) and isinstance(region.runner, HeartbeatRunner):
                    live.update(region.runner.live_nodes)
        return MountFacts(
            local_volume=volume.local,
            volume_stack=volume.stack,
            heartbeat=hb,
            cluster_stack=self.kernel.stackglue.cluster_stack,
            this_node=this_node,
            node_heartbeating=this_node in live,
            stack_option=stack_opt,
        )

    def _get_super(self, sb: Superblock, hb: str) -> None:
        """What a new clustered superblock holds: the stack, and its region pinned."""
        if not sb.clustered:
            return
        self.kernel.stackglue.active_users += 1
        cluster = self.kernel.subsystem.cluster
        region = cluster.heartbeat.lookup(sb.uuid) if cluster is not None else None
        if hb == "local" and isinstance(region, Region):
            # o2hb_region_pin: only a region that exists is pinned (local mode).
            region.pinned += 1
            sb.holds = region

    async def _put_super(self, sb: Superblock) -> None:
        """ocfs2_dismount_volume: dlm shutdown (unpin), stack put, then the helper."""
        log.info("put_super %s (%s)", sb.sid, sb.uuid)
        fd = self._device_fds.pop(sb.sid, -1)
        try:
            if not sb.clustered:
                return
            self._release(sb)
            devices = [(sb.device, fd)] if fd >= 0 and not _vanished(fd) else []
            if fd >= 0 and not devices:
                log.warning("(fakecfs) put_super %s: %s was removed; the helper cannot "
                            "find UUID %s", sb.sid, sb.device, sb.uuid)
            await leave_group(self.kernel.hb_ctl.path, sb.uuid,
                              self.kernel.options.mountpoint or None, devices)
        finally:
            if fd >= 0:
                os.close(fd)

    def _release(self, sb: Superblock) -> None:
        """What a superblock held: the region pin, the live connection, the stack."""
        region = sb.holds
        if isinstance(region, Region):
            region.pinned -= 1
            sb.holds = None
        if sb.plugin == "user":
            self.kernel.user_stack.detach(sb.uuid)
        self.kernel.stackglue.active_users -= 1

    def crash(self) -> None:
        """emergency_restart(): every mount vanishes, no put_super, no helper."""
        for sb in self.table.drop_all():
            fd = self._device_fds.pop(sb.sid, -1)
            if fd >= 0:
                os.close(fd)
            if sb.clustered:
                self._release(sb)


_README = f"""fakecfs's emulated mount table (not a real kernel path).

Read {MOUNTS_FILE}: DEVICE DIR ocfs2 OPTIONS SUPERBLOCK UUID, one line per mount.
Write one command per write(2) to {MOUNTS_FILE} (DIR is a virtual name, absolute):
  mount DEVICE DIR heartbeat=local|global|none[,OPTS]
  bind SRC DST
  rbind SRC DST
  umount DIR
  remount DIR [OPTS]
The last umount of a superblock runs hb_ctl_path -K -u UUID and returns after it.
"""
