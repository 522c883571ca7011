"""In-process job events (progress, finished) from worker threads to async API waiters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from easel.store.notify import ENDED, FINISHED, Doorbell

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobEvent:
    generation_id: str
    kind: str  # "progress" | "finished"
    data: dict[str, Any] = field(default_factory=dict)


KEEP_PREVIEWS = 64  # generations whose latest preview the hub keeps (for streams that join late): <= 48 MB


class EventHub:
    """Publish from any thread; subscribe from the event loop. The latest preview of each generation in
    progress is kept (until its `finished`, at most KEEP_PREVIEWS of them) for streams that (re)connect
    after it was published."""

    def __init__(self) -> None:
        # Names this hub's relay socket, so that a worker publishing here directly skips it (store/notify.py).
        self.tag = f"{os.getpid()}h{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._subs: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[JobEvent]]]] = {}
        self._previews: OrderedDict[str, JobEvent] = OrderedDict()

    def latest_preview(self, generation_id: str) -> JobEvent | None:
        with self._lock:
            return self._previews.get(generation_id)

    def publish(self, event: JobEvent) -> None:
        with self._lock:
            if event.kind == "preview":
                self._previews[event.generation_id] = event
                self._previews.move_to_end(event.generation_id)
                while len(self._previews) > KEEP_PREVIEWS:
                    self._previews.popitem(last=False)
            elif event.kind == "finished":
                self._previews.pop(event.generation_id, None)
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


def announce_ended(
    ids: Sequence[str], publish: Callable[[JobEvent], None] | None, doorbell: Doorbell, skip: str | None
) -> None:
    """Tell waiters that these jobs ended: this process's (`publish`, its EventHub) and, through the
    FINISHED doorbell, the API processes on this host (on PostgreSQL the ending transaction also notified
    `easel_finished`, which reaches other hosts). Used by every worker (engine/worker.py, the gateway)."""
    for gid in ids:
        if publish is not None:
            publish(JobEvent(gid, "finished"))
    if ids:
        try:
            doorbell.ring(FINISHED, ENDED + ",".join(ids).encode(), skip=skip)
        except OSError:
            log.exception("could not ring the finished doorbell (waiters re-read within a second)")
