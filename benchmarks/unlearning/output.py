"""What a run prints (a table, then the aims) and draws (six panels), methods in one order and colour."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks import report
from benchmarks.report import Column, fmt
from benchmarks.unlearning.records import MethodRecord, Role, UnlearningResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

COLUMNS = [
    Column("method", 16, "<"),
    Column("seconds", 8),
    Column("xRetrain", 8),
    Column("test AUC [95% CI]", 24),
    Column("LogLoss", 8),
    Column("Acc", 6),
    Column("JSD->R", 8),
    Column("symKL->R", 8),
    Column("MIA AUC", 8),
    Column("gold F before->after", 21),
    Column("params", 8),
    Column("peak MB", 8),
]


def _row(r: MethodRecord) -> list[str]:
    low, high = r.test.auc_ci95
    return [
        r.label,
        fmt(r.seconds, ".1f"),
        fmt(r.seconds_vs_retrain, ".3f"),
        f"{fmt(r.test.auc, '.4f')} [{fmt(low, '.3f')}, {fmt(high, '.3f')}]",
        fmt(r.test.logloss, ".4f"),
        fmt(r.test.accuracy, ".3f"),
        fmt(r.forget.to_retrain["jensen_shannon"], ".5f"),
        fmt(r.forget.to_retrain["symmetric_kl"], ".5f"),
        fmt(r.forget.mia_auc, ".4f"),
        f"{r.forget.gold_prob_before:.4f}->{r.forget.gold_prob_after:.4f}",
        str(r.trainable_parameters),
        f"{r.peak_memory_bytes / 2**20:.0f}",
    ]


def format_table(result: UnlearningResult) -> str:
    """The figures as a fixed-width text table, then one line per aim with its verdict."""
    aims = [
        f"{'MET   ' if a.met else 'MISSED'} {a.aim}: {a.value:.4g} "
        f"(target {a.target}; margin {a.margin:+.4g})"
        for a in result.aims
    ]
    return "\n".join([report.format_table(COLUMNS, map(_row, result.records)), "", *aims])


def _colour(r: MethodRecord) -> str:
    if r.role == Role.BEFORE:
        return "#9e9e9e"
    if r.role == Role.EXACT:
        return "#2e7d32"
    return "#c62828" if r.method == "e2urec" else "#1565c0"


def plot(result: UnlearningResult, path: Path) -> None:
    """Six panels in one PNG: cost, utility, the two divergences to Retrain, the attack, F's gold P."""
    records = result.records
    names = [r.label.replace(" (", "\n(") for r in records]
    colours = [_colour(r) for r in records]
    fig, axes = report.figure(2, 3, (16, 8.5))

    report.bars(
        axes[0, 0], names, [r.seconds for r in records], colours, "wall seconds (parent: its training)"
    )
    for k, r in enumerate(records):
        if r.seconds_vs_retrain is not None and r.role != Role.BEFORE:
            axes[0, 0].annotate(
                f"x{r.seconds_vs_retrain:.2f}", (k, 0), ha="center", va="bottom", fontsize=8, color="white"
            )
    intervals = {
        "test AUC with bootstrap 95% CI (higher is better)": [(r.test.auc, r.test.auc_ci95) for r in records],
        "membership-inference AUC, F vs unseen, 95% CI (0.5 is ideal)": [
            (r.forget.mia_auc, r.forget.mia_auc_ci95) for r in records
        ],
    }
    for ax, (title, figures) in zip((axes[0, 1], axes[1, 1]), intervals.items(), strict=True):
        values, cis = zip(*figures, strict=True)
        report.points_with_ci(ax, names, values, cis, colours, title)
    divergences = {
        "jensen_shannon": "Jensen-Shannon divergence to Retrain on F, bits (lower is better)",
        "symmetric_kl": "symmetric KL to Retrain on F, nats (lower is better)",
    }
    for ax, (name, title) in zip((axes[0, 2], axes[1, 0]), divergences.items(), strict=True):
        report.bars(ax, names, [r.forget.to_retrain[name] for r in records], colours, title)
    _gold_panel(axes[1, 2], result, names, colours)

    sizes, machine = result.sizes, result.machine
    fig.suptitle(
        f"Unlearning benchmark ({result.setting}): {sizes.forget_users} of {sizes.users} users "
        f"forgotten ({sizes.forget} of {sizes.train} training samples), test n={sizes.test}; "
        f"{machine.device}, {machine.cpu_count} CPUs",
        fontsize=11,
    )
    verdicts = "   ".join(f"{'MET' if a.met else 'MISSED'}: {a.aim} ({a.value:.3g})" for a in result.aims)
    fig.text(0.5, 0.005, "E2URec aims - " + verdicts, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    report.save_figure(fig, path, dpi=110)


def _gold_panel(ax: Axes, result: UnlearningResult, names: list[str], colours: list[str]) -> None:
    """F's gold-label probability after each method, against the parent's on F and Retrain's on unseen."""
    records = result.records
    x = np.arange(len(records))
    golds = [r.forget.gold_prob_after for r in records]
    ax.scatter(x, golds, c=colours, s=60, zorder=3)
    for k, value in enumerate(golds):
        ax.annotate(
            f"{value:.3f}", (k, value), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8
        )
    ax.set_xticks(x, names, fontsize=8)
    ax.set_title("F's mean gold-label probability after unlearning", fontsize=10)
    before = records[0].forget.gold_prob_before
    ax.axhline(before, color="grey", ls="--", lw=1, label="parent on F (before)")
    unseen = float(np.mean([r.forget.unseen_gold_prob for r in records if r.role == Role.EXACT]))
    ax.axhline(unseen, color="#2e7d32", ls=":", lw=1, label="Retrain on unseen")
    span = [*golds, unseen, before]
    ax.set_ylim(max(0.0, min(span) - 0.05), min(1.0, max(span) + 0.05))
    ax.legend(fontsize=8, loc="lower right")


def plot_per_user(summary: dict[str, Any], units: list[dict[str, Any]], path: Path) -> None:
    """The method over many forget users (``sweep.SweepResult.to_dict``'s ``units`` and its ``by_size``
    "all" entry): per model, the distribution over forget users of the JS divergence to Retrain on the
    user's samples and of the change of its mean gold-label probability (boxes, every user a dot, the mean
    with its bootstrap 95% interval), and E2URec minus each other model, paired user by user."""
    per_user = summary["per_user"]
    models = [m for m in per_user if m != "retrain"]
    fig, axes = report.figure(1, 3, (18, 5.5))
    for ax, key, title in (
        (axes[0], "jsd_to_retrain", "JSD to Retrain on the user's samples (lower: closer)"),
        (axes[1], "gold_change", "change of the user's mean gold-label probability"),
    ):
        values = [[u[key] for unit in units for u in unit["per_user"][m]] for m in models]
        ax.boxplot(values, showfliers=False)
        rng = np.random.default_rng(0)
        for k, column in enumerate(values, start=1):
            ax.scatter(k + rng.uniform(-0.15, 0.15, len(column)), column, s=6, alpha=0.4, color="grey")
        means = [per_user[m][key]["mean"] for m in models]
        cis = [tuple(per_user[m][key]["ci95"]) for m in models]
        x = np.arange(1, len(models) + 1)
        ax.errorbar(
            x,
            means,
            yerr=[
                [v - lo for v, (lo, _) in zip(means, cis, strict=True)],
                [hi - v for v, (_, hi) in zip(means, cis, strict=True)],
            ],
            fmt="o",
            color="#c62828",
            capsize=4,
        )
        ax.set_xticks(x, models, fontsize=8, rotation=20)
        ax.set_title(f"{title}, n={per_user[models[0]][key]['n']} users", fontsize=10)
    axes[1].axhline(0, color="grey", lw=1)
    paired = summary["e2urec_minus_other_jsd_to_retrain"]
    names = list(paired)
    report.points_with_ci(
        axes[2],
        names,
        [paired[n]["mean"] for n in names],
        [tuple(paired[n]["ci95"]) for n in names],
        ["#1565c0"] * len(names),
        "JSD to Retrain, E2URec minus other, paired per user (< 0: E2URec closer)",
    )
    axes[2].lines[-1].remove()  # points_with_ci's chance line at 0.5 means nothing for a difference
    axes[2].axhline(0, color="grey", lw=1)
    spread = [0.0, *(v for n in names for v in (paired[n]["mean"], *paired[n]["ci95"]))]
    margin = 0.1 * (max(spread) - min(spread) or 1e-3)
    axes[2].set_ylim(min(spread) - margin, max(spread) + margin)
    fig.tight_layout()
    report.save_figure(fig, path, dpi=100)
