"""A one-line tally of fakecfs against the recorded kernel, at the end of the run."""

from __future__ import annotations

import pytest

OUTCOMES: dict[str, int] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "test_fakecfs_answers_like_the_recorded_kernel" in report.nodeid and (
            report.when == "call" or report.outcome == "skipped"):
        OUTCOMES[report.outcome] = OUTCOMES.get(report.outcome, 0) + 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if OUTCOMES:
        terminalreporter.section("fakecfs vs the recorded kernel")
        terminalreporter.write_line(
            f"{OUTCOMES.get('passed', 0)}/{sum(OUTCOMES.values())} catalogue cases identical "
            f"({OUTCOMES.get('skipped', 0)} skipped); deliberate differences and extensions: "
            "docs/kernel-lane.md")
