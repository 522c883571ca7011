"""Benchmark: the gateway's own cost per remote image, against calling the same upstream directly, in
the same run (docs/gateway.md, docs/performance.md "The gateway").

    .venv/bin/python benchmarks/gateway.py [--latency 0.5] [--jobs 60] [--in-flight 1,200] [--size 256]
                                           [--json out.json]
    .venv/bin/python benchmarks/gateway.py --quick     # 20 jobs, 0.05 s latency (a test runs it)

1. A fake upstream in its own process (this script with `--serve-fake`): the OpenAI Images API, every
   call answered after `--latency` seconds with one PNG of `--size` pixels (made once), counting the
   calls it holds at once.
2. **Direct**: this process calls it `--jobs` times, keeping K calls in flight (httpx, async): the
   latency of a call as a client sees it.
3. **Through Easel**: `easel serve --no-worker` (SQLite, no auth, its own gateway worker off) and one
   `easel worker --upstream` process; this process creates `--jobs` generations of a remote model on
   that upstream through the native API with `Prefer: wait`, keeping K in flight. From the database
   afterwards: the ledger's call durations (the worker's call, its download and decode included), each
   job's processing time (claim to completed: the call, then encoding, storing and completing), and
   the end-to-end time the client saw.

For each K of `--in-flight`: p50 / p95 of each, and Easel's addition per image (processing p50 minus the
direct p50; of that, the call path alone: the ledger's p50 minus the direct p50). The upstream's peak of
calls held at once shows whether K calls really were in flight. Nothing here is asserted: the numbers go
to the table (and `--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from easel_launch import free_port, wait_healthy  # noqa: E402

# -- the fake upstream (its own process) -----------------------------------------------------------


def serve_fake(port: int, latency: float, size: int) -> None:
    import uvicorn
    from PIL import Image
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (180, 60, 60)).save(buf, "PNG")
    picture = base64.b64encode(buf.getvalue()).decode()
    state = {"now": 0, "peak": 0, "calls": 0}

    async def generate(request: Request) -> JSONResponse:
        body = await request.json()
        state["now"] += 1
        state["calls"] += 1
        state["peak"] = max(state["peak"], state["now"])
        try:
            await asyncio.sleep(latency)
        finally:
            state["now"] -= 1
        data = [{"b64_json": picture} for _ in range(int(body.get("n", 1)))]
        return JSONResponse({"created": 1, "data": data}, headers={"x-request-id": f"r{state['calls']}"})

    async def stats(_request: Request) -> JSONResponse:
        out = dict(state)
        state["peak"] = state["now"]
        return JSONResponse(out)

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/v1/images/generations", generate, methods=["POST"]),
            Route("/stats", stats, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=4096)


# -- measuring -------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def closed_loop(jobs: int, in_flight: int, one: Any) -> tuple[list[float], float]:
    """Run `one(client, i)` `jobs` times with `in_flight` at once, each lane with its own client (one
    httpx pool of hundreds of connections is itself slow: the clients must not be what is measured);
    each call's seconds and the wall time."""
    import httpx

    times: list[float] = []
    left = iter(range(jobs))

    async def lane() -> None:
        async with httpx.AsyncClient(timeout=600, trust_env=False) as client:
            for i in left:
                start = time.perf_counter()
                await one(client, i)
                times.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return times, time.perf_counter() - start


async def direct(url: str, jobs: int, in_flight: int, size: int) -> dict[str, Any]:
    async def one(client: Any, i: int) -> None:
        r = await client.post(
            f"{url}/v1/images/generations",
            json={"model": "fake", "prompt": f"p{i}", "n": 1, "size": f"{size}x{size}"},
        )
        r.raise_for_status()
        base64.b64decode(r.json()["data"][0]["b64_json"])

    times, wall = await closed_loop(jobs, in_flight, one)
    return {"p50_ms": pct(times, 0.5) * 1000, "p95_ms": pct(times, 0.95) * 1000, "per_s": jobs / wall}


async def through_easel(api: str, jobs: int, in_flight: int, size: int, ids: list[str]) -> dict[str, Any]:
    failed: list[str] = []

    async def one(client: Any, i: int) -> None:
        r = await client.post(
            f"{api}/api/v1/generations",
            json={"prompt": f"p{i}", "model": "bench", "size": f"{size}x{size}", "seed": i},
            headers={"Prefer": "wait=120"},
        )
        data = r.json().get("data") or {}
        if data.get("id"):
            ids.append(str(data["id"]))
        if r.status_code not in (200, 201) or data.get("status") != "success":
            failed.append(f"{r.status_code} {str(data)[:200]}")

    times, wall = await closed_loop(jobs, in_flight, one)
    return {
        "e2e_p50_ms": pct(times, 0.5) * 1000,
        "e2e_p95_ms": pct(times, 0.95) * 1000,
        "per_s": jobs / wall,
        "failed": failed[:5],
        "failures": len(failed),
    }


def from_database(db: Path, ids: list[str]) -> dict[str, Any]:
    """The ledger's call durations and the jobs' processing times of these generations."""
    import sqlite3

    calls: list[float] = []
    processing: list[float] = []
    with sqlite3.connect(db) as conn:
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            calls += [
                r[0]
                for r in conn.execute(
                    "SELECT duration_ms FROM upstream_calls "
                    f"WHERE status = 'ok' AND generation_id IN ({marks})",
                    chunk,
                )
            ]
            processing += [
                r[0]
                for r in conn.execute(
                    f"SELECT processing_ms FROM generations WHERE status = 'succeeded' AND id IN ({marks})",
                    chunk,
                )
            ]
    return {
        "call_p50_ms": pct(calls, 0.5),
        "call_p95_ms": pct(calls, 0.95),
        "processing_p50_ms": pct(processing, 0.5),
        "processing_p95_ms": pct(processing, 0.95),
        "calls": len(calls),
    }


def fake_stats(url: str) -> dict[str, Any]:
    import httpx

    return dict(httpx.post(f"{url}/stats", timeout=10).json())


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency", type=float, default=0.5, help="seconds the fake upstream takes per call")
    p.add_argument("--jobs", type=int, default=60, help="jobs per row, at least 4 x K")
    p.add_argument("--in-flight", default="1,200", help="comma list of K (calls / jobs kept in flight)")
    p.add_argument("--size", type=int, default=256, help="the upstream's image side, pixels")
    p.add_argument("--json", type=Path)
    p.add_argument("--quick", action="store_true", help="20 jobs, 0.05 s, K = 1,10 (the suite runs it)")
    p.add_argument("--serve-fake", nargs=3, metavar=("PORT", "LATENCY", "SIZE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve_fake:
        serve_fake(int(a.serve_fake[0]), float(a.serve_fake[1]), int(a.serve_fake[2]))
        return
    if a.quick:
        a.latency, a.jobs, a.in_flight, a.size = 0.05, 20, "1,10", 64
    ks = [int(k) for k in a.in_flight.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="easel-gateway-bench-"))
    fake_port, api_port = free_port(), free_port()
    fake_url, api_url = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{api_port}"
    catalog = tmp / "catalog.toml"
    catalog.write_text(f'''
default_model = "bench"

[providers.fake]
kind = "openai"
base_url = "{fake_url}/v1"
max_concurrent = {max(ks) + 16}
timeout_seconds = {a.latency * 10 + 30}

[models.bench]
backend = "upstream"
provider = "fake"
min_size = 32
max_size = 2048
''')
    env = {k: v for k, v in os.environ.items() if not k.startswith("EASEL_")} | {
        "EASEL_DATA_DIR": str(tmp / "data"),
        "EASEL_CATALOG": str(catalog),
        "EASEL_UPSTREAM_IN_SERVE": "false",
        "EASEL_UPSTREAM_MAX_IN_FLIGHT": str(max(ks) + 16),
        "EASEL_MAX_QUEUED_PER_PROJECT": "0",
        "OMP_NUM_THREADS": "1",
    }
    easel = [sys.executable, "-m", "easel"]
    procs = [
        start(
            [sys.executable, __file__, "--serve-fake", str(fake_port), str(a.latency), str(a.size)],
            env,
            tmp / "fake.log",
        ),
        start(
            [*easel, "serve", "--no-worker", "--no-auth", "--host", "127.0.0.1", "--port", str(api_port)],
            env,
            tmp / "api.log",
        ),
    ]
    rows: list[dict[str, Any]] = []
    try:
        wait_healthy(procs[0], fake_url, tmp / "fake.log", 60)
        wait_healthy(procs[1], api_url, tmp / "api.log", 120)
        procs.append(start([*easel, "worker", "--upstream"], env, tmp / "worker.log"))
        load = os.getloadavg()
        for k in ks:
            jobs = max(a.jobs, 4 * k)  # enough jobs that K really are in flight for a while
            fake_stats(fake_url)
            d = asyncio.run(direct(fake_url, jobs, k, a.size))
            direct_peak = fake_stats(fake_url)["peak"]
            ids: list[str] = []
            e = asyncio.run(through_easel(api_url, jobs, k, a.size, ids))
            easel_peak = fake_stats(fake_url)["peak"]
            db = from_database(tmp / "data" / "easel.db", ids)
            rows.append(
                {
                    "in_flight": k,
                    "jobs": jobs,
                    "direct": d | {"peak": direct_peak},
                    "easel": e | db | {"peak": easel_peak},
                    "added_ms": db["processing_p50_ms"] - d["p50_ms"],
                    "call_path_ms": db["call_p50_ms"] - d["p50_ms"],
                }
            )
        worker_log = (tmp / "worker.log").read_text(errors="replace")
        errors = [line for line in worker_log.splitlines() if " ERROR " in line or "Traceback" in line]
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; cpus {os.cpu_count()}; "
        f"upstream latency {a.latency:g} s, {a.size}x{a.size} PNG, at least {a.jobs} jobs per row (4 x K)"
    )
    print(
        "| in flight | direct p50 / p95 ms | direct peak | gateway call p50 / p95 ms "
        "| processing p50 / p95 ms | end to end p50 ms | Easel peak | images/s direct / Easel "
        "| added p50 ms (call path) | failed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d, e = r["direct"], r["easel"]
        print(
            f"| {r['in_flight']} | {d['p50_ms']:.1f} / {d['p95_ms']:.1f} | {d['peak']} "
            f"| {e['call_p50_ms']:.1f} / {e['call_p95_ms']:.1f} | {e['processing_p50_ms']:.1f} / "
            f"{e['processing_p95_ms']:.1f} | {e['e2e_p50_ms']:.1f} | {e['peak']} | {d['per_s']:.1f} / "
            f"{e['per_s']:.1f} | {r['added_ms']:.1f} ({r['call_path_ms']:.1f}) | {e['failures']} |"
        )
    print(f"worker log error lines: {len(errors)}")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "log_errors": errors[:20], "load": load}, indent=2))
    if any(r["easel"]["failures"] for r in rows) or errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
