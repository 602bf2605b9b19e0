"""The formats both sides of the sysroot contract read: the emulated kernel (fakecfs) and
the userland (hbctl) import this package, never each other.

- `ondisk`: the ocfs2 superblock and heartbeat descriptor (a core over bytes);
- `blockdev`: reading them from a device or image file (``pread`` + ``BLKSSZGET``);
- `mtab`: the ``/proc/mounts`` field escaping.

Importing it also refuses a Python older than the project supports, with a message that
says so (fakecfs and hbctl import it first), instead of a SyntaxError from deep inside.
That is why this file alone is written to parse on any Python 3: no f-strings, no
``from __future__`` import, annotations only as strings.
"""

import sys

MIN_PYTHON = (3, 11)  # Debian 12's python3; pyproject's requires-python says the same


def python_problem(version: "tuple[object, ...]") -> "str | None":
    """Why this project cannot run on Python ``version``, or None."""
    if (version[0], version[1]) >= MIN_PYTHON:
        return None
    have = ".".join(str(part) for part in version[:3])
    need = ".".join(str(part) for part in MIN_PYTHON)
    return ("fakecfs-hbctl needs Python " + need + " or newer, this is " + have
            + ": run it with a newer python3 (Debian 12's is 3.11)")


_problem = python_problem(tuple(sys.version_info))
if _problem:
    raise SystemExit(_problem)
