"""`easel_client.AsyncEasel` against a real `easel serve`: the same calls as the sync client, awaited."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from easel_client import (
    AsyncEasel,
    CompletedEvent,
    GenerationCanceled,
    NotFoundError,
    ProgressEvent,
    QueuedEvent,
    WaitTimeout,
)

from helpers import open_image, png_bytes

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("client")]

SMALL = {"size": "64x64"}


def test_async_generate_submit_wait_list_stream(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with AsyncEasel(server.url, server.key) as easel:
            gen = await easel.generate("a red circle", seed=11, n=2, **SMALL)
            assert gen.status == "success" and [i.seed for i in gen.images] == [11, 12]
            data = await gen.images[0].abytes()
            assert open_image(data).size == (64, 64)
            saved = await gen.images[1].asave(tmp_path / "b.png")
            assert saved.read_bytes() == await gen.images[1].abytes()

            sub = await easel.submit("a blue square", steps=5, negative_prompt="red", **SMALL)
            assert (await easel.get(sub.id)).negative_prompt == "red"
            events = [ev async for ev in easel.stream(sub.id)]
            assert isinstance(events[-1], CompletedEvent) and events[-1].type == "succeeded"
            steps = [e.step for e in events if isinstance(e, ProgressEvent)]
            assert steps and steps == sorted(set(steps)) and steps[-1] == 5
            done = await easel.wait(sub.id, timeout=60)
            assert done.status == "success" and done.id == sub.id
            page = await easel.list(status="success", limit=100)
            assert {gen.id, sub.id} <= {g.id for g in page}

            source = tmp_path / "in.png"
            source.write_bytes(png_bytes((64, 64)))
            edited = await easel.generate("a field", source_image=source, strength=0.5, **SMALL)
            assert edited.task == "image-to-image" and edited.status == "success"
            uploaded = await easel.upload(png_bytes((32, 32)))
            assert (uploaded.width, uploaded.height) == (32, 32)

            with pytest.raises(NotFoundError) as err:
                await easel.get("nope")
            assert err.value.code == "GENERATION_NOT_FOUND"

    asyncio.run(main())


def test_async_cancel_wait_timeout_and_deadline(idle_server) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with AsyncEasel(idle_server.url, idle_server.key) as easel:
            gen = await easel.submit("never runs", **SMALL)
            async with contextlib.aclosing(easel.stream(gen.id)) as events:
                first = await anext(events)
            assert isinstance(first, QueuedEvent) and first.position is not None
            with pytest.raises(WaitTimeout):
                await easel.wait(gen.id, timeout=1)
            assert (await easel.cancel(gen.id)).status == "canceled"
            assert (await easel.wait(gen.id)).status == "canceled"
            with pytest.raises(GenerationCanceled) as err:
                await easel.generate("too late", cancel_after=1, **SMALL)
            assert err.value.code == "deadline_exceeded"

    asyncio.run(main())
