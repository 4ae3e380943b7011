"""Running one call: a pipeline between a transport's input and output, until the peer leaves.

``run_bot`` knows nothing of WebRTC or AgentCore: it takes any Pipecat transport and the
:class:`BotPipeline` a pipeline builder made (see :mod:`agent.pipelines`). Every call measures its
turns (see :mod:`agent.turn_metrics`): the figures go to the log, to CloudWatch as EMF on stdout, and
to the client as an RTVI ``server-message``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from pipecat.frames.frames import Frame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from agent.config import MetricsOutput
from agent.telemetry import TransportName
from agent.turn_metrics import TurnMetrics

logger = logging.getLogger(__name__)

EndReason = Literal["peer-left", "connect-timeout", "ended"]


@dataclass
class BotPipeline:
    """The part of a call's pipeline that a pipeline builder chooses.

    Attributes:
        name: The pipeline's name (``nova-sonic``, ``cascade``, ``local``), for logs and events.
        processors: Processors between the transport's input and output, in order.
        after_output: Processors after the transport's output (e.g. the assistant context aggregator).
        opening_frames: Frames queued when the peer connects (the greeting).
        audio_in_sample_rate: Sample rate the pipeline wants from the transport.
        audio_out_sample_rate: Sample rate of the audio the pipeline produces.
    """

    name: str
    processors: list[FrameProcessor]
    after_output: list[FrameProcessor] = field(default_factory=list)
    opening_frames: list[Frame] = field(default_factory=list)
    audio_in_sample_rate: int = 16000
    audio_out_sample_rate: int = 24000


async def run_bot(
    transport: BaseTransport,
    bot: BotPipeline,
    *,
    connect_timeout: float,
    transport_name: TransportName = "webrtc",
    metrics_output: MetricsOutput = "emf",
) -> EndReason:
    """Run one call to its end.

    The call ends when the peer disconnects, when it never connects within ``connect_timeout``
    seconds, or when the pipeline ends by itself (idle timeout, fatal service error).

    Args:
        transport: The call's transport, already bound to its peer.
        bot: The pipeline to run between the transport's input and output.
        connect_timeout: Seconds to wait for the peer to connect.
        transport_name: The transport's name in the call's metrics (``webrtc``, ``websocket``).
        metrics_output: ``emf`` to publish the call's latency metrics on stdout as well as logging
            them, ``log`` to log them only (``AGENT_METRICS``).

    Returns:
        Why the call ended.
    """
    pipeline = Pipeline([transport.input(), *bot.processors, transport.output(), *bot.after_output])

    async def tell_client(figures: dict[str, Any]) -> None:
        # The page shows the same figures CloudWatch gets; RTVI's own `metrics` messages carry
        # only the services' TTFB and processing times.
        await worker.rtvi.send_server_message(figures)

    metrics = TurnMetrics(pipeline=bot.name, transport=transport_name, output=metrics_output, on_turn=tell_client)
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=bot.audio_in_sample_rate,
            audio_out_sample_rate=bot.audio_out_sample_rate,
            # Services report TTFB and processing times only with metrics on.
            enable_metrics=True,
        ),
        observers=metrics.observers,
    )
    connected = asyncio.Event()
    reason: list[EndReason] = []

    async def on_client_connected(_transport: Any, _client: Any) -> None:
        if connected.is_set():
            # A peer that restarts its connection (fresh TURN credentials) connects again: same call.
            logger.info("peer reconnected (%s pipeline)", bot.name)
            return
        connected.set()
        logger.info("peer connected (%s pipeline)", bot.name)
        if bot.opening_frames:
            await worker.queue_frames(bot.opening_frames)

    async def on_client_disconnected(_transport: Any, _client: Any) -> None:
        reason.append("peer-left")
        await worker.cancel(reason="peer left")

    transport.add_event_handler("on_client_connected", on_client_connected)
    transport.add_event_handler("on_client_disconnected", on_client_disconnected)

    async def end_unless_connected() -> None:
        try:
            await asyncio.wait_for(connected.wait(), timeout=connect_timeout)
        except TimeoutError:
            logger.warning("peer did not connect within %.0f s; ending the call", connect_timeout)
            reason.append("connect-timeout")
            await worker.cancel(reason="peer never connected")

    watchdog = asyncio.create_task(end_unless_connected(), name="connect-watchdog")
    try:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
    return reason[0] if reason else "ended"
