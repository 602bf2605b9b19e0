"""The Docker CI lane: a real engine, the node image, a three-node cluster, and what users see.

    python -m tests.container.lane        (root; installs docker.io if missing)

It starts a private dockerd, builds the base image (debootstrap, cached) and the node image,
runs three nodes (compose when the ``docker compose`` plugin exists, else ``docker run``;
hostnames node1..3, ``--network none``, one mkfs.ocfs2 image in a shared bind-mounted folder)
and checks: every node sees every node live; ``docker kill`` of one is declared dead by the
others after about dead_threshold intervals; ``docker stop`` of one is dropped at once (clean
leave, generation 0 on disk); the killed node started again comes back live; ``docker pause``
of it (a real freeze) is declared dead too, and on ``docker unpause`` it fences (its write
timeout passed while frozen); each node's
regions and refs are right, through hbctl and the C ocfs2_hb_ctl; the image outside the
heartbeat area is byte-identical before and after; each privilege profile runs a node, and
missing flags give errors that name them. It prints how long each node took to see the
others and to notice the death, next to the configured interval and dead threshold, and
removes everything it started. Exit status 0 when it passed or was skipped (the reason is
printed: no engine can be had here), 1 when it failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.container.dockerd import CACHE, Engine, Skip, engine

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "container"
BASE_TAG = "local/bookworm-minbase"
IMAGE_TAG = "fakecfs-node:lane"
PREFIX = "fakecfs-lane"
NODES = ("node1", "node2", "node3")
INTERVAL_MS = 500
DEAD_THRESHOLD = 7

# Privilege profiles: the flags a user passes, and what the entrypoint makes of them.
PROFILES = {
    "caps": ["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN", "--cap-add", "IPC_OWNER"],
    "sys_admin": ["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN"],
    "userns": ["--device", "/dev/fuse", "--security-opt", "seccomp=unconfined"],
}
# In plain `docker run` mode each node uses another profile, so the cluster mixes all three.
NODE_PROFILE = dict(zip(NODES, PROFILES, strict=True))

# Runs in a node (python of the image): prints "time live-node-numbers" whenever they change.
WATCH = r"""
import os, sys, time
with open("/run/fakecfs-node/ready") as f:
    print("ready", f.read(), flush=True)
path = os.path.join(os.environ["HBCTL_SYSROOT"], "sys/kernel/debug/o2hb", sys.argv[1],
                    "livenodes")
last = ()
while True:
    try:
        with open(path) as f:
            now = tuple(int(x) for x in f.read().split())
    except OSError:
        now = None
    if now != last:
        print(time.time(), "" if now is None else ",".join(map(str, now)), flush=True)
        last = now
    time.sleep(0.01)
"""


class LaneFailure(AssertionError):
    pass


def log(msg: str) -> None:
    print(f"lane: {msg}", flush=True)


# -- the shared image --------------------------------------------------------------------


@dataclass(frozen=True)
class Volume:
    path: Path
    uuid: str
    hb_start: int  # byte offset of the heartbeat slots
    hb_len: int

    @classmethod
    def make(cls, path: Path) -> Volume:
        subprocess.run(["truncate", "-s", "128M", str(path)], check=True)
        subprocess.run(
            ["mkfs.ocfs2", "-q", "-F", "-b", "4096", "-C", "4096", "-N", "4", "-J", "size=4M",
             "-L", "lane", "--cluster-stack=o2cb", "--cluster-name=demo", str(path)],
            check=True, stdin=subprocess.DEVNULL, capture_output=True)
        from hbctl.devices import read_volume_with_sector

        volume, desc = read_volume_with_sector(str(path))
        return cls(path, volume.uuid, desc.start_block * desc.block_bytes,
                   desc.blocks * desc.block_bytes)

    def outside_heartbeat_digest(self) -> str:
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            h.update(f.read(self.hb_start))
            f.seek(self.hb_start + self.hb_len)
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    def generations(self) -> dict[int, int]:
        """Slot -> generation of every non-empty heartbeat block, as debugfs.ocfs2 decodes."""
        out = subprocess.run(["debugfs.ocfs2", "-R", "hb", str(self.path)], check=True,
                             capture_output=True, text=True).stdout
        rows = re.findall(r"^\s*(\d+):\s+(\d+)\s+[0-9a-f]+\s+([0-9a-f]+)\s", out, re.M)
        return {int(node): int(gen, 16) for _, node, gen in rows}


# -- watching a node ---------------------------------------------------------------------


class Watch:
    """A stream of (wall time, live node numbers) from one node, read in a thread."""

    def __init__(self, eng: Engine, container: str, uuid: str, since: float = 0.0) -> None:
        self.events: list[tuple[float, frozenset[int] | None]] = []
        self.ready: dict[str, float] = {}  # the entrypoint's step times (wall clock)
        self.cond = threading.Condition()
        # Only once the node is up is there a namespace for node-exec to enter. A restarted
        # container still has its last run's ready file until the entrypoint removes it, so
        # a ready file older than ``since`` (the start, wall clock) does not count.
        self.proc = subprocess.Popen(
            [eng.docker, "exec", container, "sh", "-c",
             "R=/run/fakecfs-node/ready; "
             'while [ ! -e $R ] || [ "$(stat -c %Y $R)" -lt "$2" ]; do sleep 0.02; done; '
             'exec node-exec /opt/fakecfs/bin/python -u -c "$0" "$1"', WATCH, uuid,
             str(int(since))],
            env=eng.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t, _, nodes = line.strip().partition(" ")
            if t == "ready":
                with self.cond:
                    self.ready = {k: v for k, v in json.loads(nodes).items() if k != "node"}
                continue
            live = frozenset(int(n) for n in nodes.split(",") if n) if nodes else None
            with self.cond:
                self.events.append((float(t), live))
                self.cond.notify_all()

    def first(self, want: set[int], after: float = 0.0, timeout: float = 60) -> float:
        """Wall time at which the node first saw exactly ``want`` live after ``after``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, live in self.events:
                    if t >= after and live == want:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LaneFailure(f"no node saw {sorted(want)} live within {timeout} s; "
                                      f"events {self.events[-5:]}")
                self.cond.wait(left)

    def appeared(self, timeout: float = 60) -> float:
        """Wall time of the first event with a live set (the node's region is up)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, live in self.events:
                    if live:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    self.proc.kill()
                    err = self.proc.stderr.read() if self.proc.stderr else ""
                    raise LaneFailure(f"the region never came up; events {self.events}; "
                                      f"watcher: {err}")
                self.cond.wait(left)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# -- the cluster -------------------------------------------------------------------------


@dataclass
class Cluster:
    eng: Engine
    shared: Path
    compose: list[str] | None  # the compose command, or None for plain docker run
    ids: dict[str, str] = field(default_factory=dict)  # node name -> container id/name

    def node_env(self) -> list[str]:
        return ["-e", "HEARTBEAT_DEVICE=/shared/ocfs2.img",
                "-e", f"FAKECFS_HB_INTERVAL_MS={INTERVAL_MS}",
                "-e", f"O2CB_HEARTBEAT_THRESHOLD={DEAD_THRESHOLD}"]

    def compose_env(self) -> dict[str, str]:
        return dict(self.eng.env, FAKECFS_IMAGE=IMAGE_TAG, FAKECFS_SHARED=str(self.shared),
                    FAKECFS_HB_INTERVAL_MS=str(INTERVAL_MS),
                    O2CB_HEARTBEAT_THRESHOLD=str(DEAD_THRESHOLD))

    def start_node(self, name: str) -> float:
        """Start one node; the wall time its container was asked to start."""
        t = time.time()
        if self.compose is not None:
            subprocess.run([*self.compose, "up", "-d", "--no-recreate", name],
                           env=self.compose_env(), check=True, capture_output=True, timeout=300)
            self.ids[name] = subprocess.run(
                [*self.compose, "ps", "-q", name], env=self.compose_env(), check=True,
                capture_output=True, text=True, timeout=300).stdout.strip()
        else:
            cid = f"{PREFIX}-{name}"
            self.eng.run("run", "-d", "--name", cid, "--hostname", name, "--network", "none",
                         *PROFILES[NODE_PROFILE[name]],
                         "-v", f"{CONTAINER / 'cluster.conf'}:/etc/ocfs2/cluster.conf:ro",
                         "-v", f"{self.shared}:/shared", *self.node_env(), IMAGE_TAG)
            self.ids[name] = cid
        return t

    def status(self, name: str) -> dict[str, object]:
        out = self.eng.run("exec", self.ids[name], "hbctl", "status", "--json").stdout
        result: dict[str, object] = json.loads(out)
        return result

    def c_refs(self, name: str, uuid: str) -> str:
        return self.eng.run("exec", self.ids[name], "node-exec", "ocfs2_hb_ctl", "-I", "-u",
                            uuid).stdout.strip()

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n" + self.eng.run("logs", i, check=False).stdout
                         + self.eng.run("logs", i, check=False).stderr
                         for n, i in self.ids.items())

    def remove(self) -> None:
        if self.compose is not None:
            subprocess.run([*self.compose, "down", "-v", "-t", "5"], env=self.compose_env(),
                           check=False, capture_output=True, timeout=300)
        names = [f"{PREFIX}-{n}" for n in NODES] + list(self.ids.values())
        self.eng.run("rm", "-f", *names, check=False)


def compose_command(eng: Engine) -> list[str] | None:
    """The compose command if a compose exists (FAKECFS_LANE_COMPOSE=0: never)."""
    if os.environ.get("FAKECFS_LANE_COMPOSE") == "0":
        return None
    project = ["-p", PREFIX, "-f", str(CONTAINER / "compose.yaml")]
    if eng.run("compose", "version", check=False).returncode == 0:
        return [eng.docker, "compose", *project]
    v1 = shutil.which("docker-compose")  # Debian's compose 1.29 reads the same file
    if v1 and os.environ.get("FAKECFS_LANE_COMPOSE") != "plugin":
        return [v1, *project]
    return None


# -- the checks --------------------------------------------------------------------------


@dataclass
class Timings:
    up: dict[str, float] = field(default_factory=dict)  # docker run -> node ready
    hb_start: dict[str, float] = field(default_factory=dict)  # `hbctl start` (waits steady)
    sees_all: dict[str, float] = field(default_factory=dict)  # docker run -> all three live
    kill_noticed: dict[str, float] = field(default_factory=dict)
    stop_noticed: dict[str, float] = field(default_factory=dict)
    back: dict[str, float] = field(default_factory=dict)  # restart -> seen live again
    pause_noticed: dict[str, float] = field(default_factory=dict)  # docker pause -> dead
    phases: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        i = INTERVAL_MS / 1000
        lines = [
            f"interval {INTERVAL_MS} ms, dead threshold {DEAD_THRESHOLD}: a death is declared "
            f"{DEAD_THRESHOLD - 1}-{DEAD_THRESHOLD} intervals "
            f"({(DEAD_THRESHOLD - 1) * i:.1f}-{DEAD_THRESHOLD * i:.1f} s) after the last write",
            "up: docker run -> node ready; hb start: `hbctl start` (returns once steady); "
            "sees all: docker run -> it sees all three live; noticed: from docker kill/stop/pause; "
            "restart seen: docker start -> seen live (by node1, by itself)",
            f"{'node':6} {'up':>8} {'hb start':>9} {'sees all':>9} {'kill noticed':>18} "
            f"{'stop noticed':>18} {'restart seen':>13} {'pause noticed':>18}",
        ]
        for n in NODES:
            def cell(d: dict[str, float], n: str = n, iv: bool = False) -> str:
                if n not in d:
                    return "-"
                return f"{d[n]:.2f} s" + (f" ({d[n] / i:.1f} iv)" if iv else "")
            lines.append(f"{n:6} {cell(self.up):>8} {cell(self.hb_start):>9} "
                         f"{cell(self.sees_all):>9} {cell(self.kill_noticed, iv=True):>18} "
                         f"{cell(self.stop_noticed, iv=True):>18} {cell(self.back):>13} "
                         f"{cell(self.pause_noticed, iv=True):>18}")
        lines.append("phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.phases.items()))
        return "\n".join(lines)


def check(cond: object, what: str) -> None:
    if not cond:
        raise LaneFailure(what)


def check_status(cluster: Cluster, name: str, uuid: str, live: set[str]) -> None:
    """hbctl's view in one node: the cluster, one region with one ref, the live nodes."""
    st = cluster.status(name)
    clusters = st["clusters"]
    assert isinstance(clusters, list)
    check(len(clusters) == 1 and clusters[0]["cluster"] == "demo", f"{name}: {st}")
    c = clusters[0]
    check(c["local_node"] == name, f"{name}: local node {c['local_node']}")
    check(c["dead_threshold"] == DEAD_THRESHOLD, f"{name}: dead threshold {c}")
    regions = c["regions"]
    check(len(regions) == 1 and regions[0]["uuid"] == uuid, f"{name}: regions {regions}")
    check(regions[0]["refs"] == 1, f"{name}: refs {regions[0]['refs']}")
    names = {n["name"] for n in regions[0]["live_nodes"]}
    check(names == live, f"{name}: live {sorted(names)}, expected {sorted(live)}")
    # The unmodified C tool reads the same semaphore.
    check(cluster.c_refs(name, uuid) == f"{uuid}: 1 refs", f"{name}: ocfs2_hb_ctl -I")


def check_profiles(eng: Engine) -> None:
    """Every privilege profile makes a node; missing flags are named in the error."""
    conf = f"{CONTAINER / 'cluster.conf'}:/etc/ocfs2/cluster.conf:ro"
    for profile, flags in PROFILES.items():
        proc = eng.run("run", "--rm", "--hostname", "node2", "--network", "none", *flags,
                       "-v", conf, IMAGE_TAG, "sh", "-c",
                       "hbctl cluster show --json && ls /sys/kernel/config/cluster/demo/node",
                       check=False)
        check(proc.returncode == 0 and "node3" in proc.stdout,
              f"profile {profile}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    # O2CB_BRINGUP=init-script: Debian's /etc/init.d/o2cb online registers the cluster,
    # in every profile (the user-namespace ones run fakecfs run inside their namespace).
    for profile, flags in PROFILES.items():
        proc = eng.run("run", "--rm", "--hostname", "node2", "--network", "none", *flags,
                       "-v", conf, "-e", "O2CB_BRINGUP=init-script", IMAGE_TAG, "sh", "-c",
                       "ls /sys/kernel/config/cluster/demo/node && "
                       "cat $HBCTL_SYSROOT/fakecfs/modules",
                       check=False)
        check(proc.returncode == 0 and 'Registering O2CB cluster "demo": OK' in proc.stdout
              and "node3" in proc.stdout and "ocfs2_dlmfs" in proc.stdout,
              f"profile {profile}, init script: exit {proc.returncode}\n"
              f"{proc.stdout}{proc.stderr}")
    proc = eng.run("run", "--rm", "--network", "none", "--cap-add", "SYS_ADMIN", IMAGE_TAG,
                   "true", check=False)
    check(proc.returncode != 0 and "--device /dev/fuse" in proc.stderr,
          f"no /dev/fuse: {proc.stderr}")
    proc = eng.run("run", "--rm", "--network", "none", "--device", "/dev/fuse", IMAGE_TAG,
                   "true", check=False)
    check(proc.returncode != 0 and "--cap-add SYS_ADMIN" in proc.stderr
          and "seccomp=unconfined" in proc.stderr, f"no privilege: {proc.stderr}")


@contextlib.contextmanager
def watching() -> Iterator[dict[str, Watch]]:
    watches: dict[str, Watch] = {}
    try:
        yield watches
    finally:
        for w in watches.values():
            w.close()


def scenario(eng: Engine, cluster: Cluster, volume: Volume, t: Timings) -> None:
    """Three nodes: all live, kill one, stop one, restart the killed one, stop all."""
    nums = {n: i + 1 for i, n in enumerate(NODES)}
    everyone = set(nums.values())
    before = volume.outside_heartbeat_digest()
    with watching() as watches:
        started = {}
        for n in NODES:
            started[n] = cluster.start_node(n)
            watches[n] = Watch(eng, cluster.ids[n], volume.uuid)
        for n in NODES:
            watches[n].appeared()
            ready = watches[n].ready
            t.up[n] = ready["ready"] - started[n]
            t.hb_start[n] = ready["ready"] - ready["heartbeat_start"]
            # Seen no later than the watcher's first look, which comes just after ready.
            t.sees_all[n] = watches[n].first(everyone) - started[n]
        for n in NODES:
            check_status(cluster, n, volume.uuid, set(NODES))
        log("all three nodes see all three live")

        # docker kill: no clean leave; the others declare the death.
        victim, leaver, keeper = NODES[2], NODES[1], NODES[0]
        watches[victim].close()
        killed = time.time()
        eng.run("kill", cluster.ids[victim])
        for n in (keeper, leaver):
            t.kill_noticed[n] = watches[n].first(everyone - {nums[victim]}, killed) - killed
        # Never sooner than dead_threshold - 1 intervals after the victim's last write (one
        # interval of slack: on a loaded machine that write may come late before the kill).
        lo, hi = DEAD_THRESHOLD - 2, DEAD_THRESHOLD * 2 + 4
        for n, d in t.kill_noticed.items():
            iv = d * 1000 / INTERVAL_MS
            check(lo <= iv <= hi, f"{n} noticed the kill after {iv:.1f} intervals, "
                                  f"expected {lo}-{hi}")
        check(volume.generations().get(nums[victim], 0) != 0,
              "the killed node's last block should keep its generation")
        log(f"docker kill {victim}: declared dead by the others")

        # docker stop: SIGTERM -> hbctl stop + fakecfs's generation-0 block -> dropped at once.
        watches[leaver].close()
        stopping = time.time()
        eng.run("stop", "-t", "20", cluster.ids[leaver])
        t.stop_noticed[keeper] = (watches[keeper].first({nums[keeper]}, stopping) - stopping)
        iv = t.stop_noticed[keeper] * 1000 / INTERVAL_MS
        check(iv < DEAD_THRESHOLD - 1, f"clean leave noticed after {iv:.1f} intervals: "
                                       "as slow as a death")
        check(volume.generations().get(nums[leaver]) == 0,
              "a clean leave writes generation 0 in the node's slot")
        log(f"docker stop {leaver}: dropped at once (clean leave)")

        # The killed node comes back.
        restarted = time.time()
        eng.run("start", cluster.ids[victim])
        watches[victim] = Watch(eng, cluster.ids[victim], volume.uuid, since=restarted)
        back = watches[keeper].first({nums[keeper], nums[victim]}, restarted)
        t.back[keeper] = back - restarted
        t.back[victim] = watches[victim].first({nums[keeper], nums[victim]}) - restarted
        for n in (keeper, victim):
            check_status(cluster, n, volume.uuid, {keeper, victim})
        log(f"docker start {victim}: live again")

        # docker pause: a real freeze (the cgroup freezer stops every process of the node).
        # The keeper declares it dead on the kernel's schedule; on unpause its write timeout
        # (dead_threshold - 1 intervals since its last good write, passed by then) fires
        # before any I/O and it fences: heartbeat stops without a clean leave.
        watches[victim].close()
        paused = time.time()
        eng.run("pause", cluster.ids[victim])
        t.pause_noticed[keeper] = watches[keeper].first({nums[keeper]}, paused) - paused
        iv = t.pause_noticed[keeper] * 1000 / INTERVAL_MS
        check(lo <= iv <= hi, f"{keeper} noticed the pause after {iv:.1f} intervals, "
                              f"expected {lo}-{hi}")
        eng.run("unpause", cluster.ids[victim])
        fenced = wait_event(eng, cluster.ids[victim], "fenced", 60)
        check("fencing this system" in fenced["message"], f"fenced event: {fenced}")
        check(volume.generations().get(nums[victim], 0) != 0,
              "a fenced node leaves its last block (no generation 0)")
        log(f"docker pause/unpause {victim}: declared dead, fenced on unpause")

        for n in (keeper, victim):
            watches[n].close()
            eng.run("stop", "-t", "20", cluster.ids[n])
    gens = volume.generations()
    check(gens.get(nums[victim], 0) != 0 and
          all(g == 0 for n, g in gens.items() if n != nums[victim]),
          f"every node but the fenced one left cleanly at the end: {gens}")
    check(volume.outside_heartbeat_digest() == before,
          "the image changed outside the heartbeat area")
    log("image outside the heartbeat area unchanged; every slot but the fenced one left "
        "cleanly")


def wait_event(eng: Engine, container: str, kind: str, timeout: float) -> dict[str, object]:
    """The node's first event of ``kind`` (hbctl events, inside the node), waiting for it."""
    deadline = time.monotonic() + timeout
    while True:
        out = eng.run("exec", container, "hbctl", "events", "--json", "--kind", kind,
                      check=False).stdout
        lines = out.splitlines()
        if lines:
            event: dict[str, object] = json.loads(lines[0])
            return event
        if time.monotonic() > deadline:
            raise LaneFailure(f"{container}: no {kind} event within {timeout} s")
        time.sleep(INTERVAL_MS / 1000)


@contextlib.contextmanager
def lane_lock() -> Iterator[None]:
    """One lane at a time per machine: they share dockerd's cache and container names."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lane.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def run_lane() -> Timings:
    """The whole lane; Skip when no engine can be had, LaneFailure when a check fails."""
    if os.geteuid() != 0:
        raise Skip("the Docker lane needs root (to install docker.io and start dockerd)")
    if not os.path.exists("/dev/fuse"):
        raise Skip("/dev/fuse does not exist on this host")
    if shutil.which("mkfs.ocfs2") is None:
        raise Skip("mkfs.ocfs2 missing (ocfs2-tools; make setup installs it)")
    t = Timings()
    t0 = time.monotonic()
    with lane_lock():
        t.phases["waiting for another lane"] = time.monotonic() - t0
        return _locked_lane(t, t0)


def _locked_lane(t: Timings, t0: float) -> Timings:
    """Engine, base, image, profiles, cluster: the lane proper, holding the lane lock."""
    mark = time.monotonic()
    with engine() as eng, tempfile.TemporaryDirectory(prefix="fakecfs-lane-") as d:
        t.phases["engine"] = time.monotonic() - mark
        env = dict(eng.env, DOCKER=eng.docker)
        mark = time.monotonic()
        base = subprocess.run([str(CONTAINER / "make-base.sh"), BASE_TAG], env=env,
                              capture_output=True, text=True, check=False)
        if base.returncode != 0:
            raise Skip(f"no base image (debootstrap failed; no Debian mirror?): "
                       f"{base.stderr.strip()[-400:]}")
        t.phases["base"] = time.monotonic() - mark
        mark = time.monotonic()
        build = subprocess.run(
            [str(CONTAINER / "build.sh"), "--base", BASE_TAG, "--tag", IMAGE_TAG],
            env=dict(env, PYTHON=sys.executable), capture_output=True, text=True, check=False)
        if build.returncode != 0:
            raise LaneFailure(f"image build failed:\n{build.stdout[-2000:]}"
                              f"{build.stderr[-2000:]}")
        t.phases["build"] = time.monotonic() - mark
        # Each build leaves the previous image dangling: keep the cache from growing.
        eng.run("image", "prune", "-f", check=False)
        log(f"engine, base and image ready ({time.monotonic() - t0:.0f} s)")

        shared = Path(d) / "shared"
        shared.mkdir()
        volume = Volume.make(shared / "ocfs2.img")
        mark = time.monotonic()
        check_profiles(eng)
        t.phases["profiles"] = time.monotonic() - mark
        log("each privilege profile runs a node, also brought up by the init script; "
            "missing flags are named")

        cluster = Cluster(eng, shared, compose_command(eng))
        log("cluster via " + (os.path.basename(cluster.compose[0]) + " compose"
                              if cluster.compose else
                              "docker run (profiles: " + ", ".join(
                                  f"{n} {p}" for n, p in NODE_PROFILE.items()) + ")"))
        cluster.remove()  # leftovers of a killed earlier run
        mark = time.monotonic()
        try:
            scenario(eng, cluster, volume, t)
        except BaseException:
            log("node logs:\n" + cluster.logs())
            raise
        finally:
            cluster.remove()
        t.phases["cluster"] = time.monotonic() - mark
    t.phases["total"] = time.monotonic() - t0
    return t


def main() -> int:
    try:
        timings = run_lane()
    except Skip as exc:  # not a failure: this machine cannot run an engine
        print(f"lane: SKIPPED: {exc}", flush=True)
        return 0
    except LaneFailure as exc:
        print(f"lane: FAILED: {exc}", flush=True)
        return 1
    print(timings.table(), flush=True)
    print("lane: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
