"""``modprobe``, ``rmmod`` and ``lsmod`` for the emulated kernel (inside ``fakecfs run``).

kmod is one program dispatching on its name; ``fakecfs run`` binds a small script over it
in the command's namespace (never on the host) that runs this module. The o2cb stack's
modules are loaded and unloaded in the emulated kernel's table
(``$FAKECFS_SYSROOT/fakecfs/modules``, :mod:`fakecfs.kmod`); ``lsmod`` lists it. Any other
module is refused the way modprobe refuses a module it cannot find.

Options understood: ``-r`` (remove), ``-s`` (log to syslog: errors go nowhere, as with
kmod), ``-q`` (quiet), ``-v``; ``-a`` implied for several names.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

MODULES_FILE = "fakecfs/modules"


def _control(line: str) -> int:
    """One write to the emulated kernel's module table: 0 or the errno."""
    root = os.environ.get("FAKECFS_SYSROOT", "")
    try:
        fd = os.open(os.path.join(root, MODULES_FILE), os.O_WRONLY)
    except OSError as exc:
        return exc.errno or 1
    try:
        os.write(fd, line.encode())
    except OSError as exc:
        return exc.errno or 1
    finally:
        os.close(fd)
    return 0


def _table() -> str:
    root = os.environ.get("FAKECFS_SYSROOT", "")
    with open(os.path.join(root, MODULES_FILE), encoding="utf-8") as f:
        return f.read()


def _release() -> str:
    return os.uname().release


def _fatal(prog: str, name: str, err: int, remove: bool) -> str:
    import errno

    if err == errno.EBUSY:
        return f"{prog}: FATAL: Module {name} is in use."
    if remove and err == errno.ENOENT:
        return f"{prog}: FATAL: Module {name} is not currently loaded."
    if err == errno.ENOENT:
        return f"{prog}: FATAL: Module {name} not found in directory /lib/modules/{_release()}"
    return f"{prog}: ERROR: could not {'remove' if remove else 'insert'} '{name}': " \
           f"{os.strerror(err)}"


def modprobe(prog: str, args: Sequence[str], remove: bool = False) -> int:
    quiet = syslog = False
    names = []
    for arg in args:
        if arg.startswith("--"):
            remove |= arg == "--remove"
            quiet |= arg == "--quiet"
            syslog |= arg == "--syslog"
        elif arg.startswith("-") and len(arg) > 1:
            remove |= "r" in arg
            quiet |= "q" in arg
            syslog |= "s" in arg
        else:
            names.append(arg.replace("-", "_"))
    if not names:
        print(f"{prog}: ERROR: missing module name.", file=sys.stderr)
        return 1
    rc = 0
    for name in names:
        err = _control(f"{'unload' if remove else 'load'} {name}\n")
        if err:
            rc = 1
            if not (quiet or syslog):
                print(_fatal(prog, name, err, remove), file=sys.stderr)
    return rc


def lsmod() -> int:
    print("Module                  Size  Used by")
    for line in _table().splitlines():
        name, size, count, users = line.split()[:4]
        used = "" if users == "-" else users.rstrip(",")
        print(f"{name:<19} {size:>8}  {count} {used}".rstrip())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m fakecfs.kmodcmd NAME-AS-CALLED ARGS...", file=sys.stderr)
        return 2
    prog, args = os.path.basename(argv[0]), argv[1:]
    if prog == "kmod" and args:  # "kmod list", "kmod modprobe ..." style
        prog, args = args[0], args[1:]
        if prog == "list":
            prog = "lsmod"
    if prog == "modprobe":
        return modprobe(prog, args)
    if prog == "rmmod":
        return modprobe(prog, args, remove=True)
    if prog == "lsmod":
        return lsmod()
    print(f"{prog}: not available for the emulated kernel (fakecfs): modules are "
          "emulated for the o2cb stack only (modprobe, rmmod, lsmod)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
