"""Errors of the AgentCore stand-in: configuration mistakes and the API errors it answers with."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from .protocol import modeled_error_status


class AgentCoreStandInError(Exception):
    """Base class of every error the stand-in raises."""


class ConfigError(AgentCoreStandInError, ValueError):
    """A setting is out of range or malformed; the message names the setting."""


class ApiError(AgentCoreStandInError):
    """An error answer in AWS rest-json form: HTTP status, error code, message and extra body fields.

    Modeled errors take their status from botocore's ``bedrock-agentcore`` model; the SigV4 errors,
    which the model does not list (AWS answers them before any operation runs), are 403 as AWS sends
    them. Each code has exactly one constructor here.

    Attributes:
        code: Error code sent in ``x-amzn-ErrorType`` (botocore turns it into ``Error.Code``).
        status: HTTP status code.
        message: Human readable message sent as ``{"message": ...}``; never holds a signature or URL.
        fields: Further members of the error body (``ValidationException``'s ``reason``).
    """

    def __init__(self, code: str, status: int, message: str, **fields: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status
        self.message = message
        self.fields = fields

    def body(self) -> dict[str, Any]:
        """The JSON error body botocore's rest-json parser reads."""
        return {"message": self.message, **self.fields}

    @classmethod
    def _modeled(cls, code: str, message: str, **fields: Any) -> ApiError:
        return cls(code, modeled_error_status(code), message, **fields)

    @classmethod
    def validation(cls, field: str, message: str) -> ApiError:
        """A request field fails the model's constraints (400)."""
        return cls._modeled(
            "ValidationException",
            message,
            reason="FieldValidationFailed",
            fieldList=[{"name": field, "message": message}],
        )

    @classmethod
    def not_found(cls, message: str) -> ApiError:
        """The runtime or endpoint does not exist (404)."""
        return cls._modeled("ResourceNotFoundException", message)

    @classmethod
    def runtime_client_error(cls, message: str) -> ApiError:
        """The agent could not be reached or answered with an error (424)."""
        return cls._modeled("RuntimeClientError", message)

    @classmethod
    def internal(cls, message: str) -> ApiError:
        """A bug in the stand-in (500)."""
        return cls._modeled("InternalServerException", message)

    @classmethod
    def unknown_operation(cls) -> ApiError:
        """No operation is served at this method and path (404)."""
        return cls("UnknownOperationException", HTTPStatus.NOT_FOUND, "The requested operation does not exist.")

    @classmethod
    def missing_authentication(cls) -> ApiError:
        """The request carries neither an ``Authorization`` header nor a presigned query (403)."""
        return cls("MissingAuthenticationTokenException", HTTPStatus.FORBIDDEN, "Missing Authentication Token")

    @classmethod
    def incomplete_signature(cls, message: str) -> ApiError:
        """The SigV4 fields are malformed or a required one is missing (403)."""
        return cls("IncompleteSignatureException", HTTPStatus.FORBIDDEN, message)

    @classmethod
    def unrecognized_client(cls) -> ApiError:
        """The access key (or session token) is not one this account knows (403)."""
        return cls(
            "UnrecognizedClientException",
            HTTPStatus.FORBIDDEN,
            "The security token included in the request is invalid.",
        )

    @classmethod
    def invalid_signature(cls, message: str) -> ApiError:
        """The signature does not match, is scoped wrongly, or is outside its time window (403)."""
        return cls("InvalidSignatureException", HTTPStatus.FORBIDDEN, message)

    @classmethod
    def signature_mismatch(cls) -> ApiError:
        """The recomputed signature differs from the one sent (403), in AWS's words."""
        return cls.invalid_signature(
            "The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details."
        )
