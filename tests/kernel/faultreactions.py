"""The real o2hb's reactions to faults, as recorded by the kernel lane: scenarios, log-line
normalisation and the comparison fakecfs is held to. Pure code (no I/O, no clock).

A scenario is one fault on a two-node cluster (node 0 is the node under test: the kernel
in the guest, or a fakecfs node; node 1 is its peer) and the reaction is what node 0 logs
after the fault, whether it fences, whether the peer declares it dead, and when, counted in
heartbeat intervals from the fault so that the kernel's fixed 2000 ms period and fakecfs's
short test periods compare. The recording lives in tests/catalogue/kernel-faults.json.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORDING = Path(__file__).resolve().parents[1] / "catalogue" / "kernel-faults.json"


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str  # the fault, in words
    table: str | None = None  # the guest's dm table, lines split by ';' ({S} sectors, ...)
    fakecfs: str | None = None  # the fakecfs fault command on node 0 (region=... added)
    peer: str | None = None  # a fault the peer (node 1) carries, as a fakecfs command


SCENARIOS = [
    Scenario("eio-both", "every read and write of the heartbeat device fails (dm error)",
             table="0 {S} error", fakecfs="eio op=both"),
    Scenario("eio-write", "writes fail, reads pass (dm flakey error_writes)",
             table="0 {S} flakey {DEV} 0 0 1 1 error_writes", fakecfs="eio op=write"),
    Scenario("eio-read", "the slot read fails, our write passes (dm error over the peer's "
             "slot)", table="0 {SLOT1} linear {DEV} 0;{SLOT1} 1 error;"
             "{AFTER} {REST} linear {DEV} {AFTER}", fakecfs="eio op=read"),
    Scenario("delay", "every I/O takes 5 write timeouts longer (dm delay)",
             table="0 {S} delay {DEV} 0 {DELAY}", fakecfs="delay op=both ms={DELAY}"),
    Scenario("freeze", "the whole machine stops (QEMU monitor stop) past the dead threshold "
             "and the write timeout, then continues (cont)", fakecfs="freeze"),
    Scenario("peer-corrupt", "the peer's blocks reach the disk with a bad CRC, then good "
             "again with another hb_dead_ms", peer="corrupt"),
    Scenario("eio-start", "the device fails every I/O when the region starts (dm error)",
             table="0 {S} error", fakecfs="eio op=both"),
]
BY_NAME = {s.name: s for s in SCENARIOS}

_TIMESTAMP = re.compile(r"^\[\s*(\d+\.\d+)\]\s?(.*)$")
# mlog's prefix: "(comm,pid,cpu):function:line ERROR: " (comm may itself hold commas)
_MLOG = re.compile(r"^\(.*,\d+,\d+\):(\w+):\d+ (?:(ERROR|NOTICE): )?")
_UUID = re.compile(r"\b[0-9A-F]{32}\b")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_NUM = re.compile(r"\b\d+\b")
_DEVS = re.compile(r"\b(?:dm-\d+|vd[a-z]|shared\.img|loop\d+)\b")


def console_lines(text: str) -> list[tuple[float, str]]:
    """(kernel timestamp, message) for each record of a console log. A record of several
    lines prints each with the record's timestamp: those are joined again with "\n"."""
    out: list[tuple[float, str]] = []
    stamps: list[str] = []
    for raw in text.splitlines():
        m = _TIMESTAMP.match(raw.strip("\r"))
        if not m:
            continue
        message = m.group(2).strip()
        if (stamps and stamps[-1] == m.group(1) and not _MLOG.match(message)
                and not is_cluster_line(message)):
            out[-1] = (out[-1][0], out[-1][1] + "\n" + message)
            continue
        stamps.append(m.group(1))
        out.append((float(m.group(1)), message))
    return out


def is_cluster_line(message: str) -> bool:
    """A line of the o2cb stack (o2hb, o2quo, o2net, ocfs2), not of dm or the block layer."""
    if _MLOG.match(message):
        return True
    low = message.lower()
    return any(w in low for w in ("o2hb", "o2quo", "o2net", "ocfs2"))


def normalise(message: str) -> str:
    """The message without what legitimately differs: mlog's prefix, the region name, the
    device's name, numbers (milliseconds, sequence numbers, generations, node numbers)."""
    text = _MLOG.sub("", message.strip())
    text = _UUID.sub("REGION", text)
    text = _DEVS.sub("DEV", text)
    text = _HEX.sub("X", text)
    return _NUM.sub("N", text)


def distinct(messages: list[str]) -> list[str]:
    """Normalised messages, each once, in order of first appearance."""
    out: list[str] = []
    for m in messages:
        n = normalise(m)
        if n not in out:
            out.append(n)
    return out


# Lines of o2net's part, which fakecfs does not emulate (README: out of scope): the
# negotiation timer (at half the write timeout: with dead_threshold 3 that is one period,
# so the kernel prints it now and then even without a fault, whenever the next write is a
# little late) and o2net's connection notices (nothing listens on the peer's address).
OUT_OF_SCOPE = (
    re.compile(r"^o2hb: node N hb write hung for \S+ on region"),
    re.compile(r"^o2hb: all nodes hb write hung"),
    re.compile(r"^o2net: "),
)


def in_scope(lines: list[str]) -> list[str]:
    return [m for m in lines if not any(p.match(m) for p in OUT_OF_SCOPE)]


def compare(kernel: dict[str, Any], fakecfs: dict[str, Any], tolerance: float) -> list[str]:
    """What differs between two reactions (empty: identical): the outcome flags, the
    distinct normalised lines (o2net's out of scope), and each time in intervals within
    ``tolerance`` intervals."""
    diffs = []
    for key, want in kernel["outcome"].items():
        got = fakecfs["outcome"].get(key)
        if got != want:
            diffs.append(f"outcome {key}: kernel {want!r}, fakecfs {got!r}")
    want, got = in_scope(kernel["lines"]), in_scope(fakecfs["lines"])
    missing = [m for m in want if m not in got]
    extra = [m for m in got if m not in want]
    if missing:
        diffs.append(f"lines only the kernel logs: {missing}")
    if extra:
        diffs.append(f"lines only fakecfs logs: {extra}")
    for key, want in kernel["intervals"].items():
        got = fakecfs["intervals"].get(key)
        if got is None or abs(got - want) > tolerance:
            diffs.append(f"{key}: kernel {want} intervals, fakecfs {got}")
    return diffs
