"""The whole emulated kernel: the sysroot tree, and the effects that need I/O or time.

The cores (configfs/o2nm/o2hb/sysfiles) decide; this shell carries out what they return:
starting a region's heartbeat on the writer's file descriptor (the ``dev`` store), stopping
it on rmdir, and keeping debugfs and the local-node pin in step. One ``Kernel`` per fakecfs
mount. It needs a trio nursery (``run``) in which the heartbeat tasks live.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from ocfs2fmt.blockdev import sector_size_fd

from .dlmfs import CAPABILITIES, DlmfsRoot
from .dlmlocks import ClusterLocks, DlmfsShell
from .events import EventLog, EventsFile
from .faults import FaultCommand, FaultError, FaultSet, FaultsFile, Phase
from .heartbeat import HeartbeatRunner, HeartbeatStartError
from .kmod import ModuleTable
from .misc import ControlDevice, DlmControlDevice, proc_misc_text
from .o2hb import O2hbGlobals, Region, StartHeartbeat, StopHeartbeat
from .o2nm import ClusterSubsystem, LocalNodeLost, Node
from .quorum import GlobalQuorum
from .stack_user import RESTART_MESSAGE, EmergencyRestart, NodeDown, UserStack
from .sysfiles import HbCtlPath, StackGlue, ValueFile, bitmap_text, debug_file
from .tree import ROOT_INO, DirEntry, Entry, FileEntry, FileHandle, KernelError, StaticDir
from .usermode import MountSyscalls
from .vfs import CONTROL_DIR, MountCommand

log = logging.getLogger("fakecfs.kernel")
IMAGE_SECTOR_SIZE = 512  # the logical block size an image file stands for


def _read_host_misc() -> str:
    try:
        with open("/proc/misc", encoding="latin-1") as f:
            return f.read()
    except OSError:
        return ""


@dataclass
class KernelOptions:
    """Knobs of one emulated kernel."""

    hb_interval_ms: int = 2000  # O2HB_REGION_TIMEOUT_MS; shorter for tests and demos
    strict: bool = False  # refuse regular image files for ``dev``, like the real kernel
    fence: Callable[[str], None] | None = None  # what a write timeout does (default: log)
    hb_ctl_path: str = "/sbin/ocfs2_hb_ctl"
    # sys/fs/ocfs2/dlm_recover_callback_support (kernels since 2014): the tools then skip
    # ocfs2_controld. Off by default: fakecfs emulates the controld mode of user stacks.
    recover_callbacks: bool = False
    cluster_stack: str = "o2cb"  # the label at start (a user label loads the user plugin)
    # Where this kernel is mounted (its sysroot): put_super's helper gets the surfaces
    # from there at their real paths. Empty: the helper runs in the daemon's namespace.
    mountpoint: str = ""
    # Called after every mkdir/rmdir/write with (op, path, value, result): result is 0 or
    # the byte count on success, -errno on failure. Differential tests compare these traces.
    trace: Callable[[str, str, str | None, int], None] | None = None
    owner: tuple[int, int] = field(default_factory=lambda: (os.geteuid(), os.getegid()))
    # Where dlmfs's host-wide lock files live (fakecfs.dlmlocks); None: the daemon's state
    # directory. Every node that must exclude another needs the same directory.
    dlm_dir: str | None = None


class ConfigfsRoot(StaticDir):
    """``/sys/kernel/config``: only lookup and setattr; mkdir/rmdir give EPERM."""

    def mkdir(self, name: str) -> Entry:
        if self.lookup(name) is not None:
            raise KernelError(errno.EEXIST)
        raise KernelError(errno.EPERM)

    def rmdir(self, name: str) -> object:
        if self.lookup(name) is None:
            raise KernelError(errno.ENOENT)
        raise KernelError(errno.EPERM)


@dataclass
class _Running:
    """A region's heartbeat task and how to wait for its end."""

    runner: HeartbeatRunner
    done: trio.Event = field(default_factory=trio.Event)
    fd: int = -1


class Kernel:
    """One emulated kernel: its tree, its inode table and its heartbeat tasks."""

    def __init__(self, options: KernelOptions | None = None) -> None:
        self.options = options or KernelOptions()
        self.hb = O2hbGlobals()
        self.stackglue = StackGlue(self.options.recover_callbacks)
        self.user_stack = UserStack()
        self.node_downs: list[NodeDown] = []  # DOWN messages that reached a mounted volume
        # The host's /proc/misc, read once now: later a bind of our own proc/misc may sit
        # there (the node image's entrypoint, `fakecfs run` around this daemon), and reading
        # it from a FUSE handler would wait on ourselves for ever.
        self._host_misc = _read_host_misc()
        self.crashed = ""  # why the emulated machine "restarted", if it did
        self.hb_ctl = HbCtlPath(self.options.hb_ctl_path)
        self.root = StaticDir("")
        self.root.ino = ROOT_INO
        self.inodes: dict[int, Entry] = {ROOT_INO: self.root}
        self._nursery: trio.Nursery | None = None
        self._running: dict[Region, _Running] = {}
        self._starting: set[Region] = set()
        self._stopping: set[Region] = set()
        self.events = EventLog()
        self.faults = FaultSet()
        self.quorum = GlobalQuorum()
        self.fenced = False
        self._build()
        self.dlm = DlmfsShell(ClusterLocks(self.options.dlm_dir or _default_dlm_dir()),
                              _writer_signalled)
        self.mounts = MountSyscalls(self)  # fakecfs/mounts: emulated mount(2), put_super
        self.modules = ModuleTable()  # fakecfs/modules: what /proc/modules would list
        self.stackglue.loaded_plugins = self.modules.stack_plugins
        self.stackglue.load_plugin = self._load_plugin
        control = self.root.subdir(CONTROL_DIR)
        control.add(ValueFile("modules", self.modules.proc_modules, self._modprobe))
        control.add(ValueFile("filesystems", self.modules.filesystems))
        control.add(ValueFile("fsmounts", self.modules.render_fs_mounts, self._fs_mount))
        control.add(EventsFile(self.events))  # fakecfs/events: the kernel log as JSON lines
        control.add(FaultsFile(self.faults))  # fakecfs/faults: injected faults
        self.root.subdir("fakecfs").add(
            ValueFile("stack_user", self._stack_user_status, mode=0o444))
        if self.options.cluster_stack != "o2cb":
            self.stackglue.store_cluster_stack(self.options.cluster_stack.encode())

    # -- the tree ---------------------------------------------------------------------

    def _build(self) -> None:
        sys_ = self.root.subdir("sys")
        kernel = sys_.subdir("kernel")
        self.configfs = kernel.add(ConfigfsRoot("config"))
        assert isinstance(self.configfs, ConfigfsRoot)
        self.subsystem = ClusterSubsystem(self.hb)
        self.configfs.add(self.subsystem)
        fs = sys_.subdir("fs")
        ocfs2 = fs.subdir("ocfs2")
        for f in self.stackglue.files():
            ocfs2.add(f)
        o2cb = fs.subdir("o2cb")
        o2cb.add(ValueFile("interface_revision", lambda: "5\n"))  # O2NM_API_VERSION
        self.debug_o2hb = kernel.subdir("debug").subdir("o2hb")
        for name, show in (
            ("livenodes", self._global_livenodes),
            ("live_regions", lambda: self._region_bitmap(lambda r: r.steady)),
            ("quorum_regions",
             lambda: self._region_bitmap(lambda r: r.region_num in self.quorum.quorum)),
            ("failed_regions",
             lambda: self._region_bitmap(lambda r: r.region_num in self.quorum.failed)),
        ):
            self.debug_o2hb.add(debug_file(name, show))
        proc = self.root.subdir("proc")
        nm = proc.subdir("sys").subdir("fs").subdir("ocfs2").subdir("nm")
        nm.add(self.hb_ctl.file())
        # ocfs2_dlmfs, where the tools look for it (/dlm), and the module parameter libo2dlm
        # reads to learn that this dlmfs serves every cluster stack.
        self.root.add(DlmfsRoot("dlm", self.local_node_heartbeating))
        dlmfs_params = sys_.subdir("module").subdir("ocfs2_dlmfs").subdir("parameters")
        dlmfs_params.add(ValueFile("capabilities", lambda: CAPABILITIES + "\n"))
        proc.add(ValueFile("misc", self._proc_misc, size=0))
        self.dev_misc = self.root.subdir("dev").subdir("misc")

    # -- the user stack ---------------------------------------------------------------

    def _load_plugin(self, plugin: str) -> None:
        """request_module("ocfs2_stack_<plugin>") (a user label, a user-stack mount)."""
        loaded = self.modules.load(f"ocfs2_stack_{plugin}")
        if loaded:
            log.info("modules: load ocfs2_stack_%s %s", plugin, ", ".join(loaded))
        self._modules_changed()

    def _modules_changed(self) -> None:
        """Loaded fs/dlm and ocfs2_stack_user register their misc devices (once: fakecfs
        keeps surfaces after an unload, as for every module)."""
        devices = {"dlm": DlmControlDevice,
                   "ocfs2_stack_user": lambda: ControlDevice(self.user_stack, self._node_down,
                                                             self._restart)}
        names = {"dlm": "dlm-control", "ocfs2_stack_user": "ocfs2_control"}
        for module, make in devices.items():
            if module in self.modules.loaded and self.dev_misc.lookup(names[module]) is None:
                if module == "ocfs2_stack_user":
                    log.info("ocfs2: Registered cluster interface user")
                self.register(self.dev_misc.add(make()))

    def _proc_misc(self) -> str:
        return proc_misc_text(self._host_misc, "ocfs2_stack_user" in self.modules.loaded)

    def _node_down(self, down: NodeDown) -> None:
        # ocfs2_do_node_down: the volume starts recovery of that node's journal.
        log.warning("ocfs2: volume %s: node %d is down, recovering it", down.uuid, down.node)
        self.node_downs.append(down)
        self.emit("node_down", f"ocfs2_control: DOWN of node {down.node} on {down.uuid}",
                  region=down.uuid, node=down.node)

    def _restart(self, restart: EmergencyRestart) -> None:
        log.critical(RESTART_MESSAGE)
        log.critical("(fakecfs) emergency_restart(): this node crashed; its mounts of %s "
                     "are gone without put_super", " ".join(restart.live))
        self.crashed = "emergency restart: ocfs2_control released with live mounts"
        self.mounts.crash()
        self.emit("fenced", RESTART_MESSAGE, logging.ERROR, reason=self.crashed)

    def _stack_user_status(self) -> str:
        downs = " ".join(f"{d.uuid}:{d.node}" for d in self.node_downs) or "-"
        return (self.user_stack.status() + f"node_downs {downs}\n"
                f"crashed {self.crashed or '-'}\n")

    def write_handle(self, entry: FileEntry, handle: FileHandle, data: bytes) -> int:
        """One write(2) to a misc device's open file (traced like attribute writes)."""
        try:
            written = handle.write(data)
        except KernelError as exc:
            self._trace_entry("write", entry, data, -exc.errno)
            raise
        self._trace_entry("write", entry, data, written)
        return written

    def _modprobe(self, data: bytes) -> None:
        changed = self.modules.store(data)
        log.info("modules: %s %s", data.decode(errors="replace").strip(),
                 ", ".join(changed) or "(nothing to do)")
        self._modules_changed()

    def _fs_mount(self, data: bytes) -> None:
        log.info("fsmounts: %s", self.modules.store_fs_mount(data))

    def register(self, entry: Entry) -> Entry:
        """Give the shell an inode number for ``entry`` (stamping its creation time)."""
        if not entry.times.ctime_ns:
            now = time.time_ns()
            entry.times.atime_ns = entry.times.mtime_ns = entry.times.ctime_ns = now
            # The kernel's files are root's. A daemon run by an ordinary user (no user
            # namespace) shows them as that user's, or the user could not write them.
            entry.uid, entry.gid = self.options.owner
        self.inodes[entry.ino] = entry
        return entry

    def entry(self, ino: int) -> Entry:
        entry = self.inodes.get(ino)
        if entry is None or entry.dead:
            raise KernelError(errno.ENOENT)
        return entry

    def dir(self, ino: int) -> DirEntry:
        entry = self.entry(ino)
        if not isinstance(entry, DirEntry):
            raise KernelError(errno.ENOTDIR)
        return entry

    def forget(self, ino: int) -> None:
        entry = self.inodes.get(ino)
        if entry is not None and entry.dead and ino != ROOT_INO:
            del self.inodes[ino]

    def local_node_heartbeating(self) -> bool:
        """o2hb_check_local_node_heartbeating: is the local node live in some region?"""
        for region, running in self._running.items():
            if region.group.cluster.this_node() in running.runner.live_nodes:
                return True
        return False

    # -- debugfs views ----------------------------------------------------------------

    def _global_livenodes(self) -> str:
        return bitmap_text(sorted(self._global_live()))

    def _region_bitmap(self, pred: Callable[[Region], bool]) -> str:
        if not self.hb.global_mode:
            return "\n"
        return bitmap_text([r.region_num for r in self.hb.regions if pred(r)])

    def _add_region_debugfs(self, region: Region) -> None:
        d = self.debug_o2hb.add(StaticDir(region.name))
        assert isinstance(d, StaticDir)

        def livenodes() -> str:
            running = self._running.get(region)
            return running.runner.livenodes_text() if running else "\n"

        def elapsed() -> str:
            running = self._running.get(region)
            return f"{running.runner.elapsed_ms() if running else 0}\n"

        d.add(debug_file("livenodes", livenodes))
        d.add(debug_file("num", lambda: f"{region.region_num}\n"))
        d.add(debug_file("elapsed_time_in_ms", elapsed))
        d.add(debug_file("pinned", lambda: f"{1 if region.pinned else 0}\n"))

    # -- operations with effects ------------------------------------------------------

    def mkdir(self, parent: DirEntry, name: str) -> Entry:
        try:
            entry = parent.mkdir(name)
        except KernelError as exc:
            self._trace("mkdir", parent, name, None, -exc.errno)
            if isinstance(parent, DlmfsRoot) and exc.message:
                log.error("(dlmfs) %s", exc.message)  # the kernel's mlog(ML_ERROR, ...)
            raise
        if isinstance(entry, Region):
            self._add_region_debugfs(entry)
        self._trace("mkdir", parent, name, None, 0)
        return self.register(entry)

    async def rmdir(self, parent: DirEntry, name: str) -> None:
        try:
            await self._rmdir(parent, name)
        except KernelError as exc:
            self._trace("rmdir", parent, name, None, -exc.errno)
            raise
        self._trace("rmdir", parent, name, None, 0)

    async def _rmdir(self, parent: DirEntry, name: str) -> None:
        effect = parent.rmdir(name)
        if isinstance(effect, StopHeartbeat):
            region = effect.region
            await self._stop_region(region)
            region.group.release(region)
            self.debug_o2hb.remove(region.name)
            self.quorum.region_gone(region.region_num)
            for fault in self.faults.forget_region(region.name):
                self.emit("fault_cleared", f"fault cleared: {fault.command()} (region removed)",
                          region=region.name, fault=fault.command())

    async def write(self, entry: FileEntry, data: bytes, pid: int) -> int:
        """One write(2) = one store; effects (a ``dev`` start) are carried out here."""
        try:
            written = await self._write(entry, data, pid)
        except KernelError as exc:
            self._trace_entry("write", entry, data, -exc.errno)
            raise
        self._trace_entry("write", entry, data, written)
        return written

    async def _write(self, entry: FileEntry, data: bytes, pid: int) -> int:
        result = entry.store(data)
        if isinstance(result, int):
            return result
        if isinstance(result, StartHeartbeat):
            return await self._start_region(result, pid)
        if isinstance(result, LocalNodeLost):
            # Newer kernels stop heartbeating when the local node goes away (6.1 oopses
            # later on rmdir); we stop every region cleanly.
            for region in list(self._running):
                await self._stop_region(region)
            return len(data[:4095])
        if isinstance(result, MountCommand):
            return await self.mounts.execute(result, pid)
        if isinstance(result, FaultCommand):
            return self._apply_fault(result)
        raise AssertionError(f"unknown effect {result!r}")

    def _trace(self, op: str, parent: DirEntry, name: str, value: str | None,
               result: int) -> None:
        if self.options.trace is not None:
            self.options.trace(op, parent.path().rstrip("/") + "/" + name, value, result)

    def _trace_entry(self, op: str, entry: FileEntry, data: bytes, result: int) -> None:
        if self.options.trace is not None:
            self.options.trace(op, entry.path(), data.decode("latin-1"), result)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery of heartbeat tasks until cancelled (shutdown() stops them cleanly)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def shutdown(self) -> None:
        """Unmount (put_super runs the helper), then stop every region cleanly."""
        await self.mounts.unmount_all()
        for region in list(self._running):
            await self._stop_region(region)
        self.dlm.shutdown()  # gives every dlmfs lock back to the other nodes

    # -- events and faults ------------------------------------------------------------

    def emit(self, kind: str, message: str, level: int = logging.INFO, **fields: object) -> None:
        """Append to fakecfs/events (CLOCK_MONOTONIC time)."""
        self.events.append(time.monotonic(), kind, message, level, **fields)

    def _phase(self, region: Region) -> Phase:
        if region in self._stopping:
            return Phase.STOPPING
        if region in self._starting:
            return Phase.STARTING
        return Phase.RUNNING if region in self._running else Phase.IDLE

    def _apply_fault(self, effect: FaultCommand) -> int:
        phases = {r.name: self._phase(r) for r in self.hb.regions}
        try:
            added, cleared = self.faults.apply(effect.command, phases)
        except FaultError as exc:
            log.warning("fault refused: %s", exc.message)
            raise KernelError(exc.errno, exc.message) from exc
        for fault in cleared:
            self.emit("fault_cleared", f"fault cleared: {fault.command()}",
                      region=fault.region, fault=fault.command())
        for fault in added:
            self.emit("fault_set", f"fault set: {fault.command()}", logging.WARNING,
                      region=fault.region, fault=fault.command())
        for fault in added + cleared:
            log.warning("fault %s: %s", "set" if fault in added else "cleared",
                        fault.command())
        for running in self._running.values():
            if self.faults.frozen:
                running.runner.freeze()
            else:
                running.runner.thaw()
        return effect.count

    def _write_timeout(self, region: Region, reason: str) -> bool:
        """o2hb_write_timeout: fence (every region, uncleanly) unless global quorum holds."""
        if self.hb.global_mode and not self.quorum.write_timeout(region.region_num):
            log.warning("Number of regions %d, failed regions %d: not fencing",
                        len(self.quorum.quorum), len(self.quorum.failed))
            return False
        self._fence(reason)
        return True

    def _fence(self, reason: str) -> None:
        """o2quo_fence_self: heartbeat stops everywhere without generation-0 blocks."""
        self.fenced = True
        message = "*** ocfs2 is very sorry to be fencing this system by restarting ***"
        log.critical("%s (emulated: heartbeat stopped, nothing killed; %s)", message, reason)
        # The kernel's two lines, in its order (o2hb_stop_all_regions, then o2quo's).
        self.emit("kernel", "stopping heartbeat on all active regions.", logging.ERROR)
        self.emit("fenced", message, logging.ERROR, reason=reason)  # KERN_ERR, as printed
        for running in list(self._running.values()):
            running.runner.halt(reason)
        if self.options.fence is not None:
            self.options.fence(reason)

    def _good_write(self, region: Region) -> None:
        """o2hb_set_quorum_device after a good write (global mode only)."""
        running = self._running.get(region)
        if not self.hb.global_mode or running is None:
            return
        runner = running.runner
        if self.quorum.good_write(region.region_num, runner.machine.steady, runner.live_nodes,
                                  self._global_live()):
            self.emit("quorum_region", f"o2hb: Region {region.name} ({runner.dev_name}) is now "
                      "a quorum device", region=region.name, dev=runner.dev_name)

    def _global_live(self) -> set[int]:
        live: set[int] = set()
        for running in self._running.values():
            live.update(running.runner.live_nodes)
        return live

    # -- heartbeat start/stop ---------------------------------------------------------

    def _open_writer_fd(self, pid: int, fd: int) -> tuple[int, str, bool]:
        """Resolve the writer's fd number as the kernel's fdget would: (fd, name, is_blk)."""
        link = f"/proc/{pid}/fd/{fd}"
        try:
            st = os.stat(link)
        except OSError as exc:
            raise KernelError(errno.EINVAL, f"fd {fd} of pid {pid} is not open") from exc
        is_blk = stat.S_ISBLK(st.st_mode)
        if not is_blk and not (stat.S_ISREG(st.st_mode) and not self.options.strict):
            raise KernelError(errno.EINVAL, "not a block device")
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_DIRECT if is_blk else 0)
        try:
            dev_fd = os.open(link, flags)
        except OSError as exc:
            raise KernelError(exc.errno or errno.EIO, f"cannot open {link}") from exc
        name = _block_device_name(st.st_rdev) if is_blk else os.path.basename(os.readlink(link))
        return dev_fd, name, is_blk

    async def _start_region(self, start: StartHeartbeat, pid: int) -> int:
        region = start.region
        if self._nursery is None:
            raise KernelError(errno.EIO, "kernel is not running")
        dev_fd, name, is_blk = self._open_writer_fd(pid, start.fd)
        try:
            region.require_geometry()
            # An image file is a disk of 512-byte sectors, as libo2cb assumes when BLKSSZGET
            # fails on it; block devices answer for themselves.
            sector = sector_size_fd(dev_fd) if is_blk else IMAGE_SECTOR_SIZE
            if sector != region.block_bytes:
                raise KernelError(
                    errno.EINVAL,
                    f"blocksize {sector} incorrect for device, expected {region.block_bytes}",
                )
        except BaseException:
            os.close(dev_fd)
            raise
        region.begin_start(name)
        cluster = region.group.cluster
        runner = HeartbeatRunner(
            fd=dev_fd,
            dev_name=name,
            node_num=start.node_num,
            block_bytes=region.block_bytes,
            start_block=region.start_block,
            blocks=region.blocks,
            dead_threshold=self.hb.dead_threshold,
            interval_ms=self.options.hb_interval_ms,
            configured_nodes=cluster.configured_nodes,
            log=logging.getLogger(f"fakecfs.o2hb.{region.name}"),
            region_name=region.name,
            # The first global region needs twice the live threshold to become steady.
            first_global_region=self.hb.global_mode and not self._running,
            faults=lambda: self.faults.for_region(region.name),
            emit=self.emit,
            on_write_timeout=lambda reason: self._write_timeout(region, reason),
            on_good_write=lambda: self._good_write(region),
        )
        if self.faults.frozen:
            runner.freeze()  # a hung machine's start hangs until thaw
        running = _Running(runner, fd=dev_fd)
        self._running[region] = running
        region.runner = runner
        local = cluster.nodes[start.node_num]
        if local is not None:
            local.pinned += 1  # o2nm_depend_this_node, for as long as the thread runs
        self._nursery.start_soon(self._region_task, region, running, local)
        self._starting.add(region)
        try:
            first = await _first_of(runner.steady.wait, running.done.wait,
                                    functools.partial(_writer_signalled, pid))
            if first == 2:
                # A signal reached the blocked writer (SIGKILL, or any it does not block): the
                # kernel's wait_event_interruptible ends, the start is aborted (EIO).
                log.warning("dev writer %d signalled; aborting start of region %s", pid,
                            region.name)
                runner.failed = runner.failed or "start aborted: the dev writer was signalled"
                await self._stop_region(region)
        finally:
            self._starting.discard(region)
        if runner.steady.is_set() and not running.done.is_set():
            region.start_done(os.getpid())
            log.info("heartbeat started on region %s (%s)", region.name, name)
            self.emit("region_started", f"o2hb: Heartbeat started on region {region.name} "
                      f"({name})", region=region.name, dev=name)
            return start.count
        region.start_failed()
        reason = runner.failed or "heartbeat start aborted"
        self.emit("region_aborted", reason, logging.ERROR, region=region.name, dev=name)
        raise KernelError(errno.EIO, reason)

    async def _region_task(self, region: Region, running: _Running, local: Node | None) -> None:
        try:
            await running.runner.run()
        except HeartbeatStartError as exc:
            log.error("heartbeat on region %s did not start: %s", region.name, exc)
        except Exception:
            log.exception("heartbeat on region %s failed", region.name)
        finally:
            os.close(running.fd)
            if local is not None:
                local.pinned -= 1
            if self._running.get(region) is running:
                del self._running[region]
            region.stopped()
            running.done.set()

    async def _stop_region(self, region: Region) -> None:
        """Stop a region's heartbeat (generation-0 block) and wait until its task ended."""
        running = self._running.get(region)
        if running is None:
            return
        self._stopping.add(region)
        try:
            await running.runner.stop()
            await running.done.wait()
        finally:
            self._stopping.discard(region)
        runner = running.runner
        if runner.steady.is_set() and not runner.fenced:
            self.emit("region_stopped", f"o2hb: Heartbeat stopped on region {region.name} "
                      f"({runner.dev_name})", region=region.name, dev=runner.dev_name)


async def _first_of(*waits: Callable[[], Awaitable[object]]) -> int:
    """Run ``waits`` concurrently; return the index of the first to finish (others cancelled)."""
    winner: list[int] = []
    async with trio.open_nursery() as nursery:

        async def waiter(index: int, wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            winner.append(index)
            nursery.cancel_scope.cancel()

        for index, wait in enumerate(waits):
            nursery.start_soon(waiter, index, wait)
    return winner[0]


SIGKILL_BIT = 1 << 8


def writer_interrupted(status: str) -> bool:
    """Would the kernel's interruptible wait end for this task (``/proc/PID/status`` text)?

    A signal that is pending and not blocked, or a pending SIGKILL. (A FUSE client blocked
    in a request that reached the daemon cannot die before the reply, so the kernel-side
    wait must be ended from here.)
    """
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    try:
        pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
        blocked = int(fields["SigBlk"], 16)
    except (KeyError, ValueError):
        return False
    return bool(pending & ~blocked or pending & SIGKILL_BIT)


async def _writer_signalled(pid: int) -> None:
    """Return once the dev writer has a signal that would interrupt the kernel's wait."""
    while True:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                if writer_interrupted(f.read()):
                    return
        except OSError:  # gone
            return
        await trio.sleep(0.05)


def _default_dlm_dir() -> str:
    from .daemon import state_dir

    return os.path.join(state_dir(), "dlm")


def _block_device_name(rdev: int) -> str:
    """The kernel's name for a block device (``%pg``: loop0, sdb1, dm-3)."""
    sysdir = f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}"
    try:
        return os.path.basename(os.path.realpath(sysdir))
    except OSError:
        return f"{os.major(rdev)}:{os.minor(rdev)}"
