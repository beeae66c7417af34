"""Unlearning methods, registered by name (``get_method``, ``run_unlearning``).

Importing this package imports every built-in method module so that each registers itself.  Beside the
methods: ``base`` (the interface and registry), ``progress``, ``adapters`` (adapter bookkeeping and the
built-ins' base class), ``losses``, ``optimisation`` (config, step budget, loop) and ``forget_retain``
(the template of the fine-tuning baselines).
"""

from core.ml.unlearning import e2urec, label_flip, neggrad, npo, retrain
from core.ml.unlearning.base import (
    METHODS,
    MethodConfig,
    UnlearningError,
    UnlearningInputs,
    UnlearningMethod,
    UnlearningReport,
    get_method,
    run_unlearning,
)
from core.ml.unlearning.progress import Progress, ProgressFn

__all__ = [
    "METHODS",
    "MethodConfig",
    "Progress",
    "ProgressFn",
    "UnlearningError",
    "UnlearningInputs",
    "UnlearningMethod",
    "UnlearningReport",
    "e2urec",
    "get_method",
    "label_flip",
    "neggrad",
    "npo",
    "retrain",
    "run_unlearning",
]
