"""The tests' own PostgreSQL (tests/pg_support.py): a throwaway server when none is configured or answers."""

from __future__ import annotations

from pathlib import Path

import pytest

import pg_support


@pytest.mark.postgres
def test_a_throwaway_server_starts_serves_and_is_removed() -> None:
    if pg_support.find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries here (the session fixture would install them)")
    url, server = pg_support.start_throwaway()
    try:
        assert url.startswith("postgresql+psycopg://easel@127.0.0.1:") and url.endswith("/test")
        assert pg_support._answers(url) is None
        assert (server.dir / f".s.PGSQL.{server.port}").exists()  # its socket is in its own folder
    finally:
        pg_support.stop_throwaway(server)
    assert not server.dir.exists()
    assert pg_support._answers(url) is not None


def test_nothing_listening_is_not_usable_and_not_listening() -> None:
    url = f"postgresql+psycopg://root@127.0.0.1:{pg_support._free_port()}/test"
    assert pg_support._answers(url) is not None
    assert not pg_support._listening(url)


def test_no_binaries_in_the_configured_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EASEL_TEST_POSTGRES_BINDIR", str(tmp_path))
    assert pg_support.find_bindir() is None
    with pytest.raises(RuntimeError, match="EASEL_TEST_POSTGRES_BINDIR"):
        pg_support.start_throwaway()
