"""The client's exceptions: every one is an `EaselError`.

`APIStatusError` and its subclasses carry what the server said in the native error shape
(`{"success": false, "error": {"code", "message", "fields"}}`): `status`, `code`, `message`, `fields`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from easel_client._types import Generation


class EaselError(Exception):
    """Base class of every error the client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FieldProblem:
    """One entry of the error's `fields`: which request field, and what is wrong with it."""

    field: str
    message: str


class APIStatusError(EaselError):
    """The server answered with an error status (after any retries)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: list[FieldProblem] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.fields = fields or []
        self.headers: dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}
        self.body = body

    @property
    def retry_after(self) -> float | None:
        """The server's Retry-After in seconds, when it sent one as a number."""
        try:
            return float(self.headers["retry-after"])
        except (KeyError, ValueError):
            return None

    def __str__(self) -> str:
        fields = "; ".join(f"{f.field}: {f.message}" for f in self.fields)
        return f"{self.status} {self.code}: {self.message}" + (f" ({fields})" if fields else "")


class BadRequestError(APIStatusError):
    """400: the request is invalid (`VALIDATION_ERROR`); `fields` names the wrong fields."""


class AuthenticationError(APIStatusError):
    """401: no key, or a wrong, revoked or expired one."""


class PaymentRequiredError(APIStatusError):
    """402: the budget does not cover the request (`INSUFFICIENT_CREDITS`)."""


class PermissionDeniedError(APIStatusError):
    """403: the key lacks the scope, or asks for something its project may not do."""


class NotFoundError(APIStatusError):
    """404: unknown id (or another project's)."""


class ConflictError(APIStatusError):
    """409: e.g. `NOT_RETRYABLE`, `NO_WORKER`, or an idempotent create still in flight."""


class UnprocessableEntityError(APIStatusError):
    """422: e.g. an Idempotency-Key reused with another body."""


class RateLimitError(APIStatusError):
    """429: `RATE_LIMIT_EXCEEDED` or `QUEUE_LIMIT_EXCEEDED`; `retry_after` says when to try again."""


class InternalServerError(APIStatusError):
    """5xx."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_class(status: int) -> type[APIStatusError]:
    if status >= 500:
        return InternalServerError
    return _BY_STATUS.get(status, APIStatusError)


class APIConnectionError(EaselError):
    """The server could not be reached, or the connection broke (after any retries)."""


class APITimeoutError(APIConnectionError):
    """A request timed out (after any retries)."""


class WaitTimeout(EaselError):
    """`wait()` / `generate()` ran out of time before the generation ended; it goes on on the server."""

    def __init__(self, generation_id: str, timeout: float) -> None:
        super().__init__(f"generation {generation_id} did not end within {timeout:g} s")
        self.generation_id = generation_id
        self.timeout = timeout


class GenerationError(EaselError):
    """`generate()` ended with a generation that did not succeed; `generation` is its final record."""

    def __init__(self, generation: Generation) -> None:
        what = generation.error_message or generation.error_code or generation.status
        super().__init__(f"generation {generation.id} {generation.status}: {what}")
        self.generation = generation
        self.status = generation.status
        self.code = generation.error_code


class GenerationFailed(GenerationError):
    """The generation ended `failed`."""


class GenerationCanceled(GenerationError):
    """The generation ended `canceled` (by a cancel, a delete or its deadline)."""
