"""In-process job events (progress, finished) from worker threads to async API waiters."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class JobEvent:
    generation_id: str
    kind: str  # "progress" | "finished"
    data: dict[str, Any] = field(default_factory=dict)


class EventHub:
    """Publish from any thread; subscribe from the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[JobEvent]]]] = {}

    def publish(self, event: JobEvent) -> None:
        with self._lock:
            targets = list(self._subs.get(event.generation_id, ()))
        for loop, queue in targets:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(queue.put_nowait, event)

    @contextlib.contextmanager
    def subscribe(self, generation_id: str) -> Iterator[asyncio.Queue[JobEvent]]:
        entry = (asyncio.get_running_loop(), asyncio.Queue[JobEvent]())
        with self._lock:
            self._subs.setdefault(generation_id, set()).add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                subs = self._subs.get(generation_id)
                if subs is not None:
                    subs.discard(entry)
                    if not subs:
                        del self._subs[generation_id]
