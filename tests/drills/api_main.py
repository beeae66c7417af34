"""One API process for the drills: ``python -m tests.drills.api_main PORT`` serves the app (settings from
the environment) with uvicorn on 127.0.0.1:PORT.

With ``E2U_DRILL_BLOCK_SWAP=1`` the process loads its first adapter (at start-up) as usual, then blocks for
good in the load of any later one, after logging ``BLOCKED_LINE``: a hot swap caught in the middle, where a
drill SIGKILLs it.  Test code only: the product has no such hook."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn

from core import serving

BLOCK_ENV = "E2U_DRILL_BLOCK_SWAP"
BLOCKED_LINE = "drill: hot swap blocked while loading"

log = logging.getLogger("e2u.drill")


def block_every_swap() -> None:
    """Let the first ``load_adapter`` through, block every later one (after logging which)."""
    load = serving.load_adapter
    loads = 0

    def blocking_load(loaded: Any, folder: Path, name: str, sha256: str | None = None) -> None:
        nonlocal loads
        loads += 1
        if loads > 1:
            log.warning("%s %s", BLOCKED_LINE, Path(folder).name)
            while True:
                time.sleep(3600)
        load(loaded, folder, name, sha256=sha256)

    serving.load_adapter = blocking_load  # type: ignore[assignment]


def main(port: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if os.environ.get(BLOCK_ENV) == "1":
        block_every_swap()
    uvicorn.run(
        "app.main:create_app", factory=True, host="127.0.0.1", port=port, log_level="info", access_log=False
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
