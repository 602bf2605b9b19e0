"""hbctl.userstack: libo2cb's user-stack client, record by record, against a scripted peer.

Each test runs in a private network namespace (its own ``@ocfs2_controld_sock``), with a
sysroot folder holding the files the client reads (cluster_stack is not read here: the
stack is an argument). What is checked: the records and which connection carried them,
and the libo2cb code of every failure (spec user-stacks.md §2.3-2.6).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from hbctl import userstack
from hbctl.controld import proto
from hbctl.errors import Code, O2cbError
from hbctl.sysroot import Sysroot
from tests.controld_peer import ScriptedPeer, ok
from tests.netns import in_private_netns

UUID = "D7B7157609244D26B8BBA703A1E7B2CA"
JOIN = f"MOUNT ocfs2 {UUID} uc /dev/sdb1 svc"


def make_sysroot(root: Path, *, dlm: tuple[int, int, int] | None = None,
                 recover: bool = False, misc_minor: int = 0) -> Sysroot:
    (root / "sys/fs/ocfs2").mkdir(parents=True)
    (root / "proc").mkdir()
    misc = "229 fuse\n"
    if dlm is not None:
        misc = f"{misc_minor:3d} dlm-control\n" + misc
        (root / "dev/misc").mkdir(parents=True)
        (root / "dev/misc/dlm-control").write_bytes(struct.pack("=3I", *dlm))
    (root / "proc/misc").write_text(misc)
    if recover:
        (root / "sys/fs/ocfs2/dlm_recover_callback_support").write_text("1\n")
    return Sysroot(str(root))


def run(answer: Callable[[proto.Message], list[bytes] | None],
        action: Callable[[], object]) -> tuple[list[tuple[int, str]], object]:
    """Start a peer with ``answer``, run ``action`` (its result or O2cbError), return both."""
    def body() -> tuple[list[tuple[int, str]], object]:
        peer = ScriptedPeer(answer)
        try:
            try:
                result: object = action()
            except O2cbError as e:
                result = e.code
            return peer.log, result
        finally:
            peer.close()
    return in_private_netns(body)


def start(sysroot: Sysroot, stack: str = "cman") -> Callable[[], object]:
    return lambda: userstack.start(sysroot, stack, UUID, "uc", "/dev/sdb1", "svc")


def test_start_is_mount_then_mresult_on_one_connection(tmp_path: Path) -> None:
    log, result = run(ok, start(make_sysroot(tmp_path)))
    assert result is None
    assert log == [(1, JOIN), (1, f"MRESULT ocfs2 {UUID} 0 svc")]


def test_already_joined_114_is_success(tmp_path: Path) -> None:
    def answer(msg: proto.Message) -> list[bytes]:
        return [proto.status(114 if msg.verb == "MOUNT" else 0, "Already mounted, go ahead")]
    _, result = run(answer, start(make_sysroot(tmp_path)))
    assert result is None


def test_a_refused_mount_is_a_configuration_error_and_sends_no_result(tmp_path: Path) -> None:
    def answer(msg: proto.Message) -> list[bytes]:
        return [proto.status(16, f"Filesystem {UUID} is already mounted on svc")]
    log, result = run(answer, start(make_sysroot(tmp_path)))
    assert result is Code.CONFIGURATION_ERROR
    assert log == [(1, JOIN)]


def test_an_error_answer_to_mresult_is_ignored(tmp_path: Path) -> None:
    def answer(msg: proto.Message) -> list[bytes]:
        if msg.verb == "MRESULT":
            return [proto.status(22, "Client is not attached to a mountgroup")]
        return [proto.status(0, "OK")]
    _, result = run(answer, start(make_sysroot(tmp_path)))
    assert result is None


@pytest.mark.parametrize(("reply", "code"), [
    ([proto.encode("ITEMCOUNT", 0)], Code.INTERNAL_FAILURE),  # not a STATUS
    ([b"STATUS 0".ljust(256, b"\0")], Code.IO),  # one field: EBADMSG
    ([proto.status(0, "OK")[:100]], Code.IO),  # EOF in the middle of a record
    ([b"HELLO".ljust(256, b"\0")], Code.IO),  # unknown verb
    ([proto.encode("STATUS", "1x", "bad")], Code.IO),  # not a number
    (None, Code.IO),  # hung up without an answer
])
def test_broken_answers_to_mount(tmp_path: Path, reply: list[bytes] | None,
                                 code: Code) -> None:
    _, result = run(lambda msg: reply, start(make_sysroot(tmp_path)))
    assert result is code


def test_no_daemon_is_service_unavailable(tmp_path: Path) -> None:
    sysroot = make_sysroot(tmp_path)

    def body() -> object:
        try:
            return start(sysroot)()
        except O2cbError as e:
            return e.code
    assert in_private_netns(body) is Code.SERVICE_UNAVAILABLE


def test_leave_is_unmount_on_a_connection_of_its_own(tmp_path: Path) -> None:
    sysroot = make_sysroot(tmp_path)

    def both() -> object:
        userstack.start(sysroot, "cman", UUID, "uc", "/dev/sdb1", "svc")
        userstack.group_leave(sysroot, UUID, "svc")
        return None
    log, result = run(ok, both)
    assert result is None
    assert [n for n, _ in log] == [1, 1, 2]
    assert log[2] == (2, f"UNMOUNT ocfs2 {UUID} svc")


def test_a_refused_leave_is_a_configuration_error(tmp_path: Path) -> None:
    _, result = run(lambda m: [proto.status(2, "Filesystem is unknown")],
                    lambda: userstack.group_leave(make_sysroot(tmp_path), UUID, "svc"))
    assert result is Code.CONFIGURATION_ERROR


def test_pcmk_without_dlm_fails_before_any_connection(tmp_path: Path) -> None:
    log, result = run(ok, start(make_sysroot(tmp_path), "pcmk"))
    assert (log, result) == ([], Code.SERVICE_UNAVAILABLE)


def test_pcmk_with_dlm_uses_the_daemon(tmp_path: Path) -> None:
    log, result = run(ok, start(make_sysroot(tmp_path, dlm=(6, 0, 2)), "pcmk"))
    assert result is None and len(log) == 2


def test_pcmk_with_recover_callbacks_needs_no_daemon(tmp_path: Path) -> None:
    sysroot = make_sysroot(tmp_path, dlm=(6, 0, 2), recover=True)
    log, result = run(ok, start(sysroot, "pcmk"))
    assert (log, result) == ([], None)
    log, result = run(ok, lambda: userstack.group_leave(sysroot, UUID, "svc"))
    assert (log, result) == ([], None)


def test_pcmk_with_recover_callbacks_and_an_old_dlm_is_an_internal_failure(
        tmp_path: Path) -> None:
    log, result = run(ok, start(make_sysroot(tmp_path, dlm=(5, 0, 0), recover=True), "pcmk"))
    assert (log, result) == ([], Code.INTERNAL_FAILURE)


def test_cman_with_recover_callbacks_sends_mount_without_result_or_unmount(
        tmp_path: Path) -> None:
    sysroot = make_sysroot(tmp_path, recover=True)

    def both() -> object:
        userstack.start(sysroot, "cman", UUID, "uc", "/dev/sdb1", "svc")
        userstack.group_leave(sysroot, UUID, "svc")
        return None
    log, result = run(ok, both)
    assert (log, result) == ([(1, JOIN)], None)


def test_a_dlm_device_with_the_wrong_minor_is_polled_ten_times(tmp_path: Path) -> None:
    sysroot = make_sysroot(tmp_path, dlm=(6, 0, 2), misc_minor=58)
    slept: list[float] = []
    with pytest.raises(O2cbError) as info:
        userstack.dlm_kernel_version(sysroot, sleep=slept.append)
    assert info.value.code is Code.SERVICE_UNAVAILABLE
    assert slept == [1] * 10


def test_a_failed_version_read_means_dlm_5(tmp_path: Path) -> None:
    sysroot = make_sysroot(tmp_path, dlm=(6, 0, 2))
    (tmp_path / "dev/misc/dlm-control").write_bytes(b"")
    assert userstack.dlm_kernel_version(sysroot) == (5, 0, 0)


def test_a_field_with_a_space_is_refused_before_sending(tmp_path: Path) -> None:
    sysroot = make_sysroot(tmp_path)
    log, result = run(ok, lambda: userstack.start(sysroot, "cman", UUID, "uc",
                                                  "/dev/my disk", "svc"))
    assert (log, result) == ([], Code.IO)


def test_misc_minor_parses_proc_misc() -> None:
    assert userstack.misc_minor(" 58 dlm-control\n229 fuse\n", "dlm-control") == 58
    assert userstack.misc_minor("229 fuse\n", "dlm-control") is None
