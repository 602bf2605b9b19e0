"""The ocfs2_controld state machine: mountgroups, services, joins and leaves, node down.

A core, like ``fakecfs/hbdisk.py``: no sockets, no corosync, no trio. The daemon shell
(``hbctl.controld.daemon``) feeds it what happened and carries out the effects it returns.

Inputs (methods of ``Controld``):

- ``client_record(client, msg)``: a decoded record from client connection ``client`` (an id
  the shell never reuses); ``client_garbage(client, error)``: a record that did not decode;
  ``client_eof(client)``: the connection is gone (or was cut mid-record);
- ``group_joined(uuid, members)`` / ``group_left(uuid)``: CPG confirmed our own join / our
  own clean leave of ``ocfs2:<UUID>``; ``group_join_failed(uuid, errno)``: the join could not
  even start (no corosync, no kernel control device);
- ``group_members(uuid, joined, left)``: other nodes joined / left that group (CPG confchg,
  ``left`` as ``(nodeid, reason)``);
- ``daemon_members(left)``: nodes that left the daemon group ``ocfs2:controld``; a node gone
  with reason NODEDOWN or PROCDOWN is reported here, once, in the same order on every node.

Effects (returned lists, to carry out in order): ``Reply`` (records to one client),
``DropClient``, ``JoinGroup``/``LeaveGroup`` (CPG ``ocfs2:<UUID>``), ``NodeDown`` (write
``DOWN <UUID> <%08X>`` to the kernel's ocfs2_control), ``FenceNode`` (upstream asks the stack
to kill a node whose daemon died but whose node lives), ``Exit`` (fail-fast), ``Log``.

Semantics are upstream's (spec user-stacks.md §5.4-§5.7, §7.3): one mountgroup per UUID;
services ordered newest first; every service single-instance except ``"ocfs2"`` (a second
real mount only marks it *additional*); one operation in progress per mountgroup with the
client attached to it; the MOUNT reply of the first service waits for the CPG join, the reply
to the request that removes the last service waits for the CPG leave; a mountgroup is left
exactly when its last service goes. Error replies carry upstream's errno and text, cut to 127
bytes. Deliberate differences, each because upstream's behaviour is a bug a test would trip:

- a client is an id that is never reused, so upstream's stale attachments (a poll slot and
  an fd number reused by the next connection) cannot happen; the row ``Client file
  descriptor does not match`` is kept as a constant but is unreachable;
- an error found while handling MRESULT is reported once, not kept and replayed into the
  next reply of that mountgroup;
- a MOUNT refused while the mountgroup's last service is leaving does not free the
  mountgroup (upstream does, and the leave's deferred answer is then lost: its client
  hangs forever);
- the dlm_controld registration step (``dlmc_fs_register``: dlm 4 refuses it unless a hidden
  option is set) is not made: a confirmed CPG join is a registered mountgroup;
- records upstream never answers (malformed ones, ``LISTMOUNTS``, daemon-only verbs) make the
  daemon log the upstream line and drop that client, which then sees EOF (``I/O error on
  channel``) instead of blocking forever.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from hbctl.controld import proto

UUID_STR_LEN = 32
ERROR_MSG_MAX = 127
"""Upstream formats error texts into a 128-byte buffer."""
DUMP_SIZE = 1024 * 1024
"""The debug ring that DUMP returns (``debugfs.ocfs2 -R "controld dump"``)."""

# CPG leave reasons (corosync's cpg.h).
REASON_JOIN = 1
REASON_LEAVE = 2
REASON_NODEDOWN = 3
REASON_NODEUP = 4
REASON_PROCDOWN = 5

MSG_FD_MISMATCH = "Client file descriptor does not match"


# --- effects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    client: int
    records: tuple[bytes, ...]


@dataclass(frozen=True)
class DropClient:
    client: int


@dataclass(frozen=True)
class JoinGroup:
    uuid: str


@dataclass(frozen=True)
class LeaveGroup:
    uuid: str


@dataclass(frozen=True)
class NodeDown:
    """Tell the kernel: node ``nodeid`` died while in filesystem ``uuid``'s group."""

    uuid: str
    nodeid: int

    def control_message(self) -> bytes:
        return b"DOWN %.32s %08X\n" % (self.uuid.encode(), self.nodeid)


@dataclass(frozen=True)
class FenceNode:
    nodeid: int


@dataclass(frozen=True)
class Exit:
    status: int
    reason: str


@dataclass(frozen=True)
class Log:
    text: str
    error: bool = False


Effect = Reply | DropClient | JoinGroup | LeaveGroup | NodeDown | FenceNode | Exit | Log


# --- state -----------------------------------------------------------------------------


@dataclass(eq=False)
class Service:
    name: str
    additional: bool = False
    listed: bool = True
    """False once removed from its mountgroup (upstream: its list entry re-initialised)."""


@dataclass(eq=False)
class Mountgroup:
    uuid: str
    device: str
    services: list[Service] = field(default_factory=list)  # newest first, like list_add
    in_progress: Service | None = None
    client: int | None = None
    notified: bool = False
    joined: bool = False
    leave_on_join: bool = False
    nodes: set[int] = field(default_factory=set)

    def find(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)


class DebugRing:
    """Upstream's 1 MiB debug buffer: the newest ``size`` bytes of log text."""

    def __init__(self, size: int = DUMP_SIZE) -> None:
        self.size = size
        self._buf = bytearray()

    def append(self, line: str) -> None:
        self._buf += line.encode("utf-8", "surrogateescape")
        if len(self._buf) > 2 * self.size:  # trim rarely: appends stay cheap
            del self._buf[: len(self._buf) - self.size]

    def text(self) -> str:
        return self._buf[-self.size :].decode("utf-8", "replace")


def truncate_msg(text: str) -> str:
    raw = text.encode("utf-8", "surrogateescape")[:ERROR_MSG_MAX]
    return raw.decode("utf-8", "surrogateescape")


class _Fail(Exception):
    def __init__(self, err: int, text: str) -> None:
        super().__init__(err, text)
        self.err = err
        self.text = truncate_msg(text)


DeviceProbe = Callable[[str], int]
"""Return the ``st_rdev`` of a device path or raise ``OSError`` (``os.stat`` in the shell)."""


def stat_rdev(path: str) -> int:
    return os.stat(path).st_rdev


class Controld:
    """One node's ocfs2_controld: mountgroups keyed by UUID and the daemon's debug log."""

    def __init__(
        self,
        nodeid: int,
        cluster_name: str | None,
        *,
        probe: DeviceProbe = stat_rdev,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.nodeid = nodeid
        self.cluster_name = cluster_name
        """None: accept any cluster name (single-node membership without corosync)."""
        self.probe = probe
        self.clock = clock
        self.mountgroups: dict[str, Mountgroup] = {}
        self.ring = DebugRing()
        self._out: list[Effect] = []

    # --- helpers ---------------------------------------------------------------------

    def log(self, text: str, error: bool = False, effect: bool = True) -> None:
        """Into the DUMP ring, and (``effect``) as a Log effect of the current input."""
        stamp = int(self.clock()) if self.clock else 0
        self.ring.append(f"{stamp} {text}\n")
        if effect:
            self._out.append(Log(text, error))

    def _take(self) -> list[Effect]:
        out, self._out = self._out, []
        return out

    def _reply(self, client: int | None, err: int, text: str) -> None:
        if client is None:
            self.log(f"not sending {err} \"{text}\" - client went away")
            return
        self._out.append(Reply(client, (proto.status(err, truncate_msg(text)),)))

    def _mg_of_client(self, client: int) -> Mountgroup | None:
        return next((mg for mg in self.mountgroups.values() if mg.client == client), None)

    def have_mounts(self) -> bool:
        """Upstream ignores SIGTERM/SIGINT/SIGHUP while this is true."""
        return bool(self.mountgroups)

    def _valid_cluster(self, cluster: str) -> bool:
        return self.cluster_name is None or cluster == self.cluster_name

    # --- client input ----------------------------------------------------------------

    def client_record(self, client: int, msg: proto.Message) -> list[Effect]:
        self.log(f"client message {msg.verb} from {client}")
        handlers: dict[str, Callable[..., None]] = {
            proto.MOUNT: self._mount,
            proto.MRESULT: self._mresult,
            proto.UNMOUNT: self._unmount,
            proto.LISTCLUSTERS: self._listclusters,
            proto.LISTFS: self._listfs,
            proto.DUMP: self._dump,
        }
        handler = handlers.get(msg.verb)
        if handler is None:
            line = ("Someone sent us cm_status!" if msg.verb == proto.STATUS
                    else "Invalid message received")
            self.log(f"{line} ({msg.verb} from client {client}): dropping it", error=True)
            self._drop(client)
        else:
            handler(client, *msg.args)
        return self._take()

    def client_garbage(self, client: int, error: proto.ProtocolError) -> list[Effect]:
        self.log(f"client {client} read error {error.errno} ({error.text}): dropping it",
                 error=True)
        self._drop(client)
        return self._take()

    def client_eof(self, client: int) -> list[Effect]:
        self._dead_mounter(client)
        self.log(f"client {client} dead")
        return self._take()

    def _drop(self, client: int) -> None:
        self._out.append(DropClient(client))
        self._dead_mounter(client)

    # MOUNT ------------------------------------------------------------------------------

    def _mount(self, client: int, fstype: str, uuid: str, cluster: str, device: str,
               service: str) -> None:
        if fstype != proto.FS_TYPE:
            return self._reply(client, _errno.EINVAL, "Invalid filesystem type")
        if not self._valid_cluster(cluster):
            return self._reply(client, _errno.EINVAL, "Invalid cluster name")
        self.log(f"start_mount: uuid \"{uuid}\", device \"{device}\", service \"{service}\"")
        if len(uuid) > UUID_STR_LEN:
            return self._reply(client, _errno.ENAMETOOLONG, f"UUID too long: {uuid}")
        mg = self.mountgroups.get(uuid)
        new = mg is None
        if mg is None:
            mg = Mountgroup(uuid, device)
            # Newest first, as upstream's list_add (LISTFS shows this order).
            self.mountgroups = {uuid: mg, **self.mountgroups}
        try:
            self._add_service(mg, device, service, client)
        except _Fail as fail:
            self._reply(client, fail.err, fail.text)
            if fail.err == proto.EALREADY:
                mg.notified = True
            else:
                self.log(f"mount: {fail.text}", error=True)
                # Free only a mountgroup this MOUNT created; one whose last service is
                # leaving (in progress, empty) must live until its leave answers.
                if not mg.services and mg.in_progress is None:
                    self.log("mount: freeing failed mountgroup")
                    del self.mountgroups[uuid]
            return None
        if new:
            # The reply waits for the join (group_joined / group_join_failed).
            self._out.append(JoinGroup(uuid))
        return None

    def _add_service(self, mg: Mountgroup, device: str, service: str, client: int) -> None:
        self.log(f"Adding service \"{service}\" to device \"{device}\" uuid \"{mg.uuid}\"")
        rdevs = []
        for path in (mg.device, device):
            try:
                rdevs.append(self.probe(path))
            except OSError as e:
                err = e.errno or _errno.EIO
                raise _Fail(err, f"Failed to stat device \"{path}\": {os.strerror(err)}") from e
        if rdevs[0] != rdevs[1]:
            raise _Fail(_errno.EINVAL,
                        f"Trying to mount fs \"{mg.uuid}\" on device \"{device}\", "
                        f"but it is already mounted from device \"{mg.device}\"")
        if mg.in_progress is not None:
            raise _Fail(_errno.EBUSY, "Another mount is in progress")
        ms = mg.find(service)
        if ms is not None:
            if service != proto.REAL_MOUNT_SERVICE:
                raise _Fail(_errno.EBUSY,
                            f"Filesystem {mg.uuid} is already mounted on {service}")
            self.log(f"Additional mount of {mg.uuid} starting for {service}")
            ms.additional = True
        else:
            ms = Service(service)
        mg.client = client
        mg.notified = False
        mg.in_progress = ms
        already = bool(mg.services)
        if ms not in mg.services:
            mg.services.insert(0, ms)
        if already:
            raise _Fail(proto.EALREADY, "Already mounted, go ahead")

    # MRESULT ----------------------------------------------------------------------------

    def _mresult(self, client: int, fstype: str, uuid: str, errcode: str,
                 service: str) -> None:
        if fstype != proto.FS_TYPE:
            return self._reply(client, _errno.EINVAL, "Invalid filesystem type")
        self.log(f"complete_mount: uuid \"{uuid}\", errcode \"{errcode}\", "
                 f"service \"{service}\"")
        try:
            mg, ms, err = self._check_mresult(client, uuid, errcode, service)
        except _Fail as fail:
            self.log(f"mresult: {fail.text}", error=True)
            return self._reply(client, fail.err, fail.text)
        mg.in_progress = None
        if ms.additional:
            # An additional real mount never tears anything down, whatever its result.
            self.log(f"Completed additional mount of filesystem {mg.uuid}, error is {err}")
            ms.additional = False
            err = 0
        if err:
            # The client stays attached, as upstream: a second MRESULT on this connection
            # gets "No mount in progress"; if this was the last service, the leave's
            # completion answers it.
            self._remove_service(mg, ms)
            if mg.in_progress is not None:
                return None
        else:
            mg.client = None
        # The client's own error is never echoed back: its MRESULT was processed.
        return self._reply(client, 0, "OK")

    def _check_mresult(self, client: int, uuid: str, errcode: str,
                       service: str) -> tuple[Mountgroup, Service, int]:
        mg = self._mg_of_client(client)
        if mg is None:
            raise _Fail(_errno.EINVAL, "Client is not attached to a mountgroup")
        if len(uuid) > UUID_STR_LEN:
            raise _Fail(_errno.EINVAL, f"UUID too long: {uuid}")
        if uuid != mg.uuid:
            raise _Fail(_errno.EINVAL, f"UUID {uuid} does not match mountgroup {mg.uuid}")
        if mg.in_progress is None:
            raise _Fail(_errno.ENOENT, f"No mount in progress for filesystem {mg.uuid}")
        ms = mg.find(service)
        if ms is None:
            raise _Fail(_errno.ENOENT, f"Unknown service {service} for filesystem {mg.uuid}")
        if ms is not mg.in_progress:
            raise _Fail(_errno.EINVAL, f"Service {service} is not in progress")
        try:
            err = proto.c_strtol(errcode)
        except proto.ProtocolError as e:
            if e.errno == _errno.ERANGE:
                # Upstream prints the saturated long it read.
                raise _Fail(_errno.ERANGE, f"Error code {_saturated(errcode)} is out of range"
                            ) from e
            raise _Fail(_errno.EINVAL, f"Invalid error code string: {errcode}") from e
        return mg, ms, err

    # UNMOUNT ----------------------------------------------------------------------------

    def _unmount(self, client: int, fstype: str, uuid: str, service: str) -> None:
        if fstype != proto.FS_TYPE:
            return self._reply(client, _errno.EINVAL, "Invalid filesystem type")
        self.log(f"remove_mount: uuid \"{uuid}\", service \"{service}\"")
        if len(uuid) > UUID_STR_LEN:
            return self._reply(client, _errno.ENAMETOOLONG, f"UUID too long: {uuid}")
        mg = self.mountgroups.get(uuid)
        if mg is None:
            return self._reply(client, _errno.ENOENT,
                               f"Filesystem {uuid} is unknown or not mounted anywhere")
        ms = mg.find(service)
        if ms is None:
            # Upstream's argument order: the UUID, then the service.
            return self._reply(client, _errno.ENOENT, f"Service {uuid} is not mounted on {service}")
        if mg.in_progress is not None:
            if ms.additional:
                # An additional real mount raced umount(2): the kernel is no longer mounted,
                # so the in-progress mount now succeeds or fails as a first mount.
                ms.additional = False
            return self._reply(client, _errno.EBUSY, "Another mount is in progress")
        self._remove_service(mg, ms)
        if mg.in_progress is not None:
            mg.client = client  # answered when the leave completes
            return None
        return self._reply(client, 0, "OK")

    def _remove_service(self, mg: Mountgroup, ms: Service) -> None:
        mg.services.remove(ms)
        ms.listed = False
        if mg.services:
            return
        mg.in_progress = ms  # the leave is now in progress
        self.log(f"time to leave group {mg.uuid}")
        if mg.joined:
            self._out.append(LeaveGroup(mg.uuid))
        else:
            self.log(f"Not joined {mg.uuid}, so set leave_on_join")
            mg.leave_on_join = True

    # Lists ------------------------------------------------------------------------------

    def _listclusters(self, client: int) -> None:
        if self.cluster_name is None:
            return self._reply(client, _errno.ENOENT,
                               "Unable to query cluster name: No such file or directory")
        self._out.append(Reply(client, tuple(proto.list_reply([self.cluster_name]))))
        return None

    def _listfs(self, client: int, fstype: str, cluster: str) -> None:
        if fstype != proto.FS_TYPE:
            return self._reply(client, _errno.EINVAL, "Invalid filesystem type")
        if not self._valid_cluster(cluster):
            return self._reply(client, _errno.EINVAL, "Invalid cluster name")
        self._out.append(Reply(client, tuple(proto.list_reply(list(self.mountgroups)))))
        return None

    def _dump(self, client: int) -> None:
        chunks = proto.dump_chunks(self.ring.text())
        self._out.append(Reply(client, tuple(proto.list_reply(chunks))))

    # Client gone ------------------------------------------------------------------------

    def _dead_mounter(self, client: int) -> None:
        mg = self._mg_of_client(client)
        if mg is None:
            return
        mg.client = None
        ms = mg.in_progress
        if ms is None:
            return
        self.log(f"Mounter for filesystem {mg.uuid}, service {ms.name} died", error=True)
        if not ms.listed:
            return  # a leave is under way; it completes without a client
        if ms.additional:
            self.log(f"Additional mounter of filesystem {mg.uuid} died")
            ms.additional = False
            mg.in_progress = None
            return
        if not mg.notified:
            # Never told to go ahead, so it cannot have mounted: abort this service.
            self._remove_service(mg, ms)
            return
        self.log(f"Kernel mount of filesystem {mg.uuid} already entered, "
                 "assuming it succeeded", error=True)
        mg.in_progress = None

    # --- membership input ------------------------------------------------------------

    def group_joined(self, uuid: str, members: Iterable[int]) -> list[Effect]:
        """CPG delivered the confchg that contains our own join of ``ocfs2:<uuid>``."""
        mg = self.mountgroups.get(uuid)
        if mg is None or mg.joined:
            self.log(f"join of group {uuid} confirmed, but no mountgroup is joining it",
                     error=True)
            return self._take()
        mg.nodes = set(members) | {self.nodeid}
        ms = mg.in_progress
        if ms is None:
            self.log(f"No service in progress for mountgroup {uuid}", error=True)
            return self._take()
        if not ms.listed:
            if mg.leave_on_join:
                mg.joined = True
                self._out.append(LeaveGroup(uuid))
            return self._take()
        mg.joined = True
        self.log(f"Mountgroup {uuid} joined (nodes {sorted(mg.nodes)})")
        self._reply(mg.client, 0, "OK")
        if mg.client is not None:
            mg.notified = True
        return self._take()

    def group_join_failed(self, uuid: str, err: int) -> list[Effect]:
        mg = self.mountgroups.get(uuid)
        if mg is None:
            return self._take()
        text = f"Unable to start join to group {uuid}"
        self.log(f"mount: {text} ({os.strerror(err)})", error=True)
        # The first MOUNT (or a request that already emptied the group) is still waiting.
        self._reply(mg.client, err, text)
        del self.mountgroups[uuid]
        return self._take()

    def group_left(self, uuid: str) -> list[Effect]:
        """CPG confirmed our own clean leave of ``ocfs2:<uuid>``."""
        mg = self.mountgroups.get(uuid)
        if mg is None:
            return self._take()
        if not mg.services and mg.in_progress is not None:
            self._reply(mg.client, 0, "OK")
            del self.mountgroups[uuid]
            self.log(f"Left group {uuid}")
            return self._take()
        self.log(f"Unexpected leave of group {uuid}", error=True)
        if mg.joined:
            # Fail-fast: the others must be able to decide about us.
            self.log(f"Group {uuid} is live, exiting", error=True)
            self._out.append(Exit(1, f"unexpected leave of live group {uuid}"))
            return self._take()
        if mg.client is not None:
            self._out.append(DropClient(mg.client))
        del self.mountgroups[uuid]
        return self._take()

    def group_members(self, uuid: str, joined: Iterable[int] = (),
                      left: Iterable[tuple[int, int]] = ()) -> list[Effect]:
        """Other nodes joined or left ``ocfs2:<uuid>`` (CPG confchg of that group)."""
        mg = self.mountgroups.get(uuid)
        if mg is None or not mg.joined:
            return self._take()
        for nodeid in joined:
            self.log(f"Node {nodeid} joins group {uuid}")
            mg.nodes.add(nodeid)
        for nodeid, reason in left:
            # Deaths are handled in the daemon group's pass, in the same order everywhere.
            if reason == REASON_LEAVE:
                self.log(f"Node {nodeid} leaves group {uuid}")
                mg.nodes.discard(nodeid)
        return self._take()

    def daemon_members(self, left: Sequence[tuple[int, int]]) -> list[Effect]:
        """Nodes left ``ocfs2:controld``; a death means DOWN for every group it was in."""
        for nodeid, reason in left:
            if reason == REASON_PROCDOWN:
                self.log(f"kill node {nodeid} - ocfs2_controld PROCDOWN", error=True)
                self._out.append(FenceNode(nodeid))
        for nodeid, reason in left:
            if reason not in (REASON_NODEDOWN, REASON_PROCDOWN):
                continue
            self.log(f"node down {nodeid}")
            for mg in self.mountgroups.values():
                if nodeid in mg.nodes and nodeid != self.nodeid:
                    self.log(f"Node {nodeid} has left mountgroup {mg.uuid}")
                    self._out.append(NodeDown(mg.uuid, nodeid))
                    mg.nodes.discard(nodeid)
        return self._take()

    # --- views -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        """The state as plain data (``--json``, tests)."""
        return {
            "nodeid": self.nodeid,
            "cluster": self.cluster_name,
            "mountgroups": [
                {
                    "uuid": mg.uuid,
                    "device": mg.device,
                    "services": [s.name for s in mg.services],
                    "in_progress": mg.in_progress.name if mg.in_progress else None,
                    "joined": mg.joined,
                    "nodes": sorted(mg.nodes),
                }
                for mg in self.mountgroups.values()
            ],
        }


def _saturated(text: str) -> int:
    """The value C's strtol leaves for a number that is out of range."""
    digits = text.strip(" \t\n\v\f\r")
    try:
        value = int(digits)
    except ValueError:
        return 0
    return max(-(2**63), min(2**63 - 1, value))
