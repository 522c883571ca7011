"""The `easel` command: serve, worker, generate, db upgrade, keys, models list / pull / add."""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from easel.settings import Settings

if TYPE_CHECKING:
    from easel.domain.spec import LoraRef
    from easel.runtime import Runtime

app = typer.Typer(
    help="Easel: a self-hosted image-generation API server.", no_args_is_help=True, add_completion=False
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
models_app = typer.Typer(
    help="The model catalog: list it, pull a model from the Hugging Face Hub, add one on this machine.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"easel {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Easel: a self-hosted image-generation API server."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default EASEL_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default EASEL_PORT, 8000).")] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="API only; workers run elsewhere.")] = False,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve WITHOUT API keys (refused unless bound to loopback).")
    ] = False,
    log_level: str = "info",
) -> None:
    """Run the API server (with an in-process worker unless --no-worker)."""
    import uvicorn

    from easel.app import create_app
    from easel.runtime import Runtime

    _logging(log_level)
    settings = Settings()
    if no_worker:
        settings = settings.model_copy(update={"worker_enabled": False})
    if settings.worker_enabled:
        from easel.engine.devices import check_device

        problem = check_device(settings.device)  # imports torch only for an accelerator
        if problem is not None:
            typer.echo(f"error: {problem} (EASEL_DEVICE of the in-process worker)", err=True)
            raise typer.Exit(2)
    bind_host = host or settings.host
    if no_auth or not settings.auth_enabled:
        if not is_loopback(bind_host):
            typer.echo(
                f"refusing to serve without API keys on {bind_host}: --no-auth is for loopback only", err=True
            )
            raise typer.Exit(2)
        settings = settings.model_copy(update={"auth_enabled": False})
        typer.secho(
            "WARNING: API keys are OFF (--no-auth): anyone on this machine can use this server.",
            fg="red",
            err=True,
        )
    else:
        runtime = Runtime.build(settings)
        created = runtime.bootstrap_admin_key()
        runtime.close()
        if created is not None:
            typer.secho(
                f"First start: an admin API key for the local project was written to {created}\n"
                f'  use it as:  -H "Authorization: Bearer $(cat {created})"',
                fg="yellow",
            )
    typer.echo(
        f"Easel {_version()} on http://{bind_host}:{port or settings.port} "
        f"(data: {settings.data_dir.resolve()}, db: {settings.resolved_database_url.split('://')[0]})"
    )
    uvicorn.run(
        create_app(settings),
        host=bind_host,
        port=port or settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=30,
    )


def _worker_settings(
    settings: Settings, device: str | None, threads: int | None, models: str | None
) -> Settings:
    """The settings of an `easel worker`: its options over the environment's; threads resolved (auto:
    OMP_NUM_THREADS if set, else every usable core, as the process has them to itself)."""
    from easel.engine.devices import auto_threads

    update: dict[str, Any] = {}
    if device is not None:
        update["device"] = device
    if models is not None:
        update["worker_models"] = [m.strip() for m in models.split(",") if m.strip()]
    requested = settings.torch_threads if threads is None else threads
    update["torch_threads"] = requested or auto_threads(shares_cores=False)
    return settings.model_copy(update=update)


@app.command()
def worker(
    device: Annotated[
        str | None,
        typer.Option(help="torch device: auto, cpu, cuda, cuda:N, mps (default EASEL_DEVICE, auto)."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="torch CPU threads (default EASEL_TORCH_THREADS; 0 = auto: OMP_NUM_THREADS, else all "
            "cores).",
        ),
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="Comma list of the models to serve (default EASEL_WORKER_MODELS, all).")
    ] = None,
    upstream: Annotated[
        bool,
        typer.Option(
            "--upstream",
            help="Serve the catalog's remote models through their providers (docs/gateway.md): an "
            "asyncio worker that never imports torch.",
        ),
    ] = False,
    log_level: str = "info",
) -> None:
    """Run a worker process: claims jobs from the shared database and runs them."""
    from easel.runtime import Runtime

    _logging(log_level)
    if upstream:
        _upstream_worker(Runtime.build(Settings()))
        return
    from easel.engine.devices import check_device

    settings = _worker_settings(Settings(), device, threads, models)
    problem = check_device(settings.device)
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    runtime = Runtime.build(settings)
    w = runtime.make_worker()

    def _stop(signum: int, _frame: object) -> None:
        logging.getLogger("easel").info("signal %d: finishing the current batch, then stopping", signum)
        w.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    w.run_forever()
    runtime.close()


def _upstream_worker(runtime: Any) -> None:
    """`easel worker --upstream`: the gateway worker until SIGTERM / SIGINT (its calls in flight are
    aborted and their jobs given back to the queue)."""
    w = runtime.make_upstream_worker()
    if not w.enabled:
        typer.echo(
            'error: the catalog has no remote models (backend = "upstream"; docs/gateway.md)', err=True
        )
        runtime.close()
        raise typer.Exit(2)

    def _stop(signum: int, _frame: object) -> None:
        logging.getLogger("easel").info("signal %d: aborting the calls in flight, then stopping", signum)
        w.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    w.run_forever()
    runtime.close()


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file (.png, .jpg, .webp).")] = Path(
        "out.png"
    ),
    model: Annotated[str | None, typer.Option(help="Model name or alias.")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT.")] = None,
    aspect_ratio: Annotated[str | None, typer.Option("--aspect-ratio", help="e.g. 16:9.")] = None,
    image_size: Annotated[
        str | None, typer.Option("--image-size", help="thumbnail|small|medium|large.")
    ] = None,
    n: Annotated[int, typer.Option("-n", help="Number of images.")] = 1,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible output.")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps.")] = None,
    guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance scale.")] = None,
    negative_prompt: Annotated[str | None, typer.Option("--negative-prompt")] = None,
    lora: Annotated[
        list[str] | None,
        typer.Option("--lora", help="A catalog LoRA as NAME or NAME:SCALE; repeat for several."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="Run the job on this Easel server (its base URL) instead of in this process."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="The server's API key (with --server; default EASEL_API_KEY)."),
    ] = None,
) -> None:
    """Generate and write the image file(s): in this process (the engine runs here), or on a remote server
    with --server URL (through the Python client, easel_client)."""

    from easel.domain.errors import EaselError
    from easel.domain.spec import GenerationSpec, OutputFormat

    _logging("warning")
    suffix = output.suffix.lower().lstrip(".") or "png"
    fmt = {"jpg": "jpeg"}.get(suffix, suffix)
    if fmt not in {f.value for f in OutputFormat}:
        raise typer.BadParameter("output must end in .png, .jpg, .jpeg or .webp", param_hint="--output")
    if server is not None:
        remote = {
            "model": model,
            "size": size,
            "aspect_ratio": aspect_ratio,
            "image_size": image_size,
            "n": n,
            "seed": seed,
            "steps": steps,
            "guidance": guidance,
            "negative_prompt": negative_prompt,
            "loras": [_lora_ref(text).model_dump(exclude_none=True) for text in lora or []] or None,
            "output_format": fmt,
        }
        _generate_remote(server, api_key, prompt, remote, output)
        return
    from easel.engine.local import generate_images

    spec = GenerationSpec(
        prompt=prompt,
        loras=[_lora_ref(text) for text in lora or []],
        model=model,
        size=size,
        aspect_ratio=aspect_ratio,
        image_size=image_size,
        n=n,
        seed=seed,
        steps=steps,
        guidance=guidance,
        negative_prompt=negative_prompt,
        output_format=OutputFormat(fmt),
    )
    started = time.monotonic()
    with _progress() as progress:
        task = progress.add_task("loading model", total=None)

        def on_step(step: int, total: int) -> bool:
            progress.update(task, description="denoising", completed=step, total=total)
            return True

        try:
            # alone in its process: auto threads are every usable core, as for `easel worker`
            settings = _worker_settings(Settings(), None, None, None)
            resolved, files = generate_images(settings, spec, on_step)
        except EaselError as e:
            typer.echo(f"error: {e.message}", err=True)
            raise typer.Exit(2) from e
    paths = _output_paths(output, len(files))
    for path, (seed_used, data) in zip(paths, files, strict=True):
        path.write_bytes(data)
        typer.echo(f"{path}  {resolved.width}x{resolved.height}  seed={seed_used}")
    typer.echo(
        f"model={resolved.model} steps={resolved.steps} guidance={resolved.guidance} "
        f"in {time.monotonic() - started:.1f}s"
    )


@app.command()
def replay(
    receipt_file: Annotated[
        Path, typer.Argument(help="A receipt: GET /api/v1/generations/{id}/receipt's JSON (or its data).")
    ],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="A folder to write the replayed images to.")
    ] = None,
) -> None:
    """Re-run a generation from its receipt in this process, with this machine's catalog, and report
    whether every image's bytes match the receipt's sha256 (exit 0) or not (exit 1). Text-to-image only."""
    import hashlib
    import json

    from easel.domain.errors import EaselError
    from easel.domain.spec import GenerationSpec
    from easel.engine.local import generate_images
    from easel.engine.sources import model_source
    from easel.engine.weights import versions, weights_sha256

    _logging("warning")
    try:
        data = json.loads(receipt_file.read_text())
    except (OSError, ValueError) as e:
        typer.echo(f"error: cannot read the receipt {receipt_file}: {e}", err=True)
        raise typer.Exit(2) from e
    if isinstance(data, dict) and "parameters" not in data and isinstance(data.get("data"), dict):
        data = data["data"]
    settings = Settings()
    try:
        spec = GenerationSpec.model_validate(data["parameters"])
        resolved, images = generate_images(settings, spec, lambda step, total: True, as_a_worker=True)
    except (KeyError, ValueError, EaselError) as e:
        typer.echo(f"error: cannot replay this receipt: {getattr(e, 'message', e)}", err=True)
        raise typer.Exit(2) from e
    catalog = settings.load_catalog()
    entry = catalog.resolve(resolved.model)
    weights = weights_sha256(model_source(catalog, entry), settings.data_dir / "cache", entry.revision)
    if weights != data.get("weightsSha256"):
        typer.echo(f"weights differ: receipt {data.get('weightsSha256')}, here {weights}")
    for name, here in versions().items():
        there = (data.get("versions") or {}).get(name)
        if there != here:
            typer.echo(f"{name} differs: receipt {there}, here {here}")
    expected = {o["index"]: o["sha256"] for o in data.get("outputs", [])}
    matches = 0
    for index, (seed, blob) in enumerate(images):
        digest = hashlib.sha256(blob).hexdigest()
        same = expected.get(index) == digest
        matches += same
        typer.echo(f"image {index} (seed {seed}): {'match' if same else 'DIFFERS'} {digest}")
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            (output / f"{index}.{resolved.output_format.value}").write_bytes(blob)
    if matches == len(images) == len(expected):
        typer.echo("the replay made the same bytes")
        return
    typer.echo(f"the replay differs: {matches} of {len(expected)} images match")
    raise typer.Exit(1)


def _progress() -> Any:
    """The progress bar of `easel generate` (local and --server alike)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=False,
    )


def _output_paths(output: Path, count: int) -> list[Path]:
    """`output` for one file; `stem-0.ext`, `stem-1.ext`, ... for several."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(count)]


def _generate_remote(
    server: str, api_key: str | None, prompt: str, params: dict[str, Any], output: Path
) -> None:
    """`easel generate --server URL`: submit through the client, show the job's events as the local path
    shows its steps, then download and write the images."""

    try:
        import easel_client
    except ImportError:
        _fail("--server needs the Python client: pip install -e clients/python")

    started = time.monotonic()
    try:
        with easel_client.Easel(server, api_key) as client:
            with _progress() as progress:
                task = progress.add_task("submitting", total=None)
                gen = client.submit(prompt, **params)
                for ev in client.stream(gen.id):
                    if isinstance(ev, easel_client.QueuedEvent):
                        progress.update(task, description=f"queued (position {ev.position})")
                    elif isinstance(ev, easel_client.ProgressEvent):
                        progress.update(task, description="denoising", completed=ev.step, total=ev.total)
                    elif isinstance(ev, easel_client.CompletedEvent):
                        gen = ev.generation
            if gen.status != "success":
                raise easel_client.GenerationError(gen)
            for path, image in zip(_output_paths(output, len(gen.images)), gen.images, strict=True):
                image.save(path)
                typer.echo(f"{path}  {image.width}x{image.height}  seed={image.seed}")
    except easel_client.EaselError as e:  # as the local path answers a refused request
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(
        f"model={gen.model} steps={gen.steps} guidance={gen.guidance} "
        f"in {time.monotonic() - started:.1f}s (on {server}, generation {gen.id})"
    )


def _lora_ref(text: str) -> LoraRef:
    """`NAME` or `NAME:SCALE` as a LoraRef (the scale's bounds are the spec's)."""
    from pydantic import ValidationError

    from easel.domain.spec import LoraRef

    name, sep, scale = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        return LoraRef(name=name, scale=float(scale) if sep else None)
    except (ValueError, ValidationError) as e:
        raise typer.BadParameter(f"{text!r}: NAME or NAME:SCALE (a number)", param_hint="--lora") from e


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the latest version."""
    from easel.store import migrate
    from easel.store.db import make_engine

    settings = Settings()
    settings.ensure_dirs()
    engine = make_engine(settings.resolved_database_url)
    migrate.upgrade(engine)
    typer.echo(f"database at revision {migrate.current_revision(engine)}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for.")] = "key",
    project: Annotated[str, typer.Option(help="Project name (created if missing).")] = "local",
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="Repeat for several; default: all but admin.")
    ] = None,
    expires_days: Annotated[float | None, typer.Option(help="Expire after this many days.")] = None,
    rate_limit: Annotated[int | None, typer.Option(help="Requests per window (0 = unlimited).")] = None,
    budget: Annotated[float | None, typer.Option(help="Credits this key may spend.")] = None,
    max_queued: Annotated[
        int | None,
        typer.Option(min=0, help="Queued generations this key may have at once (0 = no cap of its own)."),
    ] = None,
) -> None:
    """Create an API key; the key is printed once and stored only as a hash."""
    from datetime import timedelta

    from easel.domain.keys import DEFAULT_SCOPES, SCOPES
    from easel.store.tables import utcnow

    scopes = scope or list(DEFAULT_SCOPES)
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise typer.BadParameter(
            f"unknown scopes {unknown}; known: {', '.join(SCOPES)}", param_hint="--scope"
        )
    runtime = _runtime()
    project_id = runtime.repo.ensure_project(project)
    expires = utcnow() + timedelta(days=expires_days) if expires_days else None
    plaintext, info = runtime.keys.create(
        project_id,
        name,
        scopes,
        expires_at=expires,
        rate_limit_per_hour=rate_limit,
        budget_credits=budget,
        max_queued=max_queued,
    )
    typer.echo(plaintext)
    typer.echo(
        f"key {info.id} for project {project!r} ({', '.join(sorted(info.scopes))}); shown once, keep it safe",
        err=True,
    )


@keys_app.command("list")
def keys_list(project: Annotated[str | None, typer.Option(help="Only this project.")] = None) -> None:
    """List keys (ids, scopes, state; never secrets)."""
    runtime = _runtime()
    names = {p.id: p.name for p in runtime.keys.list_projects()}
    project_id = runtime.keys.project_by_name(project).id if project else None
    for k in runtime.keys.all(project_id):
        state = (
            "revoked"
            if k.revoked_at
            else ("expires " + k.expires_at.isoformat() if k.expires_at else "active")
        )
        scopes = ",".join(sorted(k.scopes))
        typer.echo(f"{k.id}  {names.get(k.project_id, k.project_id)}  {k.name}  {scopes}  {state}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after easel_sk_).")],
) -> None:
    """Revoke a key: its next request is a 401."""
    from easel.domain.errors import NotFound

    try:
        info = _runtime().keys.revoke(key_id)
    except NotFound:
        typer.echo(f"no key {key_id}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"revoked {info.id}")


def _runtime() -> Runtime:
    from easel.runtime import Runtime

    return Runtime.build(Settings())


@models_app.command("list")
def models_list() -> None:
    """Show the catalog: names, families and what they take, tasks, sizes, credits, LoRAs."""
    from rich.console import Console
    from rich.table import Table

    catalog = Settings().load_catalog()
    table = Table("model", "family", "aliases", "tasks", "takes", "max size", "max n", "credits", "loras")
    for m in catalog.models.values():
        name = m.name + (" (default)" if m.name == catalog.default_model else "")
        p = m.parameters()
        takes = [f"guidance ({p['guidance']})" if p["guidance"] not in (None, "none") else "no guidance"]
        takes.append("negative prompt" if p["negativePrompt"] else "no negative prompt")
        if p["maxSequenceLength"]:
            takes.append(f"{p['maxSequenceLength']} tokens")
        table.add_row(
            name,
            m.family or "unknown",
            ", ".join(m.aliases),
            ", ".join(t.value for t in m.tasks),
            ", ".join(takes),
            str(m.max_size),
            str(m.max_n),
            f"{m.credits_per_image:g}",
            ", ".join(lo.name for lo in catalog.loras_for(m)),
        )
    Console().print(table)


CatalogOption = Annotated[
    Path | None,
    typer.Option(
        "--catalog", help="The catalog file to add to (default: EASEL_CATALOG, else models/catalog.toml)."
    ),
]
NameOption = Annotated[
    str | None, typer.Option(help="The model's name in the catalog (default: from the id or path).")
]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _check_family(family: str | None) -> None:
    from easel.domain.families import family_names

    if family is not None and family not in family_names():
        _fail(f"unknown family {family!r} for --family; one of: {', '.join(family_names())}")


def _added(catalog: Path, name: str, block: str, family: str | None) -> None:
    typer.echo(f"added model {name!r} to {catalog}:\n\n{block}")
    if family is None:
        typer.echo(
            "its family is unknown (a pipeline Easel does not know): it runs with the generic arguments and "
            "without the family's checks; set `family` in the entry if you know it"
        )
    typer.echo(
        f'use it:  easel generate "a prompt" --model {name}\n'
        f"         (a running `easel serve` or `easel worker` reads the catalog when it starts: restart it)"
    )


@models_app.command("pull")
def models_pull(
    hub_id: Annotated[str, typer.Argument(help="The model's Hugging Face Hub id (owner/name).")],
    revision: Annotated[str | None, typer.Option(help="A branch, tag or commit (default: main).")] = None,
    name: NameOption = None,
    variant: Annotated[
        str | None, typer.Option(help="A weights variant, e.g. fp16 (default: the default weights).")
    ] = None,
    family: Annotated[
        str | None, typer.Option(help="Override the family read from the model's files.")
    ] = None,
    catalog: CatalogOption = None,
) -> None:
    """Download a diffusers pipeline from the Hugging Face Hub (only the files it loads) into the Hugging
    Face cache (HF_HOME) and add it to the catalog, pinned to the commit downloaded."""
    from huggingface_hub import constants

    from easel.engine.catalog_file import CatalogFileError, add_model, check_new_name, default_name
    from easel.engine.hub import HubError, pull

    path = catalog or Settings().catalog
    model = name or default_name(hub_id)
    _check_family(family)
    try:
        check_new_name(path, model)
        at = f" at {revision}" if revision else ""
        typer.echo(f"pulling {hub_id}{at} from {constants.ENDPOINT} into {constants.HF_HUB_CACHE}", err=True)
        pulled = pull(hub_id, revision, variant)
        typer.echo(
            f"{len(pulled.files)} files ({pulled.size / 1e6:.1f} MB) of {hub_id} at commit {pulled.revision} "
            f"in {pulled.folder}"
        )
        fields: dict[str, Any] = {
            "source": hub_id,
            "revision": pulled.revision,
            "family": family or pulled.family,
            "description": f"{hub_id} from the Hugging Face Hub",
            "options": {"variant": variant} if variant else None,
        }
        block = add_model(path, model, fields, comment=f"easel models pull {hub_id}{at}")
    except (HubError, CatalogFileError) as e:
        _fail(e.message)
    _added(path, model, block, fields["family"])


@models_app.command("add")
def models_add(
    path: Annotated[
        Path,
        typer.Argument(help="A diffusers folder (with model_index.json) or a .safetensors / .ckpt file."),
    ],
    name: NameOption = None,
    family: Annotated[
        str | None,
        typer.Option(help="The family (a single file needs it; a folder's is read from its files)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="For a single file: a diffusers folder of the same model, for its configs."),
    ] = None,
    catalog: CatalogOption = None,
) -> None:
    """Add a model on this machine to the catalog: a diffusers folder, or a single-file checkpoint with
    --family and --config (docs/models.md, single-file checkpoints)."""
    from easel.domain.catalog import SINGLE_FILE_FAMILIES, SINGLE_FILE_SUFFIXES, is_single_file
    from easel.engine.catalog_file import CatalogFileError, add_model, catalog_path_for, default_name
    from easel.engine.sources import folder_family

    catalog_file = catalog or Settings().catalog
    target = path.expanduser()
    suffixes = " / ".join(SINGLE_FILE_SUFFIXES)
    fields: dict[str, Any] = {}
    if target.is_dir():
        if config is not None:
            _fail("--config is for a single-file checkpoint; a diffusers folder has its own configs")
        if not (target / "model_index.json").is_file():
            _fail(
                f"{path} is not a diffusers folder (it has no model_index.json); a single checkpoint file is "
                f"added with --family and --config"
            )
        _check_family(family)
        fields = {"source": catalog_path_for(target, catalog_file), "family": family or folder_family(target)}
    elif target.is_file() and is_single_file(target.name):
        loadable = ", ".join(SINGLE_FILE_FAMILIES)
        if family is None:
            _fail(
                f"a single-file checkpoint does not say which model it is: pass --family (one of {loadable})"
            )
        if family not in SINGLE_FILE_FAMILIES:
            _check_family(family)
            _fail(f"family {family} has no single-file loader (one of {loadable}): add its diffusers folder")
        if config is None or not (config.expanduser() / "model_index.json").is_file():
            given = "" if config is None else f" ({config} has no model_index.json)"
            _fail(
                f"a single-file checkpoint takes its configs from a diffusers folder of the same model: pass "
                f"--config FOLDER, a folder with its model_index.json and component configs{given}"
            )
        fields = {
            "source": catalog_path_for(target, catalog_file),
            "family": family,
            "options": {"config": catalog_path_for(config, catalog_file)},
        }
    elif target.exists():
        _fail(f"{path} is neither a diffusers folder nor a single-file checkpoint ({suffixes})")
    else:
        _fail(
            f"{path} does not exist: give a diffusers folder or a {suffixes} file on this machine "
            f"(a model on the Hugging Face Hub is pulled with `easel models pull OWNER/NAME`)"
        )
    model = name or default_name(target.stem if target.is_file() else target.resolve().name)
    try:
        block = add_model(catalog_file, model, fields, comment=f"easel models add {path}")
    except CatalogFileError as e:
        _fail(e.message)
    _added(catalog_file, model, block, fields["family"])


def _version() -> str:
    from easel import __version__

    return __version__


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
