"""The model server: one frozen base model, the active LoRA adapter, and hot-swapping between versions.

A peft model has one active adapter at a time, so every forward pass runs under ``_forward_lock`` (a
``ForwardLock``: adapter edits go ahead of waiting requests) after setting the adapter of the requests it
serves.  A request takes a *lease* on the version that is
active when it starts and keeps it to the end, so:

- ``activate(version, folder)`` loads the new adapter beside the old one (under the forward lock: peft
  edits modules in place), then moves the active pointer; new leases get the new version;
- leases taken before the switch finish on the old version;
- when the last lease on a superseded version ends, its weights are freed (``delete_adapter``);
- ``withdraw()`` stops serving altogether (new requests get ``NoActiveAdapter``): the watcher calls it
  when the registry's active version cannot be loaded, because the version held is superseded and an
  erasure is about to destroy it (or has): refusing beats serving weights trained on erased data.

Batching across requests (``Batching``): a request tokenizes its prompts in its own thread, then puts its
work in the server's queue and waits.  Whichever waiting thread takes the forward lock runs one *round*:
the oldest queued work and the other queued work of the same adapter version (at most ``max_rows``
candidate rows), in one batched forward pass (``Scorer.rank_encoded``), and hands each request its own
answers.  While a round runs, the next requests queue up, so under load rounds fill by themselves; at
low load a round is one request and costs nothing extra.  A round never mixes versions: a request is
always answered by the version it leased.  ``admit()`` bounds the requests inside the model server
(queued, running or still reading their inputs): beyond ``queue_limit`` it raises ``ModelBusy`` at once.

No HTTP, database or queue imports: the app wires a resolver of the registry's active version
(``AdapterWatcher``), a recorder of what the process serves (its confirmations, which the pipeline waits
for before it destroys the old weights) and a Redis subscription that calls ``AdapterWatcher.wake``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from peft import PeftModel

from core.ml.model import LoadedModel, load_adapter, unload_adapter
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.recommender import Recommendation
from core.ml.scoring import RankWork, Scorer

log = logging.getLogger(__name__)


class ForwardLock:
    """The model's one-at-a-time lock, where adapter edits go first.

    Requests hold it for a forward round (``with lock:``); ``activate``, ``withdraw`` and freeing a version
    hold it ``urgent()``: an urgent holder waits for the round in progress only, never behind the requests
    already waiting (a plain lock wakes its waiters in no set order, so under load with SmolLM2 a swap waited
    2-6 s, several rounds, to be confirmed).  The requests keep their versions (leases): a swap going first
    changes which version new requests get, not what waiting ones are answered by."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._held = False
        self._urgent_waiting = 0

    def __enter__(self) -> ForwardLock:
        with self._condition:
            while self._held or self._urgent_waiting:
                self._condition.wait()
            self._held = True
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._condition:
            self._held = False
            self._condition.notify_all()

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """Hold the lock ahead of every waiting request."""
        with self._condition:
            self._urgent_waiting += 1
            try:
                while self._held:
                    self._condition.wait()
            finally:
                self._urgent_waiting -= 1
            self._held = True
        try:
            yield
        finally:
            self.__exit__()

    @property
    def urgent_waiting(self) -> int:
        """Adapter edits waiting for the round in progress (for tests and metrics)."""
        return self._urgent_waiting


class NoActiveAdapter(RuntimeError):
    """The server has no adapter loaded yet (startup before bootstrap, or an empty registry)."""


class ModelBusy(RuntimeError):
    """The model's queue is full (``Batching.queue_limit`` requests inside): retry later."""


@dataclass(frozen=True)
class Batching:
    """How requests share forward passes.

    ``enabled``: gather the queued work of several requests into one round (off: one request per round,
    in lock order).  ``max_rows``: candidate rows (or scored pairs) one round takes at most; the oldest
    request is always taken whole.  ``max_wait_seconds``: how long a round waits for requests that were
    admitted but are still reading their inputs, while it has fewer than ``max_rows`` rows.
    ``queue_limit``: requests inside the model server at once (``admit``); keep it below the API's worker
    threads (AnyIO: 40), since a waiting request holds one."""

    enabled: bool = True
    max_rows: int = 256
    max_wait_seconds: float = 0.002
    queue_limit: int = 16

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.queue_limit < 1 or self.max_wait_seconds < 0:
            raise ValueError(f"invalid batching settings {self}")


@dataclass(eq=False)
class _Work:
    """One request's forward-pass work, queued until a round takes it.  Either a prefix-shared ranking
    (``ranking``) or plain prompts (``prompts``), for the adapter in ``slot``."""

    version: str
    slot: str
    ranking: RankWork | None = None
    prompts: Sequence[Sequence[int]] = ()
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: Exception | None = None

    @property
    def rows(self) -> int:
        return len(self.ranking.suffixes) if self.ranking is not None else len(self.prompts)


@dataclass(frozen=True)
class ActiveAdapter:
    """What the registry says should serve: a version id and the folder holding its weights."""

    version: str
    folder: Path
    sha256: str | None = None  # of the weights, as the registry recorded it: checked before loading


class AdapterLease:
    """One request's hold on an adapter version; every forward pass it makes uses that version."""

    def __init__(self, server: ModelServer, version: str, slot: str) -> None:
        self._server = server
        self.version = version
        self._slot = slot

    def _builder(self, catalog: Catalog | None) -> PromptBuilder:
        """Prompts from this request's titles and profiles (data under erasure left out), else the
        server's default ones."""
        server = self._server
        scorer = server.scorer
        if catalog is None or catalog is scorer.builder.catalog:
            return scorer.builder
        return PromptBuilder(server.loaded.tokenizer, catalog, server.loaded.prompt)

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
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        unique = list(dict.fromkeys(candidates))
        if not unique:
            return []
        builder = self._builder(catalog)
        scorer = self._server.scorer
        if scorer.shares_prefix(builder):
            work = _Work(
                self.version, self._slot, ranking=scorer.encode_ranking(builder, user_id, history, unique)
            )
        else:  # a user field after the target, or an encoder-decoder: every candidate's whole prompt
            prompts = [scorer.encode(user_id, history, item, builder) for item in unique]
            work = _Work(self.version, self._slot, prompts=prompts)
        scores = self._server._answer(work)
        ranked = sorted(zip(unique, scores, strict=True), key=lambda pair: (-pair[1], pair[0]))[:k]
        return [Recommendation(item, builder.catalog.title(item), float(score)) for item, score in ranked]

    def score(self, samples: pd.DataFrame, catalog: Catalog | None = None) -> np.ndarray:
        """P(yes) per row of ``samples`` (columns user_id, item_id, history as encoded by core.ml.data)."""
        prompts = self._server.scorer.encode_frame(samples, self._builder(catalog))
        return self._server._answer(_Work(self.version, self._slot, prompts=prompts))


class ModelServer:
    """Holds the base model and the adapter versions currently in use; thread-safe.

    ``loaded``: the base model (an adapter may already be attached; it is ignored until ``activate``).
    ``catalog``: titles and profiles for prompts; replace it with ``set_catalog`` when the data change.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        catalog: Catalog,
        batch_size: int = 16,
        rank_batch_size: int = 32,
        batching: Batching | None = None,
    ) -> None:
        self.loaded = loaded
        self.scorer = Scorer(
            loaded,
            PromptBuilder(loaded.tokenizer, catalog, loaded.prompt),
            batch_size=batch_size,
            rank_batch_size=rank_batch_size,
        )
        self.batching = batching or Batching()
        # one forward pass (or one adapter edit, which goes first) at a time
        self._forward_lock = ForwardLock()
        self._state_lock = threading.Lock()  # the pointers below; always taken after _forward_lock
        self._queue = threading.Condition()  # guards the queue and the admission count; taken last
        self._queued: deque[_Work] = deque()
        self._admitted = 0
        self.rounds = 0  # forward rounds run, and the requests they served (for metrics and tests)
        self.served = 0
        self._active: str | None = None
        self._withdrawn: str | None = None  # why nothing serves, after ``withdraw``
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
        scorer = self.scorer
        scorer.builder = PromptBuilder(self.loaded.tokenizer, catalog, self.loaded.prompt)

    # ------------------------------------------------------------------------------------------ rounds

    @contextmanager
    def admit(self) -> Iterator[None]:
        """A place inside the model server for one request, from before it reads its inputs to its
        answer; raises ``ModelBusy`` at once when ``queue_limit`` requests already hold one."""
        with self._queue:
            if self._admitted >= self.batching.queue_limit:
                limit = self.batching.queue_limit
                raise ModelBusy(f"the model is at capacity ({limit} requests in progress); retry later")
            self._admitted += 1
        try:
            yield
        finally:
            with self._queue:
                self._admitted -= 1

    def _answer(self, work: _Work) -> np.ndarray:
        """Queue ``work`` and return its answers once a round (run by this thread or another) has."""
        if not self.batching.enabled:
            with self._forward_lock:
                self._run_round([work])
        else:
            with self._queue:
                self._queued.append(work)
                self._queue.notify_all()
            while not work.done.is_set():
                with self._forward_lock:  # a round takes work and finishes it under this lock
                    if not work.done.is_set():
                        self._run_round(self._take_round())
        if work.error is not None:
            raise work.error
        assert work.result is not None
        return work.result

    def _take_round(self) -> list[_Work]:
        """The oldest queued work and the queued work of its version, up to ``max_rows`` rows (the oldest
        always); waits up to ``max_wait_seconds`` for admitted requests not queued yet.  Caller holds the
        forward lock."""
        limit = self.batching
        with self._queue:
            deadline = time.monotonic() + limit.max_wait_seconds

            def rows_of_oldest() -> int:
                version = self._queued[0].version
                return sum(w.rows for w in self._queued if w.version == version)

            # admitted requests that have not queued yet are still reading their inputs
            while self._queued and self._admitted > len(self._queued) and rows_of_oldest() < limit.max_rows:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._queue.wait(left)
            if not self._queued:
                return []
            version = self._queued[0].version
            taken: list[_Work] = []
            rows = 0
            for work in list(self._queued):
                if work.version != version or (taken and rows + work.rows > limit.max_rows):
                    continue
                taken.append(work)
                rows += work.rows
            for work in taken:
                self._queued.remove(work)
        return taken

    def _run_round(self, works: Sequence[_Work]) -> None:
        """One batched forward pass over ``works`` (one version); each gets its answers or the error.
        Caller holds the forward lock."""
        if not works:
            return
        try:
            model = self.loaded.model
            if isinstance(model, PeftModel):
                model.set_adapter(works[0].slot)
            ranked = [w for w in works if w.ranking is not None]
            plain = [w for w in works if w.ranking is None]
            if ranked:
                answers = self.scorer.rank_encoded([w.ranking for w in ranked if w.ranking is not None])
                for work, answer in zip(ranked, answers, strict=True):
                    work.result = answer
            if plain:
                prompts = [p for w in plain for p in w.prompts]
                values = torch.sigmoid(self.scorer.margin_encoded(prompts)).numpy()
                start = 0
                for work in plain:
                    work.result = values[start : start + len(work.prompts)]
                    start += len(work.prompts)
        except Exception as error:  # every request of the round gets it; none is left waiting
            for work in works:
                work.error = error
        finally:
            self.rounds += 1
            self.served += len(works)
            for work in works:
                work.done.set()

    def forget_prompts_of(self, user_id: str) -> None:
        """Drop cached prompt encodings that may hold ``user_id``'s profile and history (at erasure
        intake, not at the next swap).  The cache is keyed by prompt text, not by user, so every entry
        goes: re-encoding costs a tokenizer call per prompt.  Not under the forward lock (the cache is
        thread-safe): an erasure's intake must not wait for a forward round to end."""
        self.scorer.forget_cached_prompts()
        log.info("prompt cache emptied for an erasure")

    # ------------------------------------------------------------------------------------------ swap

    def activate(self, version: str, folder: Path, sha256: str | None = None) -> bool:
        """Make ``version`` (weights in ``folder``) serve new requests; returns False if it already did.

        The previous version keeps serving the requests that hold it and is freed when the last one ends.
        Raises ``core.ml.model.ModelError`` if the folder is not a usable adapter, ``CorruptAdapter`` if its
        weights do not hash to ``sha256`` (nothing changes then: a corrupted file is never served).
        """
        asked = time.monotonic()
        with self._forward_lock.urgent():
            waited = time.monotonic() - asked  # for the round in progress (the operator's log says how long)
            with self._state_lock:
                if self._active == version:
                    return False
                slot = self._slots.get(version)
            if slot is None:  # not in memory yet (a rollback may find it still finishing requests)
                slot = f"e2u_slot_{self._next_slot}"
                self._next_slot += 1
                load_adapter(self.loaded, folder, slot, sha256=sha256)
            with self._state_lock:
                self._slots[version] = slot
                previous, self._active = self._active, version
                self._withdrawn = None
                self.swaps += 1
            # a promotion usually follows an erasure: drop every cached prompt encoding, so that erased
            # profiles and histories do not outlive the request that removed them from the database
            self.scorer.forget_cached_prompts()
            log.info(
                "adapter %s active (was %s): waited %.3f s for the round in progress, loaded in %.3f s",
                version,
                previous,
                waited,
                time.monotonic() - asked - waited,
            )
            if previous is not None:
                self._free_if_idle(previous)
        return True

    def withdraw(self, reason: str) -> str | None:
        """Stop serving: new requests get ``NoActiveAdapter`` (saying ``reason``) until the next
        ``activate``; requests holding a lease finish, then the weights are freed.  Returns the version
        that served until now (None if none did)."""
        with self._forward_lock.urgent():
            with self._state_lock:
                previous, self._active = self._active, None
                self._withdrawn = reason
            if previous is not None:
                self.scorer.forget_cached_prompts()
                log.error("adapter %s withdrawn: %s", previous, reason)
                self._free_if_idle(previous)
        return previous

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
                raise NoActiveAdapter(self._withdrawn or "no adapter is active yet")
            self._leases[version] = self._leases.get(version, 0) + 1
            slot = self._slots[version]
        try:
            yield AdapterLease(self, version, slot)
        finally:
            with self._state_lock:
                self._leases[version] -= 1
                superseded = version != self._active and self._leases[version] == 0
            if superseded:
                with self._forward_lock.urgent():
                    self._free_if_idle(version)


class AdapterWatcher:
    """Keeps a ``ModelServer`` on the registry's active version, and says so.

    ``resolve()`` returns what should serve (or None when nothing is active yet).  A background thread
    calls it every ``poll_seconds`` (the fallback) and at once after ``wake()`` (a promotion message).
    ``confirm(version)``, when given, records that this process serves ``version``; the thread calls it
    right after each check and at least every ``confirm_seconds`` (so the record doubles as the process's
    liveness).  Errors are logged and retried on the next tick: a bad message must not stop the watcher.

    If the active version cannot be loaded, the server stops serving the version it holds (``withdraw``):
    that version is superseded, and the erasure that superseded it destroys it.
    """

    def __init__(
        self,
        server: ModelServer,
        resolve: Callable[[], ActiveAdapter | None],
        poll_seconds: float = 5.0,
        confirm: Callable[[str], None] | None = None,
        confirm_seconds: float = 5.0,
    ) -> None:
        self.server = server
        self.resolve = resolve
        self.poll_seconds = poll_seconds
        self.confirm = confirm
        self.confirm_seconds = confirm_seconds
        self.target: ActiveAdapter | None = None  # what the registry said at the last check
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def in_sync(self) -> bool:
        """True when the server serves the version the registry named at the last check."""
        return self.target is not None and self.server.active_version == self.target.version

    def refresh(self) -> bool:
        """Check the registry once and swap if it moved; returns True if a swap happened.  If the new
        version does not load, the server stops serving the old one and the error propagates."""
        target = self.resolve()
        self.target = target
        if target is None or target.version == self.server.active_version:
            return False
        try:
            return self.server.activate(target.version, target.folder, target.sha256)
        except Exception as error:
            if self.server.active_version is not None:
                self.server.withdraw(
                    f"not serving: the active version {target.version} could not be loaded "
                    f"({type(error).__name__})"
                )
            raise

    def tick(self, check: bool = True) -> None:
        """One round of the thread: check the registry (if ``check``), then confirm what is served."""
        if check:
            try:
                self.refresh()
                self.last_error = None
            except Exception as error:  # retried next tick
                self.last_error = f"{type(error).__name__}: {error}"
                log.exception("adapter refresh failed")
        version = self.server.active_version
        if self.confirm is not None and version is not None:
            try:
                self.confirm(version)
            except Exception:  # the database away: readiness says so; the next tick tries again
                log.exception("could not confirm the served adapter %s", version)

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
        next_check = time.monotonic()  # the first round checks at once
        while not self._stop.is_set():
            woken = self._wake.wait(max(0.0, min(next_check - time.monotonic(), self.confirm_seconds)))
            self._wake.clear()
            if self._stop.is_set():
                return
            # a failed check is retried at the next confirmation round rather than a full poll later
            check = woken or time.monotonic() >= next_check or self.last_error is not None
            if check:
                next_check = time.monotonic() + self.poll_seconds
            self.tick(check)
