"""Benchmark: the control plane at a million rows: creates per second on one core, and list / get latency
with 1,000,000 generations in one project, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/control_plane.py [--baseline DIR] [--src DIR] [--rows 1000000]
                                                 [--db sqlite,postgresql] [--reads 300] [--json out.json]
    .venv/bin/python benchmarks/control_plane.py --quick   # 2,000 rows, a few reads (a test runs it)

For each source tree (`--src`, default this checkout's `src/`; `--baseline`, e.g. a checkout made with
`git worktree add /tmp/base <commit>`) and each database, in a fresh data folder (SQLite) or a fresh
database on the local PostgreSQL server (EASEL_BENCH_POSTGRES_URL, default
postgresql+psycopg://root@127.0.0.1:5432/postgres: the benchmark creates and drops `easel_bench_*`):

1. `easel serve --no-worker` of that tree (benchmarks/easel_launch.py) pinned to CPU 0 (`taskset`), this
   process and its clients on CPU 1. Auth on: the first-start admin key, as a client would.
2. **Creates**: 16 clients (threads, one keep-alive httpx client each) POST /api/v1/generations in a
   closed loop for `--seconds`: creates/s, p50 and p99 latency; every 201's id must be a row.
3. **Fill**: the project grows to `--rows` generations, copied in SQL from a row Easel itself wrote
   (fresh ids, creation times spread over the past year, statuses 98 % succeeded, 1 % failed, 1 %
   canceled: a server that has run for a year), then `ANALYZE` (SQLite) or `VACUUM ANALYZE`
   (PostgreSQL).
4. **Reads**, one client, sequential, `--reads` of each kind (or 60 s, whichever ends first): the list's
   first page (`limit=50`), the page at offset 50,000, the last page by offset, a cursor page 500,000
   rows deep (trees that have cursors), and GET of a random generation. p50 / p95 in ms.
5. The server's log is searched for error lines ("ERROR", "Traceback", "database is locked").

Nothing here is a pass/fail threshold: docs/performance.md records the numbers and the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from easel_launch import free_port, wait_healthy  # noqa: E402

PG_ADMIN_URL = os.environ.get("EASEL_BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/postgres")


@dataclass
class Reads:
    n: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None


@dataclass
class Run:
    tree: str
    db: str
    rows: int
    clients: int = 16
    creates_per_s: float = 0.0
    create_p50_ms: float = 0.0
    create_p99_ms: float = 0.0
    creates: int = 0
    lost: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    fill_s: float = 0.0
    reads: dict[str, Reads] = field(default_factory=dict)
    log_errors: list[str] = field(default_factory=list)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def pin(cpus: set[int]) -> None:
    available = os.sched_getaffinity(0)
    if cpus <= available and len(available) > 1:
        os.sched_setaffinity(0, cpus)


# -- the database ---------------------------------------------------------------------------------------


class Database:
    """A fresh SQLite file or PostgreSQL database, and its SQLAlchemy URL for Easel."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.name = ""
        if kind == "sqlite":
            self.url = f"sqlite:///{folder / 'easel.db'}"
            return
        self.name = f"easel_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        admin.dispose()
        self.url = make_url(PG_ADMIN_URL).set(database=self.name).render_as_string(hide_password=False)

    def engine(self) -> Engine:
        return create_engine(self.url)

    def drop(self) -> None:
        if self.kind != "postgresql":
            return
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        admin.dispose()


COLUMNS = (
    "project_id, status, model, batch_key, priority, spec, n, attempts, max_attempts, lease_owner,"
    " lease_token, lease_expires_at, progress_step, progress_total, error_code, error_message, credits,"
    " created_at, updated_at, started_at, finished_at, processing_ms, deleted_at, fair_tag, deadline_at"
)


def fill(db: Database, rows: int) -> float:
    """Grow the project to `rows` generations by copying one row Easel wrote; seconds taken."""
    started = time.monotonic()
    engine = db.engine()
    with engine.begin() as conn:
        have = int(conn.exec_driver_sql("SELECT count(*) FROM generations").scalar_one())
        template = conn.exec_driver_sql("SELECT id FROM generations ORDER BY created_at LIMIT 1").scalar_one()
    missing = max(0, rows - have)
    batch = 100_000
    done = 0
    while done < missing:
        k = min(batch, missing - done)
        with engine.begin() as conn:
            if db.kind == "sqlite":
                conn.exec_driver_sql(
                    f"""
                    WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < {k})
                    INSERT INTO generations (id, {COLUMNS})
                    SELECT lower(hex(randomblob(16))), g.project_id,
                        CASE (seq.x + {done}) % 100 WHEN 0 THEN 'failed' WHEN 1 THEN 'canceled'
                            ELSE 'succeeded' END,
                        g.model, g.batch_key, g.priority, g.spec, g.n, 1, g.max_attempts, NULL, NULL, NULL,
                        g.progress_total, g.progress_total, NULL, NULL, g.credits,
                        datetime(g.created_at, '-' || ((seq.x + {done}) * 31) || ' seconds'),
                        datetime(g.created_at, '-' || ((seq.x + {done}) * 31) || ' seconds'),
                        NULL, NULL, 1000, NULL, 0, NULL
                    FROM seq, generations AS g WHERE g.id = '{template}'
                    """
                )
            else:
                conn.exec_driver_sql(
                    f"""
                    INSERT INTO generations (id, {COLUMNS})
                    SELECT md5(random()::text || x::text), g.project_id,
                        CASE mod(x + {done}, 100) WHEN 0 THEN 'failed' WHEN 1 THEN 'canceled'
                            ELSE 'succeeded' END,
                        g.model, g.batch_key, g.priority, g.spec, g.n, 1, g.max_attempts, NULL, NULL, NULL,
                        g.progress_total, g.progress_total, NULL, NULL, g.credits,
                        g.created_at - make_interval(secs => (x + {done}) * 31),
                        g.created_at - make_interval(secs => (x + {done}) * 31),
                        NULL, NULL, 1000, NULL, 0, NULL
                    FROM generate_series(1, {k}) AS x, generations AS g WHERE g.id = '{template}'
                    """
                )
        done += k
    if db.kind == "sqlite":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return time.monotonic() - started


# -- the server and the loads ---------------------------------------------------------------------------


def serve(tree: Path, data: Path, db: Database, log: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EASEL_")}
    env |= {
        "EASEL_DATA_DIR": str(data),
        "EASEL_DATABASE_URL": db.url,
        "OMP_NUM_THREADS": "1",
        # No cap on queued jobs: with no worker every create stays queued, and the default cap (1,000 a
        # project) would turn the rest of the load into fast 429s.
        "EASEL_MAX_QUEUED_PER_PROJECT": "0",
    }
    cmd = [sys.executable, str(BENCH / "easel_launch.py"), "--src", str(tree), "serve", "--no-worker"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) > 1:
        cmd = ["taskset", "-c", "0", *cmd]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, log, 120)
    key = (data / "admin-key.txt").read_text().strip()
    return proc, url, key


def creates(url: str, key: str, clients: int, seconds: float, run: Run) -> list[str]:
    ids: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            n = 0
            while time.monotonic() < stop:
                body = {"prompt": f"bench {i} {n}", "size": "64x64", "seed": n}
                t0 = time.perf_counter()
                r = c.post("/api/v1/generations", json=body)
                took = (time.perf_counter() - t0) * 1000
                with lock:
                    latencies.append(took)
                    if r.status_code == 201:
                        ids.append(r.json()["data"]["id"])
                    else:
                        run.refused[str(r.status_code)] = run.refused.get(str(r.status_code), 0) + 1
                n += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    run.creates = len(ids)
    run.creates_per_s = round(len(ids) / elapsed, 1)
    if latencies:
        run.create_p50_ms = round(pct(latencies, 0.5), 1)
        run.create_p99_ms = round(pct(latencies, 0.99), 1)
    return ids


def timed_reads(
    client: httpx.Client, name: str, paths: list[tuple[str, dict[str, Any]]], budget_s: float
) -> Reads:
    took: list[float] = []
    stop = time.monotonic() + budget_s
    for path, params in paths:
        t0 = time.perf_counter()
        r = client.get(path, params=params)
        took.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{name}: {path} {params} answered {r.status_code}: {r.text[:300]}")
        if time.monotonic() > stop:
            break
    return Reads(len(took), round(pct(took, 0.5), 2), round(pct(took, 0.95), 2))


def reads(url: str, key: str, rows: int, n: int, budget_s: float, run: Run) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
        c.get("/api/v1/generations", params={"limit": 50})  # warm the connection and caches
        gens = "/api/v1/generations"
        deep = min(50_000, max(0, rows - 100))
        last = max(0, rows - 50)
        run.reads["list first page"] = timed_reads(c, "first", [(gens, {"limit": 50})] * n, budget_s)
        run.reads[f"list offset {deep:,}"] = timed_reads(
            c, "deep", [(gens, {"limit": 50, "offset": deep})] * n, budget_s
        )
        run.reads["list last page"] = timed_reads(
            c, "last", [(gens, {"limit": 50, "offset": last})] * n, budget_s
        )
        probe = c.get(gens, params={"limit": 50, "offset": rows // 2}).json()
        cursor = probe.get("pagination", {}).get("nextCursor")
        if cursor:
            run.reads[f"cursor page {rows // 2:,} deep"] = timed_reads(
                c, "cursor", [(gens, {"limit": 50, "cursor": cursor})] * n, budget_s
            )
        sample = [g["id"] for g in c.get(gens, params={"limit": 100, "offset": rows // 3}).json()["data"]]
        rng = random.Random(7)
        run.reads["get by id"] = timed_reads(
            c, "get", [(f"{gens}/{rng.choice(sample)}", {}) for _ in range(n)], budget_s
        )


def one(tree_name: str, tree: Path, kind: str, args: argparse.Namespace) -> Run:
    run = Run(tree_name, kind, args.rows, args.clients)
    folder = Path(tempfile.mkdtemp(prefix=f"easel-cp-{kind}-"))
    db = Database(kind, folder)
    log = folder / "serve.log"
    proc = None
    try:
        proc, url, key = serve(tree, folder / "data", db, log)
        ids = creates(url, key, args.clients, args.seconds, run)
        engine = db.engine()
        with engine.connect() as conn:
            stored = {r[0] for r in conn.execute(text("SELECT id FROM generations"))}
        engine.dispose()
        run.lost = len(set(ids) - stored)
        run.fill_s = round(fill(db, args.rows), 1)
        reads(url, key, args.rows, args.reads, args.read_budget, run)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if log.exists():
            run.log_errors = [
                line
                for line in log.read_text(errors="replace").splitlines()
                if " ERROR " in line or "Traceback" in line or "database is locked" in line
            ][:20]
        db.drop()
        shutil.rmtree(folder, ignore_errors=True)
    return run


def table(runs: list[Run]) -> str:
    kinds: list[str] = []
    for r in runs:
        kinds += [k for k in r.reads if k not in kinds]
    out = ["| tree | db | rows | creates/s (one core) | clients | create p50 / p99 ms | lost | log errors |"]
    out.append("|---|---|---|---|---|---|---|---|")
    for r in runs:
        out.append(
            f"| {r.tree} | {r.db} | {r.rows:,} | {r.creates_per_s} | {r.clients} | {r.create_p50_ms} / "
            f"{r.create_p99_ms} | {r.lost} | {len(r.log_errors)} |"
        )
    out += ["", "| tree | db | read | n | p50 ms | p95 ms |", "|---|---|---|---|---|---|"]
    for r in runs:
        for k in kinds:
            x = r.reads.get(k)
            if x is not None:
                out.append(f"| {r.tree} | {r.db} | {k} | {x.n} | {x.p50_ms} | {x.p95_ms} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=ROOT / "src")
    ap.add_argument("--baseline", type=Path)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--reads", type=int, default=300)
    ap.add_argument("--read-budget", type=float, default=60.0, help="seconds at most per kind of read")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true", help="2,000 rows, 10 reads, 1 s of creates, 4 clients")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.reads, args.seconds, args.read_budget, args.clients = 2_000, 10, 1.0, 5.0, 4
    pin({1})
    load = os.getloadavg()
    trees = [("current", args.src)] + ([("baseline", args.baseline)] if args.baseline else [])
    runs = [one(name, tree, kind, args) for name, tree in trees for kind in args.db.split(",")]
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; cpus {os.cpu_count()}")
    print(table(runs))
    for r in runs:
        for line in r.log_errors:
            print(f"{r.tree}/{r.db} log: {line}")
    if args.json:
        args.json.write_text(json.dumps({"load": load, "runs": [asdict(r) for r in runs]}, indent=2))


if __name__ == "__main__":
    main()
