"""``ocfs2_hb_ctl`` wall time: our drop-in against Debian's C tool, on one fakecfs kernel.

The outer half (:func:`measure`, in the caller's namespaces) mounts fakecfs with a short
heartbeat interval, registers cluster ``bench`` from a cluster.conf, makes a real
mkfs.ocfs2 image and attaches it to a loop device, so both tools find the volume by UUID
(the C tool scans /proc/partitions; ours scans block devices the same way).

The inner half (``python -m bench.hbbench INNER-ARGS``) runs where the C tool sees the
emulated surfaces at their real paths with the statfs shim preloaded: under
``fakecfs run MOUNTPOINT --node benchnode`` (private mount, IPC and UTS namespaces), or,
where this checkout has no ``fakecfs run``, under ``unshare --mount --propagation private
--ipc`` with the binds made here (the mount's ``sys/kernel/config`` on a tmpfs-covered
``/sys/kernel/config``, its ``sys/fs`` on ``/sys/fs``). Ours reads the same mount through
HBCTL_SYSROOT. Both share that namespace's semaphores, which vanish with it: the host's
are never touched. It times each command by spawning it from the same Python process and
waiting for it, alternating which tool goes first, and prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .fusebench import FAKECFS, is_mounted, lazy_unmount
from .results import Comparison

C_TOOL = "/usr/sbin/ocfs2_hb_ctl"
ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "fakecfs" / "preload" / "fakecfs_preload.so"
HBFLOOR = Path(__file__).resolve().parent / "hbfloor.py"
VENV_BIN = Path(sys.executable).parent
OURS = str(VENV_BIN / "ocfs2_hb_ctl")
HBCTL = str(VENV_BIN / "hbctl")
CLUSTER = "bench"
NODE = "benchnode"
SERVICE = "bench"
HB_INTERVAL_MS = 25
WALL_TIME_TARGET = 3.0  # ours <= 3x the C tool's wall time
PATH_ENV = "/usr/sbin:/usr/bin:/sbin:/bin"

CLUSTER_CONF = f"""\
cluster:
\tnode_count = 1
\theartbeat_mode = local
\tname = {CLUSTER}

node:
\tip_port = 7777
\tip_address = 127.0.0.1
\tnumber = 0
\tname = {NODE}
\tcluster = {CLUSTER}
"""


def missing_tools() -> str | None:
    """None when the hb_ctl bench can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (mount namespaces, loop devices)"
    for tool in (C_TOOL, "/usr/bin/unshare", "/sbin/mkfs.ocfs2"):
        if not os.path.exists(tool) and not os.path.exists(tool.replace("/sbin/", "/usr/sbin/")):
            return f"{tool} is missing"
    if not SHIM.exists():
        return f"{SHIM} is missing (make setup builds it)"
    return None


# -- outer: the environment -----------------------------------------------------


def _has_fakecfs_run() -> bool:
    import importlib.util

    return importlib.util.find_spec("fakecfs.run") is not None


def mkfs(image: Path) -> None:
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(
        ["mkfs.ocfs2", "-q", "-F", "-b", "4096", "-C", "4096", "-N", "4", "-J", "size=4M",
         "-L", "bench", "--cluster-stack=o2cb", f"--cluster-name={CLUSTER}", str(image)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )


@contextmanager
def loop_device(image: Path) -> Iterator[str | None]:
    """The image on a loop device (``losetup -f --show``), or None where there is none."""
    res = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
    if res.returncode != 0:
        yield None
        return
    dev = res.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)


@contextmanager
def registered_kernel(mountpoint: Path, conf: Path) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run([FAKECFS, "mount", "--background", "--hb-interval-ms", str(HB_INTERVAL_MS),
                    str(mountpoint)], check=True, capture_output=True, text=True)
    try:
        conf.write_text(CLUSTER_CONF)
        subprocess.run([HBCTL, "cluster", "register", "--config", str(conf), "--node",
                        NODE, CLUSTER], check=True, capture_output=True, text=True,
                       env={**os.environ, "HBCTL_SYSROOT": str(mountpoint)})
        yield mountpoint
    finally:
        subprocess.run([FAKECFS, "umount", str(mountpoint)], check=False, capture_output=True)
        lazy_unmount(mountpoint)


def measure(workdir: Path, rounds: int, cycles: int) -> tuple[list[Comparison], dict[str, Any]]:
    """Comparisons of -I -u, -S, -K and the -S/-K cycle; plus where our start-up goes."""
    from ocfs2fmt.blockdev import read_volume

    image = workdir / "bench.img"
    mkfs(image)
    uuid = read_volume(str(image)).uuid
    with registered_kernel(workdir / "hbkernel", workdir / "cluster.conf") as mnt, \
            loop_device(image) as dev:
        via_run = _has_fakecfs_run()
        args = {"mountpoint": str(mnt), "uuid": uuid, "device": dev, "image": str(image),
                "rounds": rounds, "cycles": cycles, "via_run": via_run}
        inner = [sys.executable, "-m", "bench.hbbench", json.dumps(args)]
        if via_run:
            wrapper = [FAKECFS, "run", str(mnt), "--node", NODE, "--"]
        else:
            wrapper = ["unshare", "--mount", "--propagation", "private", "--ipc", "--"]
        res = subprocess.run([*wrapper, *inner], cwd=ROOT, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"hb_ctl bench failed:\n{res.stderr}")
        data = json.loads(res.stdout)
    how = ("-u UUID, volume on a loop device" if dev else
           "-d IMAGE (no loop device here)")
    how += ", in fakecfs run" if via_run else ", in unshare"
    group = f"ocfs2_hb_ctl wall time, median ms ({how}; lower is better)"
    names = {
        "info": "-I -u UUID",
        "start": f"-S (blocks until steady, hb interval {HB_INTERVAL_MS} ms)",
        "stop": "-K",
        "cycle": "-S then -K",
    }
    comps = [Comparison(group, names[k], "ms", data[k]["ours"], data[k]["c"],
                        target=WALL_TIME_TARGET) for k in names]
    return comps, data["breakdown"]


# -- inner: in the private mount + IPC namespace ------------------------------------


def _bind_surfaces(mnt: str) -> None:
    # No configfs in this kernel: a tmpfs over /sys/kernel gives config/ a mount point.
    subprocess.run(["mount", "-t", "tmpfs", "bench", "/sys/kernel"], check=True)
    os.mkdir("/sys/kernel/config")
    subprocess.run(["mount", "--bind", f"{mnt}/sys/kernel/config", "/sys/kernel/config"],
                   check=True)
    subprocess.run(["mount", "--bind", f"{mnt}/sys/fs", "/sys/fs"], check=True)


def _timed(argv: list[str], env: dict[str, str], argv0: str = "ocfs2_hb_ctl") -> float:
    """Wall time of one run in ms (spawn to exit); fails loudly on a non-zero exit."""
    t0 = time.perf_counter_ns()
    res = subprocess.run([argv0, *argv[1:]], executable=argv[0], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = (time.perf_counter_ns() - t0) / 1e6
    if res.returncode != 0:
        raise RuntimeError(f"{argv} exited {res.returncode}: {res.stderr.strip()}")
    return elapsed


def _inner(args: dict[str, Any]) -> dict[str, Any]:
    mnt, uuid = args["mountpoint"], args["uuid"]
    c_env = {"PATH": PATH_ENV, "HOME": "/", "LD_PRELOAD": str(SHIM)}
    if args["via_run"]:  # fakecfs run made the binds and chose the shim and its settings
        c_env.update({k: v for k, v in os.environ.items()
                      if k == "LD_PRELOAD" or k.startswith("FAKECFS_")})
    else:
        _bind_surfaces(mnt)
    our_env = {"PATH": PATH_ENV, "HOME": "/", "HBCTL_SYSROOT": mnt,
               "HBCTL_DEVICES": "" if args["device"] else args["image"]}
    target = ["-u", uuid] if args["device"] else ["-d", args["image"]]
    tools = {"c": (C_TOOL, c_env), "ours": (OURS, our_env)}
    region = Path(mnt, "sys/kernel/config/cluster", CLUSTER, "heartbeat", uuid)

    # Same answer from both before anything is timed.
    outs = {name: subprocess.run([exe, "-I", "-u", uuid], env=env, capture_output=True,
                                 text=True).stdout for name, (exe, env) in tools.items()}
    outs["floor"] = subprocess.run([sys.executable, "-I", "-S", str(HBFLOOR), uuid],
                                   env=our_env, capture_output=True, text=True).stdout
    if not outs["c"] or len(set(outs.values())) != 1:
        raise RuntimeError(f"-I answers differ: {outs}")

    times: dict[str, dict[str, list[float]]] = {
        k: {"c": [], "ours": []} for k in ("info", "start", "stop", "cycle")}
    for exe, env in tools.values():  # warm the page cache for both
        _timed([exe, "-I", "-u", uuid], env)
    for r in range(args["rounds"]):
        for name in (("c", "ours") if r % 2 == 0 else ("ours", "c")):
            exe, env = tools[name]
            times["info"][name].append(_timed([exe, "-I", "-u", uuid], env))
    for r in range(args["cycles"]):
        for name in (("c", "ours") if r % 2 == 0 else ("ours", "c")):
            exe, env = tools[name]
            start = _timed([exe, "-S", *target, SERVICE], env)
            if not region.is_dir():
                raise RuntimeError(f"{name} -S left no region {region}")
            stop = _timed([exe, "-K", *target, SERVICE], env)
            if region.exists():
                raise RuntimeError(f"{name} -K left the region {region} behind")
            times["start"][name].append(start)
            times["stop"][name].append(stop)
            times["cycle"][name].append(start + stop)
    return {**times, "breakdown": _startup_breakdown(our_env, c_env, uuid, args["rounds"])}


def _startup_breakdown(env: dict[str, str], c_env: dict[str, str], uuid: str,
                       rounds: int) -> dict[str, float]:
    """Where our -I -u's wall time goes, in cumulative steps (median ms of each)."""
    py = sys.executable
    steps = {
        "python -I -S -c pass (bare interpreter)": [py, "-I", "-S", "-c", "pass"],
        "python -c pass (+ site, venv, editable-install finder)": [py, "-c", "pass"],
        "python -c 'import hbctl.compat'": [py, "-c", "import hbctl.compat"],
        "ocfs2_hb_ctl -I -u UUID (whole run)": [OURS, "-I", "-u", uuid],
        "floor: -I's work alone, python -I -S (bench/hbfloor.py)":
            [py, "-I", "-S", str(HBFLOOR), uuid],
        "C ocfs2_hb_ctl -I -u UUID": [C_TOOL, "-I", "-u", uuid],
    }
    out: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for k, argv in steps.items():
            out[k].append(_timed(argv, c_env if argv[0] == C_TOOL else env, argv0=argv[0]))
    return {k: sorted(v)[len(v) // 2] for k, v in out.items()}


def main() -> int:
    p = argparse.ArgumentParser(description="inner half of the ocfs2_hb_ctl bench "
                                "(run by python -m bench inside unshare)")
    p.add_argument("args", help="JSON: mountpoint, uuid, device, image, rounds, cycles")
    ns = p.parse_args()
    if not is_mounted(Path(json.loads(ns.args)["mountpoint"])):
        print("the fakecfs mount is not visible here", file=sys.stderr)
        return 1
    with suppress(BrokenPipeError):
        print(json.dumps(_inner(json.loads(ns.args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
