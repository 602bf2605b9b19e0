"""fakecfs held to the real kernel: replay the catalogue on a fakecfs mount and diff each
step against the answer recorded from Debian's 6.1 kernel (kernel-results.json).

Runs in every ``make test`` without KVM. The recording is made by the real-kernel lane
(tests/kernel); cases tagged ``extension`` are fakecfs extensions the kernel cannot run.
Cases tagged ``blockdev`` ran on a virtio disk in the guest; here IMAGE is a loop device,
so fakecfs takes its block-device path (BLKSSZGET, O_DIRECT) as the kernel did.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.catalogue.catalogue import Case, SyscallReplay, cleanup, load, through_fuse
from tests.catalogue.recorded import load_recording, recorded_results

CASES = [c for c in load() if "extension" not in c.tags]
RECORDING = load_recording()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "hb.img"
    subprocess.run(["truncate", "-s", "1M", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def blockdev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 1 MiB loop device (512-byte sectors, like the guest's /dev/vda)."""
    path = tmp_path_factory.mktemp("blk") / "hb.img"
    subprocess.run(["fallocate", "-l", "1M", str(path)], check=True)
    proc = subprocess.run(["losetup", "--find", "--show", str(path)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"no loop device for the blockdev cases: {proc.stderr.strip()}")
    dev = Path(proc.stdout.strip())
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", str(dev)], check=False)


def test_every_kernel_case_is_recorded_and_the_catalogue_says_what_the_kernel_said() -> None:
    problems = []
    for case in CASES:
        try:
            results = recorded_results(case, RECORDING)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        problems += [f"{case.name} line {s.line}: catalogue says {s.expect!r}, kernel {r!r}"
                     for s, r in zip(case.steps, results, strict=True) if s.expect != r]
    assert problems == []
    assert RECORDING["kernel"].startswith("6.1.")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fakecfs_answers_like_the_recorded_kernel(case: Case, shared_sysroot: Path,
                                                   request: pytest.FixtureRequest) -> None:
    kernel = recorded_results(case, RECORDING)
    device = request.getfixturevalue("blockdev" if "blockdev" in case.tags else "image")
    configfs = shared_sysroot / "sys/kernel/config"
    runner = SyscallReplay(str(configfs), str(device))
    mismatches = []
    try:
        for step, want in zip(case.steps, kernel, strict=True):
            got = runner.run(step)
            expected = through_fuse(step, runner.expand(want))
            if got != expected:
                mismatches.append(f"line {step.line}: {step.op} {step.path} {step.value!r}: "
                                  f"kernel {want!r}, fakecfs {got!r}")
    finally:
        runner.close()
        cleanup(str(configfs))
    assert mismatches == []
