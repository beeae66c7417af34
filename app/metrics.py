"""Prometheus metrics of one API process (a registry per app, so that tests may build several apps)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from core.services.erasures import ErasureBacklog
from core.services.monitoring import PHASE_BUCKETS, JobFigures
from core.serving import ModelServer


class JobFiguresCollector(Collector):
    """The figures of every worker's jobs, read from the database at scrape time
    (``core.services.monitoring``: why not per worker process): phase durations, verdict classes, jobs
    and webhook deliveries per status.  Empty until the first scrape read them."""

    def __init__(self) -> None:
        self.figures: JobFigures | None = None

    def collect(self) -> Iterator[Metric]:
        figures = self.figures
        if figures is None:
            return
        phases = HistogramMetricFamily(
            "e2u_job_phase_seconds",
            "time one attempt of a job spent in a phase (all workers; from the database)",
            labels=["phase"],
        )
        for phase, durations in sorted(figures.phases.items()):
            bounds = [str(float(b)) for b in PHASE_BUCKETS] + ["+Inf"]
            counts = [*durations.buckets, durations.count]
            phases.add_metric([phase], list(zip(bounds, counts, strict=True)), durations.total_seconds)
        yield phases
        verdicts = CounterMetricFamily(
            "e2u_gate_verdicts",
            "unlearning jobs by the verifier's verdict class (forgotten, no_prior_signal, inconclusive, "
            "failed; not_needed: nothing trained on)",
            labels=["verdict_class"],
        )
        for verdict, count in sorted(figures.verdict_classes.items()):
            verdicts.add_metric([verdict], count)
        yield verdicts
        yield _by_status("e2u_unlearning_jobs", "unlearning jobs by status", figures.jobs)
        yield _by_status(
            "e2u_webhook_deliveries", "webhook deliveries by status (failed: given up)", figures.webhooks
        )


def _by_status(name: str, documentation: str, counts: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["status"])
    for status, count in sorted(counts.items()):
        family.add_metric([status], count)
    return family


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "e2u_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "e2u_http_request_seconds", "HTTP request latency", ["method", "route"], registry=self.registry
        )
        self.predictions = Counter(
            "e2u_predictions_total", "scored (user, item) pairs", ["adapter_version"], registry=self.registry
        )
        self.adapter_swaps = Gauge(
            "e2u_adapter_swaps", "adapter activations in this process", registry=self.registry
        )
        self.adapters_loaded = Gauge(
            "e2u_adapters_loaded", "adapter versions in memory", registry=self.registry
        )
        self.active_adapter = Gauge(
            "e2u_active_adapter_info",
            "the adapter version serving new requests in this process (pid)",
            ["version", "pid"],
            registry=self.registry,
        )
        self.jobs = JobFiguresCollector()
        self.registry.register(self.jobs)

        self.erasures_open = Gauge(
            "e2u_erasure_requests_open",
            "erasure requests still to be carried out (received, queued, unlearning, verifying)",
            registry=self.registry,
        )
        self.erasure_oldest_age = Gauge(
            "e2u_erasure_oldest_open_age_seconds",
            "age of the oldest open erasure request",
            registry=self.registry,
        )
        self.erasure_oldest_fraction = Gauge(
            "e2u_erasure_oldest_open_deadline_fraction",
            "share of its time to the deadline the oldest open erasure request has used (1: deadline)",
            registry=self.registry,
        )
        self.erasures_at_risk = Gauge(
            "e2u_erasure_requests_deadline_at_risk",
            "open erasure requests past E2U_DEADLINE_RISK_FRACTION of their time to the deadline",
            registry=self.registry,
        )
        self.erasures_overdue = Gauge(
            "e2u_erasure_requests_overdue",
            "open erasure requests past their deadline",
            registry=self.registry,
        )
        self.erasures_not_unlearned = Gauge(
            "e2u_erasure_requests_not_unlearned",
            "requests whose data is deleted but no adapter free of it could be made (re-queue them)",
            registry=self.registry,
        )

    def observe_erasures(self, backlog: ErasureBacklog) -> None:
        """Copy the erasure backlog into gauges (called at scrape time)."""
        self.erasures_open.set(backlog.open)
        self.erasure_oldest_age.set(backlog.oldest_age_seconds)
        self.erasure_oldest_fraction.set(backlog.oldest_deadline_fraction)
        self.erasures_at_risk.set(backlog.at_risk)
        self.erasures_overdue.set(backlog.overdue)
        self.erasures_not_unlearned.set(backlog.not_unlearned)

    def observe_server(self, server: ModelServer | None) -> None:
        """Copy the model server's state into gauges (called at scrape time)."""
        if server is None:
            return
        self.adapter_swaps.set(server.swaps)
        self.adapters_loaded.set(len(server.loaded_versions()))
        self.active_adapter.clear()
        if server.active_version is not None:
            self.active_adapter.labels(server.active_version, str(os.getpid())).set(1)

    def observe_jobs(self, figures: JobFigures) -> None:
        """Keep the jobs' figures read from the database (called at scrape time)."""
        self.jobs.figures = figures

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    @staticmethod
    def route_label(request: Request) -> str:
        """The path template ("/v1/users/{user_id}/ratings"), so that ids do not explode the labels, nor
        reach the access log (a user id in a path is personal data)."""
        template = getattr(request.scope.get("route"), "path_format", None)
        if not isinstance(template, str):
            return "unmatched"
        # the matched route's own template lacks the prefixes of the routers it was included in (static
        # segments here): take those from the path, the rest from the template
        segments, tail = request.url.path.split("/"), template.split("/")
        return "/".join(segments[: len(segments) - len(tail) + 1]) + template

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request (``app.middleware``: unhandled errors included, as 500)."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
