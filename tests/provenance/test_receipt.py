"""The reproducibility receipt (docs/provenance.md): a job our worker ran records its model's weights hash,
LoRAs, seed, every resolved parameter, library versions and each output's sha256; the API serves it (404
before the job has succeeded); `easel replay` re-runs it here and gets the same bytes, and says so when
they differ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from easel.cli import app
from easel.engine.weights import weights_sha256


def test_a_receipt_replays_to_the_same_bytes(
    client: Any, settings: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    r = client.post(
        "/api/v1/generations",
        json={"prompt": "a red circle", "size": "64x64", "seed": 11, "n": 2},
        headers={"Prefer": "wait=60"},
    )
    gen = r.json()["data"]
    assert gen["status"] == "success", r.text
    receipt = client.get(f"/api/v1/generations/{gen['id']}/receipt").json()["data"]
    assert receipt["model"] == "tiny" and receipt["seed"] == 11 and receipt["generationId"] == gen["id"]
    assert receipt["weightsSha256"] == weights_sha256(str(tiny_model_dir), tmp_path / "fresh-cache")
    assert [o["sha256"] for o in receipt["outputs"]] == [i["sha256"] for i in gen["outputImages"]]
    assert receipt["versions"]["torch"] and receipt["versions"]["diffusers"]
    assert receipt["parameters"]["steps"] == gen["steps"] and receipt["loras"] == []

    path = tmp_path / "receipt.json"
    path.write_text(json.dumps({"success": True, "data": receipt}))  # the API's answer as saved
    env = {"EASEL_CATALOG": str(settings.catalog), "EASEL_DATA_DIR": str(tmp_path / "replay")}
    result = CliRunner().invoke(app, ["replay", str(path), "-o", str(tmp_path / "out")], env=env)
    assert result.exit_code == 0, result.output
    assert "the replay made the same bytes" in result.output and "weights differ" not in result.output
    assert (tmp_path / "out" / "1.png").read_bytes() == client.get(
        gen["outputImages"][1]["storageUrl"]
    ).content

    receipt["outputs"][0]["sha256"] = "0" * 64  # a receipt whose image was not what this replay makes
    path.write_text(json.dumps(receipt))
    changed = CliRunner().invoke(app, ["replay", str(path)], env=env)
    assert changed.exit_code == 1 and "DIFFERS" in changed.output and "1 of 2 images match" in changed.output


def test_no_receipt_before_the_job_has_succeeded(api: Any) -> None:
    gen = api.post("/api/v1/generations", json={"prompt": "a red circle", "size": "64x64"}).json()["data"]
    r = api.get(f"/api/v1/generations/{gen['id']}/receipt")
    assert r.status_code == 404, r.text
    assert api.get("/api/v1/generations/not-a-generation/receipt").status_code == 404
