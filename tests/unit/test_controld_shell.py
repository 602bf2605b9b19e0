"""The controld shell's small parts: ocfs2_control handshake, options, local membership."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from hbctl.controld import kernelctl
from hbctl.controld.membership import LocalMembership
from hbctl.controld.mountgroups import REASON_JOIN, REASON_LEAVE
from hbctl.controld.options import Options, UsageError, parse_args
from hbctl.errors import Code, O2cbError

U = "1431E6308F3E4C30B5A4906741DD1C4D"


def test_handshake_writes_the_kernels_messages_one_per_write(tmp_path: Path) -> None:
    dev = tmp_path / "ocfs2_control"
    dev.write_bytes(b"T01\n")
    c = kernelctl.ControlDevice(str(dev))
    c.open(0x1F)
    c.node_down(U, 3)
    c.close()
    assert dev.read_bytes() == (b"T01\nT01\nSETN 0000001F\nSETV 01 00\n"
                                + f"DOWN {U} 00000003\n".encode())
    assert [len(m) for m in (kernelctl.setn(1), kernelctl.setv(1, 0),
                             kernelctl.down(U, 1))] == [14, 11, 47]


@pytest.mark.parametrize(("content", "code"), [
    (b"", Code.SERVICE_UNAVAILABLE),          # no protocol offered
    (b"T02\n", Code.SERVICE_UNAVAILABLE),     # only one we do not speak
    (b"T01", Code.IO),                        # a short read
])
def test_handshake_refusals(tmp_path: Path, content: bytes, code: Code) -> None:
    dev = tmp_path / "ocfs2_control"
    dev.write_bytes(content)
    with pytest.raises(O2cbError) as exc:
        kernelctl.ControlDevice(str(dev)).open(1)
    assert exc.value.code is code
    assert dev.read_bytes() == content  # nothing written on a failed handshake


def test_missing_device_and_down_before_open(tmp_path: Path) -> None:
    c = kernelctl.ControlDevice(str(tmp_path / "nope"))
    with pytest.raises(O2cbError) as exc:
        c.open(1)
    assert exc.value.code is Code.SERVICE_UNAVAILABLE
    with pytest.raises(O2cbError) as exc:
        c.node_down(U, 2)
    assert exc.value.code is Code.INTERNAL_FAILURE


def test_options() -> None:
    assert parse_args([]) == Options()
    o = parse_args(["-D", "--membership", "local", "--nodeid", "7", "--cluster-name", "uc",
                    "--join-delay-ms", "250", "--pid-file", "none"])
    assert (o.debug, o.membership, o.nodeid, o.cluster_name, o.join_delay_ms, o.pid_file) == (
        True, "local", 7, "uc", 250, None)
    for bad in (["-w"], ["--membership", "gossip"], ["--nodeid", "0"], ["--nodeid", "x"],
                ["--cluster-name", "a b"], ["extra"]):
        with pytest.raises(UsageError):
            parse_args(bad)


async def test_local_membership_confirms_joins_and_leaves() -> None:
    async with trio.open_nursery() as nursery:
        m = LocalMembership(nursery, nodeid=4, cluster_name="uc", join_delay=0.01)
        await m.join("ocfs2:" + U)
        with pytest.raises(OSError):
            await m.join("ocfs2:" + U)
        joined = await m.events.receive()
        assert joined.group == "ocfs2:" + U
        assert [(a.nodeid, a.reason) for a in joined.joined] == [(4, REASON_JOIN)]
        assert m.is_us(joined.members[0])
        await m.leave("ocfs2:" + U)
        left = await m.events.receive()
        assert [(a.nodeid, a.reason) for a in left.left] == [(4, REASON_LEAVE)]
