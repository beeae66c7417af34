"""``e2u train`` as a user runs it: on MovieLens-format data of their own, and killed then resumed.

The tiny random-init model is untrained: these tests check behaviour (what is written, what resumes),
not quality."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli import app
from core.ml.data import load_prepared
from core.ml.model import adapter_sha256
from tests.conftest import MODELS_DIR, REPO


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "models").symlink_to(MODELS_DIR)  # converted models are shared, not rebuilt
    monkeypatch.setenv("E2U_HOME", str(tmp_path))
    monkeypatch.setenv("E2U_BASE_MODEL", "tiny")
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")  # production needs a signing key file and salt
    return tmp_path


def write_movielens_like(
    folder: Path, users: int = 120, items: int = 3000, seed: int = 0
) -> tuple[Path, Path]:
    """A ratings file and an items file shaped like MovieLens' own exports: half-star ratings 0.5-5,
    sparse ids (a few hundred thousand apart, not 1..n), thousands of items, titles with commas, quotes
    and years, genres joined by '|'."""
    rng = np.random.default_rng(seed)
    item_ids = np.sort(rng.choice(200_000, size=items, replace=False)) + 1
    user_ids = np.sort(rng.choice(1_000_000, size=users, replace=False)) + 1
    folder.mkdir(parents=True, exist_ok=True)
    ratings, items_file = folder / "ratings.csv", folder / "movies.csv"
    with items_file.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "title", "genres"])
        for k, item in enumerate(item_ids):
            title = f'Film {k}, The "{["Red", "Blue"][k % 2]}" ({1930 + k % 90})'
            writer.writerow([item, title, "Action|Comedy" if k % 3 else "Drama"])
    t = 1_100_000_000
    with ratings.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "item", "rating", "timestamp"])
        for user in user_ids:
            for item in rng.choice(item_ids, size=int(rng.integers(5, 40)), replace=False):
                t += int(rng.integers(1, 5000))
                writer.writerow([user, item, f"{rng.integers(1, 11) / 2:.1f}", t])
    return ratings, items_file


def test_movielens_format_data_of_a_user_prepares_trains_evaluates_and_recommends(home: Path) -> None:
    ratings, items = write_movielens_like(home / "mine")
    runner = CliRunner()
    prepared = runner.invoke(app, ["data", "prepare", "--ratings", str(ratings), "--items", str(items)])
    assert prepared.exit_code == 0, prepared.output
    data = load_prepared(home / "data" / "default")
    assert len(data.items) == 3000 and set(data.samples["rating"]) == {x / 2 for x in range(1, 11)}
    assert (data.samples["label"] == (data.samples["rating"] > 3).astype(int)).all()  # 3.5 is liked
    user = str(data.samples["user_id"].iloc[-1])
    assert user in set(ratings.read_text().split()[-1].split(",")[:1])  # ids kept as written, not 1..n

    options = ["--max-steps", "6", "--eval-every", "3", "--batch-size", "4", "--valid-samples", "32"]
    trained = runner.invoke(app, ["train", *options, "--checkpoint-every", "3"])
    assert trained.exit_code == 0, trained.output
    adapter = home / "adapters" / "v1"
    curve = json.loads((adapter / "learning_curve.json").read_text())
    assert [p["step"] for p in curve["points"]] == [3, 6] and curve["stopped_by"] == "max_steps"
    assert all(len(p["valid_auc_ci95"]) == 2 and p["samples"] == 4 * p["step"] for p in curve["points"])
    assert (home / "adapters" / "v1.run" / "checkpoint.pt").exists()

    figures = home / "figures.json"
    evaluated = runner.invoke(app, ["evaluate", "--limit", "64", "--json", str(figures)])
    assert evaluated.exit_code == 0, evaluated.output
    assert [r["samples"] for r in json.loads(figures.read_text())] == [64, 64, 64]
    recommended = runner.invoke(app, ["recommend", "--user", user, "-k", "3", "--candidates", "20"])
    assert recommended.exit_code == 0, recommended.output
    # "rank. P(like)  item  title" (a progress bar on stderr may share the first line)
    ranked = re.findall(r"([123])\. (\d\.\d{3})\s+(\d+)\s+Film ", recommended.output)
    assert [r[0] for r in ranked] == ["1", "2", "3"] and {r[2] for r in ranked} <= set(data.items["item_id"])


def _train(home: Path, log: str, *extra: str) -> subprocess.Popen[bytes]:
    """``e2u train`` in its own process; its output goes to ``home/<log>`` (a pipe nobody reads would fill
    up with progress bars and block it)."""
    env = {**os.environ, "E2U_HOME": str(home), "E2U_BASE_MODEL": "tiny", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(REPO)
    options = ["--max-steps", "120", "--eval-every", "40", "--batch-size", "4", "--valid-samples", "16"]
    command = [sys.executable, "-m", "app.cli", "train", *options, "--checkpoint-every", "10", *extra]
    with (home / log).open("wb") as output:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)


@pytest.mark.slow  # three processes that each import torch: ~30 s idle, minutes on a loaded machine
def test_a_killed_train_command_resumes_and_ends_with_the_same_adapter(home: Path) -> None:
    ratings, items = write_movielens_like(home / "mine", users=40, items=300)
    prepared = CliRunner().invoke(app, ["data", "prepare", "--ratings", str(ratings), "--items", str(items)])
    assert prepared.exit_code == 0, prepared.output
    whole = home / "whole"
    uninterrupted = _train(home, "whole.log", "--out", str(whole))
    assert uninterrupted.wait(timeout=300) == 0

    killed = home / "killed"
    run = _train(home, "killed.log", "--out", str(killed))
    checkpoint = home / "killed.run" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)  # no chance to clean up, as with a power cut or the OOM killer
    assert run.wait(timeout=60) == -signal.SIGKILL
    assert not (killed / "adapter_model.safetensors").exists()

    resumed = _train(home, "resumed.log", "--out", str(killed), "--resume")
    assert resumed.wait(timeout=300) == 0, (home / "resumed.log").read_text()
    output = (home / "resumed.log").read_text()
    assert "resumed at step" in output and "120 steps" in output
    assert adapter_sha256(killed) == adapter_sha256(whole)
    curve = json.loads((killed / "learning_curve.json").read_text())["points"]
    whole_curve = json.loads((whole / "learning_curve.json").read_text())["points"]
    assert [p["valid_auc"] for p in curve] == [p["valid_auc"] for p in whole_curve]


def test_resume_without_a_checkpoint_or_with_another_recipe_is_refused(home: Path) -> None:
    ratings, items = write_movielens_like(home / "mine", users=30, items=200)
    runner = CliRunner()
    assert (
        runner.invoke(app, ["data", "prepare", "--ratings", str(ratings), "--items", str(items)]).exit_code
        == 0
    )
    options = ["--max-steps", "2", "--eval-every", "2", "--batch-size", "4", "--valid-samples", "8"]
    missing = runner.invoke(app, ["train", *options, "--resume"])
    assert missing.exit_code == 2 and "no checkpoint to resume from" in missing.output
    assert runner.invoke(app, ["train", *options]).exit_code == 0
    other = runner.invoke(app, ["train", *options, "--learning-rate", "0.01", "--resume"])
    assert other.exit_code == 2 and "another recipe" in other.output
    bad = runner.invoke(app, ["train", *options, "--schedule", "step"])
    assert bad.exit_code == 2 and "schedule must be one of" in bad.output
