"""Voice pipelines, one small builder each, chosen by ``AGENT_PIPELINE``.

Every builder takes the :class:`~agent.config.AgentConfig` and returns a fresh
:class:`~agent.bot.BotPipeline` for one call; each uses Silero VAD. Builders import their Pipecat
services lazily, so a missing package fails at start with a message naming what to install.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from agent.bot import BotPipeline
from agent.config import AgentConfig
from agent.exceptions import ConfigurationError

PipelineBuilder = Callable[[AgentConfig], BotPipeline]


def _nova_sonic(config: AgentConfig) -> BotPipeline:
    from agent.pipelines.nova_sonic import build_nova_sonic  # noqa: PLC0415 - lazy, see module doc

    return build_nova_sonic(config)


def _cascade(config: AgentConfig) -> BotPipeline:
    from agent.pipelines.cascade import build_cascade  # noqa: PLC0415

    return build_cascade(config)


def _local(config: AgentConfig) -> BotPipeline:
    from agent.pipelines.local import build_local  # noqa: PLC0415

    return build_local(config)


BUILDERS: Final[Mapping[str, PipelineBuilder]] = {"nova-sonic": _nova_sonic, "cascade": _cascade, "local": _local}


def pipeline_builder(config: AgentConfig) -> PipelineBuilder:
    """Return the builder of the configured pipeline after building it once as a check.

    Raises:
        ConfigurationError: The pipeline cannot be built here (missing package, credentials,
            system library); the message says what to set or install.
    """
    try:
        builder = BUILDERS[config.pipeline]
    except KeyError:
        raise ConfigurationError(
            f"AGENT_PIPELINE must be one of {', '.join(BUILDERS)}, got {config.pipeline!r}"
        ) from None
    builder(config)
    return builder
