"""Unlearning methods, registered by name (``get_method``, ``run_unlearning``).

Importing this package imports every built-in method module so that each registers itself.
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

__all__ = [
    "METHODS",
    "MethodConfig",
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
