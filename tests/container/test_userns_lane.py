"""The unprivileged lane: an ordinary user, no Docker, two nodes in user namespaces.

What a CI runner without root relies on: `unshare --user --map-root-user --mount --ipc` gives
an ordinary user a namespace where fakecfs mounts and hbctl starts and stops heartbeat on an
image file; two such nodes see each other and leave cleanly. Run as root, the test makes an
ordinary user (fakecfs-ci) and runs the nodes as that user; run as an ordinary user, it runs
them as itself. What the user runs is copied to a fresh folder first: the checkout (and the
venv in it) may sit where other users cannot read.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.lane import Volume

pytestmark = pytest.mark.mount

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
USER = "fakecfs-ci"
CLUSTER_CONF = """\
cluster:
\tnode_count = 2
\tname = demo
\theartbeat_mode = local

node:
\tip_port = 7777
\tip_address = 10.0.0.1
\tnumber = 1
\tname = node1
\tcluster = demo

node:
\tip_port = 7777
\tip_address = 10.0.0.2
\tnumber = 2
\tname = node2
\tcluster = demo
"""

# The modules a node imports; whatever they pull in from outside the standard library is
# copied next to them.
IMPORTS = ("fakecfs.cli", "fakecfs.serve", "fakecfs.daemon", "hbctl.cli", "hbctl.devices",
           "hbctl.regions", "hbctl.semaphores", "hbctl.cluster", "trio", "pyfuse3", "pyudev",
           "sysv_ipc")
LIST_MODULES = """
import importlib, os, sys, sysconfig
for name in sys.argv[1:]:
    importlib.import_module(name)
std = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
tops = set()
for mod in list(sys.modules.values()):
    f = getattr(mod, "__file__", None)
    if not f or any(os.path.realpath(f).startswith(s + "/") and "-packages" not in f
                    for s in std):
        continue
    top = mod.__name__.partition(".")[0]
    top_mod = sys.modules.get(top)
    path = getattr(top_mod, "__path__", None)
    tops.add(list(path)[0] if path else top_mod.__file__)
print("\\n".join(sorted(tops)))
"""


def ordinary_user() -> tuple[int, int] | None:
    """(uid, gid) to run the nodes as: ourselves if not root, else a made user."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        proc = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                               "/usr/sbin/nologin", USER], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            pytest.skip(f"cannot make an ordinary user: {proc.stderr.strip()}")
        pw = pwd.getpwnam(USER)
    return pw.pw_uid, pw.pw_gid


def system_python() -> str:
    """A python the ordinary user may run, of the version the copied modules were built for."""
    for cand in ("/usr/bin/python3", os.path.realpath(sys.executable)):
        proc = subprocess.run([cand, "-c", "import sys; print(sys.version_info[:2])"],
                              capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip() == str(sys.version_info[:2]):
            return cand
    pytest.skip(f"no system python {sys.version_info[:2]} for an ordinary user")


def copy_runtime(dest: Path) -> None:
    tops = subprocess.run([sys.executable, "-c", LIST_MODULES, *IMPORTS], check=True,
                          capture_output=True, text=True).stdout.split()
    std = os.path.realpath(sysconfig.get_paths()["stdlib"])
    for top in tops:
        if top.startswith(std + "/") and "-packages" not in top:
            continue
        if os.path.isdir(top):
            shutil.copytree(top, dest / os.path.basename(top),
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(top, dest)
    shutil.copy2(HERE / "userns_node.py", dest)


def as_user(ids: tuple[int, int] | None) -> list[str]:
    if ids is None:
        return []
    return ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups", "--"]


@pytest.fixture
def work() -> Iterator[Path]:
    """A folder the ordinary user can reach (pytest's tmp_path is under a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="fakecfs-userns-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_ordinary_user_runs_nodes_in_user_namespaces(work: Path) -> None:
    if not os.path.exists("/dev/fuse") or os.stat("/dev/fuse").st_mode & 0o006 != 0o006:
        pytest.skip("/dev/fuse is not usable by ordinary users (mode 0600: no udev; "
                    "make setup chmods it 0666 as udev would)")
    if shutil.which("mkfs.ocfs2") is None:
        pytest.skip("mkfs.ocfs2 missing (ocfs2-tools)")
    ids = ordinary_user()
    python = system_python()
    site = work / "site"
    site.mkdir(parents=True)
    copy_runtime(site)
    (work / "cluster.conf").write_text(CLUSTER_CONF)
    volume = Volume.make(work / "shared.img")
    before = volume.outside_heartbeat_digest()
    for path in [work, *work.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644 | (path.stat().st_mode & 0o111))
    if ids is not None:
        os.chown(work, *ids)
        os.chown(work / "shared.img", *ids)

    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(site),
           "XDG_RUNTIME_DIR": str(work), "HOME": str(work), "LANG": "C.UTF-8"}
    probe = subprocess.run([*as_user(ids), "unshare", "--user", "--map-root-user", "--mount",
                            "--ipc", "true"], env=env, capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip(f"ordinary users may not make user namespaces here: {probe.stderr}")

    def node(name: str, peer: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*as_user(ids), "unshare", "--user", "--map-root-user", "--mount", "--ipc",
             python, str(site / "userns_node.py"), str(work), name, peer],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [node("node1", "node2"), node("node2", "node1")]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, f"{out}\n{err}"
    results = [json.loads(out) for out, _ in outs]
    for res in results:
        me = res["node"]
        # Root in the namespace is the ordinary user outside it.
        outside = ids[0] if ids else os.geteuid()
        assert res["uid_map"].split()[:2] == ["0", str(outside)]
        assert res["start"].endswith(", 1 refs") and volume.uuid in res["start"]
        (cluster,) = res["status"]["clusters"]
        assert cluster["local_node"] == me
        (region,) = cluster["regions"]
        assert region["uuid"] == volume.uuid and region["refs"] == 1
        assert {n["name"] for n in region["live_nodes"]} == {"node1", "node2"}
        assert res["stop"] == f"{volume.uuid}: heartbeat stopped"
        assert res["after_stop"]["clusters"][0]["regions"] == []
    assert volume.generations() == {1: 0, 2: 0}  # both left cleanly
    assert volume.outside_heartbeat_digest() == before
