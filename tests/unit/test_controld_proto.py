"""The ocfs2_controld record codec against spec user-stacks.md §3 (framing, verbs, parsing)."""

from __future__ import annotations

import errno

import pytest

from hbctl.controld import proto
from hbctl.controld.proto import Message, ProtocolError

UUID = "1431E6308F3E4C30B5A4906741DD1C4D"


def rec(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return raw.ljust(proto.MAXLINE, b"\0")


def bad(record: bytes) -> int:
    with pytest.raises(ProtocolError) as exc:
        proto.decode(record)
    return exc.value.errno


# --- every verb, both directions -------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "verb", "args"),
    [
        (proto.mount(UUID, "uc", "/dev/loop0", "svc"), "MOUNT",
         ("ocfs2", UUID, "uc", "/dev/loop0", "svc")),
        (proto.mresult(UUID, -1485330940, "tunefs.ocfs2"), "MRESULT",
         ("ocfs2", UUID, "-1485330940", "tunefs.ocfs2")),
        (proto.unmount(UUID, "ocfs2"), "UNMOUNT", ("ocfs2", UUID, "ocfs2")),
        (proto.status(22, "Invalid cluster name"), "STATUS", ("22", "Invalid cluster name")),
        (proto.listfs("uc"), "LISTFS", ("ocfs2", "uc")),
        (proto.encode("LISTMOUNTS", "ocfs2", "uc"), "LISTMOUNTS", ("ocfs2", "uc")),
        (proto.listclusters(), "LISTCLUSTERS", ()),
        (proto.encode("ITEMCOUNT", 3), "ITEMCOUNT", ("3",)),
        (proto.encode("ITEM", "a b  c"), "ITEM", ("a b  c",)),
        (proto.dump(), "DUMP", ()),
    ],
)
def test_every_verb_round_trips(record: bytes, verb: str, args: tuple[str, ...]) -> None:
    assert len(record) == proto.MAXLINE
    assert proto.decode(record) == Message(verb, args)


def test_wire_bytes_are_the_c_tools_bytes() -> None:
    # strace of Debian's ocfs2_hb_ctl: write(4, "MOUNT ocfs2 <UUID> uc <dev> svc\0...", 256)
    want = f"MOUNT ocfs2 {UUID} uc /srv/us.img svc".encode()
    assert proto.mount(UUID, "uc", "/srv/us.img", "svc") == want + b"\0" * (256 - len(want))
    assert proto.dump() == b"DUMP" + b"\0" * 252  # no trailing space on 0-arg verbs
    assert proto.status(0, "OK").rstrip(b"\0") == b"STATUS 0 OK"


def test_arg_counts_are_the_c_table() -> None:
    assert list(proto.ARGC.items()) == [
        ("MOUNT", 5), ("MRESULT", 4), ("UNMOUNT", 3), ("STATUS", 2), ("LISTFS", 2),
        ("LISTMOUNTS", 2), ("LISTCLUSTERS", 0), ("ITEMCOUNT", 1), ("ITEM", 1), ("DUMP", 0),
    ]
    assert proto.SOCKET_ADDRESS == b"\0ocfs2_controld_sock"
    assert len(proto.SOCKET_ADDRESS) + 2 == 22  # addrlen with sa_family


# --- encode ----------------------------------------------------------------------------


def test_encode_e2big_at_256_bytes_of_text() -> None:
    fits = "x" * (255 - len("ITEM "))
    assert proto.decode(proto.encode("ITEM", fits)).args == (fits,)
    with pytest.raises(ProtocolError) as exc:
        proto.encode("ITEM", fits + "y")
    assert exc.value.errno == errno.E2BIG


def test_encode_refuses_what_c_would_garble() -> None:
    with pytest.raises(ProtocolError) as exc:
        proto.mount(UUID, "uc", "/dev/my disk", "svc")  # a space in a non-last field
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(ProtocolError):
        proto.status(0, "O\0K")
    # The last field may hold spaces.
    assert proto.decode(proto.mount(UUID, "uc", "/d", "my svc")).args[-1] == "my svc"


def test_encode_rejects_programming_errors() -> None:
    with pytest.raises(ValueError):
        proto.encode("HELLO")
    with pytest.raises(ValueError):
        proto.encode("STATUS", 0)


# --- decode: §3.4 rules ----------------------------------------------------------------


def test_rule1_verb_is_first_prefix_followed_by_space_or_end() -> None:
    assert bad(rec("HELLO world")) == errno.EBADMSG
    assert bad(rec("MOUNTX ocfs2 a b c d")) == errno.EBADMSG
    assert bad(rec("")) == errno.EBADMSG
    assert bad(rec("mount ocfs2 a b c d")) == errno.EBADMSG  # case matters
    # ITEMCOUNT comes before ITEM in the table, and "ITEM" must be followed by space/end.
    assert proto.decode(rec("ITEMCOUNT 2")).verb == "ITEMCOUNT"
    assert proto.decode(rec("ITEM COUNT 2")) == Message("ITEM", ("COUNT 2",))


def test_rule2_last_field_keeps_spaces() -> None:
    assert proto.decode(rec("STATUS 22 Invalid cluster name")).args == (
        "22", "Invalid cluster name")
    m = proto.decode(rec(f"UNMOUNT ocfs2 {UUID} a  b "))
    assert m.args == ("ocfs2", UUID, "a  b ")


def test_rule3_field_count_must_match() -> None:
    assert bad(rec("STATUS 0")) == errno.EBADMSG  # the h6 case: I/O error in the client
    assert proto.decode(rec("STATUS 0 ")).args == ("0", "")  # empty trailing field counts
    assert bad(rec("DUMP ")) == errno.EBADMSG  # 0-arg verb followed by a space
    assert bad(rec("DUMP x y")) == errno.EBADMSG
    assert bad(rec("LISTCLUSTERS now")) == errno.EBADMSG
    assert bad(rec(f"MOUNT ocfs2 {UUID} uc /dev/x")) == errno.EBADMSG
    assert bad(rec("ITEM")) == errno.EBADMSG
    assert proto.decode(rec("ITEM ")).args == ("",)
    # Empty middle fields count as fields (double spaces).
    assert proto.decode(rec("UNMOUNT ocfs2  x")).args == ("ocfs2", "", "x")


def test_bytes_after_the_first_nul_and_byte_255_are_ignored() -> None:
    assert proto.decode(rec(b"DUMP\0garbage here")) == Message("DUMP")
    full = b"ITEM " + b"z" * 251  # no NUL at all: the reader forces buf[255] = 0
    assert proto.decode(full).args == ("z" * 250,)


def test_decode_needs_exactly_one_record() -> None:
    assert bad(b"DUMP") == errno.EBADMSG
    assert bad(rec("DUMP") + b"\0") == errno.EBADMSG


def test_non_utf8_bytes_survive_a_round_trip() -> None:
    raw = rec(b"ITEM \xff\xfe dev")
    m = proto.decode(raw)
    assert proto.encode("ITEM", m.args[0]) == raw


# --- rule 4: numbers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("114", 114), ("-22", -22), ("+5", 5), (" 7", 7), ("\t-3", -3),
     ("", 0),  # strtol consumes the whole empty string: C reads "STATUS  OK" as 0
     ("2147483647", 2**31 - 1), ("-2147483648", -(2**31))],
)
def test_status_numbers_parse_like_strtol(text: str, value: int) -> None:
    assert proto.parse_status(Message("STATUS", (text, "m"))) == (value, "m")


@pytest.mark.parametrize(
    ("text", "err"),
    [("x", errno.EINVAL), ("1x", errno.EINVAL), ("1.0", errno.EINVAL), ("0x10", errno.EINVAL),
     ("-", errno.EINVAL), (" ", errno.EINVAL), ("7 ", errno.EINVAL),
     ("2147483648", errno.ERANGE), ("-2147483649", errno.ERANGE),
     ("9223372036854775807", errno.ERANGE), ("99999999999999999999999", errno.ERANGE)],
)
def test_status_numbers_rejected(text: str, err: int) -> None:
    with pytest.raises(ProtocolError) as exc:
        proto.parse_status(Message("STATUS", (text, "m")))
    assert exc.value.errno == err


def test_itemcount_parses_like_strtoul() -> None:
    assert proto.parse_itemcount(Message("ITEMCOUNT", ("4294967295",))) == 2**32 - 1
    assert proto.parse_itemcount(Message("ITEMCOUNT", ("-0",))) == 0
    for text, err in [("4294967296", errno.ERANGE), ("-1", errno.ERANGE),
                      ("3a", errno.EINVAL), ("a", errno.EINVAL)]:
        with pytest.raises(ProtocolError) as exc:
            proto.parse_itemcount(Message("ITEMCOUNT", (text,)))
        assert exc.value.errno == err, text


# --- lists (§3.5) ----------------------------------------------------------------------


def receive(records: list[bytes]) -> list[str]:
    r = proto.ListReceiver()
    for record in records:
        if r.feed(proto.decode(record)):
            return r.items
    raise AssertionError("list never ended")


def test_list_reply_round_trips() -> None:
    items = ["1431E6308F3E4C30B5A4906741DD1C4D", "a b"]
    wire = proto.list_reply(items)
    assert [proto.decode(w).verb for w in wire] == ["ITEMCOUNT", "ITEM", "ITEM", "STATUS"]
    assert receive(wire) == items
    assert receive(proto.list_reply([])) == []
    with pytest.raises(ProtocolError):
        proto.list_reply(["ok", ""])


def list_error(texts: list[str]) -> int:
    r = proto.ListReceiver()
    with pytest.raises(ProtocolError) as exc:
        for t in texts:
            r.feed(proto.decode(rec(t)))
    return exc.value.errno


def test_list_errors_are_receive_lists() -> None:
    assert list_error(["ITEMCOUNT 1", "ITEMCOUNT 1"]) == errno.EINVAL
    assert list_error(["ITEMCOUNT 1", "ITEM "]) == errno.EINVAL
    assert list_error(["ITEMCOUNT 1", "ITEM a", "ITEM b"]) == errno.E2BIG
    assert list_error(["ITEM a"]) == errno.E2BIG  # before ITEMCOUNT the count is 0
    assert list_error(["ITEMCOUNT 2", "ITEM a", "STATUS 0 OK"]) == errno.EINVAL
    assert list_error(["STATUS 0 OK"]) == errno.EINVAL
    assert list_error(["ITEMCOUNT 2", "STATUS 5 broken pipe"]) == 5
    assert list_error(["ITEMCOUNT 1", "DUMP"]) == errno.EINVAL
    assert list_error(["ITEMCOUNT x"]) == errno.EINVAL


def test_dump_chunks_fit_items() -> None:
    text = "line one\n" * 100 + "é" * 300
    chunks = proto.dump_chunks(text)
    assert "".join(chunks) == text
    assert all(0 < len(c.encode()) <= proto.DUMP_CHUNK for c in chunks)
    assert receive(proto.list_reply(chunks)) == chunks
    assert proto.dump_chunks("") == []


# --- stream splitting ------------------------------------------------------------------


def test_splitter_reassembles_records_across_reads() -> None:
    stream = proto.dump() + proto.status(0, "OK") + proto.listclusters()
    s = proto.RecordSplitter()
    got: list[bytes] = []
    for i in range(0, len(stream), 100):
        got += s.feed(stream[i : i + 100])
    assert got == [stream[:256], stream[256:512], stream[512:]]
    assert s.pending == 0
    s.close()  # clean EOF


def test_splitter_eof_mid_record_is_epipe() -> None:
    s = proto.RecordSplitter()
    assert s.feed(proto.dump() + b"STATUS 0") == [proto.dump()]
    assert s.pending == 8
    with pytest.raises(ProtocolError) as exc:
        s.close()
    assert exc.value.errno == errno.EPIPE
    assert s.pending == 0
