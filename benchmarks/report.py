"""What every benchmark writes: strict JSON, a fixed-width text table, and matplotlib figures.

A figure that is undefined (an AUC over one class) is NaN in memory and null in the JSON; ``number`` reads
it back as NaN.  Each benchmark's typed record has ``to_dict`` (JSON-ready) and ``from_dict`` (reads the
files already under ``benchmarks/results/``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import torch

from core.ml.evaluation import Evaluation
from core.serialization import json_safe

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

RESULTS = Path("benchmarks/results")
Device: TypeAlias = torch.device  # ``Machine.torch`` (the version) shadows the module in its class body


# ---------------------------------------------------------------------------------------------- JSON


def to_json(record: dict[str, Any]) -> str:
    """Strict JSON (NaN and infinities become null), indented."""
    return json.dumps(json_safe(record), indent=2, allow_nan=False, default=_numpy_scalar)


def save_json(record: dict[str, Any], path: Path) -> None:
    """``to_json`` into ``path``; the folder is created if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(record) + "\n")


def _numpy_scalar(value: Any) -> Any:
    """A numpy scalar (a method's diagnostics may hold one) as the Python value JSON can take."""
    if isinstance(value, np.generic):
        return json_safe(value.item())
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_json(path: Path) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(path.read_text())
    return raw


def number(value: float | None) -> float:
    """A figure read back from JSON: null (an undefined figure) is NaN again."""
    return math.nan if value is None else float(value)


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """The benchmarks' summary of repeated figures: n, median, min and max of the values seen; ``missing``
    counts the None values (not seen) when there are any."""
    seen = [v for v in values if v is not None]
    summary: dict[str, Any] = {"n": len(seen)}
    if seen:
        summary |= {"median": statistics.median(seen), "min": min(seen), "max": max(seen)}
    if len(seen) < len(values):
        summary["missing"] = len(values) - len(seen)
    return summary


def interval(values: Sequence[float | None]) -> tuple[float, float]:
    low, high = values
    return number(low), number(high)


def evaluation_from_dict(raw: dict[str, Any], name: str | None = None) -> Evaluation:
    """An ``Evaluation`` as ``Evaluation.as_dict`` wrote it (``name`` where the record leaves it out)."""
    return Evaluation(
        name=name if name is not None else raw["name"],
        samples=raw["samples"],
        auc=number(raw["auc"]),
        auc_ci95=interval(raw["auc_ci95"]),
        logloss=raw["logloss"],
        accuracy=raw["accuracy"],
    )


@dataclass(frozen=True)
class Machine:
    """Where a benchmark ran (absolute seconds only compare on the same machine)."""

    platform: str
    processor: str
    cpu_count: int | None
    torch_threads: int
    device: str
    torch: str
    gpu: str | None = None

    @classmethod
    def here(cls, device: Device) -> Machine:
        return cls(
            platform=platform.platform(),
            processor=platform.processor() or platform.machine(),
            cpu_count=os.cpu_count(),
            torch_threads=torch.get_num_threads(),
            device=str(device),
            torch=torch.__version__,
            gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        )

    def summary(self) -> str:
        return f"{self.processor}, {self.torch_threads} torch threads, device {self.device}"

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if self.gpu is None:  # recorded only on a GPU
            del values["gpu"]
        return values

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Machine:
        return cls(**raw)


# ---------------------------------------------------------------------------------------------- table


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; "-" for a figure that is missing or undefined."""
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


@dataclass(frozen=True)
class Column:
    title: str
    width: int
    align: str = ">"  # "<" for names


def format_table(columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> str:
    """Fixed-width text: the titles, a rule, one line per row of already formatted cells."""

    def line(cells: Sequence[str]) -> str:
        return " ".join(f"{cell:{c.align}{c.width}}" for c, cell in zip(columns, cells, strict=True))

    head = line([c.title for c in columns])
    return "\n".join([head, "-" * len(head), *(line(row) for row in rows)])


# ---------------------------------------------------------------------------------------------- plots


def figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Figure, Any]:
    """A matplotlib figure drawn off-screen (no display on servers) and its axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=size)


def save_figure(fig: Figure, path: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def bars(
    ax: Axes, names: list[str], values: Sequence[float], colours: list[str], title: str, spec: str = ".3g"
) -> None:
    """One bar per name, its value written on top ("-" and a zero bar where undefined)."""
    x = np.arange(len(names))
    clean = [v if math.isfinite(v) else 0.0 for v in values]
    ax.bar(x, clean, color=colours)
    for k, v in enumerate(values):
        ax.annotate(fmt(v, spec), (k, clean[k]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_title(title, fontsize=10)


def points_with_ci(
    ax: Axes,
    names: list[str],
    values: Sequence[float],
    cis: Sequence[tuple[float, float]],
    colours: list[str],
    title: str,
) -> None:
    """One point per name with its 95% interval as an error bar, and the chance line at 0.5."""
    x = np.arange(len(names))
    low = [v - (lo if math.isfinite(lo) else v) for v, (lo, _) in zip(values, cis, strict=True)]
    high = [(hi if math.isfinite(hi) else v) - v for v, (_, hi) in zip(values, cis, strict=True)]
    ax.errorbar(x, values, yerr=[low, high], fmt="none", ecolor="black", capsize=4)
    ax.scatter(x, values, c=colours, s=60, zorder=3)
    ax.axhline(0.5, color="black", lw=1, ls="--")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_title(title, fontsize=10)
