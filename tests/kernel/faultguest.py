"""The real-kernel lane's fault task, guest side: the real o2hb under faults on its disk.

``python -m tests.kernel.guest faults DEV DEAD_THRESHOLD`` (from guest.py's TASKS). The
heartbeat device is a device-mapper device ``hb`` over DEV, so its table can be swapped at
run time for the faults: ``error`` (every I/O fails), ``flakey ... error_writes`` (writes
fail, reads pass), an ``error`` target over the peer's slot only (the slot read fails, our
own write passes), ``delay`` (every I/O takes N ms longer). The kernel's log goes to the
console (ttyS0, console.log on the host) with its timestamps, so the lines printed just
before a fence's restart are kept too; marker lines written to /dev/kmsg (``lane: start``, ``lane:
started``, ``lane: fault applied``) date the start and each fault on the kernel's own clock.

Commands from the host, one per line: ``start`` (the region's configfs steps and the dev
write, as libo2cb does them), ``table TEXT`` (its lines split by ``;``: load, suspend,
resume; answers ``applied``), ``quit``. Reports: ``registered``, ``started`` (errno,
seconds), ``applied``, ``live`` (every livenodes change).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.kernel.guest import CLUSTER, CONFIGFS, Channel, register, watch_livenodes
from tests.nodes import dev_write_errno

DM_ENV = {**os.environ, "DM_DISABLE_UDEV": "1"}  # no udev: dmsetup makes /dev/mapper nodes
HB = "/dev/mapper/hb"
DMSETUP = "/usr/sbin/dmsetup"  # the host tree's (the lane makes sure it is installed)


def dmsetup(*args: str, table: str | None = None) -> None:
    proc = subprocess.run([DMSETUP, *args], capture_output=True, text=True, env=DM_ENV,
                          input=table, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"dmsetup {' '.join(args)}: {proc.stderr.strip()}")


def kmsg(text: str) -> None:
    """A line in the kernel's log, dated by the kernel's clock (the fault's moment)."""
    with open("/dev/kmsg", "w", encoding="ascii") as f:
        f.write(f"lane: {text}\n")


def start(uuid: str, block_bytes: int, start_block: int, blocks: int) -> dict[str, object]:
    """libo2cb's start on the dm device: mkdir, geometry, then dev (returns when steady)."""
    rdir = f"{CONFIGFS}/cluster/{CLUSTER}/heartbeat/{uuid}"
    if not os.path.isdir(rdir):
        os.mkdir(rdir)
    for attr, value in (("block_bytes", block_bytes), ("start_block", start_block),
                        ("blocks", blocks)):
        Path(f"{rdir}/{attr}").write_text(str(value))
    kmsg("start")
    began = time.monotonic()
    err = dev_write_errno(Path(rdir), Path(HB))
    seconds = round(time.monotonic() - began, 2)
    if err:
        os.rmdir(rdir)  # as libo2cb does after a failed start
    else:
        kmsg("started")
    return {"errno": err, "seconds": seconds}


def task_faults(ch: Channel, dev: str, dead_threshold: str) -> None:
    from ocfs2fmt.blockdev import read_volume_with_sector

    volume, desc = read_volume_with_sector(dev)
    sectors = int(Path(f"/sys/block/{os.path.basename(dev)}/size").read_text())
    # Kernel lines at every level onto the console, with their timestamps.
    Path("/proc/sys/kernel/printk").write_text("8\n")
    dmsetup("create", "hb", "--table", f"0 {sectors} linear {dev} 0")
    reg = register(int(dead_threshold))
    if reg["rc"] != 0:
        raise RuntimeError(f"register failed: {reg}")
    ch.say("registered", uuid=volume.uuid, sectors=sectors, block_bytes=desc.block_bytes,
           start_block=desc.start_block, blocks=desc.blocks)
    say = watch_livenodes(ch, volume.uuid)
    while True:
        command = ch.command()
        if command == "start":
            say("started", **start(volume.uuid, desc.block_bytes, desc.start_block,
                                   desc.blocks))
        elif command.startswith("table "):
            table = command.removeprefix("table ")
            dmsetup("load", "hb", table=table.replace(";", "\n") + "\n")
            dmsetup("suspend", "hb")
            dmsetup("resume", "hb")
            kmsg(f"fault applied: {table}")
            say("applied", table=table)
        elif command == "quit":
            say("done")
            return
