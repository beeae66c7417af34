"""Recommendations under load, in process: a request waiting for the model holds no database connection
and no admission place, the model's queue is bounded (503 + Retry-After beyond it, never a 500), and
queued requests share forward rounds.  The model is held still by a gate, so nothing here is timed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from httpx import Response

from app.runtime import batching_for
from app.settings import ApiSettings
from core.ml.data import PreparedData
from core.ml.model import ModelConfig, load_base
from core.ml.prompts import Catalog
from core.ml.scoring import RankWork
from core.serving import Batching, ModelServer
from tests.app.conftest import Env, running_api


class Gate:
    """Holds every forward round of ``server`` until ``open`` is called."""

    def __init__(self, server: ModelServer) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()
        rank = server.scorer.rank_encoded

        def held(works: Sequence[RankWork]) -> list[np.ndarray]:
            self.entered.set()
            assert self._open.wait(30), "the test never opened the gate"
            return rank(works)

        server.scorer.rank_encoded = held  # type: ignore[method-assign]

    def open(self) -> None:
        self._open.set()


def _until(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def server(tiny_config: ModelConfig) -> ModelServer:
    return ModelServer(load_base(tiny_config), Catalog(titles={}, profiles={}), batch_size=8)


Serve = Callable[..., AbstractContextManager[Env]]


@pytest.fixture
def serve(tmp_path: Path, tiny_config: ModelConfig, small_data: PreparedData, server: ModelServer) -> Serve:
    """The app on ``server``, with settings overridden by the keyword arguments."""
    return partial(running_api, tmp_path, tiny_config, small_data, server)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as executor:
        yield executor


def _recommend(env: Env, user: str) -> Response:
    body = {"user_id": user, "k": 2, "candidates": ["i1", "i2", "i3", "i4"]}
    return env.client.post("/v1/recommendations", json=body, headers=env.keys.header("recommend"))


def _statuses(futures: list[Future[Response]]) -> list[int]:
    return [f.result(timeout=30).status_code for f in futures]


def test_requests_waiting_for_the_model_hold_no_database_connection(
    serve: Serve, server: ModelServer, pool: ThreadPoolExecutor
) -> None:
    # one connection in all, given up after 0.5 s; before, the three requests behind the first waited for
    # its connection while it waited for the model, and got 503 database_busy
    settings: dict[str, Any] = {"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout_seconds": 0.5}
    with serve(admission_limit=8, **settings) as env:
        gate = Gate(server)
        first = pool.submit(_recommend, env, "u1")
        assert gate.entered.wait(10)
        rest = [pool.submit(_recommend, env, user) for user in ("u2", "u3", "u4")]
        # all three read their inputs through the one connection and queued for the model
        queued = _until(lambda: len(server._queued) == 3, seconds=3)
        listed = env.client.get("/v1/admin/jobs", headers=env.keys.header("admin"))  # another route too
        gate.open()
        statuses = _statuses([first, *rest])
    assert queued and statuses == [200, 200, 200, 200], statuses
    assert listed.status_code == 200, listed.text
    assert (server.rounds, server.served) == (2, 4)  # the three queued requests shared one round


def test_a_full_model_queue_answers_503_with_retry_after(
    serve: Serve, server: ModelServer, pool: ThreadPoolExecutor
) -> None:
    server.batching = Batching(queue_limit=2)
    with serve() as env:
        gate = Gate(server)
        inside = [pool.submit(_recommend, env, user) for user in ("u1", "u2")]
        assert gate.entered.wait(10) and _until(lambda: server._admitted == 2)
        refused = _recommend(env, "u3")
        scores = env.client.post(
            "/v1/scores",
            json={"pairs": [{"user_id": "u3", "item_id": "i1"}]},
            headers=env.keys.header("recommend"),
        )
        gate.open()
        statuses = _statuses(inside)
        after = _recommend(env, "u3")
    for response in (refused, scores):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "model_busy"
        assert response.headers["retry-after"].isdigit()
    assert statuses == [200, 200] and after.status_code == 200


def test_a_request_waiting_for_the_model_gives_its_admission_place_back(
    serve: Serve, server: ModelServer, pool: ThreadPoolExecutor
) -> None:
    # one request inside the app at a time, refused after 1 s of waiting: before, an erasure request sent
    # while a recommendation waited for the model was refused with 503 overloaded
    with serve(admission_limit=1, admission_wait_seconds=1.0) as env:
        gate = Gate(server)
        waiting = pool.submit(_recommend, env, "u1")
        assert gate.entered.wait(10)
        erasure = env.client.post(
            "/v1/erasure-requests", json={"user_id": "u2"}, headers=env.keys.header("erase")
        )
        gate.open()
        assert waiting.result(timeout=30).status_code == 200
    assert erasure.status_code == 201, erasure.text


@pytest.mark.parametrize(
    ("setting", "device", "across"),
    [(None, "cpu", False), (None, "cuda", True), (True, "cpu", True), (False, "cuda", False)],
)
def test_requests_share_rounds_on_a_gpu_unless_the_setting_says_otherwise(
    tmp_path: Path, setting: bool | None, device: str, across: bool
) -> None:
    settings = ApiSettings(
        environment="development", home=tmp_path, batch_across_requests=setting, model_queue=3
    )
    batching = batching_for(settings, torch.device(device))
    assert batching.enabled is across and batching.queue_limit == 3
