"""Previews of jobs in progress: which steps each job gets one at, and handing them to its streams.

A job that asks for N previews (`GenerationSpec.previews`; OpenAI's `partial_images`) gets them at N
steps spread evenly over its run, never at the last step (the final image follows it): step
round(total x k / (N + 1)) for k = 1..N, duplicates dropped when a run has few steps. A batch decodes at
the union of its jobs' steps (engine/backends/diffusers.py, `preview_images`), and each job receives only
its own steps. Previews are transient: published to this process's EventHub as pictures (the API
encodes them for each stream) and, when API processes of their own listen on this host, sent to them
over the FINISHED doorbell as JPEG; never stored.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence

from PIL import Image
from PIL.Image import Image as PILImage

from easel.domain.spec import GenerationSpec
from easel.service.events import JobEvent
from easel.store.notify import FINISHED, PREVIEW, Doorbell

log = logging.getLogger(__name__)

PREVIEW_MAX_SIDE = 512  # pixels of a preview's longer side at most (never larger than the request)
PREVIEW_QUALITY = 80  # JPEG quality of previews sent to other processes


def preview_steps(n: int, total: int) -> list[int]:
    """The steps (1-based) at which a run of `total` steps shows `n` previews."""
    if n <= 0 or total <= 1:
        return []
    steps = {min(total - 1, max(1, round(total * k / (n + 1)))) for k in range(1, n + 1)}
    return sorted(steps)


def preview_size(width: int, height: int) -> tuple[int, int]:
    """A preview's size: the request's, scaled down so its longer side is at most PREVIEW_MAX_SIDE."""
    scale = min(1.0, PREVIEW_MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def jpeg(image: PILImage, quality: int = PREVIEW_QUALITY) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


class BatchPreviews:
    """The PreviewHook of one pipeline call: `owners` are the batch's items in order (job id, the job's
    image index), `specs` the specs of the jobs that asked for previews."""

    def __init__(
        self,
        specs: dict[str, GenerationSpec],
        owners: Sequence[tuple[str, int]],
        publish: Callable[[JobEvent], None],
        doorbell: Doorbell | None,
        skip: str | None = None,
    ) -> None:
        """`publish` reaches this process's EventHub; `doorbell` the other API processes on this host
        (all FINISHED listeners but the one tagged `skip`, the hub `publish` reaches)."""
        self.skip = skip
        self.specs = specs
        self.owners = list(owners)
        self.publish = publish
        self.doorbell = doorbell
        self._steps: dict[int, dict[str, list[int]]] = {}  # total -> job -> its steps

    def _plan(self, total: int) -> dict[str, list[int]]:
        plan = self._steps.get(total)
        if plan is None:
            plan = {gid: preview_steps(spec.previews, total) for gid, spec in self.specs.items()}
            self._steps[total] = plan
        return plan

    def wanted(self, step: int, total: int) -> bool:
        return any(step in steps for steps in self._plan(total).values())

    def deliver(self, step: int, total: int, images: list[PILImage]) -> None:
        plan = self._plan(total)
        remote = self.doorbell is not None and self.doorbell.others(FINISHED, self.skip) > 0
        for (gid, image_index), picture in zip(self.owners, images, strict=False):
            steps = plan.get(gid)
            if not steps or step not in steps:
                continue
            spec = self.specs[gid]
            size = preview_size(spec.width or picture.width, spec.height or picture.height)
            if picture.size != size:
                picture = picture.resize(size, Image.Resampling.LANCZOS)
            data = {
                "step": step,
                "total": total,
                "index": steps.index(step),
                "count": len(steps),
                "image_index": image_index,
                "width": size[0],
                "height": size[1],
            }
            self.publish(JobEvent(gid, "preview", data | {"image": picture}))
            if remote:
                self._send(gid, data, picture)

    def _send(self, gid: str, data: dict[str, int], picture: PILImage) -> None:
        assert self.doorbell is not None
        header = json.dumps({"id": gid, **data}, separators=(",", ":")).encode()
        try:
            self.doorbell.ring(FINISHED, PREVIEW + header + b"\n" + jpeg(picture), skip=self.skip)
        except OSError:
            log.debug("could not send a preview of %s to the other processes", gid, exc_info=True)
