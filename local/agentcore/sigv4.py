"""SigV4 checks as AWS makes them: botocore recomputes the signature from the request as it arrived.

Both forms are checked: an ``Authorization`` header (``InvokeAgentRuntime`` through boto3, or a
header-signed WebSocket upgrade) and a presigned query (``X-Amz-*`` parameters, as
``AgentCoreRuntimeClient.generate_presigned_url`` makes them). The canonical request is built by
botocore's own ``SigV4Auth`` from the method, the raw path, the decoded query parameters (minus
``X-Amz-Signature``), the headers the client says it signed, and the body, with the timestamp the
client signed at; only the comparison is ours (:func:`hmac.compare_digest`).

The ``host`` header is part of every signature, so a URL signed for one host fails at another: a
client must sign for the host it connects to (``127.0.0.1:<port>`` here, port included).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from botocore.auth import SIGV4_TIMESTAMP, UNSIGNED_PAYLOAD, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .exceptions import ApiError

logger = logging.getLogger(__name__)

ALGORITHM: Final = "AWS4-HMAC-SHA256"
SIGNATURE_PARAM: Final = "X-Amz-Signature"
_PRESIGN_PARAMS: Final = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders")
_SCOPE_TERMINATOR: Final = "aws4_request"


@dataclass(frozen=True)
class SignedRequest:
    """An HTTP request as it arrived, in the parts a SigV4 check reads.

    Attributes:
        method: HTTP method.
        raw_path: The path exactly as sent (still percent-encoded).
        query: Query parameters, percent-decoded, in the order sent (``+`` is not a space in SigV4).
        headers: Header values by lower-case name (repeated headers joined with ``,``).
        body: The request body.
    """

    method: str
    raw_path: str
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, str]
    body: bytes = b""

    def param(self, name: str) -> str | None:
        """The one value of query parameter ``name``, or None.

        Raises:
            ApiError: The parameter is repeated (``IncompleteSignatureException``).
        """
        values = [value for key, value in self.query if key == name]
        if len(values) > 1:
            raise ApiError.incomplete_signature(f"The query parameter {name} is repeated.")
        return values[0] if values else None


@dataclass(frozen=True)
class _Claim:
    """What a request says about its own signature."""

    credential: str
    timestamp: str
    signed_headers: tuple[str, ...]
    signature: str
    token: str | None
    expires: str | None  # presigned only


class SigV4Verifier:
    """Checks SigV4 signatures against one set of credentials, for one region and service.

    Args:
        access_key_id: The only access key accepted.
        secret_access_key: Its secret.
        session_token: The token that must accompany the key, or None.
        region: Region the credential scope must name.
        service: Service the credential scope must name.
        max_expires_seconds: Largest ``X-Amz-Expires`` a presigned URL may carry.
        max_clock_skew_seconds: How far a signing time may be from ``clock``.
        clock: Wall clock, epoch seconds.
    """

    def __init__(
        self,
        *,
        access_key_id: str,
        secret_access_key: str,
        session_token: str | None,
        region: str,
        service: str,
        max_expires_seconds: int,
        max_clock_skew_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._credentials = Credentials(access_key_id, secret_access_key, session_token)
        self._region = region
        self._service = service
        self._max_expires = max_expires_seconds
        self._max_skew = timedelta(seconds=max_clock_skew_seconds)
        self._clock = clock

    def verify(self, request: SignedRequest) -> None:
        """Accept a correctly signed, current request; raise for anything else.

        Raises:
            ApiError: 403 ``MissingAuthenticationTokenException``, ``IncompleteSignatureException``,
                ``UnrecognizedClientException`` or ``InvalidSignatureException``.
        """
        if "authorization" in request.headers:
            claim = self._header_claim(request)
            presigned = False
        elif request.param(SIGNATURE_PARAM) is not None or request.param("X-Amz-Credential") is not None:
            claim = self._query_claim(request)
            presigned = True
        else:
            raise ApiError.missing_authentication()
        signed_at = self._check_scope(claim)
        self._check_signature(request, claim, presigned=presigned)
        self._check_time(claim, signed_at)

    def _header_claim(self, request: SignedRequest) -> _Claim:
        algorithm, _, rest = request.headers["authorization"].partition(" ")
        if algorithm != ALGORITHM:
            raise ApiError.incomplete_signature(f"Authorization header requires the {ALGORITHM} algorithm.")
        fields = dict(part.strip().partition("=")[::2] for part in rest.split(","))
        missing = [name for name in ("Credential", "SignedHeaders", "Signature") if not fields.get(name)]
        if missing:
            raise ApiError.incomplete_signature(f"Authorization header requires {', '.join(missing)}.")
        timestamp = request.headers.get("x-amz-date")
        if not timestamp:
            raise ApiError.incomplete_signature("Authorization header requires an X-Amz-Date header.")
        return _Claim(
            credential=fields["Credential"],
            timestamp=timestamp,
            signed_headers=tuple(fields["SignedHeaders"].split(";")),
            signature=fields["Signature"],
            token=request.headers.get("x-amz-security-token"),
            expires=None,
        )

    def _query_claim(self, request: SignedRequest) -> _Claim:
        values = {name: request.param(name) for name in (*_PRESIGN_PARAMS, SIGNATURE_PARAM)}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise ApiError.incomplete_signature(f"A presigned URL requires {', '.join(missing)}.")
        if values["X-Amz-Algorithm"] != ALGORITHM:
            raise ApiError.incomplete_signature(f"X-Amz-Algorithm must be {ALGORITHM}.")
        return _Claim(
            credential=str(values["X-Amz-Credential"]),
            timestamp=str(values["X-Amz-Date"]),
            signed_headers=tuple(str(values["X-Amz-SignedHeaders"]).split(";")),
            signature=str(values[SIGNATURE_PARAM]),
            token=request.param("X-Amz-Security-Token"),
            expires=values["X-Amz-Expires"],
        )

    def _check_scope(self, claim: _Claim) -> datetime:
        """Check the credential scope and token; return the signing time."""
        try:
            signed_at = datetime.strptime(claim.timestamp, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
        except ValueError:
            raise ApiError.incomplete_signature("X-Amz-Date must be in the ISO 8601 basic format.") from None
        parts = claim.credential.split("/")
        if len(parts) != 5 or parts[4] != _SCOPE_TERMINATOR:
            raise ApiError.incomplete_signature(
                "Credential must have the form <key>/<date>/<region>/<service>/aws4_request."
            )
        access_key, date, region, service, _ = parts
        if access_key != self._credentials.access_key or claim.token != self._credentials.token:
            raise ApiError.unrecognized_client()
        if date != claim.timestamp[:8]:
            raise ApiError.invalid_signature("Date in Credential scope does not match YYYYMMDD from X-Amz-Date.")
        if region != self._region:
            raise ApiError.invalid_signature(f"Credential should be scoped to a valid region, not {region!r}.")
        if service != self._service:
            raise ApiError.invalid_signature(f"Credential should be scoped to correct service: {self._service!r}.")
        return signed_at

    def _check_signature(self, request: SignedRequest, claim: _Claim, *, presigned: bool) -> None:
        unsent = [name for name in claim.signed_headers if name not in request.headers]
        if "host" not in claim.signed_headers or unsent:
            raise ApiError.incomplete_signature("SignedHeaders must name host and only headers that were sent.")
        content_hash = request.headers.get("x-amz-content-sha256")
        if content_hash not in (None, UNSIGNED_PAYLOAD, hashlib.sha256(request.body).hexdigest()):
            raise ApiError.invalid_signature("The x-amz-content-sha256 header does not match the body.")
        replay = AWSRequest(
            method=request.method,
            # http: botocore then always hashes the body, as a client signing over http does.
            url=f"http://{request.headers['host']}{request.raw_path}",
            headers={name: request.headers[name] for name in claim.signed_headers},
            data=request.body,
            params=[(key, value) for key, value in request.query if key != SIGNATURE_PARAM],
        )
        replay.context["timestamp"] = claim.timestamp
        signer = (SigV4QueryAuth if presigned else SigV4Auth)(self._credentials, self._service, self._region)
        canonical_request = signer.canonical_request(replay)
        expected = signer.signature(signer.string_to_sign(replay, canonical_request), replay)
        if not hmac.compare_digest(expected, claim.signature):
            raise ApiError.signature_mismatch()

    def _check_time(self, claim: _Claim, signed_at: datetime) -> None:
        now = datetime.fromtimestamp(self._clock(), UTC)
        if signed_at - now > self._max_skew:
            raise ApiError.invalid_signature(f"Signature not yet current: {claim.timestamp} is in the future.")
        if claim.expires is None:
            if now - signed_at > self._max_skew:
                raise ApiError.invalid_signature(
                    f"Signature expired: {claim.timestamp} is more than "
                    f"{self._max_skew.total_seconds():g} s before {now.strftime(SIGV4_TIMESTAMP)}."
                )
            return
        try:
            expires = int(claim.expires)
        except ValueError:
            raise ApiError.incomplete_signature("X-Amz-Expires must be a whole number of seconds.") from None
        if not 0 < expires <= self._max_expires:
            raise ApiError.invalid_signature(f"X-Amz-Expires must be between 1 and {self._max_expires} seconds.")
        if now > signed_at + timedelta(seconds=expires):
            raise ApiError.invalid_signature(f"Signature expired: signed at {claim.timestamp} for {expires} s.")
