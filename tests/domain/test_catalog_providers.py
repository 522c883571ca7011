"""Providers and remote entries in the catalog (docs/gateway.md): what parses, what each mistake says, the
route of fallbacks, and the key read by name only."""

from __future__ import annotations

from pathlib import Path

import pytest

from easel.domain.catalog import Catalog
from easel.domain.providers import ProviderEntry

BASE = """
default_model = "local"

[models.local]
source = "some/folder"
{local_extra}

[providers.a]
kind = "openai"
base_url = "http://127.0.0.1:8101/v1/"
api_key_env = "UPSTREAM_A_KEY"

[providers.r]
kind = "replicate"
base_url = "https://api.replicate.com"
api_key_file = "secrets/replicate.txt"

[models.remote-a]
backend = "upstream"
provider = "a"
upstream_model = "easel-builtin"
fallbacks = ["remote-b"]

[models.remote-b]
backend = "upstream"
provider = "r"
upstream_model = "owner/name"
fallbacks = ["remote-c"]

[models.remote-c]
backend = "upstream"
provider = "a"
"""


def parse(text: str) -> Catalog:
    return Catalog.parse(text, base_dir="/srv/easel")


def test_the_issue_s_shape_parses_and_routes_depth_first() -> None:
    catalog = parse(BASE.format(local_extra='fallbacks = ["remote-b"]\nfallback_after_seconds = 30'))
    assert catalog.providers["a"].base_url == "http://127.0.0.1:8101/v1"  # the trailing slash dropped
    assert catalog.models["remote-c"].upstream_model == "remote-c"  # default: the entry's name
    assert [m.name for m in catalog.route(catalog.models["remote-a"])] == ["remote-a", "remote-b", "remote-c"]
    assert [m.name for m in catalog.route(catalog.models["local"])] == ["remote-b", "remote-c"]
    assert catalog.local_models == ["local"]
    assert catalog.upstream_models == ["remote-a", "remote-b", "remote-c"]
    assert [m.name for m in catalog.fallback_models] == ["local"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('provider = "a"', 'provider = "nope"'), "unknown provider 'nope'"),
        (('fallbacks = ["remote-c"]', 'fallbacks = ["remote-a"]'), "fallbacks form a cycle"),
        (('fallbacks = ["remote-c"]', 'fallbacks = ["local"]'), "is a local model"),
        (('fallbacks = ["remote-c"]', 'fallbacks = ["ghost"]'), "fallback 'ghost' is not in the catalog"),
        (('upstream_model = "owner/name"', 'source = "x"'), "has no `source`"),
        (('kind = "replicate"', 'kind = "grpc"'), "kind"),
        (('base_url = "https://api.replicate.com"', 'base_url = "ftp://x"'), "must start with http"),
    ],
)
def test_each_mistake_names_itself(change: tuple[str, str], message: str) -> None:
    text = BASE.format(local_extra="").replace(*change, 1)
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_a_local_entry_with_fallbacks_says_how_long_a_job_waits() -> None:
    with pytest.raises(ValueError, match="fallback_after_seconds"):
        parse(BASE.format(local_extra='fallbacks = ["remote-b"]'))


def test_the_key_is_read_by_name_and_only_its_name_is_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from easel.gateway.calls import read_key

    env = ProviderEntry(name="a", kind="openai", base_url="http://x", api_key_env="MY_KEY")
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(ValueError, match="MY_KEY is not set"):
        read_key(env, "/")
    monkeypatch.setenv("MY_KEY", " sk-secret\n")
    assert read_key(env, "/") == "sk-secret"
    assert env.credential == "env:MY_KEY" and "sk-secret" not in str(env.public())
    (tmp_path / "key.txt").write_text("file-secret\n")
    from_file = ProviderEntry(name="f", kind="replicate", base_url="http://x", api_key_file="key.txt")
    assert read_key(from_file, str(tmp_path)) == "file-secret" and from_file.credential == "file:key.txt"
    with pytest.raises(ValueError, match="must not carry the key"):
        ProviderEntry(name="h", kind="openai", base_url="http://x", headers={"Authorization": "Bearer x"})
