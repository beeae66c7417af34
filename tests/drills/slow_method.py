"""The stand-in method ``test-nudge`` made slow and data-dependent (``drill-slow-nudge``).  Each of its three
steps logs, then sleeps a third of ``E2U_DRILL_UNLEARN_SECONDS`` (default 6 s), so that a drill can stop
the worker, drop its database connections or restart Redis while a job is in its model work.  Its noise is
seeded by the forget set as well, so that two batches make two different children, as a real method does
(``test-nudge`` gives every batch of the same parent the same weights, hence the same version id).  Worker
processes import this module (``harness.worker_main``); the job's config names the method."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import zlib
from typing import Any

from core.ml.unlearning.base import METHODS, register
from tests.core.conftest import Nudge

log = logging.getLogger(__name__)

SLOW_METHOD = "drill-slow-nudge"
SECONDS_ENV = "E2U_DRILL_UNLEARN_SECONDS"
STEP_LINE = "drill: slow unlearning step"


class SlowNudge(Nudge):
    name = SLOW_METHOD

    def run(self, inputs, config, child_name, on_progress=None, progress_bar=False):  # type: ignore[no-untyped-def]
        seconds = float(os.environ.get(SECONDS_ENV, "6"))
        for step in range(1, 4):
            log.warning("%s %d of 3", STEP_LINE, step)
            time.sleep(seconds / 3)
            if on_progress:
                on_progress("slow", step, 3)
        users = ",".join(sorted(set(inputs.forget["user_id"].astype(str))))
        seeded = dataclasses.replace(config, seed=config.seed + zlib.crc32(users.encode()))
        result: Any = super().run(inputs, seeded, child_name)
        return result


if SlowNudge.name not in METHODS:
    register(SlowNudge)
