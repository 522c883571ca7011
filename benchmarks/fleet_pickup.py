"""Idle pickup across processes: an idle fleet of real `easel worker` processes on PostgreSQL, jobs
created through a real `easel serve --no-worker` API; started_at - created_at per job.

Each job is created with POST /api/v1/generations (n=1, 64x64, 2 steps, the tiny test model), the
database is watched until a worker has claimed it (`started_at`), then until it finished, and the fleet
is left idle for a moment before the next one. The workers' idle re-check is 600 s, so a pickup can only
come from the wake-up: LISTEN/NOTIFY, plus the same-host doorbell when the workers share the API's data
folder; "NOTIFY only" gives each worker a data folder of its own, as on separate hosts. The baseline
runs the same workers deaf to any wake-up, re-checking every 250 ms (their `DoorbellListener.wait`
replaced by a sleep).

    .venv/bin/python benchmarks/fleet_pickup.py [--database-url URL] [--workers 3] [--jobs 30] [--no-baseline]

The default database is the tests' local PostgreSQL, in a fresh schema dropped afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from easel.runtime import Runtime
from easel.settings import Settings
from easel.store.tables import generations
from processes import EaselProcess, easel_env, start_api, start_worker
from support import key_headers, write_catalog
from tiny import build_tiny_sd

PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
BODY = {"prompt": "a red circle", "size": "64x64", "steps": 2, "n": 1}

# A real worker process that ignores every wake-up and re-checks the queue every idle_check_seconds.
POLLING_WORKER = (
    "import time; from easel.store import notify; "
    "notify.DoorbellListener.wait = lambda self, timeout: time.sleep(timeout) or False; "
    "from easel.cli import main; import sys; sys.argv = ['easel', 'worker']; main()"
)


def start_polling_worker(env: dict[str, str], log: Path) -> EaselProcess:
    """`easel worker` deaf to every wake-up (POLLING_WORKER sets its own argv)."""
    return EaselProcess(["worker"], env, log, command=[sys.executable, "-c", POLLING_WORKER])


def run_fleet(
    root: Path, url: str, catalog: Path, workers: int, jobs: int, polling: bool, own_dirs: bool
) -> list[float]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    db_url = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    data = root / f"data-{schema}"
    runtime = Runtime.build(Settings(data_dir=data, database_url=db_url, catalog=catalog, secret_key="bench"))
    pid = runtime.default_project_id
    key, _ = runtime.keys.create(pid, "bench", ["admin"], rate_limit_per_hour=0)
    env = easel_env(
        data_dir=str(data),
        database_url=db_url,
        catalog=str(catalog),
        secret_key="bench",
        idle_check_seconds="0.25" if polling else "600",
        lease_seconds="30",
    )
    procs: list[EaselProcess] = []
    latencies: list[float] = []
    try:
        for i in range(workers):
            log = root / f"{schema}-worker{i}.log"
            wenv = env | ({"EASEL_DATA_DIR": str(root / f"{schema}-w{i}")} if own_dirs else {})
            procs.append(start_polling_worker(wenv, log) if polling else start_worker(wenv, log))
        api, api_url = start_api(env, root / f"{schema}-api.log")
        procs.append(api)
        client = httpx.Client(base_url=api_url, headers=key_headers(key), timeout=60)
        engine = runtime.repo.engine

        def row(gid: str):  # type: ignore[no-untyped-def]
            with engine.connect() as conn:
                return conn.execute(
                    select(generations.c.status, generations.c.created_at, generations.c.started_at).where(
                        generations.c.id == gid
                    )
                ).one()

        def create() -> str:
            r = client.post("/api/v1/generations", json=BODY)
            assert r.status_code == 201, r.text
            return str(r.json()["data"]["id"])

        def wait_finished(gid: str) -> None:
            deadline = time.monotonic() + 300
            while row(gid).status not in ("succeeded", "failed", "canceled"):
                assert time.monotonic() < deadline, [p.tail() for p in procs]
                time.sleep(0.05)

        # Warm-up: every worker loads torch and the model before the measured (idle) pickups.
        for gid in [create() for _ in range(workers * 4)]:
            wait_finished(gid)
        time.sleep(1.0)
        for _ in range(jobs):
            gid = create()
            while (r := row(gid)).started_at is None:
                time.sleep(0.002)
            latencies.append((r.started_at - r.created_at).total_seconds() * 1000)
            wait_finished(gid)
            time.sleep(0.3)  # the fleet goes idle again
        client.close()
    finally:
        for p in procs:
            p.stop()
        runtime.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return latencies


def report(name: str, lat: list[float]) -> None:
    p95 = statistics.quantiles(lat, n=20)[18]
    print(
        f"{name:34s} median {statistics.median(lat):7.1f} ms   p95 {p95:7.1f} ms   max {max(lat):7.1f} ms"
        f"   (n={len(lat)})",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url", default=PG_URL, help="a PostgreSQL URL (a schema is made in it)")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalog = write_catalog(root / "catalog.toml", build_tiny_sd(root / "tiny"))
        runs = [
            ("wake-up (NOTIFY + doorbell)", False, False),
            ("wake-up (NOTIFY only)", False, True),
            ("baseline: poll 250 ms", True, False),
        ]
        if args.no_baseline:
            runs = runs[:2]
        for name, polling, own_dirs in runs:
            lat = run_fleet(root, args.database_url, catalog, args.workers, args.jobs, polling, own_dirs)
            report(f"{args.workers} workers, {name}", lat)


if __name__ == "__main__":
    main()
