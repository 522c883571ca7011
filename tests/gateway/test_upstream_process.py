"""`easel worker --upstream` as its own process: it serves remote jobs from the shared database through
their provider (the second real Easel), never imports torch (nor diffusers, nor transformers), and on
SIGTERM stops cleanly."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fake_provider import FakeProvider
from gateway_rig import Upstream, gateway_catalog

from processes import EaselProcess, easel_env, free_port

HEAVY = ("torch", "diffusers", "transformers")

pytestmark = pytest.mark.slow


def test_the_upstream_worker_serves_jobs_without_importing_torch(
    settings: Any,
    tmp_path: Path,
    tiny_model_dir: Path,
    upstream: Upstream,
    fake: FakeProvider,
) -> None:
    from easel.domain.generation import Status
    from easel.domain.spec import GenerationSpec
    from easel.runtime import Runtime

    dead = f"http://127.0.0.1:{free_port()}"
    catalog = gateway_catalog(tmp_path / "gateway.toml", tiny_model_dir, upstream, fake, dead)
    gw_settings = settings.model_copy(update={"catalog": catalog})
    runtime = Runtime.build(gw_settings)
    env = easel_env(gw_settings) | {"UPSTREAM_B_KEY": upstream.key, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = EaselProcess(["worker", "--upstream"], env, tmp_path / "upstream-worker.log")
    try:
        gen = runtime.generations.submit(
            runtime.principal(), GenerationSpec(prompt="a red circle", model="remote-b", size="64x64", n=2)
        )
        deadline = time.monotonic() + 120
        while (current := runtime.repo.get_generation(runtime.default_project_id, gen.id)).status in (
            Status.QUEUED,
            Status.RUNNING,
        ):
            assert proc.alive(), proc.tail()
            assert time.monotonic() < deadline, proc.tail()
            time.sleep(0.1)
        assert current.status is Status.SUCCEEDED, (current.error_message, proc.tail())
        assert len(current.images) == 2 and current.served is not None
        assert current.served.provider == "upstream-b"
        assert proc.stop(30) == 0, proc.tail()
    finally:
        proc.kill()
        runtime.close()
    imported = [
        line.rsplit("|", 1)[-1].strip()
        for line in proc.output().splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert "easel.gateway.worker" in imported, "no import-time log: the check stopped working"
    heavy = sorted({name.split(".")[0] for name in imported if name.split(".")[0] in HEAVY})
    assert heavy == [], f"the upstream worker imported {heavy}"
