"""A one-line tally of fakecfs against the recorded kernel, at the end of the run."""

from __future__ import annotations

import pytest

OUTCOMES: dict[str, int] = {}
FAULTS: dict[str, str] = {}  # scenario -> passed/failed/skipped


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "test_fakecfs_answers_like_the_recorded_kernel" in report.nodeid and (
            report.when == "call" or report.outcome == "skipped"):
        OUTCOMES[report.outcome] = OUTCOMES.get(report.outcome, 0) + 1
    if "test_fakecfs_reacts_like_the_recorded_kernel" in report.nodeid and (
            report.when == "call" or report.outcome == "skipped"):
        known = dict(report.user_properties).get("known_difference")
        FAULTS[report.nodeid.rsplit("[", 1)[-1].rstrip("]")] = (
            "known" if known and report.outcome == "passed" else report.outcome)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if OUTCOMES:
        terminalreporter.section("fakecfs vs the recorded kernel")
        terminalreporter.write_line(
            f"{OUTCOMES.get('passed', 0)}/{sum(OUTCOMES.values())} catalogue cases identical "
            f"({OUTCOMES.get('skipped', 0)} skipped); deliberate differences and extensions: "
            "docs/kernel-lane.md")
    if FAULTS:
        if not OUTCOMES:
            terminalreporter.section("fakecfs vs the recorded kernel")
        same = sorted(n for n, o in FAULTS.items() if o == "passed")
        known = sorted(n for n, o in FAULTS.items() if o == "known")
        other = sorted(f"{n} ({o})" for n, o in FAULTS.items() if o not in ("passed", "known"))
        terminalreporter.write_line(
            f"fakecfs vs the recorded kernel: {len(same)}/{len(FAULTS)} fault reactions "
            f"identical ({', '.join(same) or 'none'})"
            + (f"; deliberate differences: {', '.join(known)}" if known else "")
            + (f"; DIFFERING: {', '.join(other)}" if other else "")
            + " (docs/kernel-lane.md)")
