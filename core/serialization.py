"""Values made fit for strict JSON (``json.dumps(..., allow_nan=False)``), for every document the service
stores or writes: job metrics, certificates, benchmark results."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, numpy scalars by Python ones, tuples by lists
    and dict keys by strings, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value
