"""The typed records read the result files already recorded under ``benchmarks/results/`` and write them
back unchanged; the shared table and JSON writer."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import report
from benchmarks.ranking import RankingResult
from benchmarks.recommender import RecommenderResult
from benchmarks.unlearning import Role, UnlearningResult, format_table

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

RECORDS: dict[str, Any] = {
    "ranking.json": RankingResult,
    "recommender.json": RecommenderResult,
    "unlearning_quick.json": UnlearningResult,
}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_recorded_results_read_back_unchanged(name: str) -> None:
    recorded = json.loads((RESULTS / name).read_text())
    record = RECORDS[name].from_dict(recorded)
    assert json.loads(report.to_json(record.to_dict())) == recorded


def test_recorded_unlearning_figures_are_typed() -> None:
    result = UnlearningResult.from_dict(json.loads((RESULTS / "unlearning_quick.json").read_text()))
    e2urec = result.record("e2urec")
    assert e2urec.role == Role.APPROXIMATE and result.records[0].role == Role.BEFORE
    assert e2urec.test.auc == pytest.approx(0.5818, abs=1e-4)
    assert e2urec.forget.to_retrain["jensen_shannon"] == pytest.approx(0.0040, abs=1e-4)
    assert result.config.setting == "quick" and result.config.sizes.users == 20
    assert [a.met for a in result.aims] == [True, False, True, True]
    table = format_table(result).splitlines()
    assert table[0].split()[:2] == ["method", "seconds"] and set(table[1]) == {"-"}
    assert table[2].startswith("parent (before)") and "0.5818 [0.490, 0.692]" in table[4]
    assert table[-3].startswith("MISSED test AUC within 0.01 of Retrain's: 0.1123")


def test_json_is_strict_and_undefined_figures_come_back_as_nan(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "r.json"
    report.save_json({"auc": math.nan, "ci": (math.inf, 0.5), "n": np.int64(3), "p": np.float32(0.25)}, path)
    assert json.loads(path.read_text()) == {"auc": None, "ci": [None, 0.5], "n": 3, "p": 0.25}
    assert math.isnan(report.number(None)) and report.interval([None, 0.5])[1] == 0.5
    with pytest.raises(TypeError, match="set is not JSON serialisable"):
        report.to_json({"x": {1}})


def test_table_aligns_columns_and_marks_undefined_figures() -> None:
    columns = [report.Column("name", 6, "<"), report.Column("auc", 6)]
    rows = [
        ["a", report.fmt(0.5, ".2f")],
        ["bb", report.fmt(math.nan, ".2f")],
        ["c", report.fmt(None, ".2f")],
    ]
    assert report.format_table(columns, rows).splitlines() == [
        "name      auc",
        "-------------",
        "a        0.50",
        "bb          -",
        "c           -",
    ]
