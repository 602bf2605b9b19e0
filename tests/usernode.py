"""One emulated user-stack node on this host: namespaces, fakecfs, ocfs2_controld, a recorder.

A :class:`UserNode` is

* a holder process in new network, IPC and UTS namespaces (the node's: its abstract
  ``@ocfs2_controld_sock``, its semaphores, its hostname);
* a fakecfs daemon started in those namespaces with ``--cluster-stack pcmk|cman``, so the
  kernel's put_super helper (``hb_ctl_path -K -u UUID``) runs in the node too;
* the real ``ocfs2_controld.<stack>`` (hbctl.controld, single-node membership) in a network
  namespace of its own, reached through the recording proxy (tests/controld_proxy.py),
  which listens in the node's: every record of every client, and of the kernel's helper,
  is logged with its connection.

Commands run in the node with ``run`` (our tools, HBCTL_SYSROOT set) or ``ctool`` (under
``fakecfs run``: Debian's C tools see the surfaces at the real paths).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakecfs_fixtures import FAKECFS, VENV_BIN, read_attr, wait_for, write_attr
from tests.userstack.netns import wait_unshared

PROXY = str(Path(__file__).with_name("controld_proxy.py"))
PY_HB_CTL = str(VENV_BIN / "ocfs2_hb_ctl")
HBCTL = str(VENV_BIN / "hbctl")


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


def _holder(*flags: str) -> subprocess.Popen[bytes]:
    holder = subprocess.Popen(["unshare", *flags, "sleep", "infinity"])
    wait_unshared(holder.pid)
    return holder


class UserNode:
    def __init__(self, workdir: Path, stack: str, image: Path, cluster: str,
                 helper: str, mount_args: tuple[str, ...]) -> None:
        self.workdir = workdir
        self.stack = stack
        self.image = image
        self.mnt = workdir / "sysroot"
        self.wire = workdir / "wire.jsonl"
        self.daemon_log = workdir / "controld.log"
        self.env = {**os.environ, "HBCTL_SYSROOT": str(self.mnt),
                    "HBCTL_DEVICES": str(image)}
        self.node = _holder("--net", "--ipc", "--uts")
        self.upstream = _holder("--net")
        self._procs: list[subprocess.Popen[bytes]] = []
        self.mnt.mkdir(parents=True, exist_ok=True)
        wrapper = self.helper_wrapper(helper)
        self.enter("hostname", "n1")
        subprocess.run(self._in_node(FAKECFS, "mount", "--background", "--hb-interval-ms",
                                     "50", "--cluster-stack", stack, "--hb-ctl-path",
                                     str(wrapper), *mount_args, str(self.mnt)),
                       check=True, capture_output=True, text=True)
        with open(self.daemon_log, "wb") as log:
            self._procs.append(subprocess.Popen(
                ["nsenter", f"--target={self.upstream.pid}", "--net", "--",
                 str(VENV_BIN / f"ocfs2_controld.{stack}"), "-D", "--membership", "local",
                 "--cluster-name", cluster, "--sysroot", str(self.mnt), "--pid-file", "none"],
                stdout=log, stderr=subprocess.STDOUT))
        wait_for(lambda: b"is ready" in self.daemon_log.read_bytes()
                 or self._procs[0].poll() is not None, timeout=30, what="ocfs2_controld")
        assert self._procs[0].poll() is None, self.daemon_log.read_text()
        proxy = subprocess.Popen(
            self._in_node(sys.executable, "-u", PROXY, str(self.wire),
                          f"/proc/{self.upstream.pid}/ns/net"),
            stdout=subprocess.PIPE)
        self._procs.append(proxy)
        assert proxy.stdout is not None and proxy.stdout.readline() == b"ready\n"

    def helper_wrapper(self, tool: str) -> Path:
        """An ``hb_ctl_path`` program running ``tool`` (``python``: our ocfs2_hb_ctl) as
        the kernel's helper: it gets a bare environment, so the wrapper points it here."""
        if tool == "python":
            wrapper = self.workdir / "helper-python"
            wrapper.write_text(f"#!/bin/sh\nexport HBCTL_SYSROOT={self.mnt} "
                               f"HBCTL_DEVICES={self.image}\nexec {PY_HB_CTL} \"$@\"\n")
        else:
            wrapper = self.workdir / "helper-c"
            wrapper.write_text(f"#!/bin/sh\nexec {FAKECFS} run {self.mnt} -- {tool} \"$@\"\n")
        wrapper.chmod(0o755)
        return wrapper

    def use_helper(self, tool: str) -> None:
        write_attr(self.mnt / "proc/sys/fs/ocfs2/nm/hb_ctl_path", str(self.helper_wrapper(tool)))

    def _in_node(self, *argv: str) -> list[str]:
        return ["nsenter", f"--target={self.node.pid}", "--net", "--ipc", "--uts", "--",
                *argv]

    def enter(self, *argv: str) -> Result:
        p = subprocess.run(self._in_node(*argv), capture_output=True, text=True,
                           env=self.env, timeout=120, check=False)
        return Result(p.returncode, p.stdout, p.stderr)

    def run(self, *argv: str) -> Result:
        """One of our tools (or any command) in the node, against its sysroot."""
        return self.enter(*argv)

    def ctool(self, *argv: str) -> Result:
        """A C tool in the node, with the surfaces at the real paths (fakecfs run)."""
        return self.enter(FAKECFS, "run", str(self.mnt), "--", *argv)

    def wire_records(self) -> list[dict[str, object]]:
        if not self.wire.exists():
            return []
        return [json.loads(line) for line in self.wire.read_text().splitlines() if line]

    def wire_since(self, start: int) -> list[tuple[int, str, str]]:
        """Records after the first ``start``, connections renumbered from 1."""
        recs = self.wire_records()[start:]
        first = {c: i + 1 for i, c in enumerate(dict.fromkeys(int(r["conn"])  # type: ignore
                                                              for r in recs))}
        return [(first[int(r["conn"])], str(r["dir"]), str(r["text"]))  # type: ignore
                for r in recs]

    def stack_user(self) -> dict[str, str]:
        text = read_attr(self.mnt / "fakecfs/stack_user")
        return dict(line.split(" ", 1) for line in text.splitlines())

    def mounts(self) -> str:
        return read_attr(self.mnt / "fakecfs/mounts")

    def close(self) -> None:
        # The emulated kernel first (its put_super helpers still reach the daemon), then
        # the daemon, which ignores SIGTERM while it has mounts.
        subprocess.run([FAKECFS, "umount", str(self.mnt)], check=False, capture_output=True)
        for proc in reversed(self._procs):
            proc.kill()
            proc.wait()
        for holder in (self.node, self.upstream):
            holder.kill()
            holder.wait()


@contextmanager
def user_node(workdir: Path, stack: str, image: Path, cluster: str, *,
              helper: str = "python", mount_args: tuple[str, ...] = ()) -> Iterator[UserNode]:
    if os.geteuid() != 0:
        pytest.skip("a user-stack node needs root (network namespaces, nsenter)")
    node = UserNode(workdir, stack, image, cluster, helper, mount_args)
    try:
        yield node
    finally:
        node.close()
