"""What the gateway's tests share with their fixtures (tests/gateway/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fake_provider import FakeProvider

from processes import EaselProcess

FAKE_KEY = "fake-secret-key-0123456789"


@dataclass
class Upstream:
    url: str
    key: str
    proc: EaselProcess


@dataclass
class Gateway:
    runtime: Any
    url: str
    key: str
    app: Any

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def http(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)


def gateway_catalog(
    path: Path, tiny_model_dir: Path, upstream: Upstream, fake: FakeProvider, dead: str
) -> Path:
    path.write_text(f'''
default_model = "tiny"

[models.tiny]
source = "{tiny_model_dir}"
tasks = ["text-to-image", "image-to-image", "inpaint"]
min_size = 32
max_size = 512
max_n = 4
credits_per_image = 2

[models.tiny.defaults]
steps = 4
guidance = 4.0

[providers.upstream-a]
kind = "openai"
base_url = "{dead}/v1"
api_key_env = "UPSTREAM_A_KEY"
retries = 1
backoff_seconds = 0.01
failures_to_open = 3
cooldown_seconds = 60

[providers.upstream-b]
kind = "openai"
base_url = "{upstream.url}/v1"
api_key_env = "UPSTREAM_B_KEY"
max_concurrent = 16

[providers.fake]
kind = "openai"
base_url = "{fake.base_url}/v1"
api_key_env = "FAKE_KEY"
retries = 2
backoff_seconds = 0.01
failures_to_open = 2
cooldown_seconds = 0.5

[providers.fake-replicate]
kind = "replicate"
base_url = "{fake.base_url}"
api_key_env = "FAKE_KEY"
poll_seconds = 0.05

[models.remote-a]
backend = "upstream"
provider = "upstream-a"
upstream_model = "tiny"
min_size = 32
max_size = 512
max_n = 4
credits_per_image = 1
fallbacks = ["remote-b"]

[models.remote-b]
backend = "upstream"
provider = "upstream-b"
upstream_model = "tiny"
tasks = ["text-to-image", "inpaint"]
min_size = 32
max_size = 512
max_n = 4
credits_per_image = 1

[models.flaky]
backend = "upstream"
provider = "fake"
upstream_model = "fake-model"
min_size = 32
max_size = 256
credits_per_image = 3

[models.flaky-then-b]
backend = "upstream"
provider = "fake"
upstream_model = "fake-model"
min_size = 32
max_size = 256
fallbacks = ["remote-b"]

[models.local-first]
source = "{tiny_model_dir}"
min_size = 32
max_size = 512
fallbacks = ["remote-b"]
fallback_after_seconds = 0.5

[models.replicated]
backend = "upstream"
provider = "fake-replicate"
upstream_model = "owner/fake-model"
min_size = 32
max_size = 256
max_n = 2
''')
    return path
