"""fakecfs's user-stack kernel side against the real kernel's recording.

kernel-userstack.json was recorded by the real-kernel lane (tests/kernel, task
``userstack``: Debian's 6.1 with dlm and ocfs2_stack_user loaded). The same script runs
here on a fakecfs mount and every step must give the kernel's answer. fakecfs loads its
user plugin on the first user label written to ``cluster_stack`` (the script's first step),
where the guest loaded the module before the script; and it shows
``dlm_recover_callback_support`` (which Debian's 6.1 has) only with
``--dlm-recover-callbacks``, which this mount asks for.

One deliberate difference, in the down phase: Debian's 6.1 oopses on a well-formed DOWN
(its fortified strlen traps on the unterminated UUID field, killing the writer with the
device's mutex held); fakecfs takes the DOWN as the source means it (recovery of that node
on the volume with that UUID, none here), because an emulator must not kill its caller.
"""

from __future__ import annotations

from pathlib import Path

from tests.catalogue.recorded import load_recording
from tests.catalogue.userstack_script import USERSTACK_RECORDING, down_phase, run_script
from tests.fakecfs_fixtures import fakecfs_mount, require_fuse


def test_user_stack_files_and_ocfs2_control_answer_like_the_recorded_kernel(
        tmp_path: Path) -> None:
    require_fuse()
    recording = load_recording(USERSTACK_RECORDING)
    with fakecfs_mount(tmp_path / "mnt", "--dlm-recover-callbacks") as mnt:
        control = str(mnt / "dev/misc/ocfs2_control")
        ours = run_script(str(mnt / "sys/fs/ocfs2"), control,
                          str(mnt / "dev/misc/dlm-control"), str(mnt / "proc/misc"))
        down = down_phase(control)
    differ = [f"{k[0]}: kernel {k[1]!r}, fakecfs {o[1]!r}"
              for k, o in zip(recording["steps"], ours, strict=True) if k != o]
    assert differ == []
    kernel_down = recording["down"]
    assert down[:-1] == kernel_down[:-1]
    assert kernel_down[-1][0] == down[-1][0] == "E: write DOWN UUID 00000002"
    # The writer never came back: killed by the oops, stuck in its exit on the mutex.
    assert kernel_down[-1][1] == "stuck: detected buffer overflow in __fortify_strlen"
    assert down[-1][1] == "ok:47"
