"""SigV4 checks as AWS makes them: botocore recomputes the signature from the request as it arrived.

Both forms are checked: an ``Authorization`` header (``InvokeAgentRuntime`` through boto3, or a
header-signed WebSocket upgrade) and a presigned query (``X-Amz-*`` parameters, as
``AgentCoreRuntimeClient.generate_presigned_url`` makes them). The canonical request is built by
botocore's own ``SigV4Auth`` from the method, the raw path, the decoded query parameters (minus
``X-Amz-Signature``), the headers the client says it signed, and the body, with the timestamp the
client signed at; only the comparison is ours (:func:`hmac.compare_digest`).

The ``host`` header is part of every signature, so a URL signed for one host fails at another: a
client must sign for the host it connects to (``127.0.0.1:<port>`` here, port included).

An event stream request (``x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-EVENTS``) signs its
headers only; its events are then signed one by one, each chained to the signature before it
(:class:`EventSignatureChain`), with the signing key of the request's credentials.
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
STREAMING_EVENTS_PAYLOAD: Final = "STREAMING-AWS4-HMAC-SHA256-EVENTS"
"""The payload hash of an event stream request: its body is signed event by event."""


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


@dataclass(frozen=True)
class VerifiedSignature:
    """A request's signature that passed every check: what an event stream's chain starts from.

    Attributes:
        credentials: The credentials it was signed with.
        signature: Its hex signature (the seed of the event signature chain).
        region: Region of its credential scope.
        service: Service of its credential scope.
    """

    credentials: Credentials
    signature: str
    region: str
    service: str


CredentialLookup = Callable[[str], Credentials | None]
"""Credentials by access key id, or None when the key is unknown or no longer valid."""


class SigV4Verifier:
    """Checks SigV4 signatures against one set of credentials, for one region and service.

    Args:
        access_key_id: The only access key accepted.
        secret_access_key: Its secret.
        session_token: The token that must accompany the key, or None.
        lookup: Other credentials accepted, by access key id (temporary ones an issuer handed out).
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
        lookup: CredentialLookup | None = None,
        region: str,
        service: str,
        max_expires_seconds: int,
        max_clock_skew_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._credentials = Credentials(access_key_id, secret_access_key, session_token)
        self._lookup = lookup
        self._region = region
        self._service = service
        self._max_expires = max_expires_seconds
        self._max_skew = timedelta(seconds=max_clock_skew_seconds)
        self._clock = clock

    def verify(self, request: SignedRequest) -> VerifiedSignature:
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
        signed_at, credentials = self._check_scope(claim)
        self._check_signature(request, claim, credentials, presigned=presigned)
        self._check_time(claim, signed_at)
        _, _, region, service, _ = claim.credential.split("/")
        return VerifiedSignature(credentials=credentials, signature=claim.signature, region=region, service=service)

    def _credentials_for(self, access_key: str) -> Credentials | None:
        if access_key == self._credentials.access_key:
            return self._credentials
        return self._lookup(access_key) if self._lookup is not None else None

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

    def _check_scope(self, claim: _Claim) -> tuple[datetime, Credentials]:
        """Check the credential scope and token; return the signing time and the credentials."""
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
        credentials = self._credentials_for(access_key)
        if credentials is None or claim.token != credentials.token:
            raise ApiError.unrecognized_client()
        if date != claim.timestamp[:8]:
            raise ApiError.invalid_signature("Date in Credential scope does not match YYYYMMDD from X-Amz-Date.")
        if region != self._region:
            raise ApiError.invalid_signature(f"Credential should be scoped to a valid region, not {region!r}.")
        if service != self._service:
            raise ApiError.invalid_signature(f"Credential should be scoped to correct service: {self._service!r}.")
        return signed_at, credentials

    def _check_signature(
        self, request: SignedRequest, claim: _Claim, credentials: Credentials, *, presigned: bool
    ) -> None:
        unsent = [name for name in claim.signed_headers if name not in request.headers]
        if "host" not in claim.signed_headers or unsent:
            raise ApiError.incomplete_signature("SignedHeaders must name host and only headers that were sent.")
        content_hash = request.headers.get("x-amz-content-sha256")
        streaming = content_hash == STREAMING_EVENTS_PAYLOAD and not request.body
        if not streaming and content_hash not in (None, UNSIGNED_PAYLOAD, hashlib.sha256(request.body).hexdigest()):
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
        signer = (SigV4QueryAuth if presigned else SigV4Auth)(credentials, self._service, self._region)
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


class EventSignatureChain:
    """Checks the signatures of an event stream's events, each chained to the one before it.

    Each event arrives wrapped: its ``:date`` header (a timestamp) and ``:chunk-signature`` header
    (32 raw bytes) sign the encoded inner message, which is the wrapper's payload. The string signed is
    ``AWS4-HMAC-SHA256-PAYLOAD``, the event's time, the scope, the previous signature (the request's
    for the first event), the SHA-256 of the encoded ``:date`` header and the SHA-256 of the payload,
    and the key is the request's signing key: credentials cannot change within a stream. The final
    event has an empty payload.

    Args:
        seed: The request's verified signature.
        max_clock_skew_seconds: How far an event's time may be from ``clock``.
        clock: Wall clock, epoch seconds.
    """

    def __init__(self, seed: VerifiedSignature, *, max_clock_skew_seconds: float, clock: Callable[[], float]) -> None:
        self._credentials = seed.credentials
        self._region = seed.region
        self._service = seed.service
        self._prior = seed.signature
        self._max_skew = max_clock_skew_seconds
        self._clock = clock
        self.ended = False

    def verify(self, date: datetime, encoded_date_header: bytes, signature: bytes, payload: bytes) -> None:
        """Accept the next event's signature, or raise.

        Args:
            date: The event's ``:date``.
            encoded_date_header: The ``:date`` header as encoded on the wire.
            signature: The ``:chunk-signature`` bytes.
            payload: The wrapper's payload (the encoded inner message; empty for the final event).

        Raises:
            ApiError: ``InvalidSignatureException`` for a wrong or stale signature, or an event after
                the final one.
        """
        if self.ended:
            raise ApiError.invalid_signature("An event arrived after the stream's final signed event.")
        if abs(date.timestamp() - self._clock()) > self._max_skew:
            raise ApiError.invalid_signature(f"The event's :date {date.isoformat()} is too far from now.")
        timestamp = date.astimezone(UTC).strftime(SIGV4_TIMESTAMP)
        scope = f"{timestamp[:8]}/{self._region}/{self._service}/{_SCOPE_TERMINATOR}"
        string_to_sign = "\n".join(
            (
                "AWS4-HMAC-SHA256-PAYLOAD",
                timestamp,
                scope,
                self._prior,
                hashlib.sha256(encoded_date_header).hexdigest(),
                hashlib.sha256(payload).hexdigest(),
            )
        )
        key = self._signing_key(timestamp[:8])
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise ApiError.invalid_signature("The event's signature does not match: it must chain to the request's.")
        self._prior = expected.hex()
        if not payload:
            self.ended = True

    def _signing_key(self, day: str) -> bytes:
        key = hmac.new(f"AWS4{self._credentials.secret_key}".encode(), day.encode(), hashlib.sha256).digest()
        for part in (self._region, self._service, _SCOPE_TERMINATOR):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key
