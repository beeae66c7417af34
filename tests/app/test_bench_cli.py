"""``e2u bench unlearning`` end to end on the tiny random-init model (untrained: checks what the command
writes and refuses, not the figures' quality)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from app.cli import app
from core.ml.data import SampleConfig, prepare, save_prepared
from tests.conftest import MODELS_DIR, synthetic_dataset


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    save_prepared(
        prepare(synthetic_dataset(users=16, items=20, per_user=8), SampleConfig(history_len=3)),
        tmp_path / "data" / "default",
    )
    (tmp_path / "models").symlink_to(MODELS_DIR)  # converted models are shared, not rebuilt
    monkeypatch.setenv("E2U_HOME", str(tmp_path))
    threads = torch.get_num_threads()  # --threads sets it for the whole process
    yield tmp_path
    torch.set_num_threads(threads)


def test_bench_unlearning_writes_json_png_and_a_table(home: Path) -> None:
    out = home / "results" / "run.json"
    options = [
        "--base",
        "tiny",
        "--threads",
        "1",
        "--single-user",
        "--users",
        "8",
        "--train-per-user",
        "4",
        "--test-samples",
        "12",
        "--methods",
        "retrain,e2urec",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, ["bench", "unlearning", *options])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert [r["method"] for r in record["records"]] == ["parent", "retrain", "e2urec"]
    assert record["sizes"]["users"] == 8 and record["sizes"]["forget_users"] == 1
    assert record["sizes"]["train"] <= 32 and record["setting"] == "full"
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "e2urec" in result.output and "wall time <= 20% of Retrain's" in result.output


@pytest.mark.parametrize(
    "options",
    [
        ["--forget-users", "2", "--forget-fraction", "0.1"],
        ["--single-user", "--forget-users", "3"],
        ["--methods", "e2urec"],
    ],
)
def test_bench_unlearning_refuses_contradictory_options(home: Path, options: list[str]) -> None:
    result = CliRunner().invoke(app, ["bench", "unlearning", "--base", "tiny", *options])
    assert result.exit_code == 2
