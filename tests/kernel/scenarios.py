"""What the real-kernel lane runs in its guests, host side: one function per scenario.

Each scenario boots a guest (lane.boot), runs one task of tests/kernel/guest.py in it and
returns what the guest reported, with host-side timings. ``python -m tests.kernel.scenarios
record`` re-records tests/catalogue/kernel-results.json from the real kernel.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.catalogue.catalogue import load
from tests.catalogue.recorded import RECORDING, as_recorded
from tests.kernel import lane

PYTHON = str(lane.REPO / ".venv/bin/python")


def guest_command(task: str, *args: str) -> str:
    return " ".join([PYTHON, "-m", "tests.kernel.guest", task, *args])


def raw_disk(path: Path, size_mb: int) -> Path:
    """A fully allocated zeroed disk (no holes: the host and guest write it at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    subprocess.run(["fallocate", "-l", f"{size_mb}M", str(path)], check=True)
    return path


@dataclass
class CatalogueRun:
    kernel: str
    accel: str
    boot_seconds: float
    total_seconds: float
    results: dict[str, list[str]] = field(default_factory=dict)
    cleanup_failures: dict[str, str] = field(default_factory=dict)


def run_catalogue(art: lane.Artefacts, workdir: Path, timeout: float = 240.0) -> CatalogueRun:
    """Replay every non-extension case on the guest's real configfs (IMAGE = /dev/vda)."""
    disk = raw_disk(workdir / "vda.img", 16)
    guest = lane.boot(art, workdir, guest_command("catalogue", "/dev/vda"), disks=(disk,),
                      hostname="catalogue")
    try:
        at, hello = guest.expect("hello", 120)
        run = CatalogueRun(str(hello["uname"]), guest.accel, at - guest.started, 0.0)
        for _, msg in guest.messages(timeout):
            kind = msg.get("kind")
            if kind == "error":
                raise RuntimeError(f"guest failed: {msg.get('text')}")
            if kind == "case":
                name = str(msg["name"])
                run.results[name] = [str(r) for r in msg["results"]]  # type: ignore[attr-defined]
                if msg["cleanup"] != "ok":
                    run.cleanup_failures[name] = str(msg["cleanup"])
            if kind == "done":
                break
        run.total_seconds = time.monotonic() - guest.started
    finally:
        guest.close(30)
    return run


def ocfs2_disk(path: Path, size_mb: int = 64) -> Path:
    """An ocfs2 volume of cluster "demo" (mkfs.ocfs2), then fully allocated (no holes)."""
    from tests.nodes import mkfs

    path.parent.mkdir(parents=True, exist_ok=True)
    mkfs(path, f"{size_mb}M")
    subprocess.run(["fallocate", "-l", f"{size_mb}M", str(path)], check=True)
    return path


def user_stack_modules(art: lane.Artefacts) -> Path:
    """dlm.ko and ocfs2_stack_user.ko of the guest's kernel, in a folder the guest sees.

    Not in the initramfs: loaded there, the user plugin would show in every task's
    /sys/fs/ocfs2. The guest sees the host's tree (read-only, 9p) except /tmp and /run, so
    they go to the lane's cache; the guest's 512 MiB are too few to unpack the package.
    """
    out = lane.CACHE / f"modules-{art.kernel_version}"
    wanted = {"dlm": "kernel/fs/dlm/dlm.ko",
              "ocfs2_stack_user": "kernel/fs/ocfs2/ocfs2_stack_user.ko"}
    if all((out / f"{name}.ko").exists() for name in wanted):
        return out
    debs = sorted((lane.CACHE / "debs").glob(f"linux-image-{art.kernel_version}_*.deb"))
    assert debs, "the kernel package is not in the lane's cache"
    members = lane._members(debs[-1], [f"lib/modules/{art.kernel_version}/{path}"
                                       for path in wanted.values()])
    out.mkdir(parents=True, exist_ok=True)
    for name, path in wanted.items():
        data = next(d for n, d in members.items() if n.endswith(path))
        tmp = out / f"{name}.ko.tmp{os.getpid()}"
        tmp.write_bytes(data)
        tmp.rename(out / f"{name}.ko")
    return out


def run_task(art: lane.Artefacts, workdir: Path, task: str, disk: Path,
             timeout: float = 180.0, args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Boot, run a one-shot guest task; its messages by kind (the last of each kind)."""
    guest = lane.boot(art, workdir, guest_command(task, "/dev/vda", *args), disks=(disk,),
                      hostname="guest")
    out: dict[str, Any] = {}
    try:
        at, hello = guest.expect("hello", 120)
        out["hello"] = hello
        out["boot_seconds"] = at - guest.started
        for _, msg in guest.messages(timeout):
            if msg.get("kind") == "error":
                raise RuntimeError(f"guest failed: {msg.get('text')}")
            out[str(msg["kind"])] = msg
            if msg.get("kind") == "done":
                break
        out["total_seconds"] = time.monotonic() - guest.started
    finally:
        guest.close(30)
    return out


def recording_of(run: CatalogueRun, art: lane.Artefacts) -> dict[str, Any]:
    cases = {c.name: as_recorded(c, run.results[c.name]) for c in load()
             if c.name in run.results}
    return {
        "kernel": run.kernel,
        "package": lane.download(lane.kernel_package()).name,
        "recorded": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "accel": run.accel,
        "cases": cases,
    }


def write_recording(data: dict[str, Any], path: Path = RECORDING) -> None:
    """JSON with one line per step, so a re-recording diffs readably."""
    head = {k: v for k, v in data.items() if k != "cases"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append(' "cases": {')
    cases = list(data["cases"].items())
    for i, (name, steps) in enumerate(cases):
        lines.append(f"  {json.dumps(name)}: [")
        lines += [f"   {json.dumps(step, ensure_ascii=False)}"
                  + ("," if j < len(steps) - 1 else "") for j, step in enumerate(steps)]
        lines.append("  ]" + ("," if i < len(cases) - 1 else ""))
    lines += [" }", "}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    if argv[:1] != ["record"]:
        print("usage: python -m tests.kernel.scenarios record", file=sys.stderr)
        return 2
    art = lane.build()
    workdir = Path("/tmp/fakecfs-kernel-record")
    run = run_catalogue(art, workdir)
    write_recording(recording_of(run, art))
    print(f"recorded {len(run.results)} cases from {run.kernel} ({run.accel}) in "
          f"{run.total_seconds:.1f} s; cleanup failures: {run.cleanup_failures or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
