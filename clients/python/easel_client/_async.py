"""`AsyncEasel`: the asynchronous client (the methods of `Easel`, awaited)."""

from __future__ import annotations

import asyncio
import builtins
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import httpx

from easel_client._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_WAIT_TIMEOUT,
    ImageInput,
    Options,
    SSEParser,
    StreamState,
    Upload,
    check_finished,
    data_of,
    error_from,
    image_input,
    page_of,
    retry_delay,
    transport_retryable,
    wire_params,
)
from easel_client._errors import APIConnectionError, APITimeoutError, WaitTimeout
from easel_client._types import CompletedEvent, Generation, Image, Page, StreamEvent


async def _sleep(seconds: float) -> None:
    """Every wait between retries (a seam for tests)."""
    await asyncio.sleep(seconds)


class _Deadline(Exception):
    pass


class AsyncEasel:
    """An asyncio client of an Easel server's native API (`/api/v1`); the methods of `Easel`, awaited
    (`stream` is an async iterator).

    `base_url` defaults to `EASEL_BASE_URL`, else http://127.0.0.1:8000; `api_key` to `EASEL_API_KEY`
    (sent as `Authorization: Bearer`). Requests answered 408, 429 or 5xx, and connections that fail, are
    retried up to `max_retries` times with exponential backoff that honours `Retry-After` (one above
    `max_retry_after` seconds is not waited for: the error is raised). `http_client` replaces the
    `httpx.AsyncClient` the client makes (for proxies, custom transports, event hooks); the client does not
    close one it was given. Use it as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._opts = Options.make(base_url, api_key, timeout, max_retries, max_retry_after)
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=self._opts.timeout)

    @property
    def base_url(self) -> str:
        return self._opts.base_url

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncEasel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --------------------------------------------------------------------------------------------------
    # The transport: one request with retries

    async def _send(
        self,
        method: str,
        url: str,
        *,
        api: bool = True,
        safe: bool,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """`method url`, retried as `retry_delay` says; transport errors after the request may have
        reached the server are retried only when `safe` (a read, or a create with an Idempotency-Key)."""
        sent = self._opts.headers(headers) if api else dict(headers or {})
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, url, headers=sent, **kwargs)
            except httpx.TransportError as exc:
                delay = self._delay(attempt, None)
                if delay is None or not transport_retryable(exc, safe):
                    kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
                    raise kind(f"{method} {url}: {exc!r}") from exc
            else:
                delay = self._delay(attempt, response)
                if response.status_code < 400 or delay is None:
                    return response
                await response.aclose()
            await _sleep(delay)
            attempt += 1

    def _delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        return retry_delay(attempt, response, self._opts.max_retries, self._opts.max_retry_after)

    async def _api(self, method: str, path: str, *, safe: bool = True, **kwargs: Any) -> Any:
        return data_of(await self._send(method, self._opts.url(path), safe=safe, **kwargs))

    # The Fetcher protocol: images download their signed links through the client that made them.
    async def afetch(self, url: str) -> bytes:
        if url.startswith("/"):
            url = self._opts.base_url + url
        if self._http.is_closed:  # an image kept after its client was closed downloads all the same
            async with AsyncEasel(self._opts.base_url, timeout=self._opts.timeout) as fresh:
                return await fresh.afetch(url)
        response = await self._send("GET", url, api=False, safe=True)
        if response.status_code >= 400:
            raise error_from(response)
        return response.content

    def fetch(self, url: str) -> bytes:
        from easel_client._sync import Easel

        with Easel(
            self._opts.base_url,
            self._opts.api_key,
            timeout=self._opts.timeout,
            max_retries=self._opts.max_retries,
            max_retry_after=self._opts.max_retry_after,
        ) as client:
            return client.fetch(url)

    # --------------------------------------------------------------------------------------------------
    # Generations

    async def submit(
        self,
        prompt: str,
        *,
        source_image: ImageInput | None = None,
        mask_image: ImageInput | None = None,
        idempotency_key: str | None = None,
        prefer_wait: float | None = None,
        **params: Any,
    ) -> Generation:
        """Create a generation (`POST /api/v1/generations`) and return it as created (status `pending`,
        unless `prefer_wait` seconds were asked for with `Prefer: wait=N`).

        `params` are the create's fields (docs/api/native.md), in snake_case (`aspect_ratio`,
        `negative_prompt`, `image_size`, ...) or as the wire spells them; None values are left out;
        names the client does not know are sent as given. `source_image` / `mask_image` take a local
        file, bytes or a file object (uploaded to the library first), an `Image` or an image id, or an
        http(s) URL or data: URI. An `Idempotency-Key` is generated (or `idempotency_key` used) and sent
        with every retry of this create, so a retry never makes a second job."""
        body = {"prompt": prompt} | wire_params(params)
        for name, value in (("source", source_image), ("mask", mask_image)):
            if value is not None:
                body.update(await self._image_field(name, value))
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        if prefer_wait is not None:
            headers["Prefer"] = f"wait={prefer_wait:g}"
        timeout = None
        if prefer_wait is not None:
            t = self._opts.timeout
            timeout = httpx.Timeout(
                connect=t.connect, read=(t.read or 0) + prefer_wait, write=t.write, pool=t.pool
            )
        kwargs: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        data = await self._api("POST", "/generations", json=body, headers=headers, **kwargs)
        return Generation.from_json(data, self)

    async def _image_field(self, name: str, value: ImageInput) -> dict[str, str]:
        what = image_input(value)
        if isinstance(what, Upload):
            return {f"{name}ImageId": (await self._upload(what)).id}
        kind, ref = what
        return {f"{name}Image{'Id' if kind == 'id' else 'Url'}": ref}

    async def get(self, generation_id: str) -> Generation:
        """One generation (`GET /api/v1/generations/{id}`)."""
        return Generation.from_json(await self._api("GET", f"/generations/{generation_id}"), self)

    async def list(
        self,
        status: str | builtins.list[str] | None = None,
        limit: int = 20,
        offset: int = 0,
        *,
        include_deleted: bool = False,
        cursor: str | None = None,
        include_total: bool = False,
    ) -> Page:
        """One page of the project's generations, newest first; `status` one or several of pending,
        processing, success, failed, canceled. Page on with `cursor=page.next_cursor` (the same cost
        at any depth) or with `offset`; `page.total` is None past 10,000 matches unless `include_total`."""
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        elif offset:
            params["offset"] = offset
        if status:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if include_deleted:
            params["includeDeleted"] = "true"
        if include_total:
            params["includeTotal"] = "true"
        response = await self._send("GET", self._opts.url("/generations"), safe=True, params=params)
        if response.status_code >= 400:
            raise error_from(response)
        return page_of(response.json(), self)

    async def cancel(self, generation_id: str) -> Generation:
        """Cancel a pending or processing generation (a running one stops at its next step)."""
        return Generation.from_json(await self._api("POST", f"/generations/{generation_id}/cancel"), self)

    async def retry(self, generation_id: str, *, idempotency_key: str | None = None) -> Generation:
        """Queue a failed or canceled generation again (same id, same seed)."""
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        data = await self._api("POST", f"/generations/{generation_id}/retry", headers=headers)
        return Generation.from_json(data, self)

    async def delete(self, generation_id: str) -> None:
        """Soft-delete a generation (an unfinished one is canceled; its image bytes are removed)."""
        response = await self._send("DELETE", self._opts.url(f"/generations/{generation_id}"), safe=True)
        if response.status_code >= 400:
            raise error_from(response)

    async def wait(
        self,
        generation_id: str,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,  # noqa: ASYNC109 (the same call as Easel's)
    ) -> Generation:
        """Block until the generation ends (success, failed or canceled) and return it as it ended; it
        does not raise for failed or canceled (`generate` does). Waits by streaming the job's events
        (one request, however long: no polling against the key's rate limit), reconnecting if the
        connection drops. `WaitTimeout` after `timeout` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            async for ev in self._events(generation_id, deadline):
                if isinstance(ev, CompletedEvent):
                    return ev.generation
        except _Deadline:
            pass
        raise WaitTimeout(generation_id, timeout or 0.0)

    async def generate(
        self,
        prompt: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,  # noqa: ASYNC109 (the same call as Easel's)
        source_image: ImageInput | None = None,
        mask_image: ImageInput | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> Generation:
        """`submit` then `wait`: the succeeded generation (its `images`), or `GenerationFailed` /
        `GenerationCanceled` (with the final record in `.generation`), or `WaitTimeout`."""
        gen = await self.submit(
            prompt,
            source_image=source_image,
            mask_image=mask_image,
            idempotency_key=idempotency_key,
            **params,
        )
        if not gen.done:
            gen = await self.wait(gen.id, timeout)
        return check_finished(gen)

    async def stream(self, generation_id: str) -> AsyncIterator[StreamEvent]:
        """The generation's events (`GET /api/v1/generations/{id}/events`) as they happen: `QueuedEvent`,
        `ProgressEvent`, `PreviewEvent` (with `previews: N` on the create), and last a `CompletedEvent`
        (`succeeded`, `failed` or `canceled`, with the generation), after which the iterator ends. A
        dropped connection is reopened with `Last-Event-ID` (after the server's `retry:` delay); events a
        reconnected server repeats are not yielded twice."""
        try:
            async for ev in self._events(generation_id, None):
                yield ev
        except _Deadline:  # pragma: no cover - no deadline here
            return

    async def _events(self, generation_id: str, deadline: float | None) -> AsyncIterator[StreamEvent]:
        url = self._opts.url(f"/generations/{generation_id}/events")
        state = StreamState()
        failures = 0
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise _Deadline
            # The opening request: retried (429, 5xx, no connection) like any read.
            response: httpx.Response | None = None
            try:
                request = self._http.build_request(
                    "GET", url, headers=self._opts.headers(state.headers()),
                    timeout=self._opts.stream_timeout(remaining),
                )  # fmt: skip
                response = await self._http.send(request, stream=True)
                if response.status_code >= 400:
                    await response.aread()
                    delay = self._delay(failures, response)
                    if delay is None:
                        raise error_from(response)
                    failures += 1
                    await _sleep(delay)
                    continue
                parser = SSEParser()
                async for line in response.aiter_lines():
                    raw = parser.feed(line)
                    if raw is None:
                        continue
                    ev = state.accept(raw, self)
                    if ev is None:
                        continue
                    failures = 0
                    yield ev
                    if isinstance(ev, CompletedEvent):
                        return
                    if deadline is not None and time.monotonic() >= deadline:
                        raise _Deadline
            except httpx.TransportError as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise _Deadline from exc
                if failures >= self._opts.max_retries:
                    kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
                    raise kind(f"GET {url}: {exc!r}") from exc
            finally:
                if response is not None:
                    await response.aclose()
            # The stream broke, or ended without the final event: reopen it where it stopped.
            failures += 1
            if failures > self._opts.max_retries:
                raise APIConnectionError(f"GET {url}: the stream ended without a final event")
            state.resumed = True
            await _sleep(state.retry_seconds)

    # --------------------------------------------------------------------------------------------------
    # Images

    async def upload(self, file: ImageInput, *, folder: str | None = None) -> Image:
        """Upload a local file, bytes or a binary file object to the library (`POST /api/v1/images`);
        the image's id is usable as `source_image` / `mask_image`."""
        what = image_input(file)
        if not isinstance(what, Upload):
            raise TypeError("upload() takes a local file, bytes or a binary file object")
        return await self._upload(what, folder)

    async def _upload(self, upload: Upload, folder: str | None = None) -> Image:
        data = {"folder": folder} if folder is not None else None
        # The server parses the form only after the checks that answer 429 / 5xx: a retry is safe then,
        # but a connection lost mid-upload is not retried (an upload has no Idempotency-Key).
        body = await self._api("POST", "/images", safe=False, files=upload.files(), data=data)
        return Image.from_json(body, self)

    async def get_image(self, image_id: str) -> Image:
        """An image's metadata with a fresh signed link (`GET /api/v1/images/{id}`)."""
        return Image.from_json(await self._api("GET", f"/images/{image_id}"), self)
