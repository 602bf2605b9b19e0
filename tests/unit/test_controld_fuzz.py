"""Untrusted input to ocfs2_controld's core: random records and random client behaviour.

Two properties the daemon's users depend on: nothing a client sends makes the codec or the
state machine raise (the daemon must never die), and a client that behaves like libo2cb
(one request at a time, waiting for its answer) is always answered once membership has
confirmed the joins and leaves it was asked for — nobody hangs forever.
"""

from __future__ import annotations

import errno

from hypothesis import given, settings
from hypothesis import strategies as st

from hbctl.controld import proto
from hbctl.controld.mountgroups import (
    REASON_LEAVE,
    REASON_NODEDOWN,
    Controld,
    DropClient,
    Effect,
    JoinGroup,
    LeaveGroup,
    Reply,
)

UUIDS = ["1431E6308F3E4C30B5A4906741DD1C4D", "D7B7157609244D26B8BBA703A1E7B2CA"]
SERVICES = ["ocfs2", "svc", "fsck.ocfs2"]
DEVICES = {"/dev/a": 1, "/dev/b": 1, "/dev/c": 2}


def probe(path: str) -> int:
    if path not in DEVICES:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    return DEVICES[path]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=256, max_size=256))
def test_any_record_decodes_or_is_ebadmsg(record: bytes) -> None:
    try:
        msg = proto.decode(record)
    except proto.ProtocolError as e:
        assert e.errno == errno.EBADMSG
        return
    assert len(msg.args) == proto.ARGC[msg.verb]
    Controld(1, "uc", probe=probe).client_record(1, msg)  # never raises


words = st.sampled_from(["ocfs2", "uc", "x", "", "0", "-5", "114", "99999999999",
                         UUIDS[0], UUIDS[0] + "0", "/dev/a", "/dev/c", "/dev/nope", *SERVICES])
records = st.builds(
    lambda verb, args: " ".join([verb, *args]).encode().ljust(256, b"\0")[:256],
    st.sampled_from(list(proto.ARGC)), st.lists(words, max_size=6))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), records), max_size=40))
def test_random_records_never_break_the_core(steps: list[tuple[int, bytes]]) -> None:
    c = Controld(1, "uc", probe=probe)
    for client, raw in steps:
        try:
            msg = proto.decode(raw)
        except proto.ProtocolError as e:
            c.client_garbage(client, e)
            continue
        for effect in c.client_record(client, msg):
            if isinstance(effect, JoinGroup):
                c.group_joined(effect.uuid, [1])
            elif isinstance(effect, LeaveGroup):
                c.group_left(effect.uuid)


# --- well-behaved clients, adversarial timing ------------------------------------------

action = st.one_of(
    st.tuples(st.just("start"), st.integers(0, 5), st.sampled_from(UUIDS),
              st.sampled_from(list(DEVICES)), st.sampled_from(SERVICES)),
    st.tuples(st.just("stop"), st.integers(0, 5), st.sampled_from(UUIDS),
              st.sampled_from(SERVICES)),
    st.tuples(st.just("mresult"), st.integers(0, 5), st.sampled_from([0, 0, 19, -5])),
    st.tuples(st.just("hangup"), st.integers(0, 5)),
    st.tuples(st.just("confirm"), st.integers(0, 3)),
    st.tuples(st.just("fail_join"), st.integers(0, 3)),
    st.tuples(st.just("peer"), st.sampled_from(UUIDS), st.integers(2, 3),
              st.sampled_from([REASON_LEAVE, REASON_NODEDOWN])),
)


class World:
    """The core plus libo2cb-like clients and a membership that confirms when told to."""

    def __init__(self) -> None:
        self.core = Controld(1, "uc", probe=probe)
        self.next_id = 1
        self.slots: dict[int, int] = {}          # slot -> live connection id
        self.waiting: dict[int, str] = {}        # connection -> what it waits for
        self.after_mount: dict[int, tuple[str, str]] = {}  # connection -> (uuid, service)
        self.pending: list[Effect] = []          # joins/leaves membership has not confirmed

    def apply(self, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, Reply):
                assert e.client in self.waiting, f"reply to {e.client}, who asked nothing"
                asked = self.waiting.pop(e.client)
                status = proto.parse_status(proto.decode(e.records[-1]))
                if asked == "mount" and status[0] in (0, proto.EALREADY):
                    self.waiting[e.client] = "go-ahead"  # must now send its MRESULT
            elif isinstance(e, DropClient):
                self.waiting.pop(e.client, None)
            elif isinstance(e, JoinGroup | LeaveGroup):
                self.pending.append(e)

    def new_conn(self, slot: int) -> int | None:
        if slot in self.slots:
            return None  # this client is busy with its own connection
        cid, self.next_id = self.next_id, self.next_id + 1
        self.slots[slot] = cid
        return cid

    def close(self, slot: int) -> None:
        cid = self.slots.pop(slot)
        self.waiting.pop(cid, None)
        self.after_mount.pop(cid, None)
        self.apply(self.core.client_eof(cid))

    def step(self, a: tuple[object, ...]) -> None:
        kind = a[0]
        if kind == "start":
            _, slot, uuid, dev, service = a
            cid = self.new_conn(int(slot))  # type: ignore[call-overload]
            if cid is None:
                return
            self.waiting[cid] = "mount"
            self.after_mount[cid] = (str(uuid), str(service))
            self.apply(self.core.client_record(cid, proto.decode(
                proto.mount(str(uuid), "uc", str(dev), str(service)))))
            if cid not in self.waiting:  # refused: libo2cb closes
                self.close(int(slot))  # type: ignore[call-overload]
        elif kind == "mresult":
            _, slot, result = a
            cid = self.slots.get(int(slot))  # type: ignore[call-overload]
            if cid is None or self.waiting.get(cid) != "go-ahead":
                return
            uuid, service = self.after_mount[cid]
            self.waiting[cid] = "mresult"
            self.apply(self.core.client_record(cid, proto.decode(
                proto.mresult(uuid, int(result), service))))  # type: ignore[call-overload]
        elif kind == "stop":
            _, slot, uuid, service = a
            cid = self.new_conn(int(slot))  # type: ignore[call-overload]
            if cid is None:
                return
            self.waiting[cid] = "unmount"
            self.apply(self.core.client_record(cid, proto.decode(
                proto.unmount(str(uuid), str(service)))))
        elif kind == "hangup":
            slot = int(a[1])  # type: ignore[call-overload]
            if slot in self.slots:
                self.close(slot)
        elif kind == "confirm":
            if self.pending:
                self.confirm(self.pending.pop(int(a[1]) % len(self.pending)))  # type: ignore[call-overload]
        elif kind == "fail_join":
            joins = [e for e in self.pending if isinstance(e, JoinGroup)]
            if joins:
                e = joins[int(a[1]) % len(joins)]  # type: ignore[call-overload]
                self.pending.remove(e)
                self.apply(self.core.group_join_failed(e.uuid, errno.ENOTCONN))
        elif kind == "peer":
            _, uuid, node, reason = a
            self.apply(self.core.group_members(str(uuid), joined=[int(node)]))  # type: ignore[call-overload]
            self.apply(self.core.daemon_members([(int(node), int(reason))]))  # type: ignore[call-overload]
        # Clients whose answer arrived and who have nothing more to say hang up.
        for slot, cid in list(self.slots.items()):
            if cid not in self.waiting:
                self.close(slot)

    def confirm(self, e: Effect) -> None:
        if isinstance(e, JoinGroup):
            self.apply(self.core.group_joined(e.uuid, [1]))
        elif isinstance(e, LeaveGroup):
            self.apply(self.core.group_left(e.uuid))


@settings(max_examples=250, deadline=None)
@given(st.lists(action, max_size=60))
def test_well_behaved_clients_are_always_answered(actions: list[tuple[object, ...]]) -> None:
    w = World()
    for a in actions:
        w.step(a)
    # Membership catches up and every told-to-go-ahead client finishes its mount.
    for _ in range(50):
        while w.pending:
            w.confirm(w.pending.pop(0))
        for slot, cid in list(w.slots.items()):
            if w.waiting.get(cid) == "go-ahead":
                w.step(("mresult", slot, 0))
        if not w.pending and not any(v == "go-ahead" for v in w.waiting.values()):
            break
    assert w.waiting == {}, f"clients left hanging: {w.waiting}"
    # And the state is sane: no service twice, nothing in progress, no stray attachment.
    for mg in w.core.mountgroups.values():
        names = [s.name for s in mg.services]
        assert len(names) == len(set(names))
        assert mg.in_progress is None
        assert mg.services, "an empty mountgroup outlived its leave"
