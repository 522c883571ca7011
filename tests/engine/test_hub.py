"""`easel models pull` and `easel models add`, run as a user runs them (subprocesses), against a local
Hub-compatible server (tests/fake_hub.py, `HF_ENDPOINT`) serving a tiny pipeline the module builds, with
decoys a pull must leave alone: duplicate `.bin` weights, `fp16` variants, ONNX and Flax files, a root
single-file checkpoint, a README. The pulled model then generates from the cache, offline."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from easel.domain.spec import GenerationSpec
from easel.engine.hub import HubError, plan_files
from easel.settings import Settings, load_catalog
from fake_hub import FakeHub, Repo
from helpers import open_image
from processes import easel_env, free_port, run_easel

HUB_ID = "easel-tests/tiny-sd"
WEIGHTS = ("unet/diffusion_pytorch_model", "vae/diffusion_pytorch_model", "text_encoder/model")
DECOYS = (
    "unet/diffusion_pytorch_model.bin",
    "text_encoder/pytorch_model.bin",
    "unet/model.onnx",
    "unet/diffusion_flax_model.msgpack",
    "tiny-sd.safetensors",
    "tiny-sd.ckpt",
    "README.md",
)
GENERATE = ("generate", "a red circle", "--size", "64x64", "--steps", "4", "--seed", "5")


@dataclass(frozen=True)
class Built:
    repo: Path  # what the hub serves: the tiny pipeline, its fp16 variant files and the decoys
    other: Path  # the pipeline whose weights the repository's fp16 files are (another seed)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    from tiny import build_tiny_sd

    root = tmp_path_factory.mktemp("hub-models")
    repo = build_tiny_sd(root / "tiny-sd")
    # The variant's weights are another pipeline's, so a test can tell which weights were loaded.
    other = build_tiny_sd(root / "tiny-sd-seed1", seed=1)
    for stem in WEIGHTS:
        shutil.copy(other / f"{stem}.safetensors", repo / f"{stem}.fp16.safetensors")
    for decoy in DECOYS:
        (repo / decoy).write_bytes(b"not for this pipeline")
    return Built(repo, other)


@pytest.fixture(scope="module")
def hub(built: Built) -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.add(HUB_ID, built.repo, tags=("v1.0",))
        yield server


def hub_env(hub_url: str, hf_home: Path, hf: dict[str, str] | None = None, **easel: str) -> dict[str, str]:
    """An `easel` child (with the EASEL_* settings `easel`) whose Hugging Face Hub is `hub_url` and cache
    `hf_home`, online (the tests run with HF_HUB_OFFLINE=1) unless `hf` sets it again, with
    huggingface_hub's progress bars forced on although stderr is not a terminal; `hf`: more variables."""
    env = {k: v for k, v in easel_env(**easel).items() if k != "HF_HUB_OFFLINE"}
    return env | {"HF_ENDPOINT": hub_url, "HF_HOME": str(hf_home), "TQDM_POSITION": "-1"} | (hf or {})


def dead_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def configs(repo: Path) -> set[str]:
    """What every pull takes besides weights: model_index.json, the tokenizer's and the scheduler's
    files, the configs of the components with weights."""
    folders = {
        p.relative_to(repo).as_posix() for d in ("tokenizer", "scheduler") for p in (repo / d).rglob("*")
    }
    return {"model_index.json", *folders, *(f"{stem.split('/')[0]}/config.json" for stem in WEIGHTS)}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def generate_in_process(catalog: Path, model: str, data: Path) -> bytes:
    """What `easel generate` writes, run in this process (no Hugging Face download involved)."""
    from easel.engine.local import generate_images

    spec = GenerationSpec(prompt="a red circle", model=model, size="64x64", steps=4, seed=5)
    _, files = generate_images(Settings(catalog=catalog, data_dir=data), spec, lambda step, total: True)
    return files[0][1]


def folder_catalog(tmp: Path, folder: Path) -> Path:
    path = tmp / "folder.toml"
    path.write_text(f'[models.folder]\nsource = "{folder}"\n')
    return path


# ---------------------------------------------------------------------------------------------------
# Pull


@dataclass(frozen=True)
class Pulled:
    catalog: Path
    hf_home: Path
    repo: Repo
    stdout: str
    stderr: str
    downloads: list[str]


@pytest.fixture(scope="module")
def pulled(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Pulled:
    """`easel models pull` of the tiny pipeline into an empty cache and a catalog with one model."""
    tmp = tmp_path_factory.mktemp("pulled")
    catalog = tmp / "catalog.toml"
    catalog.write_text('# my models\ndefault_model = "mine"\n\n[models.mine]\nsource = "somewhere"\n')
    before = len(hub.requests)
    r = run_easel("models", "pull", HUB_ID, "--catalog", str(catalog), env=hub_env(hub.url, tmp / "hf"))
    assert r.returncode == 0, r.stderr
    prefix = f"/{HUB_ID}/resolve/"
    downloads = [
        p[len(prefix) :].split("/", 1)[1] for m, p in hub.requests[before:] if m == "GET" and prefix in p
    ]
    return Pulled(catalog, tmp / "hf", hub.repos[HUB_ID], r.stdout, r.stderr, downloads)


def test_pull_downloads_only_what_the_pipeline_loads(built: Built, pulled: Pulled) -> None:
    expected = configs(built.repo) | {f"{stem}.safetensors" for stem in WEIGHTS}
    assert sorted(pulled.downloads) == sorted(expected)  # each once, no decoy, no variant, no _tok/
    assert "Fetching" in pulled.stderr and "100%" in pulled.stderr  # huggingface_hub's progress bars
    snapshot = pulled.hf_home / "hub" / "models--easel-tests--tiny-sd" / "snapshots" / pulled.repo.sha
    on_disk = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    assert on_disk == expected
    assert f"added model 'tiny-sd' to {pulled.catalog}" in pulled.stdout
    assert "easel generate" in pulled.stdout and "--model tiny-sd" in pulled.stdout


def test_the_pulled_entry_pins_the_commit(pulled: Pulled) -> None:
    text = pulled.catalog.read_text()
    assert text.startswith('# my models\ndefault_model = "mine"\n')  # appended, the rest as it was
    catalog = load_catalog(pulled.catalog)
    entry = catalog.resolve("tiny-sd")
    assert (entry.source, entry.revision, entry.family) == (HUB_ID, pulled.repo.sha, "sd")
    assert "variant" not in entry.options
    assert catalog.default_model == "mine"


def test_the_pulled_model_generates_offline(built: Built, pulled: Pulled, tmp_path: Path) -> None:
    """With the Hub gone and HF_HUB_OFFLINE=1: the cache is all the model needs."""
    data = str(tmp_path / "data")
    env = hub_env(
        dead_endpoint(), pulled.hf_home, {"HF_HUB_OFFLINE": "1"}, catalog=str(pulled.catalog), data_dir=data
    )
    r = run_easel(*GENERATE, "--model", "tiny-sd", "-o", str(tmp_path / "out.png"), env=env)
    assert r.returncode == 0, r.stderr
    drawn = (tmp_path / "out.png").read_bytes()
    assert open_image(drawn).size == (64, 64)
    # same seed, same bytes: the very picture the served pipeline draws from its own folder
    assert drawn == generate_in_process(folder_catalog(tmp_path, built.repo), "folder", tmp_path / "d2")


def test_pull_with_a_variant_takes_only_its_weights(built: Built, hub: FakeHub, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    before = len(hub.requests)
    args = ("models", "pull", HUB_ID, "--variant", "fp16", "--revision", "v1.0", "--name", "tiny16")
    r = run_easel(*args, "--catalog", str(catalog), env=hub_env(hub.url, tmp_path / "hf"))
    assert r.returncode == 0, r.stderr
    assert sorted(hub.downloads(HUB_ID, before)) == sorted(
        configs(built.repo) | {f"{stem}.fp16.safetensors" for stem in WEIGHTS}
    )
    entry = load_catalog(catalog).resolve("tiny16")
    assert (entry.revision, entry.options) == (hub.repos[HUB_ID].sha, {"variant": "fp16"})  # the tag's commit

    # Generating with the Hub up and HF_HUB_OFFLINE unset: a pinned, cached snapshot is loaded with
    # local_files_only, so nothing is asked of the Hub (huggingface_hub itself may fetch its agent
    # registry, /api/agent-harnesses, once a day: not a model request).
    env = hub_env(hub.url, tmp_path / "hf", catalog=str(catalog), data_dir=str(tmp_path / "data"))
    assert "HF_HUB_OFFLINE" not in env
    before = len(hub.requests)
    r = run_easel(*GENERATE, "--model", "tiny16", "-o", str(tmp_path / "fp16.png"), env=env)
    assert r.returncode == 0, r.stderr
    assert [p for _, p in hub.requests[before:] if p.startswith(("/api/models/", f"/{HUB_ID}/"))] == []
    # the variant's weights were loaded: the picture of the pipeline they came from
    drawn = (tmp_path / "fp16.png").read_bytes()
    assert drawn == generate_in_process(folder_catalog(tmp_path, built.other), "folder", tmp_path / "d2")


def test_pull_errors_say_what_to_do_and_change_nothing(hub: FakeHub, pulled: Pulled, tmp_path: Path) -> None:
    catalog = pulled.catalog
    text = catalog.read_text()
    add = "easel models add PATH"
    cases = [
        (("easel-tests/nope",), {}, ("no model 'easel-tests/nope' on", "check the id", "HF_TOKEN", add)),
        ((HUB_ID, "--revision", "v9", "--name", "x"), {}, ("has no revision 'v9'", "check --revision")),
        ((HUB_ID, "--variant", "bf16", "--name", "x"), {}, ("has no bf16 weights", "--variant fp16")),
        ((HUB_ID, "--name", "x"), {"HF_ENDPOINT": dead_endpoint()}, ("cannot reach", "HF_ENDPOINT", add)),
        ((HUB_ID, "--name", "x"), {"HF_HUB_OFFLINE": "1"}, ("HF_HUB_OFFLINE is set", add)),
        (("not/a/hub id", "--name", "x"), {}, ("is not a Hub model id", add)),
        ((HUB_ID,), {}, ("already has a model named 'tiny-sd'", "--name")),
        ((HUB_ID, "--name", "MINE"), {}, ("already has a model named 'MINE'",)),
        ((HUB_ID, "--name", "x", "--family", "sd9"), {}, ("unknown family 'sd9'",)),
    ]
    for args, extra, messages in cases:
        before = len(hub.requests)
        env = hub_env(hub.url, tmp_path / "hf", extra)
        r = run_easel("models", "pull", *args, "--catalog", str(catalog), env=env)
        lines = error_lines(r.stderr)
        assert r.returncode == 1 and len(lines) == 1, (args, r.stderr)
        assert all(m in lines[0] for m in messages), (args, lines[0])
        assert "Traceback" not in r.stderr
        assert catalog.read_text() == text
        if "already has" in messages[0] or "family" in messages[0]:  # refused before asking the Hub
            assert hub.requests[before:] == []
    snapshots = tmp_path / "hf" / "hub" / "models--easel-tests--tiny-sd" / "snapshots"
    assert {p.name for p in snapshots.rglob("*") if p.is_file()} <= {"model_index.json"}  # no weights


# ---------------------------------------------------------------------------------------------------
# The plan


def test_plan_follows_diffusers_loading_rules() -> None:
    index = {
        "_class_name": "X",
        "unet": ["diffusers", "U"],
        "text_encoder": ["transformers", "T"],
        "tokenizer": ["transformers", "K"],
        "safety_checker": [None, None],  # saved without one: its folder is not the pipeline's
    }
    unet, te = "unet/diffusion_pytorch_model", "text_encoder/model"
    shards = [f"{te}-0000{i}-of-00002.safetensors" for i in (1, 2)]
    fp16_shards = [f"{te}.fp16-0000{i}-of-00002.safetensors" for i in (1, 2)]
    base = ["model_index.json", "text_encoder/config.json", "tokenizer/merges.txt", "tokenizer/vocab.json"]
    base.append("unet/config.json")
    files = [*base, "README.md", "safety_checker/model.safetensors", "text_encoder/model.onnx"]
    files += [f"{unet}.bin", f"{unet}.fp16.bin", f"{unet}.safetensors", f"{unet}.fp16.safetensors"]
    files += [*shards, f"{te}.safetensors.index.json", *fp16_shards, f"{te}.safetensors.index.fp16.json"]
    files.append("text_encoder/pytorch_model.bin")

    default = [*shards, f"{te}.safetensors.index.json", f"{unet}.safetensors"]
    assert plan_files(files, index) == sorted(base + default)
    fp16 = [*fp16_shards, f"{te}.safetensors.index.fp16.json", f"{unet}.fp16.safetensors"]
    assert plan_files(files, index, "fp16") == sorted(base + fp16)
    # a component without safetensors: .bin for the whole pipeline, as diffusers loads it
    no_st = [f for f in files if not (f.startswith("text_encoder/") and "safetensors" in f)]
    assert plan_files(no_st, index) == sorted([*base, "text_encoder/pytorch_model.bin", f"{unet}.bin"])
    with pytest.raises(HubError, match=r"text_encoder/ has no fp16 weights \(it has the default weights\)"):
        plan_files(no_st, index, "fp16")
    only_variant = [f for f in files if not f.startswith(unet)] + [f"{unet}.fp16.safetensors"]
    with pytest.raises(HubError, match="unet/ has only fp16 weights: pass --variant fp16"):
        plan_files(only_variant, index)
    with pytest.raises(HubError, match="no tokenizer/ folder"):
        plan_files([f for f in files if not f.startswith("tokenizer/")], index)
    with pytest.raises(HubError, match="unet/ has no PyTorch weights"):
        plan_files([f for f in files if not f.startswith(unet)] + ["unet/model.onnx"], index)
    with pytest.raises(HubError, match=r"mixed formats: text_encoder only \.bin, unet only \.safetensors"):
        plan_files([f for f in no_st if not f.endswith(".bin")] + ["text_encoder/pytorch_model.bin"], index)


def test_a_cached_pull_is_found_at_its_revision(pulled: Pulled, monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalog tells a pulled model's family from the cache at the entry's revision (the pull writes
    no refs/main: it downloads at a commit)."""
    import huggingface_hub.constants

    from easel.domain.catalog import ModelEntry
    from easel.engine.sources import cached_snapshot, detect_family

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(pulled.hf_home / "hub"))
    sha = pulled.repo.sha
    assert cached_snapshot(HUB_ID, sha) is not None and cached_snapshot(HUB_ID) is None
    assert cached_snapshot(HUB_ID, "0" * 40) is None and cached_snapshot("easel-tests/nope", sha) is None
    assert detect_family(ModelEntry(name="t", source=HUB_ID, revision=sha), ".") == "sd"
    assert detect_family(ModelEntry(name="t", source=HUB_ID), ".") is None


# ---------------------------------------------------------------------------------------------------
# Add


def test_add_a_folder_and_a_single_file(built: Built, tmp_path: Path) -> None:
    import torch
    from diffusers import DiffusionPipeline

    import single_file_layouts as layouts

    home = tmp_path / "models"
    folder = shutil.copytree(built.other, home / "Tiny SD", ignore=shutil.ignore_patterns("*.fp16.*"))
    with torch.no_grad():
        tensors = layouts.sd_checkpoint(DiffusionPipeline.from_pretrained(str(folder)))
    file = layouts.save_checkpoint(tensors, tmp_path / "elsewhere" / "tiny.safetensors")
    config = layouts.config_folder(folder, home / "tiny-config")
    catalog = home / "catalog.toml"
    env = easel_env()

    r = run_easel("models", "add", str(folder), "--catalog", str(catalog), env=env)
    assert r.returncode == 0, r.stderr
    r = run_easel(
        "models",
        "add",
        str(file),
        "--family",
        "sd",
        "--config",
        str(config),
        "--catalog",
        str(catalog),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    loaded = load_catalog(catalog)
    by_folder, by_file = loaded.resolve("tiny-sd"), loaded.resolve("tiny")
    assert (by_folder.source, by_folder.family) == ("Tiny SD", "sd")  # inside the catalog's folder: relative
    assert (by_file.source, by_file.family) == (str(file), "sd")  # outside it: absolute
    assert by_file.options == {"config": "tiny-config"}
    a = generate_in_process(catalog, "tiny-sd", tmp_path / "data")
    b = generate_in_process(catalog, "tiny", tmp_path / "data")
    assert a == generate_in_process(folder_catalog(tmp_path, built.other), "folder", tmp_path / "data")
    pa, pb = (np.asarray(open_image(x).convert("RGB")).astype(int) for x in (a, b))
    assert np.abs(pa - pb).max() <= 2  # the file holds the folder's weights (up to float rounding)

    text = catalog.read_text()
    refused = [
        ((str(folder),), "already has a model named 'tiny-sd'"),
        ((str(file), "--name", "f2"), "pass --family"),
        (
            (str(file), "--name", "f2", "--family", "pixart-sigma", "--config", str(config)),
            "no single-file loader",
        ),
        ((str(file), "--name", "f2", "--family", "sd"), "pass --config FOLDER"),
        ((str(file), "--name", "f2", "--family", "sd", "--config", str(home)), "has no model_index.json"),
        ((str(config / "unet"), "--name", "f2"), "not a diffusers folder"),
        ((str(tmp_path / "missing"),), "does not exist"),
        ((str(folder), "--name", "bad name"), "is not a usable model name"),
    ]
    for args, message in refused:
        r = run_easel("models", "add", *args, "--catalog", str(catalog), env=env)
        lines = error_lines(r.stderr)
        assert r.returncode == 1 and len(lines) == 1 and message in lines[0], (args, r.stderr)
        assert catalog.read_text() == text
