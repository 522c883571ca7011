"""What the sync and the async client share, without I/O: configuration, request bodies, answers and
errors, the retry policy, the server-sent-events parser and the stream's resume bookkeeping."""

from __future__ import annotations

import email.utils
import mimetypes
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx

from easel_client._errors import (
    APIStatusError,
    FieldProblem,
    GenerationCanceled,
    GenerationError,
    GenerationFailed,
    error_class,
)
from easel_client._types import (
    CompletedEvent,
    Fetcher,
    Generation,
    Image,
    Page,
    PreviewEvent,
    ProgressEvent,
    QueuedEvent,
    StreamEvent,
    UnknownEvent,
)

__version__ = "0.1.0"

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
API = "/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_RETRY_AFTER = 60.0  # a Retry-After above this is not waited for: the error is raised
DEFAULT_WAIT_TIMEOUT = 600.0
# The server sends a keep-alive comment every 15 s: a stream silent for longer than this is broken.
STREAM_READ_TIMEOUT = 45.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 8.0

# The create's documented fields, snake_case -> the wire's camelCase (docs/api/native.md). Fields whose
# names are one word are the same on both sides; unknown names are sent as given.
WIRE_NAMES: dict[str, str] = {
    "negative_prompt": "negativePrompt",
    "aspect_ratio": "aspectRatio",
    "image_size": "imageSize",
    "source_image_id": "sourceImageId",
    "mask_image_id": "maskImageId",
    "source_image_url": "sourceImageUrl",
    "mask_image_url": "maskImageUrl",
    "auto_enhance": "autoEnhance",
    "enhancement_options": "enhancementOptions",
    "output_format": "outputFormat",
    "output_compression": "outputCompression",
    "cancel_after": "cancelAfter",
    "record_parameters": "recordParameters",
}

ImageInput = str | os.PathLike[str] | bytes | bytearray | IO[bytes] | Image
"""An input image: a local file (path), bytes or a binary file object (uploaded to the library first),
an `Image` or an image id, or an http(s) URL or `data:` URI (the server fetches it)."""


@dataclass(frozen=True)
class Options:
    base_url: str
    api_key: str | None
    timeout: httpx.Timeout
    max_retries: int
    max_retry_after: float

    @classmethod
    def make(
        cls,
        base_url: str | None,
        api_key: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
        max_retry_after: float,
    ) -> Options:
        url = (base_url or os.environ.get("EASEL_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if url.endswith(API):
            url = url[: -len(API)]
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        elif not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout)
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        key = api_key if api_key is not None else os.environ.get("EASEL_API_KEY")
        return cls(url, key or None, timeout, max_retries, max_retry_after)

    def url(self, path: str) -> str:
        return f"{self.base_url}{API}{path}"

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Headers of an API request (downloads of signed links send no key)."""
        out = {"Accept": "application/json", "User-Agent": f"easel-client/{__version__}"}
        if self.api_key:
            out["Authorization"] = f"Bearer {self.api_key}"
        return out | dict(extra or {})

    def stream_timeout(self, remaining: float | None) -> httpx.Timeout:
        read = STREAM_READ_TIMEOUT if remaining is None else max(0.001, min(STREAM_READ_TIMEOUT, remaining))
        t = self.timeout
        return httpx.Timeout(connect=t.connect, read=read, write=t.write, pool=t.pool)


# ------------------------------------------------------------------------------------------------------
# Request bodies


def wire_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The create's JSON body from keyword arguments: snake_case documented fields to camelCase, None
    dropped (the server's default applies), datetimes as ISO 8601, LoRAs as `[{"name", "scale"}]`."""
    body: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        if name == "loras":
            value = [_lora(item) for item in value]
        elif isinstance(value, datetime):
            value = value.isoformat()
        body[WIRE_NAMES.get(name, name)] = value
    return body


def _lora(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, str):
        return {"name": item}
    name, scale = item
    return {"name": name, "scale": scale}


@dataclass(frozen=True)
class Upload:
    """An input image to upload first: its bytes and a file name with the right extension."""

    data: bytes
    filename: str

    def files(self) -> dict[str, tuple[str, bytes, str]]:
        mime = mimetypes.guess_type(self.filename)[0] or "application/octet-stream"
        return {"file": (self.filename, self.data, mime)}


def image_input(value: ImageInput) -> Upload | tuple[str, str]:
    """What to do with an input image: an `Upload`, or `("id", image_id)` / `("url", url)`."""
    if isinstance(value, Image):
        return ("id", value.id)
    if isinstance(value, bytes | bytearray):
        return Upload(bytes(value), "input" + _sniff(bytes(value)))
    if isinstance(value, str):
        if value.startswith(("http://", "https://", "data:")):
            return ("url", value)
        if not os.path.isfile(value):
            return ("id", value)
        value = Path(value)
    if isinstance(value, os.PathLike):
        path = Path(value)
        data = path.read_bytes()
        return Upload(data, path.name if path.suffix else path.name + _sniff(data))
    data = value.read()
    name = Path(str(getattr(value, "name", "") or "input")).name
    return Upload(data, name if Path(name).suffix else name + _sniff(data))


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".png"


# ------------------------------------------------------------------------------------------------------
# Answers and errors


def error_from(response: httpx.Response) -> APIStatusError:
    """The typed error for an error response, from the native error shape (or whatever came back)."""
    body: Any = None
    code, message, fields = "", "", []
    try:
        body = response.json()
    except ValueError:
        body = response.text
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = str(err.get("code") or "")
        message = str(err.get("message") or "")
        for f in err.get("fields") or []:
            if isinstance(f, dict):
                fields.append(FieldProblem(str(f.get("field", "")), str(f.get("message", ""))))
    elif isinstance(err, str):
        message = err
    if not message:
        message = response.reason_phrase or f"HTTP {response.status_code}"
        if isinstance(body, str) and body.strip():
            message = f"{message}: {body.strip()[:500]}"
    return error_class(response.status_code)(
        response.status_code, code or f"HTTP_{response.status_code}", message, fields, response.headers, body
    )


def data_of(response: httpx.Response) -> Any:
    """The `data` of a successful native answer (raises the typed error for a failed one)."""
    if response.status_code >= 400:
        raise error_from(response)
    try:
        body = response.json()
    except ValueError:
        message = "the server's answer is not JSON"
        status = response.status_code
        raise APIStatusError(status, "INVALID_RESPONSE", message, None, response.headers) from None
    return body.get("data") if isinstance(body, dict) else body


def page_of(body: Any, fetcher: Fetcher) -> Page:
    items = body.get("data") or [] if isinstance(body, dict) else []
    pag = body.get("pagination") or {} if isinstance(body, dict) else {}
    return Page(
        [Generation.from_json(g, fetcher) for g in items if isinstance(g, dict)],
        int(pag.get("limit", len(items))),
        int(pag.get("offset", 0)),
        None if pag.get("total", len(items)) is None else int(pag.get("total", len(items))),
        bool(pag.get("hasMore", False)),
        pag.get("nextCursor") if isinstance(pag.get("nextCursor"), str) else None,
    )


def check_finished(gen: Generation) -> Generation:
    """`gen` if it succeeded; else the typed error for how it ended."""
    if gen.status == "success":
        return gen
    if gen.status == "failed":
        raise GenerationFailed(gen)
    if gen.status == "canceled":
        raise GenerationCanceled(gen)
    raise GenerationError(gen)


# ------------------------------------------------------------------------------------------------------
# Retries


def retry_delay(
    attempt: int, response: httpx.Response | None, max_retries: int, max_retry_after: float
) -> float | None:
    """Seconds to wait before retry number `attempt + 1`, or None when not to retry.

    Retried: 408, 429 and 5xx answers, unless they say `x-should-retry: false` (`true` retries any
    status), and transport errors (`response` None; the caller decides which are safe). The wait is the
    answer's `retry-after-ms` / `Retry-After` (seconds or an HTTP date) when it has one, else exponential
    backoff with jitter (0.5 s, 1 s, 2 s, ... at most 8 s). A Retry-After above `max_retry_after` is not
    waited for: the error is raised, with the value in its `retry_after`."""
    if attempt >= max_retries:
        return None
    if response is not None:
        should = response.headers.get("x-should-retry", "").strip().lower()
        if should == "false":
            return None
        if should != "true" and response.status_code not in (408, 429) and response.status_code < 500:
            return None
        told = retry_after(response.headers)
        if told is not None:
            return told if told <= max_retry_after else None
    return min(BACKOFF_INITIAL * 2.0**attempt, BACKOFF_MAX) * (0.75 + random.random() / 4)


def retry_after(headers: httpx.Headers) -> float | None:
    """The wait an answer asks for, in seconds (`retry-after-ms`, else `Retry-After`), if any."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def transport_retryable(exc: httpx.TransportError, safe: bool) -> bool:
    """Whether a transport error may be retried: always when the request cannot have reached the server
    (no connection), otherwise only for requests that are safe to repeat (reads, idempotent creates)."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return safe


# ------------------------------------------------------------------------------------------------------
# Server-sent events


@dataclass
class RawEvent:
    event: str
    data: str
    id: str | None
    retry: int | None


class SSEParser:
    """The text/event-stream format, line by line (WHATWG HTML, "server-sent events")."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, line: str) -> RawEvent | None:
        """One line (without its end); an event when the line ends one."""
        if line == "":
            if not self._data and not self._event and self._retry is None and self._id is None:
                return None
            ev = RawEvent(self._event or "message", "\n".join(self._data), self._id, self._retry)
            self._event, self._data, self._id, self._retry = "", [], None, None
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None


def to_event(raw: RawEvent, fetcher: Fetcher) -> StreamEvent:
    import json

    try:
        data: Any = json.loads(raw.data) if raw.data else {}
    except ValueError:
        data = raw.data
    d = data if isinstance(data, dict) else {}
    if raw.event == "queued":
        pos = d.get("position")
        return QueuedEvent(pos if isinstance(pos, int) else None, raw.id)
    if raw.event == "progress" and isinstance(d.get("step"), int):
        return ProgressEvent(int(d["step"]), int(d.get("total") or 0), raw.id)
    if raw.event == "preview" and isinstance(d.get("image"), str):
        return PreviewEvent(
            _opt_int(d.get("step")),
            _opt_int(d.get("total")),
            _opt_int(d.get("index")),
            d["image"],
            _opt_int(d.get("width")),
            _opt_int(d.get("height")),
            _opt_int(d.get("count")),
            _opt_int(d.get("imageIndex")),
            raw.id,
            d,
        )
    if raw.event in ("succeeded", "failed", "canceled") and d:
        return CompletedEvent(raw.event, Generation.from_json(d, fetcher), raw.id)  # type: ignore[arg-type]
    return UnknownEvent(raw.event, data, raw.id)


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class StreamState:
    """What one `stream()` has yielded, for resuming: the last event id (sent as `Last-Event-ID` on a
    reconnect), the server's `retry:` delay, and what to drop when a reconnected server starts over
    (repeats of the queue position or of steps already yielded, up to the first new event)."""

    last_id: str | None = None
    retry_seconds: float = 1.0
    resumed: bool = False
    position: int | None = None
    step: int = 0
    preview: tuple[int, int] | None = None
    last: str | None = field(default=None)

    def headers(self) -> dict[str, str]:
        out = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_id is not None:
            out["Last-Event-ID"] = self.last_id
        return out

    def accept(self, raw: RawEvent, fetcher: Fetcher) -> StreamEvent | None:
        """The event to yield for `raw`, or None (a retry-only block, or a repeat after a reconnect)."""
        if raw.retry is not None:
            self.retry_seconds = raw.retry / 1000
        if raw.id is not None:
            self.last_id = raw.id
        if raw.event == "message" and not raw.data:
            return None
        ev = to_event(raw, fetcher)
        if self.resumed and self._repeat(ev):
            return None
        self.resumed = False
        if isinstance(ev, QueuedEvent):
            self.position, self.step, self.preview = ev.position, 0, None
        elif isinstance(ev, ProgressEvent):
            self.step = ev.step
        elif isinstance(ev, PreviewEvent):
            self.preview = (ev.index or 0, ev.image_index or 0)
        self.last = ev.type
        return ev

    def _repeat(self, ev: StreamEvent) -> bool:
        if isinstance(ev, QueuedEvent):
            return self.last == "queued" and ev.position == self.position
        if isinstance(ev, ProgressEvent):
            return ev.step <= self.step
        if isinstance(ev, PreviewEvent):
            return self.preview is not None and (ev.index or 0, ev.image_index or 0) <= self.preview
        return False
