"""`easel models pull`: a diffusers pipeline from the Hugging Face Hub into the local cache.

Only the files the pipeline loads are downloaded: `model_index.json`, each component's configs (every
file of a component without weights: tokenizers, schedulers, feature extractors; `config.json` of one
with weights) and ONE set of weights. That set follows diffusers' own loading rules, so a later load
from the cache (engine/backends/diffusers.py, offline) finds every file it expects:

- `.safetensors` when every component with weights has them, else `.bin` for the whole pipeline;
- without `variant`, the default weights (`diffusion_pytorch_model.safetensors`); with one (`fp16`),
  that variant's (`diffusion_pytorch_model.fp16.safetensors`), which every component must have;
- never ONNX, Flax, TensorFlow, `.ckpt` or other duplicate formats, nor folders the pipeline does not
  name (a repository's single-file checkpoints, READMEs, examples).

Files go into the normal Hugging Face cache (HF_HOME, HF_HUB_CACHE) through `snapshot_download`, with
its progress bars (shown on a terminal; `TQDM_POSITION=-1` forces them elsewhere). The revision asked for
(default: the main branch) is resolved once to its commit, and everything is downloaded at that commit.
Errors are `HubError`s whose message says what to do. Nothing here imports torch.
"""

from __future__ import annotations

import errno
import glob
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from easel.engine.sources import folder_family

# Formats Easel never downloads: the pipeline loads PyTorch weights only.
OTHER_WEIGHT_SUFFIXES = (
    ".onnx", ".onnx_data", ".pb", ".msgpack", ".h5", ".ckpt", ".pt", ".pth", ".gguf", ".tflite", ".flashpack",
)  # fmt: skip
# Files at the repository's root that diffusers reads (or expects in a cached snapshot) besides
# model_index.json: a root scheduler or transformers-style component's configs, the custom pipeline file.
ROOT_FILES = (
    "model_index.json", "config.json", "scheduler_config.json", "pipeline.py", "chat_template.jinja",
    "generation_config.json", "preprocessor_config.json", "processor_config.json", "tokenizer.json",
    "tokenizer_config.json",
)  # fmt: skip
# The names diffusers and transformers give weight files (a root file of another name, such as a
# single-file checkpoint next to the pipeline's folders, is not part of the pipeline).
WEIGHT_STEMS = ("diffusion_pytorch_model", "model", "pytorch_model")

_SHARD = r"-\d{5}-of-\d{5}"
# diffusion_pytorch_model.safetensors, model.fp16.safetensors, model-00001-of-00002.safetensors,
# model.fp16-00001-of-00002.safetensors and the older model-00001-of-00002.fp16.safetensors
_WEIGHT = re.compile(
    rf"(?P<stem>[^.]+?)(?:{_SHARD})?(?:\.(?P<variant>\w+?)(?:{_SHARD})?)?\.(?P<fmt>safetensors|bin)"
)
# model.safetensors.index.json, model.safetensors.index.fp16.json, model.safetensors.fp16.index.json
_INDEX = re.compile(
    r"(?P<stem>[^.]+)\.(?P<fmt>safetensors|bin)\.(?:index\.(?:(?P<v1>\w+)\.)?|(?P<v2>\w+)\.index\.)json"
)


class HubError(Exception):
    """A pull that cannot be done; the message says why and what to do."""

    @property
    def message(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Pulled:
    hub_id: str
    revision: str  # the commit the pull resolved and downloaded
    folder: Path  # the snapshot in the Hugging Face cache
    files: list[str]  # the repository paths downloaded (or already cached)
    size: int  # their bytes
    family: str | None  # told by the pipeline's files (engine/sources.folder_family)
    variant: str | None


def _weight(name: str) -> tuple[str, str | None] | None:
    """(format, variant) of a weight or weight-index file name, None for any other file."""
    if m := _WEIGHT.fullmatch(name):
        return m["fmt"], m["variant"]
    if m := _INDEX.fullmatch(name):
        return m["fmt"], m["v1"] or m["v2"]
    return None


def _is_weights(name: str) -> bool:
    return _weight(name) is not None or name.endswith(OTHER_WEIGHT_SUFFIXES)


def components(index: dict[str, Any]) -> list[str]:
    """The pipeline's components that have files: model_index.json's entries [library, class] that are not
    [null, null] (a pipeline saved without its safety checker lists it so)."""
    return sorted(
        k
        for k, v in index.items()
        if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and any(x is not None for x in v)
    )


def plan_files(filenames: Iterable[str], index: dict[str, Any], variant: str | None = None) -> list[str]:
    """The repository paths a diffusers pipeline needs, from the repository's file list and its
    model_index.json, with the weights of `variant` (None: the default ones). Raises HubError when the
    repository cannot give a loadable set."""
    ignored = index.get("_ignore_files") or []
    names = sorted(set(filenames) - set(ignored))
    wanted = [n for n in ROOT_FILES if n in names]
    # component -> {format: [files of the wanted variant]}, for the components with weights
    weighted: dict[str, dict[str, list[str]]] = {}
    for comp in components(index):
        inside = [n for n in names if n.startswith(comp + "/")]
        if not inside:
            raise HubError(
                f"model_index.json names the component {comp!r}, but the repository has no {comp}/ folder: "
                f"it is incomplete, or not a diffusers pipeline"
            )
        direct = [n for n in inside if "/" not in n[len(comp) + 1 :]]
        if not any(_is_weights(n.rsplit("/", 1)[1]) for n in direct):
            wanted += [n for n in inside if not _is_weights(n.rsplit("/", 1)[1])]  # tokenizer, scheduler...
            continue
        found: dict[str, list[str]] = {}
        variants: set[str | None] = set()
        for n in direct:
            kind = _weight(n.rsplit("/", 1)[1])
            if kind is None:
                continue
            variants.add(kind[1])
            if kind[1] == variant:
                found.setdefault(kind[0], []).append(n)
        if not found:
            raise HubError(_no_weights(comp, variant, variants))
        weighted[comp] = found
        if f"{comp}/config.json" in names:
            wanted.append(f"{comp}/config.json")
    fmt = "safetensors" if all("safetensors" in f for f in weighted.values()) else "bin"
    if fmt == "bin":
        no_bin = sorted(c for c, f in weighted.items() if "bin" not in f)
        if no_bin:
            only_bin = sorted(c for c, f in weighted.items() if "safetensors" not in f)
            raise HubError(
                f"the pipeline's weights are in mixed formats: {', '.join(only_bin)} only .bin, "
                f"{', '.join(no_bin)} only .safetensors; diffusers loads one format for a whole pipeline"
            )
    for found in weighted.values():
        wanted += found[fmt]
    for n in names:  # weights at the root (a transformers-style single component), as diffusers reads them
        kind = _weight(n) if "/" not in n else None
        if kind == (fmt, variant) and re.match(rf"({'|'.join(WEIGHT_STEMS)})[.-]", n):
            wanted.append(n)
    return sorted(set(wanted))


def _no_weights(comp: str, variant: str | None, variants: set[str | None]) -> str:
    named = sorted(v for v in variants if v is not None)
    if variant is not None:
        has = [*(["the default weights"] if None in variants else []), *named]
        offer = "pull without --variant" if None in variants else ""
        if named:
            offer += (" or " if offer else "") + "with --variant " + " / ".join(named)
        if has:
            return f"{comp}/ has no {variant} weights (it has {', '.join(has)}): {offer}"
        return f"{comp}/ has no {variant} weights, and no PyTorch weights at all (.safetensors or .bin)"
    if named:
        return f"{comp}/ has only {', '.join(named)} weights: pass --variant {named[0]}"
    return f"{comp}/ has no PyTorch weights (.safetensors or .bin): Easel cannot load this pipeline"


def pull(hub_id: str, revision: str | None = None, variant: str | None = None) -> Pulled:
    """Download the files of `hub_id` at `revision` (a branch, tag or commit; default main) that its
    pipeline needs, with the weights of `variant`, into the Hugging Face cache."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    with _explained(hub_id, revision):
        api = HfApi()
        # Asks the Hub first: fails at once when it cannot be reached or the id or revision is unknown
        # (a file download would retry for a while before it said so).
        info = api.model_info(hub_id, revision=revision)
        sha = info.sha
        if sha is None:
            raise HubError(
                f"the Hub did not say which commit {hub_id} is at: is HF_ENDPOINT a Hugging Face Hub?"
            )
        filenames = [s.rfilename for s in info.siblings or []]
        if "model_index.json" not in filenames:
            singles = [n for n in filenames if n.lower().endswith((".safetensors", ".ckpt")) and "/" not in n]
            hint = (
                f"; for one of its single-file checkpoints ({', '.join(singles[:3])}) download the file and "
                f"use `easel models add FILE --family ... --config FOLDER`"
                if singles
                else ""
            )
            raise HubError(f"{hub_id} is not a diffusers pipeline (it has no model_index.json){hint}")
        index = json.loads(Path(hf_hub_download(hub_id, "model_index.json", revision=sha)).read_text())
        if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
            raise HubError(f"{hub_id}'s model_index.json does not name a pipeline class")
        files = plan_files(filenames, index, variant)
        folder = Path(snapshot_download(hub_id, revision=sha, allow_patterns=[glob.escape(f) for f in files]))
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise HubError(
            f"the download of {hub_id} is incomplete (missing {', '.join(missing[:3])}): run it again"
        )
    size = sum((folder / f).stat().st_size for f in files)
    return Pulled(hub_id, sha, folder, files, size, folder_family(folder), variant)


@contextmanager
def _explained(hub_id: str, revision: str | None) -> Iterator[None]:
    """Turns what huggingface_hub raises into one HubError that says what to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import httpx  # type: ignore[attr-defined]  # its HTTP client (httpx2 in 2.x)

    endpoint = constants.ENDPOINT
    local = (
        "a model already on this machine (a folder or a single file) is added with `easel models add PATH`"
    )
    try:
        yield
    except HubError:
        raise
    except OfflineModeIsEnabled as e:
        raise HubError(
            f"HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it to pull; {local}"
        ) from e
    except GatedRepoError as e:
        raise HubError(
            f"{hub_id} is gated: accept its conditions on its page ({endpoint}/{hub_id}) with your account, "
            f"then set HF_TOKEN to an access token of that account"
        ) from e
    except RepositoryNotFoundError as e:
        raise HubError(
            f"no model {hub_id!r} on {endpoint}: check the id (owner/name, as in the model page's address); "
            f"a private model needs HF_TOKEN, a model on another Hub HF_ENDPOINT; {local}"
        ) from e
    except RevisionNotFoundError as e:
        raise HubError(
            f"{hub_id} has no revision {revision!r}: check --revision (a branch, tag or commit of the model)"
        ) from e
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status in (401, 403):
            raise HubError(
                f"{endpoint} refused access to {hub_id} ({status}): set HF_TOKEN to a token that may read it"
            ) from e
        raise HubError(
            f"{endpoint} answered {status} for {hub_id}: try again later ({_first_line(e)})"
        ) from e
    except HFValidationError as e:
        raise HubError(f"{hub_id!r} is not a Hub model id (owner/name); {local}") from e
    except httpx.TransportError as e:
        raise HubError(
            f"cannot reach the Hugging Face Hub at {endpoint} ({type(e).__name__}: {e}): check the network "
            f"connection, and HF_ENDPOINT if you use a mirror; {local}"
        ) from e
    except LocalEntryNotFoundError as e:  # the Hub went away during the download
        raise HubError(
            f"the download of {hub_id} from {endpoint} failed ({_first_line(e)}): check the network "
            f"connection and run it again (what was downloaded is kept)"
        ) from e
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise HubError(
                f"no space left on the disk of the Hugging Face cache ({constants.HF_HUB_CACHE}): free some, "
                f"or point HF_HOME at a larger disk"
            ) from e
        raise HubError(f"cannot write the Hugging Face cache ({constants.HF_HUB_CACHE}): {e}") from e


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
