"""The EventHub keeps each running job's latest preview for streams that join late: replaced by the next,
dropped when the job finishes, and bounded in number (pictures are large)."""

from __future__ import annotations

from easel.service.events import KEEP_PREVIEWS, EventHub, JobEvent


def preview(gid: str, index: int) -> JobEvent:
    return JobEvent(gid, "preview", {"index": index})


def test_the_latest_preview_is_kept_until_the_job_finishes() -> None:
    hub = EventHub()
    hub.publish(preview("a", 0))
    hub.publish(preview("a", 1))
    hub.publish(JobEvent("a", "progress", {"step": 3}))
    assert hub.latest_preview("a") == preview("a", 1)
    hub.publish(JobEvent("a", "finished"))
    assert hub.latest_preview("a") is None


def test_previews_kept_are_bounded_oldest_first() -> None:
    hub = EventHub()
    for i in range(KEEP_PREVIEWS + 5):
        hub.publish(preview(f"g{i}", 0))
    assert hub.latest_preview("g0") is None and hub.latest_preview("g4") is None
    assert hub.latest_preview("g5") is not None and hub.latest_preview(f"g{KEEP_PREVIEWS + 4}") is not None
    hub.publish(preview("g5", 1))  # a new preview makes it the newest again
    hub.publish(preview("new", 0))
    assert hub.latest_preview("g5") == preview("g5", 1) and hub.latest_preview("g6") is None
