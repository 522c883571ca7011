"""Benchmark: images per second through the whole server against the backend alone, and where the CPU goes.

    .venv/bin/python benchmarks/serving.py [--baseline DIR] [--src DIR] [--seconds 10] [--no-builtin]
                                           [--waves] [--split] [--json out.json]
    .venv/bin/python benchmarks/serving.py --quick    # tiny: 64x64, 2 steps, a few jobs (a test runs it)

Each source tree (`--src`, default this checkout's `src/`; `--baseline`, e.g. a checkout of main made
with `git worktree add /tmp/base main`) serves in its turn through benchmarks/easel_launch.py: `easel
serve --no-auth` on SQLite and a local image folder in a fresh data folder, with the in-process worker,
`OMP_NUM_THREADS` = `--threads` (2). Clients (threads of this process, one httpx client each) run the
real round trip in a closed loop: `POST /api/v1/generations` with `Prefer: wait` (queue, worker, PNG,
signed link), then GET of the image's signed link (the download).

- **simulated** (benchmarks/simulated.py): 4 steps x 25 ms per pipeline call whatever its batch size
  (an accelerator), gradient pictures; 256x256 and 1024x1024; batch 1 (1 client) and batch 8
  (`EASEL_MAX_BATCH_IMAGES=8`, 8 clients, and 16 so that a batch is always waiting). "alone": the same
  sleep schedule and pictures called in a loop in this process, no server.
- **built-in model** (models/builtin, 256x256, its 20 steps and guidance 6): batch 1 (1 client) and
  batch 8 (8 clients); "alone": a raw diffusers loop in this process (the pipeline called with 1 or 8
  prompts, one generator per image, Lanczos upscale to 256 like the backend), with the same threads,
  measured just before and just after each load (the mean; the server sits idle meanwhile), so that
  both see the same machine.

Images/s counts the downloads that completed within the window (`--seconds`, and at least two
batches' images, after a warm-up). "jobs per call": the worker's mean batch (from its counters). CPU ms
per image: the server process's CPU (/proc) over the window divided by the images completed, split by
the worker's own stage counters from GET /metrics (`easel_worker_cpu_seconds_total{stage}`; trees
without them show "-"): DB (the worker's claims, progress, completions, heartbeats), decode (the
backend call as its calling thread sees it: the simulated backend making pixels), encode (PNG), store
(blob writes); HTTP is the rest of the server process (routes, the API's own database work, the event
loop). With the built-in model, decode is torch's compute in the worker's thread and torch's other
thread lands in the rest, so HTTP is not split out there ("-"). "client" is this process (the clients
and the probes). Latency: GET /api/v1/generations/{id} and the list (`?limit=20`), p50 and p99, idle
and while the worker is saturated (during the 1024x1024 batch-8 load with 16 clients, and the built-in
model's batch 8).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import simulated  # noqa: E402
from easel_launch import free_port, wait_healthy  # noqa: E402

PROMPT = "a large red circle on a blue background"
STAGES = ("db", "inputs", "generate", "encode", "store")
PROBE_EVERY = 0.05  # seconds between two latency probes (a GET and a list)


@dataclass
class Load:
    """One measured load on one server."""

    tree: str
    model: str  # simulated | builtin
    size: int
    batch: int  # EASEL_MAX_BATCH_IMAGES of the server... and the batch of the "alone" loop
    clients: int
    images: int = 0  # completed within the window
    seconds: float = 0.0
    images_per_s: float = 0.0
    alone_per_s: float | None = None
    ratio: float | None = None
    mean_batch: float | None = None  # jobs per pipeline call (from the worker's counters)
    cpu_ms: dict[str, float | None] = field(default_factory=dict)  # per image, by stage
    latency_ms: dict[str, float] = field(default_factory=dict)  # probes while loaded


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


class Server:
    """`easel serve --no-auth` of one source tree (through easel_launch.py) in a fresh data folder."""

    def __init__(
        self, src: Path, root: Path, catalog: Path, *, max_batch: int, threads: int, split: bool = False
    ) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="data-", dir=root))
        self.log = self.data / "serve.log"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EASEL_")}
        env |= {
            "EASEL_DATA_DIR": str(self.data),
            "EASEL_CATALOG": str(catalog),
            "EASEL_MAX_BATCH_IMAGES": str(max_batch),
            "EASEL_METRICS_ENABLED": "true",
            "OMP_NUM_THREADS": str(threads),
            "EASEL_TORCH_THREADS": str(threads),  # trees that read it; the same count as the raw loop
            "HF_HUB_OFFLINE": "1",
        }
        env.pop("PYTHONPATH", None)  # the launcher puts the tree first; nothing else of Easel's
        self.worker: subprocess.Popen[bytes] | None = None
        if split:  # the API alone in `easel serve`, the worker in its own `easel worker` process
            env["EASEL_WORKER_ENABLED"] = "false"
            launch = [sys.executable, str(BENCH / "easel_launch.py"), "--src", str(src)]
            with open(self.data / "worker.log", "ab") as out:
                self.worker = subprocess.Popen([*launch, "worker"], env=env, stdout=out, stderr=out)
        cmd = [sys.executable, str(BENCH / "easel_launch.py"), "--src", str(src), "serve", "--no-auth"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out)
        try:
            wait_healthy(self.proc, self.url, self.log, 180)
        except RuntimeError:
            self.stop()
            raise

    def cpu(self) -> float:
        """CPU seconds of the server process, and of its worker process when split."""
        return proc_cpu(self.proc.pid) + (proc_cpu(self.worker.pid) if self.worker is not None else 0.0)

    def worker_counters(self) -> dict[str, float] | None:
        """The in-process worker's counters from GET /metrics (None when this tree has none)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "easel_worker_cpu_seconds_total":
                    out[f"cpu:{s.labels['stage']}"] = s.value
                elif s.name in ("easel_worker_batches_total", "easel_worker_images_stored_total"):
                    out[s.name] = s.value
        return out or None

    def stop(self) -> None:
        for proc in (self.worker, self.proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        shutil.rmtree(self.data, ignore_errors=True)


def one_job(client: httpx.Client, body: dict[str, Any]) -> str:
    """Create with Prefer: wait, download the image; the generation's id."""
    r = client.post("/api/v1/generations", json=body, headers={"Prefer": "wait=300"})
    data = r.json()["data"]
    if r.status_code not in (200, 201) or data.get("status") != "success":
        raise RuntimeError(f"job did not succeed: {r.status_code} {r.text[:500]}")
    got = client.get(data["outputImage"]["storageUrl"])
    if got.status_code != 200 or not got.content.startswith(b"\x89PNG"):
        raise RuntimeError(f"download failed: {got.status_code}")
    return str(data["id"])


def probe(url: str, gid: str, stop: threading.Event, out: dict[str, list[float]], every: float) -> None:
    """GET one generation and the list alternately every `every` s until `stop`; latencies in ms."""
    with httpx.Client(base_url=url, timeout=60) as c:
        while not stop.is_set():
            for name, path in (
                ("get", f"/api/v1/generations/{gid}"),
                ("list", "/api/v1/generations?limit=20"),
            ):
                t0 = time.perf_counter()
                r = c.get(path)
                out[name].append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
            stop.wait(every)


def summary(lat: dict[str, list[float]]) -> dict[str, float]:
    return {
        "get_p50": round(pct(lat["get"], 0.5), 2),
        "get_p99": round(pct(lat["get"], 0.99), 2),
        "list_p50": round(pct(lat["list"], 0.5), 2),
        "list_p99": round(pct(lat["list"], 0.99), 2),
        "probes": len(lat["get"]),
    }


def idle_latency(url: str, gid: str, n: int) -> dict[str, float]:
    """The probes with nothing else going on (the same pace as under load)."""
    out: dict[str, list[float]] = {"get": [], "list": []}
    stop = threading.Event()
    t = threading.Thread(target=probe, args=(url, gid, stop, out, PROBE_EVERY))
    t.start()
    while len(out["list"]) < n:
        time.sleep(0.02)
    stop.set()
    t.join()
    return summary(out)


def run_load(
    server: Server, load: Load, body: dict[str, Any], seconds: float, warmup: int, probe_gid: str | None
) -> Load:
    """`load.clients` clients in a closed loop after `warmup` jobs each, for `seconds` and at least two
    batches' worth of images (a slow machine measures longer rather than nothing)."""
    clients = [httpx.Client(base_url=server.url, timeout=600) for _ in range(load.clients)]
    seed = [1000 * load.clients]
    lock = threading.Lock()

    def body_for() -> dict[str, Any]:
        with lock:
            seed[0] += 1
            return body | {"seed": seed[0]}

    errors: list[BaseException] = []

    def warm(c: httpx.Client) -> None:
        try:
            for _ in range(warmup):
                one_job(c, body_for())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=warm, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]

    done: list[float] = []
    start_counters = server.worker_counters()
    server_cpu0, self_cpu0 = server.cpu(), self_cpu()
    t0 = time.monotonic()
    stop = threading.Event()
    probes: dict[str, list[float]] = {"get": [], "list": []}
    stop_probe = threading.Event()
    prober = None
    if probe_gid is not None:
        prober = threading.Thread(target=probe, args=(server.url, probe_gid, stop_probe, probes, PROBE_EVERY))
        prober.start()

    def loop(c: httpx.Client) -> None:
        try:
            while not stop.is_set():
                one_job(c, body_for())
                with lock:
                    done.append(time.monotonic())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    least = 2 * load.batch
    while not errors:
        time.sleep(0.005)
        with lock:
            counted = len(done)
        end = time.monotonic()
        if end - t0 >= seconds and counted >= least:
            break
    stop.set()
    for t in threads:
        t.join()
    stop_probe.set()
    if prober is not None:
        prober.join()
    server_cpu, client_cpu = server.cpu() - server_cpu0, self_cpu() - self_cpu0
    end_counters = server.worker_counters()
    for c in clients:
        c.close()
    if errors:
        raise errors[0]
    load.images, load.seconds = counted, round(end - t0, 2)
    load.images_per_s = round(counted / (end - t0), 2)
    n = max(1, len(done))
    cpu: dict[str, float | None] = {"server": server_cpu * 1000 / n, "client": client_cpu * 1000 / n}
    if start_counters is not None and end_counters is not None:
        delta = {k: end_counters.get(k, 0.0) - start_counters.get(k, 0.0) for k in end_counters}
        stages = {s: delta.get(f"cpu:{s}", 0.0) * 1000 / n for s in STAGES}
        cpu |= {
            "db": stages["db"],
            "decode": stages["generate"] + stages["inputs"],
            "encode": stages["encode"],
            "store": stages["store"],
        }
        # The rest of the process; with torch, its own threads' compute lands here too: not HTTP.
        cpu["http"] = cpu["server"] - sum(stages.values()) if load.model != "builtin" else None  # type: ignore[operator]
        batches = delta.get("easel_worker_batches_total", 0.0)
        if batches:
            load.mean_batch = round(n / batches, 2)
    else:
        cpu |= dict.fromkeys(("db", "decode", "encode", "store", "http"), None)
    load.cpu_ms = {k: (round(v, 2) if v is not None else None) for k, v in cpu.items()}
    if probe_gid is not None:
        load.latency_ms = summary(probes)
    return load


# -- the backend alone ------------------------------------------------------------------------------


def simulated_alone(
    size: int, batch: int, steps: int, step_seconds: float, calls: int, content: str
) -> float:
    for v in range(simulated.VARIANTS):  # the server's warm-up fills its cache the same way
        simulated.picture(size, size, v, content)
    t0 = time.monotonic()
    for k in range(calls):
        seeds = [k * batch + i for i in range(batch)]
        simulated.run_steps(size, size, seeds, steps, step_seconds, content=content)
    return calls * batch / (time.monotonic() - t0)


class RawBuiltin:
    """Raw diffusers on the built-in model in this process: `rate(k)` is images/s with k prompts per
    call, measured when asked (next to the server's load, so both see the same machine)."""

    def __init__(self, threads: int) -> None:
        import torch
        from diffusers import DiffusionPipeline

        torch.set_num_threads(threads)
        self.torch = torch
        self.pipe = DiffusionPipeline.from_pretrained(str(ROOT / "models" / "builtin"))
        self.pipe.set_progress_bar_config(disable=True)
        self.call(1, 0)  # warm-up

    def call(self, k: int, first_seed: int) -> None:
        from PIL import Image

        images = self.pipe(
            [PROMPT] * k,
            num_inference_steps=20,
            guidance_scale=6.0,
            height=32,
            width=32,
            generator=[self.torch.Generator().manual_seed(first_seed + i) for i in range(k)],
        ).images
        for im in images:
            im.resize((256, 256), Image.Resampling.LANCZOS)

    def rate(self, k: int, seconds: float) -> float:
        self.call(k, 0)
        t0, calls = time.monotonic(), 0
        while calls < 2 or time.monotonic() - t0 < seconds:
            self.call(k, 100 + calls * k)
            calls += 1
        return calls * k / (time.monotonic() - t0)


# -- the run --------------------------------------------------------------------------------------------


def write_builtin_catalog(path: Path) -> Path:
    """The shipped catalog's built-in entry only, its source made absolute."""
    text = (ROOT / "models" / "catalog.toml").read_text()
    path.write_text(text.replace('source = "builtin"', f'source = "{ROOT / "models" / "builtin"}"'))
    return path


def main(argv: list[str] | None = None) -> list[Load]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=str(ROOT / "src"), help="the Easel source tree to measure")
    ap.add_argument("--baseline", default=None, help="another Easel tree (a checkout) measured the same way")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per load (simulated)")
    ap.add_argument("--builtin-seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-builtin", action="store_true", help="skip the built-in model")
    ap.add_argument("--no-simulated", action="store_true", help="only the built-in model")
    ap.add_argument("--waves", action="store_true", help="also 1024x1024 batch 8 with photo-like content")
    ap.add_argument("--sizes", default="256,1024", help="simulated sizes (comma-separated)")
    ap.add_argument(
        "--split",
        action="store_true",
        help="also the largest size, batch 8, 16 clients with the worker in its own `easel worker` process",
    )
    ap.add_argument("--quick", action="store_true", help="64x64, 2 steps, a few jobs: the script runs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    trees = [("current", Path(args.src))]
    if args.baseline:
        trees.insert(0, ("baseline", Path(args.baseline)))
    step_seconds = 0.025
    steps = 4
    sizes = [int(x) for x in args.sizes.split(",")]
    sim_loads = [(1, 1), (8, 8), (8, 16)]  # (batch, clients)
    seconds, warmup, idle_probes = args.seconds, 2, 300
    if args.quick:
        step_seconds, steps, sizes, seconds, warmup, idle_probes = 0.01, 2, [64], 1.5, 1, 10
        sim_loads = [(1, 1), (8, 8)]
        args.no_builtin = True
    loads: list[Load] = []
    idle: dict[str, dict[str, float]] = {}
    root = Path(tempfile.mkdtemp(prefix="easel-serving-"))
    try:
        alone: dict[tuple[str, int, int], float] = {}
        contents = ["gradient"] + (["waves"] if args.waves and not args.quick else [])
        if args.no_simulated:
            contents = []
        for content in contents:
            for size in sizes if content == "gradient" else [1024]:
                for batch in sorted({b for b, _ in sim_loads}):
                    calls = max(4, int(seconds / (steps * step_seconds) / 2))
                    alone[(content, size, batch)] = simulated_alone(
                        size, batch, steps, step_seconds, calls, content
                    )
        raw = None if args.no_builtin else RawBuiltin(args.threads)
        print(f"backend alone: simulated {alone}", flush=True)

        for label, src in trees:
            for content in contents:
                catalog = root / f"simulated-{content}.toml"
                catalog.write_text(simulated.catalog_text(step_seconds, content=content))
                for size in sizes if content == "gradient" else [1024]:
                    server = Server(src, root, catalog, max_batch=8, threads=args.threads)
                    try:
                        body = {"prompt": PROMPT, "size": f"{size}x{size}", "steps": steps}
                        gid = one_job(httpx.Client(base_url=server.url, timeout=300), body | {"seed": 1})
                        for batch, clients in sim_loads if content == "gradient" else [(8, 16)]:
                            probe_here = (
                                batch == 8
                                and clients == max(c for _, c in sim_loads)
                                and (size == max(sizes))
                            )
                            if probe_here and content == "gradient":
                                idle[f"{label}/simulated"] = idle_latency(server.url, gid, idle_probes)
                            name = "simulated" if content == "gradient" else "simulated-waves"
                            load = Load(label, name, size, batch, clients)
                            run_load(server, load, body, seconds, warmup, gid if probe_here else None)
                            load.alone_per_s = round(alone[(content, size, batch)], 2)
                            load.ratio = round(load.images_per_s / load.alone_per_s, 3)
                            loads.append(load)
                            print(json.dumps(asdict(load)), flush=True)
                    finally:
                        server.stop()
                if args.split and content == "gradient":  # API and worker in two processes (a GPU host)
                    size = max(sizes)
                    server = Server(src, root, catalog, max_batch=8, threads=args.threads, split=True)
                    try:
                        body = {"prompt": PROMPT, "size": f"{size}x{size}", "steps": steps}
                        one_job(httpx.Client(base_url=server.url, timeout=300), body | {"seed": 1})
                        load = Load(label, "simulated-split", size, 8, 16)
                        run_load(server, load, body, seconds, warmup, None)
                        load.alone_per_s = round(alone[(content, size, 8)], 2)
                        load.ratio = round(load.images_per_s / load.alone_per_s, 3)
                        loads.append(load)
                        print(json.dumps(asdict(load)), flush=True)
                    finally:
                        server.stop()
            if not args.no_builtin:
                catalog = write_builtin_catalog(root / "builtin.toml")
                server = Server(src, root, catalog, max_batch=8, threads=args.threads)
                try:
                    body = {"prompt": PROMPT, "size": "256x256"}
                    gid = one_job(httpx.Client(base_url=server.url, timeout=300), body | {"seed": 1})
                    for batch, clients in ((1, 1), (8, 8)):
                        if batch == 8:
                            idle[f"{label}/builtin"] = idle_latency(server.url, gid, idle_probes)
                        load = Load(label, "builtin", 256, batch, clients)
                        assert raw is not None  # measured just before and just after the load: same machine
                        before = raw.rate(batch, args.builtin_seconds / 2)
                        run_load(server, load, body, args.builtin_seconds, 1, gid if batch == 8 else None)
                        after = raw.rate(batch, args.builtin_seconds / 2)
                        load.alone_per_s = round((before + after) / 2, 3)
                        print(
                            f"raw built-in, batch {batch}: {before:.3f} before, {after:.3f} after", flush=True
                        )
                        load.ratio = round(load.images_per_s / load.alone_per_s, 3)
                        loads.append(load)
                        print(json.dumps(asdict(load)), flush=True)
                finally:
                    server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print_tables(loads, idle)
    if args.json:
        Path(args.json).write_text(json.dumps({"loads": [asdict(x) for x in loads], "idle": idle}, indent=2))
    return loads


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def print_tables(loads: list[Load], idle: dict[str, dict[str, float]]) -> None:
    print()
    print(
        "| tree | model | size | batch | clients | images/s | alone images/s | ratio | jobs per call | "
        "CPU ms per image: HTTP | DB | decode | encode | store | server | client |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for x in loads:
        c = x.cpu_ms
        print(
            f"| {x.tree} | {x.model} | {x.size}x{x.size} | {x.batch} | {x.clients} | {x.images_per_s:.2f} | "
            f"{fmt(x.alone_per_s)} | {fmt(x.ratio)} | {fmt(x.mean_batch)} | {fmt(c.get('http'))} | "
            f"{fmt(c.get('db'))} | {fmt(c.get('decode'))} | {fmt(c.get('encode'))} | {fmt(c.get('store'))} | "
            f"{fmt(c.get('server'))} | {fmt(c.get('client'))} |"
        )
    print()
    print(
        "| tree | while | GET p50 | GET p99 | GET p99 / idle p99 | list p50 | list p99 "
        "| list p99 / idle p99 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for key, base in idle.items():
        label, model = key.split("/")
        print(
            f"| {label} | {model}: idle ({base['probes']:.0f} probes) | {base['get_p50']:.2f} | "
            f"{base['get_p99']:.2f} | 1 | {base['list_p50']:.2f} | {base['list_p99']:.2f} | 1 |"
        )
        for x in loads:
            if x.tree != label or not x.latency_ms or x.model.split("-")[0] != model:
                continue
            lat = x.latency_ms
            print(
                f"| {label} | {x.model} {x.size}x{x.size} batch {x.batch}, {x.clients} clients "
                f"({lat['probes']:.0f} probes) | {lat['get_p50']:.2f} | {lat['get_p99']:.2f} | "
                f"{lat['get_p99'] / base['get_p99']:.2f} | {lat['list_p50']:.2f} | {lat['list_p99']:.2f} | "
                f"{lat['list_p99'] / base['list_p99']:.2f} |"
            )


if __name__ == "__main__":
    main()
