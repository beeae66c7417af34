"""The unlearning benchmark: one parent, every registered method on the same forget set, one table.

``config`` (what a run is), ``data`` (its frames), ``run`` (the run and the aims), ``records`` (its typed
result, as written to JSON), ``output`` (its table and plot).  ``e2u bench unlearning`` is the command.
"""

from benchmarks.unlearning.config import (
    DEFAULT_METHODS,
    PARENT,
    REFERENCE,
    BenchConfig,
    BenchmarkError,
    BenchSizes,
    full_config,
    quick_config,
)
from benchmarks.unlearning.output import format_table, plot
from benchmarks.unlearning.records import Aim, ForgetFigures, MethodRecord, Role, UnlearningResult
from benchmarks.unlearning.run import check_aims, run_benchmark

__all__ = [
    "DEFAULT_METHODS",
    "PARENT",
    "REFERENCE",
    "Aim",
    "BenchConfig",
    "BenchSizes",
    "BenchmarkError",
    "ForgetFigures",
    "MethodRecord",
    "Role",
    "UnlearningResult",
    "check_aims",
    "format_table",
    "full_config",
    "plot",
    "quick_config",
    "run_benchmark",
]
