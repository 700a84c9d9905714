"""The server's Prometheus metrics, in one registry owned by the server (see docs/operations.md).

Counters are incremented as things happen (requests, gRPC calls, finished tasks and the work
they did). What the server holds at a moment (tasks by kind and state, the queue, running
tasks) is read when Prometheus scrapes, from the task store and the runner, so those figures are
right after a restart too. The registry is not prometheus_client's process-wide default: two
servers in one process (tests, an embedding application) keep their own figures.

The interfaces feed it (voxmatch.rest.metrics, voxmatch.grpc.interceptor); this module knows
nothing of HTTP or gRPC.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from voxmatch._version import __version__
from voxmatch.tasks import TaskOutcome, TaskRecord, TaskRunner, TaskState

# Up to a minute: uploads of long recordings and long-polling reads take seconds, not ms.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        Info("voxmatch_build", "The voxmatch version serving.", registry=self.registry).info(
            {"version": __version__}
        )
        self.http_requests = Counter(
            "voxmatch_http_requests_total",
            "REST requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_request_duration = Histogram(
            "voxmatch_http_request_duration_seconds",
            "Time from a REST request's arrival to the end of its response.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.grpc_calls = Counter(
            "voxmatch_grpc_calls_total",
            "gRPC calls ended, by service, method and status code.",
            ["service", "method", "code"],
            registry=self.registry,
        )
        self.grpc_call_duration = Histogram(
            "voxmatch_grpc_call_duration_seconds",
            "Time from a gRPC call's start to its end.",
            ["service", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tasks_finished = Counter(
            "voxmatch_tasks_finished_total",
            "Tasks this process finished, by kind and final state.",
            ["kind", "state"],
            registry=self.registry,
        )
        self.extraction_audio = Counter(
            "voxmatch_extraction_audio_seconds_total",
            "Seconds of audio analysed by extractions (each channel extracted counts).",
            registry=self.registry,
        )
        self.extraction_speech = Counter(
            "voxmatch_extraction_speech_seconds_total",
            "Seconds of speech the extracted voiceprints were made from.",
            registry=self.registry,
        )
        self.comparison_scores = Counter(
            "voxmatch_comparison_scores_total",
            "Pair scores computed by comparisons.",
            registry=self.registry,
        )

    def watch_runner(self, runner: TaskRunner) -> None:
        """Count the tasks `runner` finishes and the work they did, and report its tasks,
        queue and workers at every scrape."""
        runner.add_task_observer(self.task_finished)
        self.registry.register(_RunnerCollector(runner))

    def task_finished(
        self, record: TaskRecord, state: TaskState, outcome: TaskOutcome | None
    ) -> None:
        self.tasks_finished.labels(record.kind, state.value).inc()
        if outcome is not None:
            work = outcome.work
            self.count_extraction(work.audio_seconds, work.speech_seconds)
            self.count_scores(work.scores)

    def count_extraction(self, audio_seconds: float, speech_seconds: float) -> None:
        self.extraction_audio.inc(audio_seconds)
        self.extraction_speech.inc(speech_seconds)

    def count_scores(self, scores: int) -> None:
        self.comparison_scores.inc(scores)


class _RunnerCollector(Collector):
    def __init__(self, runner: TaskRunner) -> None:
        self._runner = runner

    def collect(self) -> Iterator[GaugeMetricFamily]:
        runner = self._runner
        tasks = GaugeMetricFamily(
            "voxmatch_tasks",
            "Tasks in the task store (finished ones until expiry removes them), by kind and state.",
            labels=["kind", "state"],
        )
        counts = runner.store.counts_by_kind()
        # Every kind the server runs, in every state, so that series exist before their first
        # task and a rate or an alert never starts from a missing series.
        kinds = sorted(set(runner.handlers) | {kind for kind, _ in counts})
        for kind in kinds:
            for state in TaskState:
                tasks.add_metric([kind, state.value], counts.get((kind, state.value), 0))
        yield tasks
        yield GaugeMetricFamily(
            "voxmatch_queue_waiting_tasks",
            "Tasks accepted and waiting for a worker.",
            value=runner.queue_length(),
        )
        yield GaugeMetricFamily(
            "voxmatch_queue_capacity_tasks",
            "Waiting tasks beyond which new tasks are refused (429).",
            value=runner.queue_capacity,
        )
        yield GaugeMetricFamily(
            "voxmatch_running_tasks", "Tasks a worker is running now.", value=runner.running_count()
        )
        yield GaugeMetricFamily(
            "voxmatch_workers", "Worker threads that run tasks.", value=runner.workers
        )
