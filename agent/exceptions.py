"""Errors raised by the agent. Every error derives from :class:`AgentError`."""

from __future__ import annotations


class AgentError(Exception):
    """Base class of every error the agent raises."""


class ConfigurationError(AgentError, ValueError):
    """A setting is missing or invalid; the message names the setting and how to fix it."""


class PayloadError(AgentError):
    """An invocation payload cannot be served; becomes an ``error`` event, never a crash.

    Attributes:
        code: Stable machine-readable reason (``unknown_type``, ``missing_data``, ``invalid_sdp``,
            ``unknown_pc_id``, ``invalid_candidate``, ``invalid_ice_servers``, ``ice_servers_missing``,
            ``payload_too_large``, ``invalid_json``).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class IceServersUnavailableError(AgentError):
    """The agent could not get ICE servers for a call.

    Attributes:
        retry_after: Seconds after which a retry is likely to succeed, when known.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
