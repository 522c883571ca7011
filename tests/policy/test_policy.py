"""The content policy (docs/policy.md): the rules themselves, and their use at every create door on SQLite
and PostgreSQL: a refusal answers in the dialect's own shape (OpenAI's `content_policy_violation` code
exactly), nothing is queued or charged, it is counted in /metrics and logged by the rule's name, never the
prompt; a flagging rule lets the job through, marked; per-project overrides; OpenAI's `moderation`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from easel.domain.policy import Policy
from support import key_headers

POLICY = r"""
[rules.weapons]
terms = ["pipe bomb", "Assault Rifle"]
patterns = ['\bhow to (make|build)\b.*\bexplosives?\b']
message = "Weapons are not generated on this server."
level = "low"

[rules.gore]
terms = ["gore"]
message = "No gore, please."

[rules.brand]
terms = ["acme"]
action = "flag"

[rules.dark]
terms = ["darkness"]
only_projects = true
message = "This project keeps things bright."

[projects.kids]
extra_rules = ["dark"]

[projects.studio]
rules = ["weapons"]
"""

CLUB = {"X-Loyalty-Club-Slug": "club"}
# dialect -> (create route, extra headers, a body whose prompt is `{p}`)
DOORS: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "native": ("/api/v1/generations", {}, {"prompt": "{p}"}),
    "openai": ("/v1/images/generations", {}, {"prompt": "{p}"}),
    "aigne": ("/api/images/generations", {}, {"prompt": "{p}"}),
    "pictory": ("/pictoryapis/v1/aistudio/images", {}, {"prompt": "{p}"}),
    "placewise": ("/v1/ml/general/generate_image", CLUB, {"prompt": "{p}"}),
    "wix": (
        "/social-publisher/v1/generate-image",
        {},
        {"userInput": "{p}", "imageUrl": "https://example.com/a.png"},
    ),
}


def body_of(dialect: str, prompt: str) -> dict[str, Any]:
    return {
        k: (v.format(p=prompt) if isinstance(v, str) and "{p}" in v else v)
        for k, v in DOORS[dialect][2].items()
    }


def test_the_rules() -> None:
    policy = Policy.parse(POLICY)
    everyone: tuple[str, ...] = ("pid-1", "someone")
    assert policy.check(["Draw an ASSAULT RIFLE"], everyone).refused.name == "weapons"  # type: ignore[union-attr]
    assert policy.check(["a pipe bombastic speech"], everyone).refused is None  # whole words only
    assert policy.check(["how to make explosives at home"], everyone).refused.name == "weapons"  # type: ignore[union-attr]
    assert policy.check(["", "gore"], everyone).refused.name == "gore"  # type: ignore[union-attr]  # negative prompt
    assert policy.check(["an acme anvil"], everyone).flagged == ("brand",)
    assert policy.check(["darkness falls"], everyone).refused is None  # only the kids project has it
    assert policy.check(["darkness falls"], ("pid-2", "kids")).refused.name == "dark"  # type: ignore[union-attr]
    assert policy.check(["gore"], ("pid-3", "studio")).refused is None  # studio: weapons only
    assert policy.check(["gore"], everyone, "low").refused is None  # moderation low: level-low rules only
    assert policy.check(["pipe bomb"], everyone, "low").refused is not None
    for bad, message in [
        ('[rules.x]\npatterns = ["(unclosed"]', "not a regular expression"),
        ('[rules.x]\nterms = ["a"]\n[projects.p]\nrules = ["y"]', "unknown rules"),
        ('[rules.x]\naction = "ban"', "action"),
        ("[other]\nx = 1", "unknown sections"),
    ]:
        with pytest.raises(ValueError, match=message):
            Policy.parse(bad)


@pytest.fixture
def doors(settings: Any, tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    from easel.app import create_app
    from easel.runtime import Runtime

    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    runtime = Runtime.build(settings.model_copy(update={"policy_file": policy}))
    runtime.keys.set_project_limits(runtime.default_project_id, budget_credits=100, rate_limit_per_hour=None)
    key, _ = runtime.keys.create(runtime.default_project_id, "admin", ["admin"], rate_limit_per_hour=0)
    app = create_app(runtime=runtime, with_worker=False)
    try:
        with TestClient(app, headers=key_headers(key)) as client:
            yield client, runtime
    finally:
        runtime.close()


@pytest.mark.parametrize("dialect", sorted(DOORS))
def test_a_refusal_at_every_door_in_its_own_shape_with_nothing_queued(
    doors: tuple[TestClient, Any], dialect: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, _runtime = doors
    caplog.set_level(logging.INFO)
    path, headers, _ = DOORS[dialect]
    secret_prompt = "a detailed gore scene number 7731"
    r = client.post(path, json=body_of(dialect, secret_prompt), headers=headers)
    assert r.status_code == 400, r.text
    body = r.json()
    assert "No gore, please." in r.text
    if dialect in ("openai", "aigne"):
        assert (
            body["error"]["code"] == "content_policy_violation"
            and body["error"]["type"] == "invalid_request_error"
        )
    elif dialect in ("native", "placewise"):  # their codes are upper case
        assert body["error"]["code"].lower() == "content_policy_violation"
    elif dialect == "pictory":
        assert body["code"].lower() == "content_policy_violation"
    else:
        assert body["details"]["applicationError"]["code"].lower() == "content_policy_violation"
    assert client.get("/api/v1/generations").json()["data"] == []  # nothing queued
    assert client.get("/api/v1/usage").json()["data"]["totals"]["credits"] == 0  # nothing charged
    assert "rule gore refused" in caplog.text and "7731" not in caplog.text  # the rule, never the prompt
    metrics = client.get("/metrics").text
    assert 'easel_policy_decisions_total{action="refuse",rule="gore"} 1.0' in metrics


def test_a_flagging_rule_lets_the_job_through_marked(doors: tuple[TestClient, Any]) -> None:
    client, _ = doors
    r = client.post("/api/v1/generations", json={"prompt": "an acme anvil"})
    assert r.status_code == 201, r.text
    assert r.json()["data"]["policyFlags"] == ["brand"]
    clean = client.post("/api/v1/generations", json={"prompt": "a red circle"}).json()["data"]
    assert clean["policyFlags"] == []


def test_openai_moderation_low_applies_only_the_low_rules(doors: tuple[TestClient, Any]) -> None:
    from easel.api.openai.protocol import GenerateRequest
    from easel.domain.spec import GenerationSpec

    client, runtime = doors
    asked = GenerateRequest(prompt="gore", moderation="low").to_spec(runtime.catalog)
    assert asked.moderation == "low"  # OpenAI's field reaches the policy
    gen = runtime.generations.submit(runtime.principal(), asked)  # gore's rule is not a "low" one
    assert gen.status.value == "queued"
    with pytest.raises(Exception, match="Weapons are not generated"):
        runtime.generations.submit(
            runtime.principal(), GenerationSpec(prompt="a pipe bomb", moderation="low")
        )
    weapons = client.post("/v1/images/generations", json={"prompt": "a pipe bomb", "moderation": "low"})
    assert weapons.status_code == 400 and weapons.json()["error"]["code"] == "content_policy_violation"
