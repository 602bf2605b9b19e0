#!/usr/bin/python3
"""Write a man page for every console script in pyproject.toml, from the command's own help.

    gen-manpages.py OUTDIR [--rename SCRIPT=NAME:SECTION ...]

Each ``[project.scripts]`` entry is run with ``--help`` (``-h`` if that fails, as for the
getopt-style ``ocfs2_hb_ctl``), and so is each subcommand its help lists (two levels:
``hbctl cluster register``). NAME's summary is the first line of the entry point module's
docstring. The modules are imported from ``sys.path`` (debian/rules points PYTHONPATH at
the installed tree), so a console script added to pyproject gets its page with no change
here. ``--rename`` gives the installed name and section of a script the package installs
elsewhere (the drop-in ``ocfs2_hb_ctl`` becomes ``hbctl-ocfs2_hb_ctl`` in section 8).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ENVIRONMENT = (
    ("HBCTL_SYSROOT", "root of the kernel surfaces hbctl and ocfs2_hb_ctl use (a fakecfs "
     "mount); unset means /, the real kernel"),
    ("HBCTL_DEVICES", "colon-separated image files or folders of them, searched by UUID "
     "after the block devices"),
)
_SUBCOMMAND = re.compile(r"^ {4}([a-z][\w.-]*)(?: {2,}|$)")


def roff(text: str) -> str:
    """Plain text as roff lines: backslashes, leading dots/quotes and dashes made literal."""
    out = []
    for line in text.replace("\\", "\\e").splitlines():
        line = line.replace("-", "\\-")
        out.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(out)


def run_help(module: str, func: str, name: str, args: list[str]) -> str:
    code = (f"import sys; sys.argv[0] = {name!r}; from {module} import {func} as m; "
            f"sys.exit(m())")
    for flag in ("--help", "-h"):
        proc = subprocess.run([sys.executable, "-c", code, *args, flag], capture_output=True,
                              text=True, check=False, env=dict(os.environ, COLUMNS="80"))
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.rstrip()
    raise SystemExit(f"{name} {' '.join(args)}: neither --help nor -h printed help:\n"
                     f"{proc.stderr.strip()}")


def subcommands(help_text: str) -> list[str]:
    """The subcommand names an argparse help lists under "positional arguments"."""
    section = help_text.split("positional arguments:", 1)
    if len(section) < 2:
        return []
    body = re.split(r"\n\S", section[1], maxsplit=1)[0]
    return [m.group(1) for m in map(_SUBCOMMAND.match, body.splitlines()) if m]


def summary(module: str, name: str) -> str:
    doc = (importlib.import_module(module).__doc__ or name).strip().splitlines()[0]
    doc = re.sub(r"^``[^`]+``:\s*", "", doc).rstrip(".")  # "``hbctl``: what it is"
    return doc.replace("``", "")  # reST literals read as plain words in a man page


def page(script: str, name: str, section: str, target: str, version: str,
         see_also: list[str]) -> str:
    module, func = target.split(":")
    top = run_help(module, func, name, [])
    parts = [
        f'.TH {roff(name.upper())} {section} "" "fakecfs-hbctl {version}" "fakecfs-hbctl"',
        ".SH NAME",
        f"{roff(name)} \\- {roff(summary(module, name))}",
        ".SH DESCRIPTION",
        ".nf",
        roff(top),
        ".fi",
    ]
    for sub in subcommands(top):
        text = run_help(module, func, name, [sub])
        parts += [f".SS {roff(f'{name} {sub}')}", ".nf", roff(text), ".fi"]
        for subsub in subcommands(text):
            deeper = run_help(module, func, name, [sub, subsub])
            parts += [f".SS {roff(f'{name} {sub} {subsub}')}", ".nf", roff(deeper), ".fi"]
    parts.append(".SH ENVIRONMENT")
    for var, meaning in ENVIRONMENT:
        parts += [".TP", f".B {var}", roff(meaning)]
    if name != script:
        parts += [".SH NOTES", roff(
            f"This is the project's {script}, installed as {name} so that it never replaces "
            f"ocfs2-tools' own {script}. To have the kernel's put_super run it, write its "
            f"path to /proc/sys/fs/ocfs2/nm/hb_ctl_path.")]
    # The package's other pages, then ocfs2-tools' own.
    refs = [ref for ref in see_also if not ref.startswith(f"{name}(")]
    parts += [".SH SEE ALSO", roff(", ".join([*refs, "ocfs2_hb_ctl(8)", "o2cb(8)"]))]
    return "\n".join(parts) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--pyproject", default=os.path.join(HERE, "..", "pyproject.toml"))
    ap.add_argument("--rename", action="append", default=[], metavar="SCRIPT=NAME:SECTION")
    args = ap.parse_args()
    with open(args.pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    renames = {}
    for item in args.rename:
        script, _, rest = item.partition("=")
        name, _, section = rest.partition(":")
        renames[script] = (name, section or "1")
    os.makedirs(args.outdir, exist_ok=True)
    scripts = sorted(project["scripts"].items())
    pages = {script: renames.get(script, (script, "1")) for script, _target in scripts}
    see_also = [f"{name}({section})" for name, section in pages.values()]
    for script, target in scripts:
        name, section = pages[script]
        path = os.path.join(args.outdir, f"{name}.{section}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(page(script, name, section, target, project["version"], see_also))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
