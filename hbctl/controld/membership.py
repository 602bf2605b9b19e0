"""Group membership for ocfs2_controld: real corosync CPG, or one node on its own.

Both kinds hand the daemon the same thing: ``Confchg`` events (corosync's configuration
changes: members, who left and why, who joined) on a trio channel, in the order corosync
delivered them, plus ``Lost`` when the cluster connection died.

- ``CorosyncMembership``: each group is a CPG group with its own handle (``ocfs2:controld``
  for the daemon, ``ocfs2:<UUID>`` per filesystem); a join completes when CPG delivers the
  confchg holding us; a peer whose corosync or daemon dies shows up in the survivors'
  confchgs with reason NODEDOWN or PROCDOWN. Node id from ``cpg_local_get``, cluster name
  from cmap's ``totem.cluster_name``.
- ``LocalMembership``: a single-node cluster for a laptop or CI job with no corosync: every
  join is confirmed with us as the only member (after ``join_delay`` seconds, to exercise
  the deferred replies), every leave likewise; node id and cluster name are given.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import trio

from hbctl.controld import corosync
from hbctl.controld.corosync import Address, Confchg, CorosyncError
from hbctl.controld.mountgroups import REASON_JOIN, REASON_LEAVE

JOIN_RETRY_S = 1.0
"""Upstream retries ``cpg_join`` every second while corosync answers TRY_AGAIN."""
JOIN_ATTEMPTS = 10


@dataclass(frozen=True)
class Lost:
    """The cluster connection of ``group`` died (corosync killed or stopped)."""

    group: str
    reason: str


Event = Confchg | Lost


class Membership:
    """What the daemon needs from a membership: join, leave, and the event stream."""

    kind = "abstract"

    def __init__(self, nodeid: int, cluster_name: str | None) -> None:
        self.nodeid = nodeid
        self.pid = os.getpid()
        self.cluster_name = cluster_name
        send, receive = trio.open_memory_channel[Event](math.inf)
        self._send = send
        self.events = receive

    def is_us(self, address: Address) -> bool:
        return address.nodeid == self.nodeid and address.pid == self.pid

    async def join(self, group: str) -> None:
        raise NotImplementedError

    async def leave(self, group: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Drop every group without telling anyone (the process is going away)."""


class LocalMembership(Membership):
    kind = "local"

    def __init__(self, nursery: trio.Nursery, nodeid: int = 1,
                 cluster_name: str | None = None, join_delay: float = 0.0) -> None:
        super().__init__(nodeid, cluster_name)
        self._nursery = nursery
        self.join_delay = join_delay
        self.groups: set[str] = set()

    async def join(self, group: str) -> None:
        if group in self.groups:
            raise OSError(17, f"already joined {group}")
        self.groups.add(group)
        us = Address(self.nodeid, self.pid, REASON_JOIN)
        event = Confchg(group, (us,), (), (us,))
        if self.join_delay > 0:
            async def later() -> None:
                await trio.sleep(self.join_delay)
                self._send.send_nowait(event)
            self._nursery.start_soon(later)
        else:
            self._send.send_nowait(event)

    async def leave(self, group: str) -> None:
        self.groups.discard(group)
        self._send.send_nowait(
            Confchg(group, (), (Address(self.nodeid, self.pid, REASON_LEAVE),), ()))


class CorosyncMembership(Membership):
    kind = "corosync"

    def __init__(self, nursery: trio.Nursery, probe_group: corosync.CpgGroup) -> None:
        """``probe_group``: an initialised (not yet joined) handle, proof corosync answers."""
        try:
            name: str | None = corosync.cluster_name()
        except CorosyncError:
            # corosync runs but its configuration names no cluster: nothing to check
            # MOUNT's cluster name against (the C tools' cmap query fails there too).
            name = None
        super().__init__(probe_group.local_nodeid(), name)
        self._nursery = nursery
        self.groups: dict[str, corosync.CpgGroup] = {}
        self._spare: corosync.CpgGroup | None = probe_group
        self._early: list[Confchg] = []  # confchgs of the spare handle before its task runs

    @classmethod
    def connect(cls, nursery: trio.Nursery, first_group: str) -> CorosyncMembership:
        """Raise CorosyncError (or OSError without the libraries) when corosync is absent."""
        pending: list[Confchg] = []
        probe = corosync.CpgGroup(first_group, pending.append)
        try:
            self = cls(nursery, probe)
        except BaseException:
            probe.finalize()
            raise
        self._early = pending
        return self

    async def join(self, group: str) -> None:
        if group in self.groups:
            raise OSError(17, f"already joined {group}")
        queue: list[Confchg] = []
        spare = self._spare
        if spare is not None and spare.name == group:
            handle, self._spare = spare, None
            queue = self._early
            handle._on_confchg = queue.append
        else:
            try:
                handle = corosync.CpgGroup(group, queue.append)
            except CorosyncError as e:
                raise OSError(107, str(e)) from e  # ENOTCONN: corosync is not answering
        for attempt in range(JOIN_ATTEMPTS):
            code = handle.join()
            if code == corosync.CS_OK:
                break
            if code != corosync.CS_ERR_TRY_AGAIN or attempt == JOIN_ATTEMPTS - 1:
                handle.finalize()
                raise OSError(107, str(CorosyncError("cpg_join", code)))
            await trio.sleep(JOIN_RETRY_S)
        self.groups[group] = handle
        self._nursery.start_soon(self._dispatch, handle, queue)

    async def _dispatch(self, handle: corosync.CpgGroup, queue: list[Confchg]) -> None:
        fd = handle.fd()
        try:
            while True:
                await trio.lowlevel.wait_readable(fd)
                try:
                    handle.dispatch()
                except CorosyncError as e:
                    self._send.send_nowait(Lost(handle.name, str(e)))
                    return
                left_us = False
                while queue:
                    event = queue.pop(0)
                    self._send.send_nowait(event)
                    left_us |= any(self.is_us(a) and a.reason == REASON_LEAVE
                                   for a in event.left)
                if left_us:
                    return
        finally:
            self.groups.pop(handle.name, None)
            handle.finalize()

    async def leave(self, group: str) -> None:
        handle = self.groups.get(group)
        if handle is None:
            raise OSError(2, f"not in group {group}")
        for attempt in range(JOIN_ATTEMPTS):
            code = handle.leave()
            if code == corosync.CS_OK:
                return
            if code != corosync.CS_ERR_TRY_AGAIN or attempt == JOIN_ATTEMPTS - 1:
                raise OSError(107, str(CorosyncError("cpg_leave", code)))
            await trio.sleep(JOIN_RETRY_S)

    def close(self) -> None:
        for handle in list(self.groups.values()):
            handle.finalize()
        if self._spare is not None:
            self._spare.finalize()
