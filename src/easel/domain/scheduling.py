"""Scheduling vocabulary (pure): priority classes, request deadlines, queue estimates.

Priority classes: `high`, `normal` (the default) and `low`, stored as the integers 1, 0 and -1 in
`generations.priority`. Higher classes are claimed first; within a class, projects take turns (the
fair round of each job, store/scheduling.py). Integers are still read on the wire for compatibility:
> 0 is high, 0 normal, < 0 low.

A deadline is the time by which a job must have *started*: a queued job past it ends canceled with
`deadline_exceeded` without running, and is not charged. The estimate of a queued job (its ETA) is
computed from the work ahead of it and the models' measured seconds per step (`estimate_seconds`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")

# The longest a deadline may lie ahead (Cancel-After, cancelAfter, deadline): a week.
MAX_DEADLINE_SECONDS = 7 * 24 * 3600
# The error code and message of a job canceled because it had not started by its deadline.
DEADLINE_EXCEEDED = "deadline_exceeded"
# How much of each new measurement goes into a model's moving average of seconds per step.
TIMING_WEIGHT = 0.3


class Priority(IntEnum):
    LOW = -1
    NORMAL = 0
    HIGH = 1

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def of(cls, value: int) -> Priority:
        """The class of a stored or legacy integer priority: > 0 high, 0 normal, < 0 low."""
        return cls((value > 0) - (value < 0))


PRIORITY_NAMES = tuple(p.label for p in sorted(Priority, reverse=True))  # high, normal, low


def parse_priority(value: object) -> Priority:
    """A priority as a client sends it: "high" | "normal" | "low" (any case), or an integer (legacy,
    -100..100, by its sign). ValueError (with a message for the client) for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"must be one of {', '.join(PRIORITY_NAMES)}")
    if isinstance(value, int):
        if not -100 <= value <= 100:
            raise ValueError(f"must be one of {', '.join(PRIORITY_NAMES)} (or an integer -100..100)")
        return Priority.of(value)
    if isinstance(value, str):
        name = value.strip().lower()
        for p in Priority:
            if p.label == name:
                return p
    raise ValueError(f"must be one of {', '.join(PRIORITY_NAMES)}")


def parse_seconds(text: str) -> float:
    """A `Cancel-After` value: seconds from now, digits with an optional decimal part (`30`, `2.5`),
    more than 0 and at most MAX_DEADLINE_SECONDS. ValueError (with a message for the client) otherwise."""
    raw = text.strip()
    if not _SECONDS.fullmatch(raw):
        raise ValueError("must be a number of seconds (e.g. 30 or 2.5)")
    seconds = float(raw)
    check_seconds(seconds)
    return seconds


def check_seconds(seconds: float) -> None:
    if not 0 < seconds <= MAX_DEADLINE_SECONDS:
        raise ValueError(f"must be more than 0 and at most {MAX_DEADLINE_SECONDS} seconds")


def deadline_message() -> str:
    return "The generation had not started by its deadline; it was canceled without running (not charged)"


@dataclass(frozen=True)
class Work:
    """Image-steps of one model: steps x images summed over some jobs."""

    model: str
    image_steps: float


def estimate_seconds(
    ahead: list[Work], own: Work | None, seconds_per_step: Mapping[str, float], workers: int
) -> float | None:
    """Seconds until a job finishes: the work ahead of it (queued jobs claimed before it, what running
    jobs still have to do) shared among `workers`, then its own work (`own`, None: only the wait).
    Each model's work costs its measured seconds per step and image; a model never measured costs
    the mean of the measured ones. None when nothing has been measured yet."""
    if not seconds_per_step:
        return None
    mean = sum(seconds_per_step.values()) / len(seconds_per_step)

    def cost(w: Work) -> float:
        return w.image_steps * seconds_per_step.get(w.model, mean)

    wait = sum(cost(w) for w in ahead) / max(1, workers)
    return round(wait + (cost(own) if own is not None else 0.0), 1)
