"""Voice pipelines, one small builder each, chosen by ``AGENT_PIPELINE``.

Every builder takes the :class:`~agent.config.AgentConfig` and returns a fresh
:class:`~agent.bot.BotPipeline` for one call; each uses Silero VAD. Builders import their Pipecat
services lazily, so a missing package fails with a message naming what to install, and this package
imports no Pipecat at all: the agent answers its first offer while :class:`CallPipelines` builds the
first call's pipeline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from agent.config import AgentConfig
from agent.exceptions import ConfigurationError

if TYPE_CHECKING:  # agent.bot imports Pipecat's pipeline worker: a few hundred ms, see CallPipelines
    from agent.bot import BotPipeline

PipelineBuilder = Callable[[AgentConfig], "BotPipeline"]


def _nova_sonic(config: AgentConfig) -> BotPipeline:
    from agent.pipelines.nova_sonic import build_nova_sonic  # noqa: PLC0415 - lazy, see module doc

    return build_nova_sonic(config)


def _cascade(config: AgentConfig) -> BotPipeline:
    from agent.pipelines.cascade import build_cascade  # noqa: PLC0415

    return build_cascade(config)


def _local(config: AgentConfig) -> BotPipeline:
    from agent.pipelines.local import build_local  # noqa: PLC0415

    return build_local(config)


def _load_local_recognizer() -> None:
    from agent.local_speech import decoder_pool  # noqa: PLC0415

    decoder_pool()


BUILDERS: Final[Mapping[str, PipelineBuilder]] = {"nova-sonic": _nova_sonic, "cascade": _cascade, "local": _local}
SHARED_MODELS: Final[Mapping[str, Callable[[], None]]] = {"local": _load_local_recognizer}
"""What loads the models a pipeline's calls share in the process, where its builder does not."""


def builder_of(config: AgentConfig) -> PipelineBuilder:
    """Return the configured pipeline's builder without building anything.

    Raises:
        ConfigurationError: ``config.pipeline`` names no pipeline.
    """
    try:
        return BUILDERS[config.pipeline]
    except KeyError:
        raise ConfigurationError(
            f"AGENT_PIPELINE must be one of {', '.join(BUILDERS)}, got {config.pipeline!r}"
        ) from None


def pipeline_builder(config: AgentConfig) -> PipelineBuilder:
    """Return the builder of the configured pipeline after building it once as a check.

    Raises:
        ConfigurationError: The pipeline cannot be built here (missing package, credentials,
            system library); the message says what to set or install.
    """
    builder = builder_of(config)
    builder(config)
    return builder


class CallPipelines:
    """The pipelines of this process's calls; the first one is built ahead, in a worker thread.

    Building a pipeline imports its Pipecat services and loads its models: several hundred
    milliseconds that answering an offer does not need (Pipecat's transport waits for its pipeline
    before it reports the peer connected). :meth:`prepare` starts building the first call's pipeline,
    and loading the models calls share, as the server starts, so ``/ping`` and the first answer need
    only the server and WebRTC, and the first call's media connects while its pipeline is built.

    Args:
        config: The settings.
        builder: Builds one call's pipeline (default: ``AGENT_PIPELINE``'s).
    """

    def __init__(self, config: AgentConfig, builder: PipelineBuilder | None = None) -> None:
        self._config = config
        self._builder = builder or builder_of(config)
        self._lock = threading.Lock()
        self._prepared: concurrent.futures.Future[BotPipeline] | None = None
        self._prepared_taken = False

    @property
    def name(self) -> str:
        """The configured pipeline's name (what every builder names its pipeline)."""
        return self._config.pipeline

    def prepare(self) -> concurrent.futures.Future[BotPipeline]:
        """Start building the first call's pipeline in a worker thread (once; later calls return the same).

        Returns:
            The first call's pipeline, or the exception that building it raised (a
            :class:`ConfigurationError` says what to set or install).
        """
        with self._lock:
            if self._prepared is None:
                self._prepared = concurrent.futures.Future()
                threading.Thread(
                    target=self._build_first, args=(self._prepared,), name="prepare-pipeline", daemon=True
                ).start()
            return self._prepared

    def _build_first(self, prepared: concurrent.futures.Future[BotPipeline]) -> None:
        try:
            bot = self._builder(self._config)
            load_shared_models = SHARED_MODELS.get(self._config.pipeline)
            if load_shared_models is not None:
                load_shared_models()
        except BaseException as exc:
            prepared.set_exception(exc)
        else:
            prepared.set_result(bot)

    async def take(self) -> BotPipeline:
        """The pipeline of a new call: the prepared one to the first call, a new one to each later call.

        Every call waits until the preparation is over, so no call loads the shared models a second
        time; without :meth:`prepare` each call builds its own pipeline. Builds run in a worker thread,
        off the event loop that carries the calls' media.

        Raises:
            ConfigurationError: The pipeline cannot be built here.
        """
        with self._lock:
            prepared, first = self._prepared, not self._prepared_taken
            self._prepared_taken = self._prepared_taken or prepared is not None
        if prepared is not None:
            bot = await asyncio.wrap_future(prepared)
            if first:
                return bot
        return await asyncio.to_thread(self._builder, self._config)
