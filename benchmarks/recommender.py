"""Adapter v1 quality against the two non-LLM references, with a learning curve.

Trains adapter v1 on the train split (early stopping on a validation subset, never on test), keeps
snapshots of the LoRA weights at the curve points, then scores one fixed random test subset with every
snapshot and with the references.  Writes JSON + a PNG learning curve and saves the final adapter.

    python -m benchmarks.recommender [--max-steps 240] [--curve-every 60] [--test-samples 600]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from core.ml.data import load_prepared
from core.ml.evaluation import REFERENCES, evaluate_probs
from core.ml.model import LoraSpec, ModelConfig, load_base, lora_state, new_adapter, save_adapter
from core.ml.training import TrainConfig, train_adapter
from core.ml.workflows import scorer_for


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="smollm2")
    parser.add_argument("--max-steps", type=int, default=240)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--curve-every", type=int, default=60)
    parser.add_argument("--test-samples", type=int, default=600)
    parser.add_argument("--valid-samples", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path("var/data/default"))
    parser.add_argument("--cache-dir", default="var/models")
    parser.add_argument("--adapter-out", type=Path, default=Path("var/adapters/v1"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recommender"))
    args = parser.parse_args()

    data = load_prepared(args.data_dir)
    train, valid, test = data.split("train"), data.split("valid"), data.split("test")
    test_subset = test.sample(n=min(args.test_samples, len(test)), random_state=args.seed).reset_index(
        drop=True
    )
    config = TrainConfig(
        lora=LoraSpec(),
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
        eval_every=args.curve_every,
        patience=100,  # the curve needs every point; the best-on-valid weights are still restored at the end
        valid_samples=args.valid_samples,
        seed=args.seed,
    )
    loaded = load_base(ModelConfig(base=args.base, cache_dir=args.cache_dir))
    new_adapter(loaded, config.lora, "v1", seed=args.seed)
    scorer = scorer_for(loaded, data)
    snapshots = {0: lora_state(loaded.model, "v1")}

    def snapshot(step: int, _total: int) -> None:
        if step % args.curve_every == 0:
            snapshots[step] = lora_state(loaded.model, "v1")

    result = train_adapter(scorer, "v1", train, valid, config, progress=True, on_step=snapshot)
    final = lora_state(loaded.model, "v1")
    sha = save_adapter(
        loaded,
        "v1",
        args.adapter_out,
        {
            "kind": "train",
            "train": config.to_dict(),
            "data_sha256": data.content_hash(),
            "result": asdict(result),
        },
    )

    labels = test_subset["label"].to_numpy()
    curve = []
    named = dict(loaded.model.named_parameters())
    for step, state in sorted(snapshots.items()):
        with torch.no_grad():
            for key, value in state.items():
                named[key].copy_(value)
        started = time.perf_counter()
        probs = scorer.score(test_subset, progress=True, desc=f"test @ step {step}")
        ev = evaluate_probs(f"step {step}", labels, probs)
        curve.append(
            {
                "step": step,
                "train_samples": step * args.batch_size,
                **ev.as_dict(),
                "score_seconds": time.perf_counter() - started,
            }
        )
        print(json.dumps(curve[-1]))
    with torch.no_grad():
        for key, value in final.items():
            named[key].copy_(value)
    references = [
        evaluate_probs(name, labels, fn(train, test_subset), calibrated=False).as_dict()
        for name, fn in REFERENCES.items()
    ]
    references_full = [
        evaluate_probs(name, test["label"].to_numpy(), fn(train, test), calibrated=False).as_dict()
        for name, fn in REFERENCES.items()
    ]
    report = {
        "command": "python -m benchmarks.recommender "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k in {"max_steps", "test_samples", "curve_every"}
        ),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, device {loaded.device}",
        "base": args.base,
        "train_config": config.to_dict(),
        "train_result": asdict(result),
        "adapter_sha256": sha,
        "test_subset": len(test_subset),
        "curve": curve,
        "references_on_subset": references,
        "references_on_full_test": references_full,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [p["train_samples"] for p in curve]
    ax.plot(xs, [p["auc"] for p in curve], marker="o", label="SmolLM2 + LoRA adapter (test AUC)")
    ax.fill_between(xs, [p["auc_ci95"][0] for p in curve], [p["auc_ci95"][1] for p in curve], alpha=0.2)
    for ref, style in zip(references, ["--", ":"], strict=True):
        ax.axhline(ref["auc"], linestyle=style, color="gray", label=f"{ref['name']} ({ref['auc']:.3f})")
    ax.axhline(0.5, color="black", linewidth=0.5)
    ax.set_xlabel("training samples seen")
    ax.set_ylabel(f"test AUC ({len(test_subset)} samples, 95% bootstrap CI)")
    ax.set_title("Adapter v1 learning curve on MovieLens-100K (CPU budget)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"wrote {args.out.with_suffix('.json')} and .png; adapter {args.adapter_out} sha256 {sha[:12]}")


if __name__ == "__main__":
    main()
