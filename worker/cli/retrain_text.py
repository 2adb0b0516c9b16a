"""A retrain report for a person: what happened, what the quality gate said, and the scores
as a short table with 4 decimals (the demo's step 5 and its report.md).

The outcome line never hides a forced promotion: a report with ``forced`` says that the gate
would have rejected the candidate, and why (``reason``: the gate's sentence).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def outcome_lines(report: Mapping[str, Any]) -> list[str]:
    """One or two sentences: the outcome, and the gate's verdict with its reason."""
    version = f" version {report['version']}" if report.get("version") else ""
    gate, reason = report.get("gate"), str(report.get("reason") or "")
    if report.get("forced"):
        why = reason.split("would have rejected it: ", 1)[-1]
        return [f"{report['outcome']}{version} by force: the quality gate would have rejected "
                f"it ({gate}): {why}",
                "the promotion was forced (force_promote / --force-promote); without it the "
                "serving model would have stayed"]
    lines = [f"{report['outcome']}{version}" + (f" (gate: {gate})" if gate else "")]
    if reason:
        lines.append(reason)
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    number = float(value)
    return "nan" if math.isnan(number) else f"{number:.4f}"


def metrics_table(report: Mapping[str, Any]) -> list[str]:
    """Rows ``metric | candidate | serving`` from the holdout scores (``serving_<m>`` is the
    serving model on the same holdout; without it, the serving version's stored score)."""
    metrics: Mapping[str, Any] = report.get("metrics") or {}
    baseline: Mapping[str, Any] = report.get("baseline") or {}
    names = [k for k in metrics if not k.startswith("serving_")]
    names += [k for k in baseline if k not in names and not k.startswith("serving_")]
    if not names:
        return []
    rows = [("metric", "candidate", "serving")]
    for name in names:
        serving = metrics.get(f"serving_{name}", baseline.get(name))
        rows.append((name, _cell(metrics.get(name)), _cell(serving)))
    width = max(len(r[0]) for r in rows)
    return [f"{r[0]:<{width}}  {r[1]:>9}  {r[2]:>9}" for r in rows]


def phases_line(report: Mapping[str, Any]) -> str:
    seconds: Mapping[str, float] = report.get("seconds") or {}
    return "phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())


def render(report: Mapping[str, Any], indent: str = "   ") -> str:
    """The whole report: outcome, gate, table, phases; each line starts with ``indent``."""
    lines = [*outcome_lines(report), *metrics_table(report), phases_line(report)]
    return "\n".join(indent + line for line in lines)
