"""Metrics added for the unlearning benchmark: the rank AUC behind the bootstrap intervals, the
membership-inference interval, and the efficiency meters."""

from __future__ import annotations

import gc
import mmap

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from core.ml import metrics


def test_rank_auc_equals_sklearn_including_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # coarse: many ties
    assert metrics.rank_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(metrics.rank_auc(np.ones(5), np.arange(5)))


def test_bootstrap_intervals_hold_the_point_estimate() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(0.5 + 0.3 * (labels - 0.5) + 0.2 * rng.standard_normal(200), 0.01, 0.99)
    low, high = metrics.bootstrap_auc_ci(labels, probs)
    assert low < metrics.auc(labels, probs) < high and high - low < 0.2
    members, unseen = slice(0, 100), slice(100, 200)
    point = metrics.membership_inference_auc(labels[members], probs[members], labels[unseen], probs[unseen])
    low, high = metrics.bootstrap_membership_ci(
        labels[members], probs[members], labels[unseen], probs[unseen]
    )
    assert low < point < high


def test_parameter_count() -> None:
    layer = torch.nn.Linear(3, 4)
    assert metrics.parameter_count(layer.parameters()) == 16


def _resident_block(size: int) -> mmap.mmap:
    """``size`` bytes of fresh anonymous pages, each written once so that it is resident.  Not numpy or
    malloc: an allocator may hand back memory the process already holds, and then RSS does not grow."""
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_resource_meter_sees_a_block_allocation_and_resets_between_blocks() -> None:
    gc.collect()  # garbage of earlier tests freed inside the block would hide the block's growth
    gc.disable()
    try:
        with metrics.ResourceMeter("cpu") as meter:
            block = _resident_block(64 * 2**20)
            held = metrics.proc_status_kib("VmRSS")
        block.close()  # unmapped: RSS falls back, the process's peak stays
        with metrics.ResourceMeter("cpu") as quiet:
            sum(range(1000))
    finally:
        gc.enable()
    assert meter.kind in ("cpu_peak_rss", "cpu_ru_maxrss") and meter.seconds > 0
    assert held is not None and meter.peak_bytes >= held * 1024  # the peak covers what the block held
    assert meter.peak_bytes - meter.baseline_bytes > 48 * 2**20
    if meter.kind == "cpu_peak_rss":  # the peak is per block, not per process
        assert quiet.peak_bytes - quiet.baseline_bytes < 32 * 2**20
