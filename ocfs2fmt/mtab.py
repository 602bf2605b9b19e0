"""The /proc/mounts field escaping, shared by hbctl's mount table and fakecfs's.

Fields are separated by blanks, so blank, tab, newline and backslash inside a field are
written as ``\\ooo`` (octal), as the kernel's ``show_vfsmnt`` does.
"""

from __future__ import annotations

_SPECIAL = " \t\n\\"


def escape(text: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in _SPECIAL else c for c in text)


def unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        code = text[i + 1 : i + 4]
        if text[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
