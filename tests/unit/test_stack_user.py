"""ocfs2_control's T01 protocol (fakecfs.stack_user) and stackglue's user-stack files."""

from __future__ import annotations

import errno

import pytest

from fakecfs.kmod import ModuleTable
from fakecfs.misc import proc_misc_text
from fakecfs.stack_user import (
    ControlOpen,
    EmergencyRestart,
    Handshake,
    NodeDown,
    UserStack,
)
from fakecfs.sysfiles import StackGlue
from fakecfs.tree import KernelError

UUID = "1431E6308F3E4C30B5A4906741DD1C4D"


def errno_of(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(KernelError) as info:
        fn(*args)
    return info.value.errno


def daemon(stack: UserStack, node: int = 1) -> ControlOpen:
    """An open that did the whole handshake, as ocfs2_controld does."""
    h = stack.open()
    assert stack.read(h, 0, 4) == b"T01\n"
    assert stack.read(h, 4, 4) == b""
    assert stack.write(h, b"T01\n") == (4, None)
    assert stack.write(h, b"SETN %08X\n" % node) == (14, None)
    assert stack.write(h, b"SETV 01 00\n") == (11, None)
    assert h.state is Handshake.VALID
    return h


def test_the_handshake_makes_a_control_daemon() -> None:
    stack = UserStack()
    daemon(stack, 0x2A)
    assert (stack.opened, stack.this_node, stack.running_proto) == (1, 42, (1, 0))


def test_reads_give_the_protocol_list_then_eof_and_byte_reads_work() -> None:
    stack = UserStack()
    h = stack.open()
    got = b"".join(stack.read(h, i, 1) for i in range(6))
    assert got == b"T01\n"
    assert h.state is Handshake.READ


def test_a_partial_read_is_not_yet_the_end_of_the_list() -> None:
    stack = UserStack()
    h = stack.open()
    assert stack.read(h, 0, 3) == b"T01"
    assert h.state is Handshake.INVALID
    assert errno_of(stack.write, h, b"T01\n") == errno.EINVAL


@pytest.mark.parametrize("data", [b"T01", b"T01\n\0", b"T02\n", b"t01\n", b"T01 "])
def test_the_protocol_write_must_be_exactly_t01(data: bytes) -> None:
    stack = UserStack()
    h = stack.open()
    stack.read(h, 0, 4)
    assert errno_of(stack.write, h, data) == errno.EINVAL
    assert h.state is Handshake.READ


def test_setv_before_setn_also_works_and_only_both_count() -> None:
    stack = UserStack()
    h = stack.open()
    stack.read(h, 0, 4)
    stack.write(h, b"T01\n")
    stack.write(h, b"SETV 01 00\n")
    assert (h.state, stack.opened) == (Handshake.PROTOCOL, 0)
    stack.write(h, b"SETN 00000003\n")
    assert (h.state, stack.opened, stack.this_node) == (Handshake.VALID, 1, 3)


@pytest.mark.parametrize(("message", "err"), [
    (b"SETN 0000000G\n", errno.EINVAL),  # not hex
    (b"SETN 0000 001\n", errno.EINVAL),  # a blank inside
    (b"SETNX00000001\n", errno.EINVAL),  # separator
    (b"SETN 00000001X", errno.EINVAL),  # newline
    (b"SETN FFFFFFFF\n", errno.ERANGE),  # above INT_MAX
    (b"SETN -0000001\n", errno.ERANGE),  # negative
    (b"SETN 00000001\n\0", errno.EINVAL),  # 15 bytes: one message per exact write
    (b"SETV 02 00\n", errno.EINVAL),  # above the maximum 1.0
    (b"SETV 01 01\n", errno.EINVAL),  # minor above the maximum
    (b"SETV 00 00\n", errno.ERANGE),  # major 0
    (b"SETV -1 00\n", errno.ERANGE),
    (b"SETV 1G 00\n", errno.EINVAL),
    (b"SETV 01-00\n", errno.EINVAL),
    (b"X" * 48, errno.EINVAL),  # longer than any message
    (b"NOPE\n", errno.EINVAL),
    (b"DOWN " + UUID.encode() + b" 00000001\n", errno.EINVAL),  # DOWN before VALID
])
def test_bad_messages_in_the_protocol_state(message: bytes, err: int) -> None:
    stack = UserStack()
    h = stack.open()
    stack.read(h, 0, 4)
    stack.write(h, b"T01\n")
    assert errno_of(stack.write, h, message) == err
    assert stack.opened == 0


def test_lower_case_and_0x_hex_are_what_simple_strtol_takes() -> None:
    stack = UserStack()
    h = stack.open()
    stack.read(h, 0, 4)
    stack.write(h, b"T01\n")
    assert stack.write(h, b"SETN 0x00001f\n") == (14, None)
    assert h.this_node == 31


def test_writes_before_reading_are_refused() -> None:
    stack = UserStack()
    h = stack.open()
    assert errno_of(stack.write, h, b"T01\n") == errno.EINVAL


def test_setn_and_setv_after_valid_are_refused() -> None:
    stack = UserStack()
    h = daemon(stack)
    assert errno_of(stack.write, h, b"SETN 00000001\n") == errno.EINVAL
    assert errno_of(stack.write, h, b"SETV 01 00\n") == errno.EINVAL


def test_a_second_daemon_must_name_the_same_node() -> None:
    stack = UserStack()
    daemon(stack, 1)
    h = stack.open()
    stack.read(h, 0, 4)
    stack.write(h, b"T01\n")
    stack.write(h, b"SETV 01 00\n")
    assert errno_of(stack.write, h, b"SETN 00000002\n") == errno.EINVAL
    assert stack.write(h, b"SETN 00000001\n") == (14, None)
    assert stack.opened == 2


def test_down_reaches_a_mounted_volume_and_ignores_unknown_ones() -> None:
    stack = UserStack()
    h = daemon(stack)
    stack.attach(UUID, controld=True)
    down = b"DOWN " + UUID.encode() + b" 00000002\n"
    assert stack.write(h, down) == (47, NodeDown(UUID, 2))
    other = b"DOWN " + b"0" * 32 + b" 00000002\n"
    assert stack.write(h, other) == (47, None)
    assert errno_of(stack.write, h, b"DOWN " + UUID.encode() + b" 8000000F\n") == errno.ERANGE
    assert errno_of(stack.write, h, b"DOWN " + UUID.encode() + b"-00000002\n") == errno.EINVAL


def test_a_mount_in_controld_mode_needs_a_daemon() -> None:
    stack = UserStack()
    assert errno_of(stack.attach, UUID, True) == errno.ESRCH
    stack.attach(UUID, controld=False)  # NO_CONTROLD (recover callbacks): no daemon needed
    assert stack.live == [UUID]


def test_last_valid_close_resets_and_with_mounts_restarts_the_machine() -> None:
    stack = UserStack()
    a, b = daemon(stack), daemon(stack)
    stack.attach(UUID, controld=True)
    assert stack.release(a) is None  # another daemon is still open
    assert stack.release(b) == EmergencyRestart((UUID,))
    assert (stack.opened, stack.this_node, stack.running_proto[0]) == (0, -1, 0)


def test_closing_an_unfinished_open_changes_nothing() -> None:
    stack = UserStack()
    daemon(stack)
    h = stack.open()
    stack.read(h, 0, 4)
    assert stack.release(h) is None
    assert stack.opened == 1


def test_last_valid_close_without_mounts_is_quiet() -> None:
    stack = UserStack()
    h = daemon(stack, 5)
    assert stack.release(h) is None
    assert stack.this_node == -1


def test_reading_again_from_zero_drops_a_valid_open_back_to_read() -> None:
    # The kernel sets READ whenever a read reaches the end of the list; the count of
    # daemons is not touched, and the open no longer counts at release.
    stack = UserStack()
    h = daemon(stack)
    stack.read(h, 0, 4)
    assert h.state is Handshake.READ
    assert stack.opened == 1


# -- stackglue ----------------------------------------------------------------------------


def files(glue: StackGlue) -> dict[str, str]:
    return {f.name: f.show().decode() for f in glue.files()}


def test_a_user_label_loads_the_user_plugin_module() -> None:
    table = ModuleTable()
    glue = StackGlue()
    glue.loaded_plugins = table.stack_plugins
    glue.load_plugin = lambda plugin: table.load(f"ocfs2_stack_{plugin}") and None
    assert files(glue)["loaded_cluster_plugins"] == "o2cb\n"
    glue.store_cluster_stack(b"pcmk\n")
    glue.store_cluster_stack(b"cman")
    assert table.loaded[-2:] == ["dlm", "ocfs2_stack_user"]  # fs/dlm first: a dependency
    # 6.1 prints each name at the start of the page: the oldest one, then NULs (recorded)
    assert files(glue)["loaded_cluster_plugins"] == "o2cb\n\0\0\0\0\0"
    assert files(glue)["cluster_stack"] == "cman\n"


def test_cluster_stack_store_rules() -> None:
    glue = StackGlue()
    for bad in (b"pcm", b"pcmk\n\n", b"pc\0k", b"pcmkx"):
        assert errno_of(glue.store_cluster_stack, bad) == errno.EINVAL
    glue.store_cluster_stack(b"abcd")  # any label but o2cb is a user stack
    glue.active_users = 1
    assert files(glue)["active_cluster_plugin"] == "user\n"
    assert errno_of(glue.store_cluster_stack, b"pcmk") == errno.EBUSY
    glue.store_cluster_stack(b"abcd\n")  # the running label is accepted


def test_the_recover_callback_file_exists_only_when_asked_for() -> None:
    assert "dlm_recover_callback_support" not in files(StackGlue())
    assert files(StackGlue(recover_callbacks=True))["dlm_recover_callback_support"] == "1\n"


def test_proc_misc_lists_our_devices_once_loaded_and_hides_the_hosts() -> None:
    host = "229 fuse\n 58 dlm-control\n237 loop-control\n"
    assert proc_misc_text(host, False) == "229 fuse\n237 loop-control\n"
    text = proc_misc_text(host, True)
    assert text.splitlines()[:2] == ["  0 ocfs2_control", "  0 dlm-control"]
    assert "229 fuse" in text and " 58 dlm-control" not in text
