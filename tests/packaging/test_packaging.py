"""The project installed the ways its users install it (tests/packaging/lane.py builds and
caches; these tests run what a user runs from each install).

About 1.5 minutes when the inputs changed (pyfuse3 built from its sdist from pip's cache,
the .deb, the fast suite on Debian's packages), a few seconds when cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakecfs import shim
from ocfs2fmt.blockdev import read_volume
from tests.fakecfs_fixtures import fuse_usable
from tests.nodes import mkfs
from tests.packaging import lane

pytestmark = pytest.mark.slow
CLUSTER_CONF = lane.ROOT / "container" / "cluster.conf"


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    with lane.locked_workdir() as w:
        yield w


def built(fn: object, *args: object) -> object:
    try:
        return fn(*args)  # type: ignore[operator]
    except lane.Unavailable as e:
        pytest.skip(str(e))


def console_scripts() -> dict[str, str]:
    with open(lane.ROOT / "pyproject.toml", "rb") as f:
        scripts: dict[str, str] = tomllib.load(f)["project"]["scripts"]
    return scripts


def test_sdist_and_wheel_carry_the_shim_source_and_every_package(work: Path) -> None:
    sdist, wheel = built(lane.python_dist, work)  # type: ignore[misc]
    listing = lane.run(["python3", "-m", "zipfile", "-l", str(wheel)]).stdout
    for path in ("fakecfs/preload/fakecfs_preload.c", "fakecfs/shim.py", "hbctl/cli.py",
                 "ocfs2fmt/ondisk.py"):
        assert path in listing
    assert ".so" not in listing  # a pure wheel: the shim is built on first use
    members = lane.run(["tar", "tzf", str(sdist)]).stdout
    assert "debian/rules" in members and "tests/unit/test_shim.py" in members


def test_the_wheel_in_a_fresh_venv_runs_every_command(work: Path, tmp_path: Path) -> None:
    why = fuse_usable()
    if why:
        pytest.skip(why)
    _sdist, wheel = built(lane.python_dist, work)  # type: ignore[misc]
    venv = built(lane.wheel_venv, work, wheel)
    assert isinstance(venv, Path)
    bin_ = venv / "bin"
    for script in console_scripts():
        assert (bin_ / script).exists(), f"{script} not installed from the wheel"
    # Outside the checkout, so that '' on sys.path cannot find the tree's packages.
    where = lane.run([str(bin_ / "python"), "-c", "import fakecfs; print(fakecfs.__file__)"],
                     cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel's copy, not the tree

    image = tmp_path / "vol.img"
    uuid = read_volume(str(mkfs(image))).uuid
    # A fresh per-user cache: fakecfs run must build the shim from the wheel's source.
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), HBCTL_DEVICES=str(image))
    env.pop("HBCTL_SYSROOT", None)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    up = lane.run([str(bin_ / "fakecfs"), "mount", "--background", "--hb-interval-ms", "100",
                   str(mnt)], env=env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    try:
        env["HBCTL_SYSROOT"] = str(mnt)
        reg = lane.run([str(bin_ / "hbctl"), "cluster", "register", "--config",
                        str(CLUSTER_CONF), "--node", "node1", "demo"], env=env, cwd=tmp_path)
        assert reg.returncode == 0, reg.stderr
        o2cb = [str(bin_ / "fakecfs"), "run", str(mnt), "--", "o2cb",
                f"--config-file={CLUSTER_CONF}"]
        listed = lane.run([*o2cb, "list-clusters"], env=env, cwd=tmp_path)
        assert (listed.returncode, listed.stdout) == (0, "demo\n"), listed.stderr
        # cluster-status reads the emulated configfs: only through the shim is it online.
        online = lane.run([*o2cb, "cluster-status", "demo"], env=env, cwd=tmp_path)
        assert online.stdout == "Cluster 'demo' is online\n", online.stderr
        assert list((tmp_path / "cache" / "fakecfs").glob("fakecfs_preload-*.so"))
        info = lane.run([str(bin_ / "hbctl"), "info", str(image), "--json"], env=env, cwd=tmp_path)
        assert info.returncode == 0, info.stderr
        assert json.loads(info.stdout)["uuid"] == uuid
        refs = lane.run([str(bin_ / "ocfs2_hb_ctl"), "-I", "-u", uuid], env=env, cwd=tmp_path)
        assert (refs.returncode, refs.stdout) == (0, f"{uuid}: 0 refs\n"), refs.stderr
    finally:
        lane.run([str(bin_ / "fakecfs"), "umount", str(mnt)], env=env, cwd=tmp_path)


def test_pipx_install_of_the_sdist_gives_every_command(work: Path, tmp_path: Path) -> None:
    sdist, _wheel = built(lane.python_dist, work)  # type: ignore[misc]
    bin_ = built(lane.pipx_install, work, sdist)
    assert isinstance(bin_, Path)
    for script in console_scripts():
        helped = lane.run([str(bin_ / script), "--help"], cwd=tmp_path)
        if helped.returncode != 0:  # the getopt-style drop-in knows only -h
            helped = lane.run([str(bin_ / script), "-h"], cwd=tmp_path)
        assert helped.returncode == 0 and "usage" in helped.stdout.lower(), helped.stderr


def test_the_deb_installs_commands_shim_and_man_pages_beside_ocfs2_tools(work: Path) -> None:
    package = built(lane.deb, work)
    assert isinstance(package, Path)
    files = lane.run(["dpkg-deb", "-c", str(package)]).stdout
    paths = {line.split()[-1].lstrip(".") for line in files.splitlines()}
    site = "/usr/lib/python3/dist-packages/fakecfs/preload/"
    assert {site + "fakecfs_preload.c", site + "fakecfs_preload.so"} <= paths
    # The drop-in must never take ocfs2-tools' name; every other script keeps its own.
    assert "/usr/sbin/hbctl-ocfs2_hb_ctl" in paths
    assert not {"/usr/bin/ocfs2_hb_ctl", "/usr/sbin/ocfs2_hb_ctl", "/sbin/ocfs2_hb_ctl"} & paths
    for script in console_scripts():
        name, section = ("hbctl-ocfs2_hb_ctl", 8) if script == "ocfs2_hb_ctl" else (script, 1)
        assert f"/usr/share/man/man{section}/{name}.{section}.gz" in paths, name
        if script != "ocfs2_hb_ctl":
            assert f"/usr/bin/{script}" in paths
    # The prebuilt shim (stripped by dh_strip) is still the shim for this machine.
    site = built(lane.unpacked, work, package)
    assert isinstance(site, Path)
    assert shim.check(str(site / "fakecfs/preload/fakecfs_preload.so")) is None
    depends = lane.run(["dpkg-deb", "-f", str(package), "Depends"]).stdout
    for dep in ("python3-pyfuse3", "python3-trio", "python3-pyudev", "python3-sysv-ipc",
                "fuse3", "ocfs2-tools"):
        assert dep in depends


def test_the_fast_suite_passes_on_the_deb_and_debians_python_packages(work: Path) -> None:
    package = built(lane.deb, work)
    assert isinstance(package, Path)
    site = built(lane.unpacked, work, package)
    venv = built(lane.system_venv, work)
    assert isinstance(site, Path) and isinstance(venv, Path)
    env = dict(os.environ, PYTHONPATH=str(site))
    probe = lane.run([str(venv / "bin/python"), "-c", (
        "import json, importlib.metadata as md, fakecfs, pyfuse3, trio, pyudev, sysv_ipc;"
        "print(json.dumps({'fakecfs': fakecfs.__file__, 'pyfuse3': pyfuse3.__file__,"
        "'versions': {m: md.version(m) for m in ('pyfuse3','trio','pyudev','sysv_ipc')}}))")],
        env=env, cwd=work)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["fakecfs"].startswith(str(site))
    assert found["pyfuse3"].startswith("/usr/lib/python3/dist-packages/")
    assert found["versions"] == lane.BOOKWORM
    stamp = work / "suite-passed"
    if stamp.exists():
        return  # this very input already passed (the lane's cache)
    # The checkout's packages must not shadow the .deb's: the pytest script (python -m
    # would put the working folder first on sys.path), run from outside the checkout (so
    # the tests' `python -c` children do not find it either), --import-mode=append.
    env["FAKECFS_TEST_BIN"] = str(site.parents[2] / "bin")
    proc = subprocess.run(
        [str(venv / "bin/pytest"), "-q", "-x", "-p", "no:cacheprovider", "--import-mode=append",
         f"--rootdir={lane.ROOT}", "-c", str(lane.ROOT / "pyproject.toml"),
         str(lane.ROOT / "tests/unit"), str(lane.ROOT / "tests/ops")],
        cwd=work, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    stamp.write_text(proc.stdout.strip().splitlines()[-1] + "\n")
