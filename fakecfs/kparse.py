"""The kernel's number parsers, as the o2nm/o2hb store functions see them.

Stores receive the written bytes NUL-terminated (configfs copies at most 4095 bytes and
appends a NUL), so parsing stops at the first NUL byte, as C string functions do.

- :func:`strtoul_strict` is idiom A of the spec: ``simple_strtoul`` then "nothing but one
  optional newline may follow". No sign, overflow wraps, a lone newline is 0.
- :func:`kstrtoull` is idiom B: optional ``+``, optional trailing newline, EINVAL for
  nothing to parse, ERANGE on overflow.
- :func:`sscanf_ipv4` is ``sscanf(page, "%3u.%3u.%3u.%3u")``.
"""

from __future__ import annotations

import errno

from .tree import KernelError

U64 = 1 << 64
_HEX = "0123456789abcdefABCDEF"


def cstring(data: bytes) -> str:
    """The bytes up to the first NUL, as the kernel's string functions see them."""
    nul = data.find(b"\0")
    if nul >= 0:
        data = data[:nul]
    return data.decode("latin-1")


def _fixup_radix(s: str, base: int) -> tuple[str, int]:
    """``_parse_integer_fixup_radix``: base 0 picks 16 for 0x, 8 for a leading 0, else 10."""
    if base == 0:
        if s[:1] == "0":
            base = 16 if s[1:2].lower() == "x" and s[2:3] and s[2:3] in _HEX else 8
        else:
            base = 10
    if base == 16 and s[:1] == "0" and s[1:2].lower() == "x":
        s = s[2:]
    return s, base


def _digits(s: str, base: int) -> tuple[int, int, bool]:
    """Parse leading digits: (value mod 2**64, characters used, overflowed)."""
    value = 0
    used = 0
    overflow = False
    for ch in s:
        d = int(ch, 16) if ch in _HEX else 99
        if d >= base:
            break
        value = value * base + d
        if value >= U64:
            overflow = True
            value %= U64
        used += 1
    return value, used, overflow


def strtoul_strict(data: bytes, base: int = 0) -> int:
    """``simple_strtoul`` followed by the trailing-newline check (EINVAL otherwise)."""
    s, base = _fixup_radix(cstring(data), base)
    value, used, _ = _digits(s, base)
    rest = s[used:]
    # The C check looks at one character only (``*p && *p != '\n'``): "5\nX" passes.
    if rest and rest[0] != "\n":
        raise KernelError(errno.EINVAL)
    return value


def strtol_strict(data: bytes, base: int = 0) -> int:
    """``simple_strtol`` (a leading '-' negates) with the same trailing check."""
    s = cstring(data)
    if s.startswith("-"):
        return -strtoul_strict(s[1:].encode("latin-1"), base)
    return strtoul_strict(data, base)


def kstrtoull(data: bytes, base: int = 0) -> int:
    """``kstrtoull``: one optional '+', one optional trailing newline, ERANGE on overflow."""
    s = cstring(data)
    if s.startswith("+"):
        s = s[1:]
    s, base = _fixup_radix(s, base)
    value, used, overflow = _digits(s, base)
    if overflow:
        raise KernelError(errno.ERANGE)
    if used == 0:
        raise KernelError(errno.EINVAL)
    rest = s[used:]
    if rest.startswith("\n"):
        rest = rest[1:]
    if rest:
        raise KernelError(errno.EINVAL)
    return value


def sscanf_ipv4(data: bytes) -> tuple[int, int, int, int] | None:
    """``sscanf(page, "%3u.%3u.%3u.%3u")``; None unless all four fields convert.

    Each %u skips leading whitespace and reads at most 3 digits; trailing text is ignored.
    """
    s = cstring(data)
    pos = 0
    out: list[int] = []
    for i in range(4):
        if i:
            if s[pos : pos + 1] != ".":
                return None
            pos += 1
        while pos < len(s) and s[pos] in " \t\n\r\f\v":
            pos += 1
        start = pos
        while pos < len(s) and pos - start < 3 and s[pos].isdigit() and s[pos].isascii():
            pos += 1
        if pos == start:
            return None
        out.append(int(s[start:pos]))
    return out[0], out[1], out[2], out[3]
