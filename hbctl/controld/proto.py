"""The ocfs2_controld client protocol: 256-byte records, both ways, as a pure codec.

libo2cb (``ocfs2_hb_ctl``, ``mount.ocfs2``, ``debugfs.ocfs2``) talks to ``ocfs2_controld`` on
the abstract stream socket ``@ocfs2_controld_sock`` (one per network namespace). Every message
in both directions is exactly 256 bytes: ``"VERB arg arg ..."`` NUL-padded, no newline, no
length prefix. Fields are separated by single spaces and only the *last* field may contain
spaces; there is no escaping. This module encodes and decodes those records with the C
library's exact parsing rules, including its quirks, and does no I/O.

Stable API (the daemon and hbctl's client both build on it):

- constants: ``MAXLINE`` (256), ``MAXARGS``, ``SOCKET_NAME``, ``SOCKET_ADDRESS`` (for
  ``socket.connect``/``bind``: the abstract name with its leading NUL), ``FS_TYPE``
  (``"ocfs2"``), ``REAL_MOUNT_SERVICE`` (``"ocfs2"``), ``EALREADY`` (114), ``ARGC`` (verb →
  argument count, in the C enum order), the verb names ``MOUNT`` … ``DUMP``;
- ``Message(verb, args)``; ``ProtocolError(errno, text)``;
- ``encode(verb, *args) -> bytes`` (``E2BIG`` when the text does not fit; ``EINVAL`` for a
  NUL anywhere or a space in a field that is not the last, which C would silently garble);
  ``decode(record) -> Message`` (``EBADMSG`` on an unknown verb or a wrong field count);
- builders ``mount``, ``mresult``, ``unmount``, ``status``, ``listfs``, ``listclusters``,
  ``dump``, ``list_reply(items)`` (ITEMCOUNT, ITEMs, ``STATUS 0 OK``), ``dump_chunks(text)``;
- parsers ``parse_status(msg) -> (err, text)``, ``parse_itemcount(msg) -> int``,
  ``c_strtol(text) -> int`` (a whole field as C ``strtol`` + range checks, for MRESULT's code);
- ``ListReceiver``: feed decoded messages of a list reply, get the items (``receive_list``);
- ``RecordSplitter``: feed stream bytes, get whole records; ``close()`` reports an EOF that
  cut a record short.

Where a rule comes from: spec user-stacks.md §3 (framing §3.2, messages §3.3, parsing §3.4,
lists §3.5).
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterable
from dataclasses import dataclass

MAXLINE = 256
"""Every record, both directions, is exactly this many bytes."""
MAXARGS = 16
SOCKET_NAME = "ocfs2_controld_sock"
SOCKET_ADDRESS = b"\0" + SOCKET_NAME.encode()
"""The abstract AF_UNIX address (addrlen 22 with the family), per network namespace."""
FS_TYPE = "ocfs2"
"""The fs-type argument of MOUNT/MRESULT/UNMOUNT/LISTFS; anything else is refused."""
REAL_MOUNT_SERVICE = "ocfs2"
"""The service of real mounts (mount.ocfs2, the kernel's ``-K -u``): the only one that repeats."""
EALREADY = _errno.EALREADY  # 114 on Linux: "already joined, go ahead"

MOUNT = "MOUNT"
MRESULT = "MRESULT"
UNMOUNT = "UNMOUNT"
STATUS = "STATUS"
LISTFS = "LISTFS"
LISTMOUNTS = "LISTMOUNTS"
LISTCLUSTERS = "LISTCLUSTERS"
ITEMCOUNT = "ITEMCOUNT"
ITEM = "ITEM"
DUMP = "DUMP"

# Verb -> argument count. Order matters: a record's verb is the *first* entry (C enum order)
# that is a prefix of the record followed by a space or the end.
ARGC: dict[str, int] = {
    MOUNT: 5,
    MRESULT: 4,
    UNMOUNT: 3,
    STATUS: 2,
    LISTFS: 2,
    LISTMOUNTS: 2,
    LISTCLUSTERS: 0,
    ITEMCOUNT: 1,
    ITEM: 1,
    DUMP: 0,
}

DUMP_CHUNK = 250
"""The daemon sends its debug text as ITEMs of at most this many bytes."""

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_ULONG_MAX = 2**64 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_UINT_MAX = 2**32 - 1
_C_SPACE = " \t\n\v\f\r"


class ProtocolError(Exception):
    """A record that cannot be sent or understood; ``errno`` is what libo2cb would return."""

    def __init__(self, err: int, text: str) -> None:
        super().__init__(err, text)
        self.errno = err
        self.text = text

    def __str__(self) -> str:
        return f"{self.text} ({_errno.errorcode.get(self.errno, self.errno)})"


@dataclass(frozen=True)
class Message:
    """One decoded record: the verb and exactly ``ARGC[verb]`` string fields."""

    verb: str
    args: tuple[str, ...] = ()


def _to_bytes(text: str) -> bytes:
    # surrogateescape: bytes that are not UTF-8 survive decode -> encode unchanged.
    return text.encode("utf-8", "surrogateescape")


def _to_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def encode(verb: str, *args: object) -> bytes:
    """One 256-byte record; ints are rendered in decimal like C's ``%d``/``%u``."""
    if verb not in ARGC:
        raise ValueError(f"unknown verb {verb!r}")
    if len(args) != ARGC[verb]:
        raise ValueError(f"{verb} takes {ARGC[verb]} arguments, not {len(args)}")
    fields = [str(a) for a in args]
    for i, f in enumerate(fields):
        if "\0" in f:
            raise ProtocolError(_errno.EINVAL, f"{verb} field {i} contains a NUL byte")
        if " " in f and i != len(fields) - 1:
            raise ProtocolError(_errno.EINVAL, f"{verb} field {i} contains a space: {f!r}")
    raw = _to_bytes(" ".join([verb, *fields]))
    if len(raw) >= MAXLINE:
        raise ProtocolError(_errno.E2BIG, f"{verb} record is {len(raw)} bytes, max {MAXLINE - 1}")
    return raw.ljust(MAXLINE, b"\0")


def decode(record: bytes) -> Message:
    """Parse one record as ``receive_message`` does (spec §3.4); EBADMSG if it is malformed."""
    if len(record) != MAXLINE:
        raise ProtocolError(_errno.EBADMSG, f"record of {len(record)} bytes, not {MAXLINE}")
    # The C reader forces buf[255] = NUL, then everything after the first NUL is ignored.
    text = _to_text(record[: MAXLINE - 1].split(b"\0", 1)[0])
    for verb in ARGC:
        if text == verb or text.startswith(verb + " "):
            break
    else:
        raise ProtocolError(_errno.EBADMSG, f"unknown message {text[:40]!r}")
    argc = ARGC[verb]
    if text == verb:
        fields: list[str] = []
    elif argc == 0:
        fields = text[len(verb) + 1 :].split(" ")
    else:
        # Split on single spaces into at most argc fields: the last keeps further spaces.
        fields = text[len(verb) + 1 :].split(" ", argc - 1)
    if len(fields) != argc:
        raise ProtocolError(
            _errno.EBADMSG, f"{verb} with {len(fields)} fields, expected {argc}: {text[:60]!r}"
        )
    return Message(verb, tuple(fields))


def _c_strtoul_parts(text: str) -> tuple[bool, int, int]:
    """C's number scan: leading C-space, optional sign, decimal digits.

    Returns (negative, magnitude, index after the number); index 0 when no digit was found
    (C then sets ``endptr`` to the start of the string).
    """
    i = 0
    while i < len(text) and text[i] in _C_SPACE:
        i += 1
    negative = False
    if i < len(text) and text[i] in "+-":
        negative = text[i] == "-"
        i += 1
    start = i
    while i < len(text) and "0" <= text[i] <= "9":
        i += 1
    if i == start:
        return False, 0, 0
    return negative, int(text[start:i]), i


def c_strtol(text: str) -> int:
    """A whole field as an ``int`` the way libo2cb/controld check it.

    ``strtol(text, &end, 10)`` must consume everything (``EINVAL`` otherwise; note that an
    empty field consumes everything and is 0, as in C) and the value must not hit
    LONG_MIN/LONG_MAX (overflow) nor leave the C ``int`` range (``ERANGE``).
    """
    negative, magnitude, end = _c_strtoul_parts(text)
    if end != len(text):
        raise ProtocolError(_errno.EINVAL, f"Invalid error code string: {text}")
    value = -magnitude if negative else magnitude
    value = max(_LONG_MIN, min(_LONG_MAX, value))  # strtol saturates on overflow
    if value in (_LONG_MIN, _LONG_MAX) or not _INT_MIN <= value <= _INT_MAX:
        raise ProtocolError(_errno.ERANGE, f"Error code {value} is out of range")
    return value


def parse_status(msg: Message) -> tuple[int, str]:
    """``STATUS <n> <text>`` → (n, text), with C's number rules (EINVAL/ERANGE)."""
    if msg.verb != STATUS:
        raise ValueError(f"not a STATUS: {msg.verb}")
    return c_strtol(msg.args[0]), msg.args[1]


def parse_itemcount(msg: Message) -> int:
    """``ITEMCOUNT <n>`` → n, with C's ``strtoul`` rules (EINVAL/ERANGE)."""
    if msg.verb != ITEMCOUNT:
        raise ValueError(f"not an ITEMCOUNT: {msg.verb}")
    text = msg.args[0]
    negative, magnitude, end = _c_strtoul_parts(text)
    if end != len(text):
        raise ProtocolError(_errno.EINVAL, f"Invalid item count string: {text}")
    value = min(magnitude, _ULONG_MAX)  # strtoul saturates, then negates modulo 2**64
    if negative:
        value = (-value) % (_ULONG_MAX + 1)
    if value == _LONG_MAX or value > _UINT_MAX:
        raise ProtocolError(_errno.ERANGE, f"Item count {value} out of range")
    return value


# Builders: the records the C tools and the daemon send, under names that say which.


def mount(uuid: str, cluster: str, device: str, service: str, fs: str = FS_TYPE) -> bytes:
    return encode(MOUNT, fs, uuid, cluster, device, service)


def mresult(uuid: str, result: int, service: str, fs: str = FS_TYPE) -> bytes:
    return encode(MRESULT, fs, uuid, int(result), service)


def unmount(uuid: str, service: str, fs: str = FS_TYPE) -> bytes:
    return encode(UNMOUNT, fs, uuid, service)


def status(err: int, text: str) -> bytes:
    return encode(STATUS, int(err), text)


def listfs(cluster: str, fs: str = FS_TYPE) -> bytes:
    return encode(LISTFS, fs, cluster)


def listclusters() -> bytes:
    return encode(LISTCLUSTERS)


def dump() -> bytes:
    return encode(DUMP)


def list_reply(items: Iterable[str]) -> list[bytes]:
    """A whole list answer: ``ITEMCOUNT n``, n ``ITEM``s, ``STATUS 0 OK`` (spec §3.5)."""
    listed = list(items)
    if any(not item for item in listed):
        raise ProtocolError(_errno.EINVAL, "an ITEM must not be empty")
    body = [encode(ITEM, item) for item in listed]
    return [encode(ITEMCOUNT, len(body)), *body, status(0, "OK")]


def dump_chunks(text: str) -> list[str]:
    """Split debug text into non-empty ITEM payloads of at most ``DUMP_CHUNK`` bytes.

    Splits on character boundaries so every chunk is valid text on its own.
    """
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for ch in text:
        n = len(_to_bytes(ch))
        if size + n > DUMP_CHUNK:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(ch)
        size += n
    if current:
        chunks.append("".join(current))
    return chunks


class ListReceiver:
    """The client's side of a list reply (``receive_list``), one decoded message at a time.

    ``feed`` returns True once the closing ``STATUS 0`` arrived; then ``items`` holds the
    list. Errors raise ``ProtocolError`` with libo2cb's errno: a non-zero STATUS gives
    ``-n``'s magnitude ``n``; a second ITEMCOUNT, an empty ITEM, an early ``STATUS 0`` or
    any other verb give EINVAL; more ITEMs than counted give E2BIG.
    """

    def __init__(self) -> None:
        self.count: int | None = None
        self.items: list[str] = []
        self.done = False

    def feed(self, msg: Message) -> bool:
        if self.done:
            raise ProtocolError(_errno.EINVAL, f"{msg.verb} after the end of the list")
        if msg.verb == STATUS:
            err, text = parse_status(msg)
            if err:
                raise ProtocolError(err, f"Error {err} from daemon: {text}")
            if self.count is None or len(self.items) < self.count:
                raise ProtocolError(_errno.EINVAL, "Unexpected STATUS 0 from daemon")
            self.done = True
        elif msg.verb == ITEMCOUNT:
            if self.count is not None:
                raise ProtocolError(_errno.EINVAL, "Unexpected itemcount")
            self.count = parse_itemcount(msg)
        elif msg.verb == ITEM:
            if not msg.args[0]:
                raise ProtocolError(_errno.EINVAL, "Empty item message")
            # Before any ITEMCOUNT the C count is 0, so an ITEM is "too many".
            if len(self.items) >= (self.count or 0):
                raise ProtocolError(_errno.E2BIG, "Too many items!")
            self.items.append(msg.args[0])
        else:
            raise ProtocolError(_errno.EINVAL, f"Unexpected message {msg.verb} from daemon")
        return self.done


class RecordSplitter:
    """Cut a byte stream into 256-byte records (``full_read`` semantics).

    ``feed`` returns the records completed by the new bytes and keeps the remainder;
    ``close`` is the EOF: it raises ``ProtocolError(EPIPE)`` if a record was cut short
    (its bytes are lost, as in C) and is silent on a clean EOF between records.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete record held back."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        n = len(self._buf) // MAXLINE * MAXLINE
        out = [bytes(self._buf[i : i + MAXLINE]) for i in range(0, n, MAXLINE)]
        del self._buf[:n]
        return out

    def close(self) -> None:
        if self._buf:
            cut = len(self._buf)
            self._buf.clear()
            raise ProtocolError(_errno.EPIPE, f"EOF after {cut} of {MAXLINE} bytes of a record")
