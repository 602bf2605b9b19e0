"""ocfs2_controld's trio shell: one running daemon (the commands are in ``main``).

Wires the pieces together: the membership (corosync CPG, or a single node), the client
socket ``@ocfs2_controld_sock`` (256-byte records through ``proto``), the state machine
(``mountgroups.Controld``) and the kernel's ``ocfs2_control`` device (``kernelctl``). All
decisions are the core's; this file only moves bytes and events and carries out effects.

Start-up order is upstream's: join the daemon group ``ocfs2:controld``, and only once CPG
confirms it open the client socket, so clients get ECONNREFUSED until the daemon is up.
The control device is opened (and the T01 handshake done) on the first filesystem join,
not at start-up, so a daemon runs before the kernel side is there.

No client can stall another: each connection has its own reader and its own unbounded
reply queue; a malformed record, a record cut short by EOF or a verb upstream never answers
drops that one connection.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass

import trio

from hbctl.controld import proto
from hbctl.controld.corosync import Confchg, CorosyncError
from hbctl.controld.kernelctl import CONTROL_DEVICE, ControlDevice
from hbctl.controld.membership import (
    CorosyncMembership,
    LocalMembership,
    Lost,
    Membership,
)
from hbctl.controld.mountgroups import (
    Controld,
    DropClient,
    Effect,
    Exit,
    FenceNode,
    JoinGroup,
    LeaveGroup,
    Log,
    NodeDown,
    Reply,
)
from hbctl.controld.options import Options
from hbctl.errors import O2cbError
from hbctl.sysroot import from_env

DAEMON_GROUP = "ocfs2:controld"
GROUP_PREFIX = "ocfs2:"
VERSION = "1.0"  # CONTROLD_PROTOCOL_MAJOR.MINOR

class DaemonExit(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class _Client:
    send: trio.MemorySendChannel[tuple[bytes, ...]]
    reader: trio.CancelScope
    dropped: bool = False


class Daemon:
    """One running daemon: its core, membership, clients and kernel handle."""

    def __init__(self, core: Controld, membership: Membership,
                 control: ControlDevice | None, debug: bool) -> None:
        self.core = core
        self.membership = membership
        self.control = control
        self.debug = debug
        self.clients: dict[int, _Client] = {}
        self.ready = trio.Event()
        self._ids = itertools.count(1)

    # --- effects ---------------------------------------------------------------------

    def log(self, text: str, error: bool = False) -> None:
        self.core.log(text, error, effect=False)  # printed here, not by a later apply
        self._print(text)

    def _print(self, text: str) -> None:
        if self.debug:
            print(f"{int(time.time())} {text}", file=sys.stderr, flush=True)

    async def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Log):
                self._print(effect.text)
            elif isinstance(effect, Reply):
                client = self.clients.get(effect.client)
                if client is not None and not client.dropped:
                    with contextlib.suppress(trio.ClosedResourceError):
                        client.send.send_nowait(effect.records)  # closed: it hung up
            elif isinstance(effect, DropClient):
                self._drop(effect.client)
            elif isinstance(effect, JoinGroup):
                await self._join(effect.uuid)
            elif isinstance(effect, LeaveGroup):
                try:
                    await self.membership.leave(GROUP_PREFIX + effect.uuid)
                except OSError as e:
                    self.log(f"Unable to leave group {effect.uuid}: {e}", error=True)
            elif isinstance(effect, NodeDown):
                self._node_down(effect)
            elif isinstance(effect, FenceNode):
                self.log(f"node {effect.nodeid} must be fenced; fencing is the cluster "
                         "stack's job and is not done here", error=True)
            elif isinstance(effect, Exit):
                raise DaemonExit(effect.status, effect.reason)

    async def _join(self, uuid: str) -> None:
        if self.control is not None and self.control.fd is None:
            try:
                self.control.open(self.membership.nodeid)
                self.log(f"ocfs2_control {self.control.path}: T01, "
                         f"SETN {self.membership.nodeid:08X}, SETV 01 00")
            except O2cbError as e:
                self.log(f"{e.message} while opening {self.control.path}: {e.detail}",
                         error=True)
                await self.apply(self.core.group_join_failed(uuid, errno.ENODEV))
                return
        try:
            await self.membership.join(GROUP_PREFIX + uuid)
        except OSError as e:
            self.log(f"Unable to join group {uuid}: {e}", error=True)
            await self.apply(self.core.group_join_failed(uuid, e.errno or errno.EIO))

    def _node_down(self, effect: NodeDown) -> None:
        if self.control is None or self.control.fd is None:
            self.log(f"DOWN {effect.uuid} {effect.nodeid:08X}: no ocfs2_control open")
            return
        try:
            self.control.node_down(effect.uuid, effect.nodeid)
            self.log(f"sent DOWN {effect.uuid} {effect.nodeid:08X} to the kernel")
        except O2cbError as e:
            self.log(f"{e.message} while trying to send DOWN message ({e.detail})",
                     error=True)

    def _drop(self, cid: int) -> None:
        client = self.clients.get(cid)
        if client is not None and not client.dropped:
            client.dropped = True
            client.reader.cancel()
            client.send.close()  # the writer sends what is queued, then closes the socket

    # --- clients ---------------------------------------------------------------------

    async def serve_clients(self, listener: trio.socket.SocketType) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                sock, _ = await listener.accept()
                cid = next(self._ids)
                send, receive = trio.open_memory_channel[tuple[bytes, ...]](math.inf)
                client = _Client(send, trio.CancelScope())
                self.clients[cid] = client
                nursery.start_soon(self._client, cid, sock, client, receive)

    async def _client(self, cid: int, sock: trio.socket.SocketType, client: _Client,
                      replies: trio.MemoryReceiveChannel[tuple[bytes, ...]]) -> None:
        async def writer() -> None:
            async with replies:
                async for records in replies:
                    data = memoryview(b"".join(records))
                    try:
                        while data:
                            data = data[await sock.send(data):]
                    except OSError:
                        continue  # the reader sees the hang-up and cleans up
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                with client.reader:
                    await self._read(cid, sock, client)
                client.send.close()
        finally:
            self.clients.pop(cid, None)
            sock.close()

    async def _read(self, cid: int, sock: trio.socket.SocketType, client: _Client) -> None:
        splitter = proto.RecordSplitter()
        while True:
            try:
                data = await sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    splitter.close()
                except proto.ProtocolError as e:
                    self.log(f"client {cid}: {e.text}", error=True)
                await self.apply(self.core.client_eof(cid))
                return
            for record in splitter.feed(data):
                try:
                    msg = proto.decode(record)
                except proto.ProtocolError as e:
                    await self.apply(self.core.client_garbage(cid, e))
                else:
                    try:
                        await self.apply(self.core.client_record(cid, msg))
                    except DaemonExit:
                        raise
                    except Exception as e:
                        # A bug must cost this client, never the daemon and the others.
                        self.log(f"internal error on client {cid}'s {msg.verb}: {e!r}",
                                 error=True)
                        traceback.print_exc(file=sys.stderr)
                        await self.apply(self.core.client_garbage(
                            cid, proto.ProtocolError(errno.EPROTO, "internal error")))
                if client.dropped:
                    return

    # --- membership ------------------------------------------------------------------

    async def follow_membership(self) -> None:
        async for event in self.membership.events:
            if isinstance(event, Lost):
                self.log(f"cluster connection lost ({event.group}: {event.reason})",
                         error=True)
                raise DaemonExit(1, "cluster connection lost")
            await self._confchg(event)

    async def _confchg(self, event: Confchg) -> None:
        m = self.membership
        self.log(f"group \"{event.group}\" confchg: members {len(event.members)}, "
                 f"left {len(event.left)}, joined {len(event.joined)}")
        if event.group == DAEMON_GROUP:
            if any(m.is_us(a) for a in event.joined):
                self.ready.set()
            others = [(a.nodeid, a.reason) for a in event.left if not m.is_us(a)]
            if others:
                await self.apply(self.core.daemon_members(others))
            return
        if not event.group.startswith(GROUP_PREFIX):
            return
        uuid = event.group[len(GROUP_PREFIX):]
        if any(m.is_us(a) for a in event.joined):
            await self.apply(self.core.group_joined(uuid, [a.nodeid for a in event.members]))
        others_joined = [a.nodeid for a in event.joined if not m.is_us(a)]
        others_left = [(a.nodeid, a.reason) for a in event.left if not m.is_us(a)]
        if others_joined or others_left:
            await self.apply(self.core.group_members(uuid, others_joined, others_left))
        if any(m.is_us(a) for a in event.left):
            await self.apply(self.core.group_left(uuid))

    # --- signals ---------------------------------------------------------------------

    async def follow_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for signum in sigs:
                if self.core.have_mounts():
                    self.log(f"Caught signal {signum}, but mounts exist.  Ignoring.",
                             error=True)
                else:
                    self.log(f"Caught signal {signum}, exiting", error=True)
                    raise DaemonExit(0, f"signal {signum}")


def listen() -> trio.socket.SocketType:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.bind(proto.SOCKET_ADDRESS)
        s.listen(5)
    except OSError:
        s.close()
        raise
    return trio.socket.from_stdlib_socket(s)


class ReadyPipe:
    """The daemonized child's line to its parent: "ok", or why it could not start."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def say(self, text: str) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.fd, f"{text}\n".encode())
            os.close(self.fd)
            self.fd = None


async def run(stack: str, o: Options, ready: ReadyPipe) -> int:
    """The daemon's life; returns its exit status."""
    async with trio.open_nursery() as nursery:
        membership: Membership
        if o.membership in ("auto", "corosync"):
            try:
                membership = CorosyncMembership.connect(nursery, DAEMON_GROUP)
            except (CorosyncError, OSError) as e:
                if o.membership == "corosync":
                    raise DaemonExit(1, f"Unable to connect to corosync: {e}") from e
                membership = LocalMembership(nursery, o.nodeid, o.cluster_name,
                                             o.join_delay_ms / 1000)
        else:
            membership = LocalMembership(nursery, o.nodeid, o.cluster_name,
                                         o.join_delay_ms / 1000)
        sysroot = from_env(o.sysroot)
        control_path = o.control_device or sysroot.path(CONTROL_DEVICE)
        control = None if control_path == "none" else ControlDevice(control_path)
        core = Controld(membership.nodeid, membership.cluster_name, clock=time.time)
        d = Daemon(core, membership, control, o.debug)
        d.log(f"ocfs2_controld.{stack} starting: {membership.kind} membership, node "
              f"{membership.nodeid}, cluster {membership.cluster_name or '(any)'}")
        try:
            nursery.start_soon(d.follow_membership)
            nursery.start_soon(d.follow_signals)
            try:
                await membership.join(DAEMON_GROUP)
            except OSError as e:
                raise DaemonExit(1, f"Unable to join the daemon group: {e}") from e
            await d.ready.wait()
            try:
                listener = listen()
            except OSError as e:
                raise DaemonExit(1, f"Unable to start listening socket: {e.strerror}") from e
            d.log("ocfs2_controld is ready: listening on @" + proto.SOCKET_NAME)
            ready.say("ok")
            nursery.start_soon(d.serve_clients, listener)
        except DaemonExit as e:
            d.log(str(e), error=True)
            nursery.cancel_scope.cancel()
            membership.close()
            if control:
                control.close()
            raise
    return 0
