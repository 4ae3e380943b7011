"""Per-turn latency: Pipecat's own observers measure, this module publishes.

:class:`~pipecat.observers.user_bot_latency_observer.UserBotLatencyObserver` times each turn (the
user stopped speaking -> the bot's first audio) and the greeting (client connected -> the bot's first
audio), and breaks each wait down into named parts. :class:`~pipecat.observers.service_metrics_observer.
ServiceMetricsObserver` reports each service's time to first byte; processing times, which it leaves
out on purpose, come from the same ``MetricsFrame`` here. :class:`TurnMetrics` turns every figure into

- one readable INFO log line (locally, the agent's log is where they are read), and
- with ``AGENT_METRICS=emf`` (the default), one CloudWatch Embedded Metric Format document on stdout:
  AgentCore Runtime ships the container's stdout to the runtime's log group, and CloudWatch Logs
  extracts EMF metrics from any log event that is such a JSON object, with no agent, no SDK and no
  IAM permission beyond the log delivery AgentCore already has.

Names, namespace and dimensions are :mod:`agent.telemetry`'s, shared with the CDK dashboard and alarm.
No document, line or message holds what anyone said: only durations, the pipeline's and transport's
names, service class names and model ids.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from pipecat.frames.frames import MetricsFrame
from pipecat.metrics.metrics import ProcessingMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.observers.service_metrics_observer import (
    ServiceLatencyKind,
    ServiceLatencyRecord,
    ServiceMetricsObserver,
)
from pipecat.observers.user_bot_latency_observer import LatencyBreakdown, UserBotLatencyObserver

from agent.config import MetricsOutput
from agent.telemetry import (
    METRICS_NAMESPACE,
    PIPELINE_DIMENSION,
    SERVICE_DIMENSION,
    SERVICE_DIMENSION_SETS,
    TRANSPORT_DIMENSION,
    TURN_DIMENSION_SETS,
    UNIT,
    MetricName,
)

logger = logging.getLogger(__name__)

TURN_RECORD: Final = "turn-metrics"
"""``type`` of a turn's document (and of the RTVI server message that carries the same figures)."""
SERVICE_RECORD: Final = "service-metrics"
"""``type`` of a service measurement's document."""

_INSTANCE_SUFFIX = re.compile(r"#\d+$")

TurnListener = Callable[[dict[str, Any]], Awaitable[None]]
"""Receives each turn's figures (the EMF document without its ``_aws`` metadata)."""


def service_name(processor: str) -> str:
    """The class name of the Pipecat processor named ``processor``.

    Pipecat names processors ``ClassName#N``, N counting the instances the process ever made: a
    dimension keeps the class name alone, or every call of a long-lived process would be a new series.
    """
    return _INSTANCE_SUFFIX.sub("", processor)


def milliseconds(seconds: float) -> float | None:
    """``seconds`` in milliseconds to 0.1 ms, or None for a value that is no duration (negative, NaN)."""
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return round(seconds * 1000, 1)


def emf_document(
    *,
    dimensions: Mapping[str, str],
    dimension_sets: Iterable[Iterable[str]],
    metrics: Mapping[str, float],
    properties: Mapping[str, Any],
    timestamp: float,
) -> dict[str, Any]:
    """Build one CloudWatch Embedded Metric Format document.

    Args:
        dimensions: Every dimension a dimension set names, with its value.
        dimension_sets: The dimension sets each metric is published under.
        metrics: Metric name -> value in milliseconds.
        properties: Other members of the log event (searchable in Logs Insights, not metrics).
        timestamp: Unix time of the measurement, in seconds.

    Raises:
        ValueError: A member would be defined twice, or a set names a dimension without a value.
    """
    sets = [list(names) for names in dimension_sets]
    if any(name not in dimensions for names in sets for name in names):
        raise ValueError(f"every dimension of {sets} needs a value, got {sorted(dimensions)}")
    members = [*dimensions, *metrics, *properties]
    if len(set(members)) != len(members) or "_aws" in members:
        raise ValueError(f"dimensions, metrics and properties must have distinct names, got {members}")
    return {
        "_aws": {
            "Timestamp": int(timestamp * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": sets,
                    "Metrics": [{"Name": name, "Unit": UNIT} for name in metrics],
                }
            ],
        },
        **dimensions,
        **properties,
        **metrics,
    }


def print_line(line: str) -> None:
    """Write one line to stdout and flush it, so each EMF document is one whole log event."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class ProcessingTimeObserver(BaseObserver):
    """Reports each ``ProcessingMetricsData`` a service publishes (``ServiceMetricsObserver`` skips them).

    Args:
        report: Called with each measurement.
    """

    def __init__(self, *, report: Callable[[ProcessingMetricsData], Awaitable[None]]) -> None:
        super().__init__(observe_every_push=False)
        self._report = report

    async def on_push_frame(self, data: FramePushed) -> None:
        """Report the processing times a ``MetricsFrame`` carries."""
        if isinstance(data.frame, MetricsFrame):
            for metrics in data.frame.data:
                if isinstance(metrics, ProcessingMetricsData):
                    await self._report(metrics)


class TurnMetrics:
    """One call's latency figures, as log lines and (``emf``) CloudWatch metrics.

    Give :attr:`observers` to the call's ``PipelineWorker``, whose ``PipelineParams`` must say
    ``enable_metrics=True`` for services to report TTFB and processing times (turn latency needs none).

    Args:
        pipeline: The pipeline's name (the ``pipeline`` dimension).
        transport: The transport's name (the ``transport`` dimension).
        output: ``emf`` to publish EMF documents as well as logging, ``log`` to log only.
        write: Where EMF documents go, one line each (default: stdout).
        clock: Unix time, for the documents' timestamps.
        on_turn: Also receives each turn's figures (e.g. to send them to the client).

    Attributes:
        observers: Pipecat's ``UserBotLatencyObserver`` and ``ServiceMetricsObserver``, and a
            :class:`ProcessingTimeObserver`, wired to this call's figures.
    """

    def __init__(
        self,
        *,
        pipeline: str,
        transport: str,
        output: MetricsOutput = "emf",
        write: Callable[[str], None] = print_line,
        clock: Callable[[], float] = time.time,
        on_turn: TurnListener | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.transport = transport
        self._write = write if output == "emf" else None
        self._clock = clock
        self._on_turn = on_turn
        self._turn_seconds: float | None = None
        self._first_word_seconds: float | None = None

        latency = UserBotLatencyObserver()
        # The observer raises its events in this order for one BotStartedSpeakingFrame, each handler
        # in a task of its own; asyncio runs tasks in the order they were made, so the breakdown's
        # handler finds the latencies stored.
        latency.add_event_handler("on_first_bot_speech_latency", self._on_first_word)
        latency.add_event_handler("on_latency_measured", self._on_turn_latency)
        latency.add_event_handler("on_latency_breakdown", self._on_breakdown)
        services = ServiceMetricsObserver()
        services.add_event_handler("on_service_latency", self._on_service_latency)
        self.observers: list[BaseObserver] = [latency, services, ProcessingTimeObserver(report=self._on_processing)]

    @property
    def _where(self) -> str:
        return f"{self.pipeline} over {self.transport}"

    async def _on_first_word(self, _observer: Any, seconds: float) -> None:
        self._first_word_seconds = seconds

    async def _on_turn_latency(self, _observer: Any, seconds: float) -> None:
        self._turn_seconds = seconds

    async def _on_breakdown(self, _observer: Any, breakdown: LatencyBreakdown) -> None:
        turn, first_word = self._turn_seconds, self._first_word_seconds
        self._turn_seconds = self._first_word_seconds = None
        metrics: dict[str, float] = {}
        for name, seconds in ((MetricName.TIME_TO_FIRST_WORD, first_word), (MetricName.TURN_LATENCY, turn)):
            value = None if seconds is None else milliseconds(seconds)
            if value is not None:
                metrics[name] = value
        if not metrics:
            return
        parts = [(part.label, part.key, milliseconds(part.duration_secs)) for part in breakdown.contributions]
        breakdown_ms: dict[str, float] = {}
        for _, key, value in parts:
            if value is not None:
                breakdown_ms[key] = round(breakdown_ms.get(key, 0.0) + value, 1)
        ttfb_ms: dict[str, float] = {}
        for ttfb in breakdown.ttfb:
            value = milliseconds(ttfb.duration_secs)
            if value is not None:
                ttfb_ms.setdefault(service_name(ttfb.processor), value)
        document = self._publish(
            metrics,
            dimension_sets=TURN_DIMENSION_SETS,
            properties={"type": TURN_RECORD, "breakdownMs": breakdown_ms, "ttfbMs": ttfb_ms},
        )
        what = ", ".join(
            f"{'time to first word' if name == MetricName.TIME_TO_FIRST_WORD else 'turn latency'} {value:.0f} ms"
            for name, value in metrics.items()
        )
        spent = ", ".join(f"{label} {value:.0f}" for label, _, value in parts if value is not None)
        ttfb_text = ", ".join(f"{service} {value:.0f}" for service, value in ttfb_ms.items())
        logger.info(
            "%s (%s)%s%s",
            what,
            self._where,
            f": {spent}" if spent else "",
            f"; TTFB {ttfb_text}" if ttfb_text else "",
        )
        if self._on_turn is not None:
            await self._on_turn({key: value for key, value in document.items() if key != "_aws"})

    async def _on_service_latency(self, _observer: Any, record: ServiceLatencyRecord) -> None:
        if record.kind is ServiceLatencyKind.TTFB:
            await self._service_metric(MetricName.SERVICE_TTFB, "TTFB", record.processor, record.model, record.seconds)

    async def _on_processing(self, metrics: ProcessingMetricsData) -> None:
        await self._service_metric(
            MetricName.SERVICE_PROCESSING, "processing", metrics.processor, metrics.model, metrics.value
        )

    async def _service_metric(self, name: str, what: str, processor: str, model: str | None, seconds: float) -> None:
        value = milliseconds(seconds)
        # The worker's first MetricsFrame lists every service with zeros (for clients): no measurement.
        if value is None or seconds <= 0:
            return
        service = service_name(processor)
        properties: dict[str, Any] = {"type": SERVICE_RECORD} | ({"model": model} if model else {})
        self._publish({name: value}, dimension_sets=SERVICE_DIMENSION_SETS, properties=properties, service=service)
        logger.info("%s %s %.0f ms (%s)", service, what, value, self._where)

    def _publish(
        self,
        metrics: Mapping[str, float],
        *,
        dimension_sets: Iterable[Iterable[str]],
        properties: Mapping[str, Any],
        service: str | None = None,
    ) -> dict[str, Any]:
        dimensions = {PIPELINE_DIMENSION: self.pipeline, TRANSPORT_DIMENSION: self.transport}
        if service is not None:
            dimensions[SERVICE_DIMENSION] = service
        document = emf_document(
            dimensions=dimensions,
            dimension_sets=dimension_sets,
            metrics=metrics,
            properties=properties,
            timestamp=self._clock(),
        )
        if self._write is not None:
            self._write(json.dumps(document, separators=(",", ":")))
        return document
