"""``hbctl doctor``'s judgement, as a core: an observed state in, findings and fixes out.

What operators otherwise untangle by hand with ``ipcs``/``ipcrm`` and configfs: references
no mount or tool holds (upstream's two-mount leak, a script killed between ``-S`` and
``-K``), a region left with no reference (a killed ``-S``), a region whose semaphore set
was removed, a semaphore set whose region is gone, a mounted flag that outlived its mounts,
a region heartbeating on a device that is gone, a cluster with no local node.

:func:`diagnose` is a pure function of a :class:`Snapshot` (gathered by
:mod:`hbctl.doctor_shell`). Each :class:`Finding` explains itself in one sentence and
carries the :data:`Action` that repairs it, or why it may not be repaired now. The rules
that keep a fix from breaking anything:

- nothing is touched while an ocfs2 tool that takes references runs in this node
  (mount.ocfs2 between its heartbeat start and mount(2), fsck, tunefs, ocfs2_hb_ctl,
  hbctl), or while someone holds the region's mutex;
- a mounted region keeps the references its mounts need: one when the mounted flag is
  set, at most one per mount otherwise (upstream mounts); it is never stopped;
- global-heartbeat regions have no semaphores by design: only a vanished device is
  reported for them.

The shell re-gathers the region's state under the region's mutex and applies an action
only if :func:`diagnose` still asks for it, so a start racing the fix either finished first
(and is counted) or waits on the mutex and then starts afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# -- what was observed ------------------------------------------------------------------


@dataclass(frozen=True)
class RegionView:
    """A heartbeat region in configfs, with its semaphores and mounts."""

    cluster: str
    uuid: str
    global_mode: bool = False
    refs: int | None = 0  # sem 1 of its set; None: no semaphore set
    mutex_held: bool = False
    flag: bool = False  # the mounted flag names this region's current set
    mounts: int = 0  # mount entries of this volume
    device: str | None = None  # what ``dev`` shows
    device_gone: bool = False


@dataclass(frozen=True)
class SemSetView:
    """A semaphore set with no region in configfs."""

    key: int
    nsems: int
    kind: str  # "refs" (libo2cb's set), "flag" (our mounted flag), "unknown"
    uuid: str | None = None
    refs: int | None = None
    mounts: int = 0


@dataclass(frozen=True)
class ClusterView:
    name: str
    local_node: str | None
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    clusters: tuple[ClusterView, ...] = ()
    regions: tuple[RegionView, ...] = ()
    sets: tuple[SemSetView, ...] = ()
    tools: tuple[tuple[int, str], ...] = ()  # (pid, name) of running ocfs2 tools
    hostname: str = ""


# -- what to do ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StopRegion:
    """Drop every reference, clear the flag, rmdir the region, remove its sets."""

    cluster: str
    uuid: str

    def describe(self) -> str:
        return f"stop heartbeat on {self.uuid} (rmdir the region, remove its semaphores)"


@dataclass(frozen=True)
class DropRefs:
    """Drop references until ``keep`` remain (the mounts' share)."""

    cluster: str
    uuid: str
    keep: int

    def describe(self) -> str:
        return f"drop the references of {self.uuid} down to {self.keep}"


@dataclass(frozen=True)
class ClearFlag:
    uuid: str

    def describe(self) -> str:
        return f"clear the mounted flag of {self.uuid}"


@dataclass(frozen=True)
class RemoveSets:
    """IPC_RMID the refcount set and flag set of a region that no longer exists."""

    uuid: str

    def describe(self) -> str:
        return f"remove the semaphore sets of {self.uuid}"


@dataclass(frozen=True)
class SetLocalNode:
    cluster: str
    node: str

    def describe(self) -> str:
        return f"mark node {self.node} local in cluster {self.cluster}"


Action = StopRegion | DropRefs | ClearFlag | RemoveSets | SetLocalNode


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str  # a UUID, a cluster name or a semaphore key
    message: str  # one sentence, for a human
    action: Action | None = None
    blocked: str | None = None  # why the action may not run now (or why there is none)

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "subject": self.subject, "message": self.message,
                "fix": self.action.describe() if self.action else None,
                "blocked": self.blocked}


# -- the rules ----------------------------------------------------------------------------


TOOL_NAMES = frozenset({"mount.ocfs2", "fsck.ocfs2", "tunefs.ocfs2", "mkfs.ocfs2",
                        "ocfs2_hb_ctl", "o2cb", "hbctl"})


@dataclass
class _Rules:
    snapshot: Snapshot
    findings: list[Finding] = field(default_factory=list)

    @property
    def busy(self) -> str | None:
        if not self.snapshot.tools:
            return None
        pid, name = self.snapshot.tools[0]
        return f"{name} (pid {pid}) is running in this node; run doctor again when it ends"

    def add(self, kind: str, subject: str, message: str, action: Action | None,
            blocked: str | None = None) -> None:
        if action is not None and blocked is None:
            blocked = self.busy
        self.findings.append(Finding(kind, subject, message, action, blocked))

    def region(self, r: RegionView) -> None:
        held = "the region's mutex is held" if r.mutex_held else None
        if r.device_gone:
            action = StopRegion(r.cluster, r.uuid) if not r.mounts else None
            self.add("device-gone", r.uuid,
                     f"Region {r.uuid} heartbeats on {r.device or 'a device'}, which is gone: "
                     "nothing can use it and its writes go nowhere.", action,
                     held or (None if action else "it is still mounted: unmount it first"))
            return
        if r.global_mode:
            return  # global heartbeat keeps no semaphores: nothing else to judge
        if r.flag and not r.mounts:
            self.add("stale-mounted-flag", r.uuid,
                     f"Region {r.uuid} is flagged mounted but nothing mounts it: the "
                     "put_super stop that clears the flag never ran.", ClearFlag(r.uuid), held)
        if r.refs is None:
            action = StopRegion(r.cluster, r.uuid) if not r.mounts else None
            self.add("region-without-semaphores", r.uuid,
                     f"Region {r.uuid} exists but has no semaphore set, so nothing counts its "
                     "users and no ocfs2_hb_ctl -K will ever stop it.", action,
                     held or (None if action else "it is mounted: the mounts still use it"))
            return
        expected = 0 if not r.mounts else 1 if r.flag else r.mounts
        if r.refs == 0 and not r.mounts:
            self.add("region-without-references", r.uuid,
                     f"Region {r.uuid} has no references but still exists: a start was "
                     "killed before taking its reference, or the last holder died.",
                     StopRegion(r.cluster, r.uuid), held)
        elif r.refs > expected:
            holders = ("no mount" if not r.mounts else
                       f"its {r.mounts} mount(s) need {expected}")
            drop: Action = (StopRegion(r.cluster, r.uuid) if expected == 0
                            else DropRefs(r.cluster, r.uuid, expected))
            self.add("leaked-references", r.uuid,
                     f"Region {r.uuid} has {r.refs} reference(s) but {holders} and no tool "
                     f"holds them: {r.refs - expected} leaked (a second mount.ocfs2 of the "
                     "device, or a holder killed before its stop).", drop, held)

    def orphan_set(self, s: SemSetView) -> None:
        key = f"{s.key & 0xFFFFFFFF:#010x}"
        if s.kind == "unknown":
            self.add("unknown-semaphores", key,
                     f"Semaphore set {key} ({s.nsems} semaphores, mode 000, shaped like "
                     "libo2cb's) matches no known volume; if it is a stale heartbeat set, "
                     f"remove it with 'ipcrm -S {key}'.", None, "its volume is unknown")
            return
        assert s.uuid is not None
        blocked = "the volume is mounted" if s.mounts else None
        if s.kind == "flag":
            self.add("stale-mounted-flag", s.uuid,
                     f"The mounted flag of {s.uuid} (set {key}) outlived its region.",
                     RemoveSets(s.uuid), blocked)
            return
        self.add("semaphores-without-region", s.uuid,
                 f"Semaphore set {key} counts {s.refs} reference(s) for region {s.uuid}, "
                 "which does not exist (its heartbeat was stopped behind libo2cb's back).",
                 RemoveSets(s.uuid), blocked)

    def cluster(self, c: ClusterView) -> None:
        if c.local_node is not None:
            return
        host = self.snapshot.hostname
        action = SetLocalNode(c.name, host) if host in c.nodes else None
        self.add("no-local-node", c.name,
                 f"Cluster {c.name} is registered but none of its nodes is local, so "
                 "heartbeat cannot start on this host.", action,
                 None if action else f"no node is named like this host ({host}): "
                 "register again with 'hbctl cluster register --node NAME'")


def diagnose(snapshot: Snapshot) -> list[Finding]:
    """Every finding in ``snapshot``, clusters first, then regions, then stray sets."""
    rules = _Rules(snapshot)
    for c in snapshot.clusters:
        rules.cluster(c)
    for r in snapshot.regions:
        rules.region(r)
    for s in snapshot.sets:
        rules.orphan_set(s)
    return rules.findings
