"""The model server: one frozen base model, the active LoRA adapter, and hot-swapping between versions.

A peft model has one active adapter at a time, so every forward pass runs under ``_forward_lock`` after
setting the adapter of the request that makes it.  A request takes a *lease* on the version that is
active when it starts and keeps it to the end, so:

- ``activate(version, folder)`` loads the new adapter beside the old one (under the forward lock: peft
  edits modules in place), then moves the active pointer; new leases get the new version;
- leases taken before the switch finish on the old version;
- when the last lease on a superseded version ends, its weights are freed (``delete_adapter``).

No HTTP, database or queue imports: the app wires a resolver of the registry's active version
(``AdapterWatcher``) and a Redis subscription that calls ``AdapterWatcher.wake``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from peft import PeftModel

from core.ml.model import LoadedModel, load_adapter, unload_adapter
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.recommender import Recommendation, recommend
from core.ml.scoring import Scorer

log = logging.getLogger(__name__)


class NoActiveAdapter(RuntimeError):
    """The server has no adapter loaded yet (startup before bootstrap, or an empty registry)."""


@dataclass(frozen=True)
class ActiveAdapter:
    """What the registry says should serve: a version id and the folder holding its weights."""

    version: str
    folder: Path


class AdapterLease:
    """One request's hold on an adapter version; every forward pass it makes uses that version."""

    def __init__(self, server: ModelServer, version: str, slot: str) -> None:
        self._server = server
        self.version = version
        self._slot = slot

    @contextmanager
    def _forward(self, catalog: Catalog | None) -> Iterator[Scorer]:
        server = self._server
        with server._forward_lock:
            model = server.loaded.model
            if isinstance(model, PeftModel):
                model.set_adapter(self._slot)
            scorer = server.scorer
            # this request's titles and profiles (data under erasure left out), else the server's default
            wanted = catalog if catalog is not None else server._default_catalog
            if scorer.builder.catalog is not wanted:
                scorer.builder = PromptBuilder(server.loaded.tokenizer, wanted)
            yield scorer

    def recommend(
        self,
        user_id: str,
        history: Sequence[tuple[str, float]],
        candidates: Sequence[str],
        k: int,
        catalog: Catalog | None = None,
    ) -> list[Recommendation]:
        """Top-``k`` of ``candidates`` for ``user_id`` given ``history`` (item id, rating), oldest first.
        ``catalog``: titles and profiles for this request's prompts (default: the server's)."""
        with self._forward(catalog) as scorer:
            return recommend(scorer, user_id, history, candidates, k)

    def score(self, samples: pd.DataFrame, catalog: Catalog | None = None) -> np.ndarray:
        """P(yes) per row of ``samples`` (columns user_id, item_id, history as encoded by core.ml.data)."""
        with self._forward(catalog) as scorer:
            return scorer.score(samples)


class ModelServer:
    """Holds the base model and the adapter versions currently in use; thread-safe.

    ``loaded``: the base model (an adapter may already be attached; it is ignored until ``activate``).
    ``catalog``: titles and profiles for prompts; replace it with ``set_catalog`` when the data change.
    """

    def __init__(self, loaded: LoadedModel, catalog: Catalog, batch_size: int = 16) -> None:
        self.loaded = loaded
        self.scorer = Scorer(loaded, PromptBuilder(loaded.tokenizer, catalog), batch_size=batch_size)
        self._default_catalog = catalog
        self._forward_lock = threading.Lock()  # one forward pass (and one adapter edit) at a time
        self._state_lock = threading.Lock()  # the pointers below; always taken after _forward_lock
        self._active: str | None = None
        self._slots: dict[str, str] = {}  # version -> peft adapter name (versions may hold '.' or '-')
        self._leases: dict[str, int] = {}
        self._next_slot = 0
        self.swaps = 0
        self.freed: list[str] = []  # versions whose weights were freed, oldest first (for metrics/tests)

    # ------------------------------------------------------------------------------------------ state

    @property
    def active_version(self) -> str | None:
        return self._active

    def loaded_versions(self) -> list[str]:
        """Versions whose weights are in memory (the active one, plus any still finishing requests)."""
        with self._state_lock:
            return list(self._slots)

    def in_flight(self, version: str) -> int:
        with self._state_lock:
            return self._leases.get(version, 0)

    def set_catalog(self, catalog: Catalog) -> None:
        """The default titles and profiles, for leases that do not pass their own."""
        with self._forward_lock:
            self._default_catalog = catalog

    def forget_prompts_of(self, user_id: str) -> None:
        """Drop cached prompt encodings that may hold ``user_id``'s profile and history (at erasure
        intake, not at the next swap).  The cache is keyed by prompt text, not by user, so every entry
        goes: re-encoding costs a tokenizer call per prompt."""
        with self._forward_lock:
            self.scorer.forget_cached_prompts()
        log.info("prompt cache emptied for an erasure")

    # ------------------------------------------------------------------------------------------ swap

    def activate(self, version: str, folder: Path) -> bool:
        """Make ``version`` (weights in ``folder``) serve new requests; returns False if it already did.

        The previous version keeps serving the requests that hold it and is freed when the last one ends.
        Raises ``core.ml.model.ModelError`` if the folder is not a usable adapter (nothing changes then).
        """
        with self._forward_lock:
            with self._state_lock:
                if self._active == version:
                    return False
                slot = self._slots.get(version)
            if slot is None:  # not in memory yet (a rollback may find it still finishing requests)
                slot = f"e2u_slot_{self._next_slot}"
                self._next_slot += 1
                load_adapter(self.loaded, folder, slot)
            with self._state_lock:
                self._slots[version] = slot
                previous, self._active = self._active, version
                self.swaps += 1
            # a promotion usually follows an erasure: drop every cached prompt encoding, so that erased
            # profiles and histories do not outlive the request that removed them from the database
            self.scorer.forget_cached_prompts()
            log.info("adapter %s active (was %s)", version, previous)
            if previous is not None:
                self._free_if_idle(previous)
        return True

    def _free_if_idle(self, version: str) -> None:
        """Free ``version`` if it is superseded and no lease holds it; caller holds ``_forward_lock``."""
        with self._state_lock:
            if version == self._active or self._leases.get(version, 0) > 0 or version not in self._slots:
                return
            slot = self._slots.pop(version)
            self._leases.pop(version, None)
            keep = self._slots[self._active] if self._active is not None else None
        if keep is not None and isinstance(self.loaded.model, PeftModel):
            self.loaded.model.set_adapter(keep)  # peft warns when the deleted adapter is the active one
        unload_adapter(self.loaded, slot)
        self.freed.append(version)
        log.info("adapter %s freed", version)

    @contextmanager
    def lease(self) -> Iterator[AdapterLease]:
        """Hold the active version for the length of one request; raises ``NoActiveAdapter`` if none."""
        with self._state_lock:
            version = self._active
            if version is None:
                raise NoActiveAdapter("no adapter is active yet")
            self._leases[version] = self._leases.get(version, 0) + 1
            slot = self._slots[version]
        try:
            yield AdapterLease(self, version, slot)
        finally:
            with self._state_lock:
                self._leases[version] -= 1
                superseded = version != self._active and self._leases[version] == 0
            if superseded:
                with self._forward_lock:
                    self._free_if_idle(version)


class AdapterWatcher:
    """Keeps a ``ModelServer`` on the registry's active version.

    ``resolve()`` returns what should serve (or None when nothing is active yet).  A background thread
    calls it every ``poll_seconds`` (the fallback) and at once after ``wake()`` (a promotion message).
    Errors are logged and retried on the next tick: a bad message must not stop serving.
    """

    def __init__(
        self, server: ModelServer, resolve: Callable[[], ActiveAdapter | None], poll_seconds: float = 5.0
    ) -> None:
        self.server = server
        self.resolve = resolve
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def refresh(self) -> bool:
        """Check the registry once and swap if it moved; returns True if a swap happened."""
        target = self.resolve()
        if target is None or target.version == self.server.active_version:
            return False
        return self.server.activate(target.version, target.folder)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="adapter-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
                self.last_error = None
            except Exception as error:  # keep serving the current version; retry next tick
                self.last_error = f"{type(error).__name__}: {error}"
                log.exception("adapter refresh failed")
