"""Our ``ocfs2_hb_ctl`` against the real C tool, side by side on the same argv.

Each batch runs in a private mount + IPC namespace. The C tool sees a small
fake kernel tree (tmpfs-backed directories bind-mounted on ``/sys/fs`` and
``/sys/kernel/config``, the project's statfs shim so libo2cb accepts the fake
configfs); ours sees the same directory through ``HBCTL_SYSROOT``. Both share
the namespace's semaphores, so ``-I`` answers can be compared too. Both run
with argv[0] = ``ocfs2_hb_ctl`` because glibc's getopt prefixes its messages
with argv[0].

The option parser is a core; the exhaustive getopt cases at the bottom run in
milliseconds without any subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hbctl.compat import atoi, getopt, parse_args, usage_text

C_TOOL = "/usr/sbin/ocfs2_hb_ctl"
ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "fakecfs" / "preload" / "fakecfs_preload.so"
UUID = "B7E82B346F634EEA831B1E24655B60BE"

needs_c_tool = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(C_TOOL) or shutil.which("unshare") is None,
    reason="needs root, unshare(1) and the C ocfs2_hb_ctl",
)

DRIVER = textwrap.dedent(
    """
    import json, os, subprocess, sys
    root, shim, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    # /sys is sysfs: cover /sys/kernel with a tmpfs to get a config/ mount point.
    subprocess.run(["mount", "-t", "tmpfs", "none", "/sys/kernel"], check=True)
    os.mkdir("/sys/kernel/config")
    subprocess.run(["mount", "--bind", root + "/sys/kernel/config", "/sys/kernel/config"],
                   check=True)
    subprocess.run(["mount", "--bind", root + "/sys/fs", "/sys/fs"], check=True)
    out = []
    for argv in cases:
        c = subprocess.run(["ocfs2_hb_ctl", *argv], executable="/usr/sbin/ocfs2_hb_ctl",
                           capture_output=True, text=True,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LD_PRELOAD": shim})
        py = subprocess.run(
            [sys.executable, "-c",
             "import sys; from hbctl.compat import main; "
             "sys.exit(main(prog='ocfs2_hb_ctl'))", *argv],
            capture_output=True, text=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HBCTL_SYSROOT": root,
                 "PYTHONPATH": os.getcwd(), "HBCTL_DEVICES": ""})
        out.append({"argv": argv,
                    "c": [c.returncode, c.stdout, c.stderr],
                    "py": [py.returncode, py.stdout, py.stderr]})
    print(json.dumps(out))
    """
)


def make_tree(
    root: Path, stack: str | None = "o2cb\n", revision: str | None = "5\n", configfs: bool = True
) -> Path:
    (root / "sys/fs/ocfs2").mkdir(parents=True)
    (root / "sys/fs/o2cb").mkdir(parents=True)
    (root / "sys/kernel/config").mkdir(parents=True)
    if stack is not None:
        (root / "sys/fs/ocfs2/cluster_stack").write_text(stack)
    if revision is not None:
        (root / "sys/fs/o2cb/interface_revision").write_text(revision)
    if configfs:
        (root / "sys/kernel/config/cluster").mkdir()
    return root


def side_by_side(root: Path, cases: list[list[str]]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--ipc",
            "--propagation",
            "private",
            sys.executable,
            "-c",
            DRIVER,
            str(root),
            str(SHIM),
            json.dumps(cases),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def assert_same(results: list[dict[str, Any]]) -> None:
    diffs = [r for r in results if r["c"] != r["py"]]
    assert not diffs, json.dumps(diffs, indent=1)


VALIDATION_CASES = [
    [],
    ["-h"],
    ["-x"],
    ["-h", "-x"],
    ["-x", "-h"],
    ["-xy", "-h"],
    ["--foo"],
    ["--help"],
    ["-d"],
    ["-S", "-d"],
    ["-I", "-u"],
    ["-Sx", "-d"],
    ["-S", "-d", "dev"],  # no service
    ["-S", "-u", UUID],  # no service
    ["-S", "-d", "dev", "-u", UUID, "svc"],  # both
    ["-S", "svc"],  # neither
    ["-K", "-d", "dev"],  # stop by device needs a service
    ["-K", "svc"],
    ["-K", "-d", "a", "-u", "b", "svc"],
    ["-I"],
    ["-I", "-d", "a", "-u", "b"],
    ["-P", "-u", UUID, "-n", "8"],
    ["-P", "-u", UUID, "-n", "-1"],
    ["-P", "-u", UUID, "-n", "4294967296"],  # atoi truncation: 0 would be valid
    ["-P", "-u", UUID, "-n", "99999999999999999999"],
    ["-P", "-d", "a", "-u", "b"],
    ["-P"],
    ["-n", "3"],  # no action
    ["-d", "dev", "svc"],
    ["-I", "--", "-u", UUID],
    ["-S", "-h", "-d", "x", "svc"],  # -h last? no: -S then -h, -h wins
    ["-h", "-S", "-d", "x"],  # last action -S wins, no service
    ["-SKI"],
    ["-Idx", "-Iu", "y"],
]


@needs_c_tool
def test_usage_and_validation_match_the_c_tool(tmp_path: Path) -> None:
    results = side_by_side(make_tree(tmp_path), VALIDATION_CASES)
    assert_same(results)
    by_argv = {json.dumps(r["argv"]): r["py"] for r in results}
    assert by_argv["[]"] == [1, "", usage_text()]
    assert by_argv['["-h"]'] == [0, usage_text(), ""]
    assert by_argv['["-x"]'] == [1, "", "ocfs2_hb_ctl: invalid option -- 'x'\n" + usage_text()]


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"revision": None}, "Unable to access cluster service"),
        ({"revision": "6\n"}, "Revision of OCFS2-Tools is out of date."),
        ({"stack": "o2cbx\n"}, "Internal logic failure"),
        ({"stack": ""}, "Unable to access cluster service"),
        ({"configfs": False}, None),  # configfs present but no cluster/ dir: passes init
    ],
)
@needs_c_tool
def test_cluster_init_failures_match(tmp_path: Path, tree: dict[str, Any], message: str) -> None:
    cases = [["-I", "-u", UUID], ["-K", "-u", UUID], ["-S", "-d", "/nonexistent", "svc"]]
    results = side_by_side(make_tree(tmp_path, **tree), cases)
    assert_same(results)
    if message is not None:
        assert results[0]["py"] == [1, "", f"ocfs2_hb_ctl: {message} Cannot initialize cluster\n\n"]


@needs_c_tool
def test_refinfo_and_device_errors_match(tmp_path: Path) -> None:
    notfs = tmp_path / "zeros.img"
    notfs.write_bytes(b"\0" * (1 << 20))
    cases = [
        ["-I", "-u", UUID],
        ["-I", "-u", UUID.lower()],  # a different (empty) set, still "0 refs"
        ["-I", "-d", "/nonexistent"],
        ["-I", "-d", str(notfs)],
        ["-K", "-u", "0123456789ABCDEF0123456789ABCDEF"],  # no device has it
        ["-P", "-u", UUID],  # no cluster: silent failure
    ]
    results = side_by_side(make_tree(tmp_path / "root"), cases)
    assert_same(results)
    assert results[0]["py"] == [0, f"{UUID}: 0 refs\n", ""]
    assert (
        results[4]["py"][2] == "ocfs2_hb_ctl: Directory entry not found while stopping heartbeat\n"
    )


# -- the parser core, no subprocess -------------------------------------------------


def test_getopt_permutes_operands_like_glibc() -> None:
    opts, operands, diags = getopt(["svc", "-S", "-d", "dev", "more"], "ISKPd:u:n:h", "p")
    assert opts == [("S", None), ("d", "dev")]
    assert operands == ["svc", "more"]
    assert diags == []
    # POSIXLY_CORRECT: the first operand ends the options
    opts, operands, _ = getopt(["-I", "svc", "-u", "X"], "ISKPd:u:n:h", "p", True)
    assert opts == [("I", None)]
    assert operands == ["svc", "-u", "X"]


def test_getopt_attached_and_grouped_arguments() -> None:
    opts, _, _ = getopt(["-Sddev", "-nx", "-u", "-d"], "ISKPd:u:n:h", "p")
    assert opts == [("S", None), ("d", "dev"), ("n", "x"), ("u", "-d")]


def test_getopt_diagnostics_name_argv0() -> None:
    _, _, diags = getopt(["-:", "-d"], "ISKPd:u:n:h", "/sbin/ocfs2_hb_ctl")
    assert diags == [
        "/sbin/ocfs2_hb_ctl: invalid option -- ':'\n",
        "/sbin/ocfs2_hb_ctl: option requires an argument -- 'd'\n",
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("7", 7),
        (" 3x", 3),
        ("-1", -1),
        ("+5", 5),
        ("", 0),
        ("abc", 0),
        ("4294967303", 7),
        ("99999999999999999999", -1),
        ("-99999999999999999999", 0),
    ],
)
def test_atoi_matches_glibc(text: str, value: int) -> None:
    assert atoi(text) == value


def test_kernel_call_form_gets_the_ocfs2_service() -> None:
    opts, _ = parse_args(["-K", "-u", UUID], "p")
    assert opts is not None
    assert (opts.action, opts.uuid, opts.service) == ("stop", UUID, "ocfs2")
    opts, _ = parse_args(["-K", "-d", "/dev/x"], "p")
    assert opts is None
    opts, _ = parse_args(["-S", "-d", "dev", "svc1", "svc2"], "p")
    assert opts is not None and opts.service == "svc1"
