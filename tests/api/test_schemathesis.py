"""Schemathesis over every operation of the OpenAPI document, against the app in process, with an admin
key: every response must conform to the document (status codes, content types, schemas, headers) and
no input may cause a 500. Bounded: a few derandomized examples per operation, on SQLite only: what it
checks is the HTTP layer (the same on both databases), and every store operation it reaches runs on
PostgreSQL in the other API tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from easel.app import create_app
from support import key_headers

# A schema-valid request may still be refused with a 400 by a rule the schema cannot state (the model's
# sizes, styles, n, prompt length; the task's images), and with a 402 or 422 (budget, Idempotency-Key):
# positive_data_acceptance stays on, taking those as answers too. not_a_server_error still fails on any
# 5xx except the documented ones of OpenAI's synchronous routes (a job that fails or is not done).
ACCEPTED = ["2xx", "3xx", "400", "401", "402", "403", "404", "409", "413", "422", "429", "503", "504"]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}}}
)
SYNCHRONOUS = {
    "/v1/images/generations",
    "/api/images/generations",
    "/v1/images/edits",
    "/v1/images/variations",
}
SCHEMA = schemathesis.openapi.from_dict(create_app().openapi(), config=CONFIG)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (conftest's database_url runs every store test on both)."""
    return f"sqlite:///{tmp_path / 'easel.db'}"


@pytest.fixture
def runtime(settings: Any) -> Iterator[Any]:
    """This module's runtime answers at once: OpenAI's synchronous routes answer 504 instead of waiting
    for a job no worker runs (the server has none), and `Prefer: wait` waits for nothing."""
    from easel.runtime import Runtime

    rt = Runtime.build(settings.model_copy(update={"openai_timeout_seconds": 0.0, "max_wait_seconds": 0.0}))
    yield rt
    rt.close()


@SCHEMA.parametrize()
@settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms(case: Any, live_server_no_worker: str, admin_key: str) -> None:
    url, headers = live_server_no_worker, key_headers(admin_key)
    response = case.call(base_url=url, headers=headers)
    excluded = []
    if case.operation.path in SYNCHRONOUS and response.status_code in (500, 503, 504):
        # OpenAI's documented answers when the job fails or is not done (api/openai/serving.py).
        excluded.append(not_a_server_error)
    case.validate_response(response, headers=headers, excluded_checks=excluded)
