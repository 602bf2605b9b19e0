"""hbctl and our ocfs2_hb_ctl end to end against a real fakecfs mount, in a private IPC
namespace: register a cluster, start by device and by UUID, count references, stop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fakecfs_fixtures import VENV_BIN, read_attr
from tests.ipcns import IpcNamespace, ipc_namespace
from tests.nodes import Region, mkfs

CONF = """\
cluster:
\tnode_count = 2
\theartbeat_mode = local
\tname = demo

node:
\tip_port = 7777
\tip_address = 127.0.0.1
\tnumber = 0
\tname = alpha
\tcluster = demo

node:
\tip_port = 7778
\tip_address = 127.0.0.2
\tnumber = 1
\tname = beta
\tcluster = demo
"""


@pytest.fixture
def ns() -> object:
    with ipc_namespace() as n:
        yield n


def tool(ns: IpcNamespace, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    name, *rest = args
    proc = ns.run(str(VENV_BIN / name), *rest, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def test_register_start_by_device_and_uuid_refs_stop(sysroot: Path, tmp_path: Path,
                                                      ns: IpcNamespace) -> None:
    image = mkfs(tmp_path / "shared.img")
    region = Region.of(image)
    conf = tmp_path / "cluster.conf"
    conf.write_text(CONF)
    env = dict(os.environ, HBCTL_SYSROOT=str(sysroot), HBCTL_DEVICES=str(image))
    cfs = sysroot / "sys/kernel/config/cluster/demo"

    rc, out, err = tool(ns, env, "hbctl", "cluster", "register", "--config", str(conf),
                        "--node", "alpha", "demo")
    assert (rc, err) == (0, ""), err
    assert read_attr(cfs / "node/alpha/local") == "1\n"
    assert read_attr(cfs / "node/beta/local") == "0\n"
    assert read_attr(cfs / "node/beta/ipv4_port") == "7778\n"
    assert read_attr(cfs / "node/beta/num") == "1\n"

    rc, out, err = tool(ns, env, "hbctl", "start", "-d", str(image))
    assert rc == 0, err
    rdir = cfs / "heartbeat" / region.uuid
    assert read_attr(rdir / "block_bytes") == f"{region.block_bytes}\n"
    assert read_attr(rdir / "start_block") == f"{region.start_block}\n"
    assert read_attr(rdir / "blocks") == "255\n"
    assert read_attr(rdir / "dev") == "shared.img\n"
    assert read_attr(sysroot / "sys/kernel/debug/o2hb" / region.uuid / "livenodes") == "0 \n"

    rc, out, err = tool(ns, env, "hbctl", "start", "-u", region.uuid)
    assert rc == 0, err
    assert tool(ns, env, "ocfs2_hb_ctl", "-I", "-u", region.uuid)[1] == f"{region.uuid}: 2 refs\n"
    assert tool(ns, env, "ocfs2_hb_ctl", "-I", "-d", str(image))[1] == f"{region.uuid}: 2 refs\n"

    status = json.loads(tool(ns, env, "hbctl", "status", "--json")[1])
    (cluster,) = status["clusters"]
    assert cluster["local_node"] == "alpha"
    (reg,) = cluster["regions"]
    assert (reg["uuid"], reg["device"], reg["refs"]) == (region.uuid, "shared.img", 2)
    assert reg["live_nodes"] == [{"num": 0, "name": "alpha"}]

    rc, out, err = tool(ns, env, "hbctl", "stop", "-u", region.uuid)
    assert (rc, out) == (0, f"{region.uuid}: heartbeat still running, 1 refs\n"), err
    assert rdir.exists()
    rc, out, err = tool(ns, env, "ocfs2_hb_ctl", "-K", "-d", str(image), "hbctl")
    assert (rc, out, err) == (0, "", "")
    assert not rdir.exists()
    assert ns.semaphore_sets() == []  # the last stop removed the set too

    rc, out, err = tool(ns, env, "hbctl", "cluster", "unregister", "demo")
    assert rc == 0, err
    assert not cfs.exists()


def test_clear_errors_for_bad_input(sysroot: Path, tmp_path: Path, ns: IpcNamespace) -> None:
    env = dict(os.environ, HBCTL_SYSROOT=str(sysroot))
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 65536)
    rc, _, err = tool(ns, env, "hbctl", "start", "-d", str(junk))
    assert rc == 1
    assert err.startswith(f"hbctl: {junk}: ") and err.count("\n") == 1, err

    bad = tmp_path / "bad.conf"
    bad.write_text("cluster:\n\tname = demo\n\tnode_count = x\n")
    rc, _, err = tool(ns, env, "hbctl", "cluster", "register", "--config", str(bad), "demo")
    assert rc == 1
    assert f"{bad}:3:" in err and err.count("\n") == 1, err

    env_gone = dict(os.environ, HBCTL_SYSROOT=str(tmp_path / "not-a-mount"))
    rc, _, err = tool(ns, env_gone, "hbctl", "status")
    assert rc == 1
    assert "cannot initialize cluster" in err and "fakecfs mount" in err
    assert err.count("\n") == 1, err


def test_doctor_with_hbctl_sysroot(sysroot: Path, tmp_path: Path, ns: IpcNamespace) -> None:
    """doctor through HBCTL_SYSROOT (no fakecfs run): it reads the emulated mount table, so
    a mounted region keeps its reference, and an unmounted leftover is stopped."""
    image = mkfs(tmp_path / "shared.img")
    uuid = Region.of(image).uuid
    conf = tmp_path / "cluster.conf"
    conf.write_text(CONF)
    env = dict(os.environ, HBCTL_SYSROOT=str(sysroot), HBCTL_DEVICES=str(image))
    assert tool(ns, env, "hbctl", "cluster", "register", "--config", str(conf),
                "--node", "alpha", "demo")[0] == 0

    def doctor(*args: str) -> tuple[int, list[tuple[str, str]]]:
        rc, out, err = tool(ns, env, "hbctl", "doctor", "--json", *args)
        assert rc in (0, 1), err
        return rc, [(f["kind"], f["result"]) for f in json.loads(out)["findings"]]

    assert tool(ns, env, "hbctl", "mount", str(image), "/mnt/a")[0] == 0
    assert doctor("--fix") == (0, [])  # the mount's one reference is needed
    assert tool(ns, env, "hbctl", "start", "-d", str(image))[0] == 0  # one more, no owner
    assert doctor("--fix") == (0, [("leaked-references", "done")])
    assert tool(ns, env, "hbctl", "refs", "-u", uuid)[1] == f"{uuid}: 1 refs\n"
    assert tool(ns, env, "hbctl", "umount", "/mnt/a")[0] == 0
    # put_super's helper runs in the daemon's IPC namespace, not this one: it removes the
    # region but never sees this namespace's sets, which doctor then finds and removes.
    rc, fixed = doctor("--fix")
    assert rc == 0 and fixed == [("semaphores-without-region", "done"),
                                 ("stale-mounted-flag", "done")]
    assert not (sysroot / "sys/kernel/config/cluster/demo/heartbeat" / uuid).exists()
    assert doctor() == (0, [])
