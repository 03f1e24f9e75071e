"""The coordinator's failures, each with the HTTP status it becomes.

Mapping from a party's gRPC status (``status_from_grpc``):

| gRPC status | HTTP | meaning |
|---|---|---|
| INVALID_ARGUMENT | 400 | a share does not open for that party, or a malformed item |
| ALREADY_EXISTS | 409 | a replayed box: the party has seen that request id or client key |
| NOT_FOUND, FAILED_PRECONDITION | (reload, retry once) | the party lost the model (restart) |
| DEADLINE_EXCEEDED | 504 | the secure forward did not finish by the deadline |
| UNAVAILABLE, CANCELLED | 503 | a party (or its peer / the dealer) is down |
| DATA_LOSS | (retry once on fresh material, else 503) | the parties' dealer material did not match (a dealer restart) |
| anything else | 502 | a party failed |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc


class CoordinatorError(Exception):
    """Base class: ``status`` is the HTTP status code, ``str(self)`` the message for the client."""

    status: int = 500
    headers: dict[str, str] | None = None
    kind: str = "internal"


class BadRequest(CoordinatorError):
    status, kind = 400, "bad_request"


class MalformedJson(BadRequest):
    """A body sent as application/json that does not parse: 400 on every route."""

    kind = "malformed_json"


class SchemaViolation(CoordinatorError):
    """A body that parses but breaks the schema (a field missing, too long, out of range): 422 on every route."""

    status, kind = 422, "schema"


def describe_validation_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """pydantic's errors as one line a client can read: ``field.path: message; ...`` (no input echo, no ctx)."""
    parts = []
    for e in list(errors)[:5]:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def from_validation_errors(errors: Sequence[Mapping[str, Any]]) -> CoordinatorError:
    """The error for a body that failed validation: 400 if it is not JSON at all, else 422."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return MalformedJson("malformed JSON body: it does not parse as JSON")
    return SchemaViolation(f"invalid request: {describe_validation_errors(errors)}")


class Unauthorized(CoordinatorError):
    status, kind = 401, "unauthorized"


class UnknownModel(CoordinatorError):
    status, kind = 404, "unknown_model"


class DuplicateRequest(CoordinatorError):
    status, kind = 409, "duplicate_request"


class PayloadTooLarge(CoordinatorError):
    status, kind = 413, "too_large"


class UnsupportedMedia(CoordinatorError):
    status, kind = 415, "unsupported_media"


class PartyFailed(CoordinatorError):
    status, kind = 502, "party_failed"


class SessionAborted(PartyFailed):
    """A party's session was aborted because of the other side (its peer refused or failed the call): the other
    party's own answer says why, so ``server.parties.both`` prefers it."""

    kind = "session_aborted"


class Unavailable(CoordinatorError):
    """503 with Retry-After: the queue is full or a party is down."""

    status, kind = 503, "unavailable"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class QueueFull(Unavailable):
    kind = "queue_full"


class PartyUnavailable(Unavailable):
    """A party is down, or says that something it needs (its peer, the dealer) is.

    ``unreachable``: the coordinator itself could not reach this party (no connection, or the connection broke
    during the call), as opposed to a party that answered UNAVAILABLE about its peer or the dealer; when both
    parties fail, ``server.parties.both`` blames the unreachable one.
    """

    kind = "party_unavailable"

    def __init__(self, message: str, retry_after_s: int = 1, unreachable: bool = False) -> None:
        super().__init__(message, retry_after_s)
        self.unreachable = unreachable


class MaterialMismatch(Unavailable):
    """A party answered DATA_LOSS: the two parties held different dealer material (their commitments differed,
    e.g. one batch was fetched ahead from a dealer that restarted since); nothing was revealed or returned. The
    coordinator retries the forward once under a fresh ticket; a second mismatch is a 503."""

    kind = "material_mismatch"


class DeadlineExceeded(CoordinatorError):
    status, kind = 504, "deadline"


class ModelNotLoaded(CoordinatorError):
    """A party answered NOT_FOUND / FAILED_PRECONDITION: load the model again and retry."""

    status, kind = 503, "model_not_loaded"


def status_from_grpc(
    rank: int, code: grpc.StatusCode, details: str | None, retry_after_s: int = 1, unreachable: bool = False
) -> CoordinatorError:
    """Translate a party's gRPC failure into the coordinator error the client sees.

    ``unreachable``: the failure is the coordinator's own connection to the party (see ``PartyUnavailable``).
    """
    what = f"party {rank}: {details or code.name}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return BadRequest(what)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return DuplicateRequest(what)
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
        return ModelNotLoaded(what)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{what} (deadline exceeded)")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return PartyUnavailable(f"party {rank} is unavailable: {details or code.name}", retry_after_s, unreachable)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Unavailable(f"{what} (resource exhausted)", retry_after_s)
    if code == grpc.StatusCode.ABORTED:
        return SessionAborted(what)
    if code == grpc.StatusCode.DATA_LOSS:
        return MaterialMismatch(what, retry_after_s)
    return PartyFailed(what)
