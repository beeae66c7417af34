"""``json_safe``: every document the service stores or writes is strict JSON."""

from __future__ import annotations

import json
import math

import numpy as np

from core.serialization import json_safe


def test_json_safe_makes_strict_json() -> None:
    value = {
        1: (math.nan, math.inf, -math.inf, 0.5),
        "numpy": [np.float32("nan"), np.float64(0.25), np.int64(3), np.bool_(True)],
        "nested": {"ok": "text", "none": None},
    }
    safe = json_safe(value)
    assert safe == {
        "1": [None, None, None, 0.5],
        "numpy": [None, 0.25, 3, True],
        "nested": {"ok": "text", "none": None},
    }
    assert type(safe["numpy"][2]) is int and type(safe["numpy"][3]) is bool
    json.dumps(safe, allow_nan=False)
