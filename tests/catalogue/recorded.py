"""The real kernel's recorded answers to the catalogue, and how to compare against them.

``kernel-results.json`` is written by the real-kernel lane (tests/kernel, ``make
test-kernel`` with ``FAKECFS_KERNEL_RECORD=1``) from Debian's 6.1 kernel under QEMU. Each
case maps to its steps as ``[key, result]`` pairs, where the key names the operation (so a
recording goes stale, loudly, when a case's steps are edited) and the result is what the
kernel answered, in the catalogue's form ("ok", an errno name, "text:..."), with the image's
name written as ``IMAGE_NAME``. Standard library only: the guest imports it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.catalogue.catalogue import Case, Step

RECORDING = Path(__file__).with_name("kernel-results.json")
# The o2hb debugfs and /sys/fs/{o2cb,ocfs2} files of a kernel with one local node (num 0 of
# 2) heartbeating one region: {path: [mode, content or null]} (recorded by the hbctl task).
SURFACES = Path(__file__).with_name("kernel-surfaces.json")


def step_key(step: Step) -> str:
    """What a step does, independent of its line number and expected result."""
    return f"{step.op} {step.path}" + ("" if step.value is None else f" {step.value!r}")


def load_recording(path: Path = RECORDING) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def recorded_results(case: Case, recording: dict[str, Any]) -> list[str]:
    """The kernel's result for each step of ``case``; ValueError if missing or stale."""
    steps = recording["cases"].get(case.name)
    if steps is None:
        raise ValueError(f"{case.name}: not recorded from the kernel (run the kernel lane "
                         "with FAKECFS_KERNEL_RECORD=1)")
    keys = [step_key(s) for s in case.steps]
    if [k for k, _ in steps] != keys:
        raise ValueError(f"{case.name}: the recording is stale (its steps differ from the "
                         "catalogue's); re-record with the kernel lane")
    return [r for _, r in steps]


def as_recorded(case: Case, results: list[str]) -> list[list[str]]:
    return [[step_key(s), r] for s, r in zip(case.steps, results, strict=True)]


def unexpand(text: str, image: str | None) -> str:
    """The placeholder form of a result (the image's base name -> IMAGE_NAME)."""
    if image is None or not text.startswith("text:"):
        return text
    name = image.rsplit("/", 1)[-1]
    return text.replace(f"{name}\n", "IMAGE_NAME\n")
