"""Errors of the KVS emulator: configuration mistakes and the API errors it answers with."""

from __future__ import annotations

from http import HTTPStatus


class KvsEmulatorError(Exception):
    """Base class of every error the emulator raises."""


class ConfigError(KvsEmulatorError, ValueError):
    """A setting is out of range or malformed; the message names the setting."""


class FaultSpecError(KvsEmulatorError, ValueError):
    """A fault injection request is malformed; the message says which field is wrong."""


class ApiError(KvsEmulatorError):
    """An error answer in AWS rest-json form: HTTP status, error code and message.

    Attributes:
        code: Error code sent in ``x-amzn-ErrorType`` (botocore maps it to a modeled exception).
        status: HTTP status code.
        message: Human readable message sent as ``{"message": ...}``.
    """

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status
        self.message = message

    @classmethod
    def invalid_argument(cls, message: str) -> ApiError:
        """A request parameter is missing, of the wrong type or out of range (400)."""
        return cls("InvalidArgumentException", HTTPStatus.BAD_REQUEST, message)

    @classmethod
    def not_found(cls, message: str) -> ApiError:
        """The channel does not exist (404)."""
        return cls("ResourceNotFoundException", HTTPStatus.NOT_FOUND, message)

    @classmethod
    def client_limit(cls, message: str) -> ApiError:
        """The caller exceeded a rate limit; botocore does not retry this (400)."""
        return cls("ClientLimitExceededException", HTTPStatus.BAD_REQUEST, message)
