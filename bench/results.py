"""What a benchmark run produces: comparisons of ours against a reference, and their report.

A core: per-round samples in, medians, ratios, target verdicts, the table and the JSON out.
Ratios are always ours / reference of the quantity measured, so for throughput higher is
better (the target is a floor) and for wall time lower is better (the target is a ceiling).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Comparison:
    """One quantity measured on ours and on the reference, round by round, in one run."""

    group: str  # e.g. "FUSE, pinned to CPU 1"
    name: str  # e.g. "stat, full path"
    unit: str  # "ops/s" (higher is better) or "ms" (lower is better)
    ours: list[float] = field(default_factory=list)
    ref: list[float] = field(default_factory=list)
    target: float | None = None  # floor on the ratio for ops/s, ceiling for ms
    note: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.unit.endswith("/s")

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours)

    @property
    def ref_median(self) -> float:
        return statistics.median(self.ref)

    @property
    def ratio(self) -> float:
        """ours / reference, of the medians."""
        return self.ours_median / self.ref_median

    @property
    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        if self.higher_is_better:
            return self.ratio >= self.target
        return self.ratio <= self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "unit": self.unit,
            "ours_median": self.ours_median,
            "ref_median": self.ref_median,
            "ratio": self.ratio,
            "target": self.target,
            "target_kind": None if self.target is None
            else ("min" if self.higher_is_better else "max"),
            "meets_target": self.meets_target,
            "ours": self.ours,
            "ref": self.ref,
            "note": self.note,
        }


def _num(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return f"{value:,.0f}"


def _target(c: Comparison) -> str:
    if c.target is None:
        return ""
    sign = ">=" if c.higher_is_better else "<="
    verdict = "ok" if c.meets_target else "MISSED"
    return f"{sign} {c.target:.2f}x  {verdict}"


def format_table(comparisons: list[Comparison]) -> str:
    """A plain-text table, one block per group, medians and ratio ours/C per row."""
    headers = ("", "unit", "ours", "C", "ours/C", "target")
    rows: list[tuple[str, ...] | str] = []
    group = None
    for c in comparisons:
        if c.group != group:
            group = c.group
            rows.append(group)
        rows.append((
            "  " + c.name, c.unit, _num(c.ours_median, c.unit), _num(c.ref_median, c.unit),
            f"{c.ratio:.2f}x", _target(c),
        ))
    cells = [r for r in rows if isinstance(r, tuple)] + [headers]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: tuple[str, ...]) -> str:
        first = r[0].ljust(widths[0])
        rest = [r[i].rjust(widths[i]) for i in range(1, 5)]
        return "  ".join([first, *rest, r[5]]).rstrip()

    out = [line(headers), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    for r in rows:
        out.append(r if isinstance(r, str) else line(r))
    notes = [f"  {c.name}: {c.note}" for c in comparisons if c.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)
