"""The one error vocabulary of Easel.

Services raise these; each dialect renders them in its own wire shape. A dialect never invents a
status code of its own: the status lives here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    """One invalid input field. Services name canonical fields (`aspect_ratio`); each dialect renames them
    to its wire names (`aspectRatio`) when it renders the error (`EaselError.renamed`)."""

    field: str
    message: str


@dataclass
class EaselError(Exception):
    """Base of every error a client can see. `code` is stable and machine-readable."""

    message: str
    fields: list[FieldError] = field(default_factory=list)
    status: int = 500
    code: str = "internal_error"
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def param(self) -> str | None:
        """The first offending field, if any (OpenAI's `param`)."""
        return self.fields[0].field if self.fields else None

    def renamed(self, names: Mapping[str, str]) -> EaselError:
        """The same error with canonical field names replaced by a dialect's (`names`: canonical ->
        wire), in its fields and in a message that starts with the first field's name."""
        if not any(f.field in names for f in self.fields):
            return self
        first = self.fields[0].field
        message = self.message
        if first in names and message.startswith(f"{first}: "):
            message = f"{names[first]}: {message[len(first) + 2 :]}"
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.message = message
        new.fields = [FieldError(names.get(f.field, f.field), f.message) for f in self.fields]
        Exception.__init__(new, message)
        return new


class ValidationFailed(EaselError):
    def __init__(self, message: str, fields: list[FieldError] | None = None) -> None:
        super().__init__(message, fields or [], 400, "validation_error")

    @classmethod
    def for_field(cls, name: str, message: str) -> ValidationFailed:
        return cls(f"{name}: {message}", [FieldError(name, message)])


class Unauthorized(EaselError):
    def __init__(self, message: str = "Missing or invalid API key") -> None:
        super().__init__(message, [], 401, "unauthorized")


class Forbidden(EaselError):
    def __init__(self, message: str) -> None:
        super().__init__(message, [], 403, "forbidden")


class NotFound(EaselError):
    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident} not found", [], 404, f"{what}_not_found")


class Conflict(EaselError):
    def __init__(self, message: str, code: str = "conflict") -> None:
        super().__init__(message, [], 409, code)


class Unprocessable(EaselError):
    def __init__(self, message: str, code: str = "unprocessable") -> None:
        super().__init__(message, [], 422, code)


class PayloadTooLarge(EaselError):
    def __init__(self, message: str, fields: list[FieldError] | None = None) -> None:
        super().__init__(message, fields or [], 413, "payload_too_large")

    @classmethod
    def for_field(cls, name: str, message: str) -> PayloadTooLarge:
        return cls(f"{name}: {message}", [FieldError(name, message)])


class RateLimited(EaselError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, [], 429, "rate_limit_exceeded", {"Retry-After": str(retry_after)})


class QueueFull(EaselError):
    """Too many queued jobs for a key or a project (EASEL_MAX_QUEUED_PER_KEY / _PER_PROJECT): a 429
    with Retry-After, the time until one of them is estimated to start."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, [], 429, "queue_limit_exceeded", {"Retry-After": str(retry_after)})


class QuotaExceeded(EaselError):
    def __init__(self, message: str) -> None:
        super().__init__(message, [], 402, "insufficient_credits")


class Unavailable(EaselError):
    def __init__(self, message: str, code: str = "unavailable") -> None:
        super().__init__(message, [], 503, code)


class TimedOut(EaselError):
    def __init__(self, message: str) -> None:
        super().__init__(message, [], 504, "timeout")
