"""Hot-swap mechanics of the model server on the tiny model (random-init, untrained: behaviour only)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.ml.data import PreparedData, encode_history
from core.ml.model import ModelConfig, load_base
from core.ml.prompts import Catalog
from core.serving import (
    ActiveAdapter,
    AdapterLease,
    AdapterWatcher,
    Batching,
    ModelBusy,
    ModelServer,
    NoActiveAdapter,
)
from tests.adapters import save_random_adapter


@pytest.fixture(scope="module")
def adapter_folders(tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        v: save_random_adapter(tiny_config, root / v, seed, scale=0.5, rank=4)
        for v, seed in (("v1", 1), ("v2", 2), ("v3", 3))
    }


@pytest.fixture
def server(tiny_config: ModelConfig, small_data: PreparedData) -> ModelServer:
    catalog = Catalog.from_frames(small_data.items, small_data.users)
    return ModelServer(load_base(tiny_config), catalog, batch_size=4)


def _frame(small_data: PreparedData) -> pd.DataFrame:
    return small_data.split("train").head(6)[["user_id", "item_id", "history"]]


def test_no_adapter_is_a_clear_error(server: ModelServer) -> None:
    with pytest.raises(NoActiveAdapter, match="no adapter is active yet"), server.lease():
        pass


def test_lease_names_version_and_versions_differ(
    server: ModelServer, adapter_folders: dict[str, Path], small_data: PreparedData
) -> None:
    assert server.activate("v1", adapter_folders["v1"])
    assert not server.activate("v1", adapter_folders["v1"])  # already active: a no-op
    with server.lease() as lease:
        assert lease.version == "v1"
        first = lease.score(_frame(small_data))
    server.activate("v2", adapter_folders["v2"])
    with server.lease() as lease:
        assert lease.version == "v2"
        second = lease.score(_frame(small_data))
        recs = lease.recommend("u1", [("i2", 5.0)], ["i3", "i4", "i5"], k=2)
    assert len(recs) == 2
    assert not torch.allclose(torch.tensor(first), torch.tensor(second))
    assert server.loaded_versions() == ["v2"]
    assert server.freed == ["v1"]


def test_in_flight_request_finishes_on_old_version_then_it_is_freed(
    server: ModelServer, adapter_folders: dict[str, Path], small_data: PreparedData
) -> None:
    frame = _frame(small_data)
    server.activate("v1", adapter_folders["v1"])
    with server.lease() as lease:
        before = lease.score(frame)
    with server.lease() as old:
        server.activate("v2", adapter_folders["v2"])
        with server.lease() as new:
            assert new.version == "v2"
            new.score(frame)
        # the swap happened, but this request still answers with v1's weights
        assert sorted(server.loaded_versions()) == ["v1", "v2"]
        assert torch.allclose(torch.tensor(old.score(frame)), torch.tensor(before))
        assert old.version == "v1"
        assert server.freed == []
    assert server.loaded_versions() == ["v2"]
    assert server.freed == ["v1"]
    assert len(server.loaded.model.peft_config) == 1  # peft holds only v2's weights


def test_a_swap_goes_ahead_of_the_requests_waiting_for_the_model(
    server: ModelServer, adapter_folders: dict[str, Path]
) -> None:
    """A promotion waits for the forward round in progress only, not behind every request queued for the
    model (on a plain lock it could wait several rounds: seconds with SmolLM2 on a CPU)."""
    server.activate("v1", adapter_folders["v1"])
    server.batching = Batching(enabled=False)  # the CPU default: each request takes the lock for its round
    events: list[str] = []
    run_round = server._run_round

    def recorded_round(works: list) -> None:  # type: ignore[type-arg]
        events.append("round")
        run_round(works)

    server._run_round = recorded_round  # type: ignore[method-assign]

    def client(user: str) -> None:
        with server.lease() as lease:
            lease.recommend(user, [("i2", 5.0)], ["i3", "i4"], k=1)

    def promote() -> None:
        server.activate("v2", adapter_folders["v2"])
        events.append("swap")

    clients = [threading.Thread(target=client, args=(f"u{k}",)) for k in range(1, 5)]
    swap = threading.Thread(target=promote)
    with server._forward_lock:  # the round in progress
        for thread in clients:
            thread.start()
        time.sleep(0.3)  # the four requests wait for the model first (ordering, not timing, is asserted)
        swap.start()
        while server._forward_lock.urgent_waiting == 0:
            time.sleep(0.01)
    for thread in [*clients, swap]:
        thread.join(timeout=30)
    assert events[0] == "swap" and events.count("round") == 4, events
    assert server.active_version == "v2"


def test_rollback_to_a_version_still_in_memory(server: ModelServer, adapter_folders: dict[str, Path]) -> None:
    server.activate("v1", adapter_folders["v1"])
    with server.lease():
        server.activate("v2", adapter_folders["v2"])
        server.activate("v1", adapter_folders["v1"])  # v1 was still held: re-used, not reloaded
        assert server.active_version == "v1"
    assert server.loaded_versions() == ["v1"]
    assert server.freed == ["v2"]


def test_no_request_fails_during_swaps(
    server: ModelServer, adapter_folders: dict[str, Path], small_data: PreparedData
) -> None:
    server.activate("v1", adapter_folders["v1"])
    history = encode_history([("i2", 5.0)])
    frame = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i3", "i4"], "history": history})
    errors: list[BaseException] = []
    seen: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                with server.lease() as lease:
                    lease.score(frame)
                    lease.recommend("u1", [("i2", 5.0)], ["i3", "i5", "i7"], k=2)
                    seen.append(lease.version)
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for version in ("v2", "v3", "v1", "v2"):
        time.sleep(0.15)
        server.activate(version, adapter_folders[version])
    time.sleep(0.15)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {"v1", "v2", "v3"} <= set(seen)
    assert server.loaded_versions() == ["v2"]  # every superseded version was freed once idle
    assert len(server.loaded.model.peft_config) == 1


def test_watcher_follows_the_registry(server: ModelServer, adapter_folders: dict[str, Path]) -> None:
    target: list[ActiveAdapter | None] = [None]
    watcher = AdapterWatcher(server, lambda: target[0], poll_seconds=30)
    assert not watcher.refresh()
    target[0] = ActiveAdapter("v1", adapter_folders["v1"])
    watcher.start()
    try:
        watcher.wake()  # a promotion message: no need to wait for the 30 s poll
        deadline = time.monotonic() + 10
        while server.active_version != "v1" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.active_version == "v1" and watcher.in_sync()
    finally:
        watcher.stop()


def test_a_version_that_fails_to_load_stops_the_old_one_serving(
    server: ModelServer, adapter_folders: dict[str, Path]
) -> None:
    """The registry moved on (an erasure superseded v1, and will destroy it): if v2 does not load, the
    process refuses to serve rather than keep answering with v1; it serves again once v2 loads."""
    target: list[ActiveAdapter | None] = [ActiveAdapter("v1", adapter_folders["v1"])]
    confirmed: list[str] = []
    watcher = AdapterWatcher(server, lambda: target[0], poll_seconds=30, confirm=confirmed.append)
    watcher.tick()
    assert server.active_version == "v1" and watcher.in_sync() and confirmed == ["v1"]
    target[0] = ActiveAdapter("v2", Path("/nonexistent"))  # a broken folder
    watcher.tick()
    assert watcher.last_error is not None and not watcher.in_sync()
    assert server.active_version is None and server.loaded_versions() == [] and server.freed == ["v1"]
    with pytest.raises(NoActiveAdapter, match="v2 could not be loaded"), server.lease():
        pass
    assert confirmed == ["v1"]  # serving nothing: nothing confirmed
    target[0] = ActiveAdapter("v2", adapter_folders["v2"])  # the next tick retries
    watcher.tick()
    assert server.active_version == "v2" and watcher.in_sync() and watcher.last_error is None
    assert confirmed == ["v1", "v2"]
    with server.lease() as lease:
        assert lease.version == "v2"


def test_the_watcher_confirms_between_polls(server: ModelServer, adapter_folders: dict[str, Path]) -> None:
    """The confirmations double as liveness: they come every ``confirm_seconds`` even with a slow poll."""
    confirmed: list[str] = []
    target = ActiveAdapter("v1", adapter_folders["v1"])
    watcher = AdapterWatcher(
        server, lambda: target, poll_seconds=600, confirm=confirmed.append, confirm_seconds=0.05
    )
    watcher.start()
    try:
        deadline = time.monotonic() + 10
        while len(confirmed) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        watcher.stop()
    assert confirmed[:3] == ["v1", "v1", "v1"]


@pytest.mark.parametrize("when", ["swap", "erasure intake"])
def test_cached_prompt_encodings_are_forgotten(
    server: ModelServer, adapter_folders: dict[str, Path], small_data: PreparedData, when: str
) -> None:
    server.activate("v1", adapter_folders["v1"])
    with server.lease() as lease:
        lease.score(_frame(small_data))
    assert server.scorer._encode.cache_info().currsize > 0  # type: ignore[attr-defined]
    if when == "swap":
        server.activate("v2", adapter_folders["v2"])
    else:  # at once, not at the next swap
        server.forget_prompts_of(str(_frame(small_data)["user_id"].iloc[0]))
        assert server.active_version == "v1"
    assert server.scorer._encode.cache_info().currsize == 0  # type: ignore[attr-defined]


def _rankings() -> list[tuple[str, list[tuple[str, float]], list[str]]]:
    """Rankings of different users, histories and candidate counts (so prefixes differ in length)."""
    return [
        ("u1", [("i2", 5.0)], [f"i{k}" for k in range(9)]),
        ("u2", [("i3", 1.0), ("i4", 5.0), ("i7", 2.0)], [f"i{k}" for k in range(5, 18)]),
        ("u3", [], ["i1", "i2"]),
    ]


def test_shared_rounds_answer_as_requests_alone_on_each_leased_version(
    server: ModelServer, adapter_folders: dict[str, Path], small_data: PreparedData
) -> None:
    requests = _rankings()
    frame = _frame(small_data)
    server.scorer.rank_batch_size = 5  # chunks that mix users
    server.batching = Batching(enabled=False)
    alone: dict[tuple[str, int], list[float]] = {}
    for version in ("v1", "v2"):
        server.activate(version, adapter_folders[version])
        with server.lease() as lease:
            for k, (user, history, candidates) in enumerate(requests):
                ranked = lease.recommend(user, history, candidates, k=len(candidates))
                alone[version, k] = [r.score for r in sorted(ranked, key=lambda r: r.item_id)]
            alone[version, -1] = list(lease.score(frame))
    assert not np.allclose(alone["v1", 1], alone["v2", 1])  # a version mix-up would show

    server.activate("v1", adapter_folders["v1"])
    server.batching = Batching(enabled=True, max_wait_seconds=0)
    answers: dict[tuple[str, int], list[float]] = {}
    errors: list[BaseException] = []

    def client(lease: AdapterLease, k: int) -> None:
        try:
            if k < 0:
                answers[lease.version, k] = list(lease.score(frame))
                return
            user, history, candidates = requests[k]
            ranked = lease.recommend(user, history, candidates, k=len(candidates))
            answers[lease.version, k] = [r.score for r in sorted(ranked, key=lambda r: r.item_id)]
        except BaseException as error:
            errors.append(error)

    rounds_before = server.rounds
    with server.lease() as old:
        server.activate("v2", adapter_folders["v2"])  # old keeps v1; new leases get v2
        with server.lease() as new:
            assert (old.version, new.version) == ("v1", "v2")
            threads = [
                threading.Thread(target=client, args=(lease, k))
                for lease in (old, new)
                for k in (-1, 0, 1, 2)
            ]
            with server._forward_lock:  # every request queues before any round runs
                for thread in threads:
                    thread.start()
                while len(server._queued) < len(threads):
                    time.sleep(0.01)
            for thread in threads:
                thread.join()
    assert errors == []
    assert server.rounds - rounds_before == 2  # one round per version, each serving four requests
    assert set(answers) == set(alone)
    for key, values in alone.items():
        np.testing.assert_allclose(answers[key], values, atol=1e-5, err_msg=str(key))


def test_admission_beyond_the_queue_limit_is_refused_at_once(server: ModelServer) -> None:
    server.batching = Batching(queue_limit=2)
    with server.admit(), server.admit(), pytest.raises(ModelBusy, match="at capacity"), server.admit():
        pass
    with server.admit():  # places come back
        pass


def test_an_error_in_a_shared_round_reaches_every_request_in_it(
    server: ModelServer, adapter_folders: dict[str, Path], small_data: PreparedData
) -> None:
    server.activate("v1", adapter_folders["v1"])
    server.batching = Batching(max_wait_seconds=0)

    def broken(works: object) -> list[np.ndarray]:
        raise RuntimeError("out of memory")

    server.scorer.rank_encoded = broken  # type: ignore[method-assign,assignment]
    outcomes: list[str] = []

    def client(user: str) -> None:
        with server.lease() as lease:
            try:
                lease.recommend(user, [("i2", 5.0)], ["i3", "i4"], k=1)
            except RuntimeError as error:
                outcomes.append(str(error))

    threads = [threading.Thread(target=client, args=(u,)) for u in ("u1", "u2", "u3")]
    with server._forward_lock:
        for thread in threads:
            thread.start()
        while len(server._queued) < len(threads):
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes == ["out of memory"] * 3 and server.rounds == 1
    assert server.in_flight("v1") == 0
