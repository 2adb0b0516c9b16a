"""The demo tells the truth about its retrain (issue 23, item 7), on real retrain reports.

The demo forces its promotion (``force_promote``) so it has a retrained version to roll back.
When the gate would have rejected the candidate, what it prints and its report.md say so and
why; the scores are a short table with 4 decimals, not Python dicts. The reports here are real
retrains on the stack (the gate's slightly-worse case of test_retrain_gate_refusals): a good
one that the gate passes, then a worse one promoted by force.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_persistence import _stream_and_archive
from tests.test_retrain_gate_refusals import _with, gate_settings  # noqa: F401 - the fixture
from worker.cli import demo, retrain_text
from worker.config import Settings
from worker.control.retrain_job import run_retrain
from worker.stores.cassandra.store import CassandraStore

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

LONG_FLOAT = re.compile(r"\d\.\d{5,}")  # a float printed raw (0.9040000000000001)


def test_a_forced_promotion_says_the_gate_would_have_rejected_it(
        gate_settings: Settings, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    store = _stream_and_archive(gate_settings, 3000, seed=26)
    with CassandraStore(gate_settings.cassandra) as cass:
        passed = run_retrain(_with(gate_settings, explicit_reg=0.08, gate_margin=0.5), cass,
                             store, force=True)
        forced = run_retrain(_with(gate_settings, explicit_reg=0.3), cass, store, force=True,
                             force_promote=True)
    assert passed.outcome == "promoted" and not passed.forced, passed
    assert forced.outcome == "promoted" and forced.forced, forced

    text = retrain_text.render(forced.to_dict())
    first = text.splitlines()[0]
    assert "would have rejected" in first and "(worse)" in first, text
    assert "worse than the serving model's" in first, text  # the gate's reason, not just a word
    assert "forced" in text and "{" not in text and not LONG_FLOAT.search(text), text
    table = [ln.split() for ln in text.splitlines() if ln.split()[:1] in (["metric"], ["rmse"])]
    assert table[0] == ["metric", "candidate", "serving"], text
    assert float(table[1][1]) == pytest.approx(forced.metrics["rmse"], abs=1e-4)
    assert float(table[1][2]) == pytest.approx(forced.metrics["serving_rmse"], abs=1e-4)

    honest = retrain_text.render(passed.to_dict())
    assert "would have rejected" not in honest and "(gate: " in honest, honest

    summary = {"run_id": "t", "streamed": 3000, "applied": 3000, "prequential_rmse": 0.91234567,
               "retrain": forced.to_dict(), "ndcg_at_10": {"online": 0.123456789,
                                                          "retrained": 0.1},
               "wall_seconds": 1.0}
    demo._write_report(tmp_path, summary, [])
    report_md = (tmp_path / "report.md").read_text()
    assert "would have rejected" in report_md, report_md
    assert "{" not in report_md and not LONG_FLOAT.search(report_md), report_md
