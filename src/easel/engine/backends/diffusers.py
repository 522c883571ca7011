"""The diffusers backend: any diffusers pipeline from a local folder, a hub id or a single checkpoint.

Loading is lazy and cached per (source, revision) in a cache bounded by the bytes of the weights
(engine/backends/cache.py, EASEL_MODEL_MEMORY). Image-to-image and inpainting pipelines are derived from
the loaded text-to-image pipeline with `from_pipe`, so they share its weights. Every image gets its own
CPU `torch.Generator` seeded with its recorded seed, so an image is the same whether it ran alone or in
a batch, on any device. The entry's options (domain/model_options.py; docs/operations.md, "GPU options")
decide the dtype, the weights variant, torch.compile, channels-last, the attention backend, VAE tiling
and CPU offload. The backend sets torch's CPU threads when it starts (engine/devices.py).
"""

from __future__ import annotations

import gc
import inspect
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.Image import Image as PILImage

from easel.domain.catalog import SINGLE_FILE_SUFFIXES, ModelEntry
from easel.domain.families import FAMILIES, Guidance, Task
from easel.domain.model_options import DiffusersOptions, parse_options
from easel.engine.backends.base import (
    BatchRequest,
    Interrupted,
    Loaded,
    ModelUnavailable,
    PreviewHook,
    StepCallback,
)
from easel.engine.backends.cache import PipelineCache, budget_bytes, describe, estimate_bytes
from easel.engine.backends.lora import Adapters
from easel.engine.devices import configure_threads
from easel.engine.sources import cached_snapshot
from easel.imaging import resample_filter
from easel.settings import Settings

log = logging.getLogger(__name__)


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def native_shape(width: int, height: int, native: int, multiple: int = 8) -> tuple[int, int]:
    """The sampling shape for a model that draws at `native` px: same aspect, short side = native."""
    if width >= height:
        return max(multiple, round(native * width / height / multiple) * multiple), native
    return native, max(multiple, round(native * height / width / multiple) * multiple)


DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def torch_dtype(options: DiffusersOptions, device: str) -> Any:
    """The torch dtype of an entry's weights on `device`: its `dtype` option; auto = fp16 on CUDA, fp32
    elsewhere (the deprecated `fp16 = false` is fp32)."""
    import torch

    name = options.effective_dtype
    if name == "auto":
        name = "fp16" if device.startswith("cuda") else "fp32"
    return getattr(torch, DTYPES[name])


def load_pipeline(
    source: str, device: str, options: dict[str, Any], family: str | None = None, revision: str | None = None
) -> Any:
    """A text-to-image diffusers pipeline from a folder, a single-file checkpoint of `family`
    (engine/backends/single_file.py, with its `options.config` folder) or a hub id at `revision`, with the
    weights of `options.variant` (e.g. "fp16"; default: the default weights), in `options.dtype`, on
    `device` (or offloaded to the CPU), with the entry's other GPU options applied (`apply_options`).

    A hub id pinned to a revision whose snapshot is in the local Hugging Face cache (`easel models pull`
    writes the commit it downloaded) loads with `local_files_only`: a commit cannot change, so the Hub is
    not asked anything. Otherwise diffusers asks the Hub (and falls back to the cache when it cannot)."""
    from diffusers import DiffusionPipeline

    from easel.engine.backends.single_file import load_single_file

    opts = parse_options(options)
    if opts.fp16 is not None:
        log.warning('%s: options.fp16 is deprecated: use dtype (fp16 = false is dtype = "fp32")', source)
    dtype = torch_dtype(opts, device)
    path = Path(source)
    single_file = path.suffix.lower() in SINGLE_FILE_SUFFIXES
    kwargs: dict[str, Any] = {"dtype": dtype} | ({"variant": opts.variant} if opts.variant else {})
    try:
        if path.is_file() and single_file:
            pipe = load_single_file(path, family, options, dtype)
        elif path.is_dir():
            pipe = DiffusionPipeline.from_pretrained(str(path), **kwargs)
        elif single_file or source.startswith(("/", "./", "../")):
            raise ModelUnavailable(
                f"model file or folder {source!r} does not exist (a relative `source` is relative to the "
                f"catalog file's folder)"
            )
        else:
            if revision is not None:
                kwargs["revision"] = revision
                kwargs["local_files_only"] = cached_snapshot(source, revision) is not None
            pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
    except ModelUnavailable:
        raise
    except OSError as e:
        at = f" at revision {revision}" if revision else ""
        raise ModelUnavailable(
            f"cannot load {source!r}{at}: {e}. If this is a Hugging Face hub id, download it first on a "
            f"machine with network access (`easel models pull {source}`) into the cache (HF_HOME), or point "
            f"the catalog entry's `source` at a local folder or .safetensors file."
        ) from e
    place(pipe, device, opts.cpu_offload)
    pipe.set_progress_bar_config(disable=True)
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()  # decode a batch one image at a time: bounded memory for large batches
    apply_options(pipe, opts)
    return pipe


def place(pipe: Any, device: str, offload: bool | str) -> None:
    """The pipeline on `device`, or with `offload` ("model": each component moves to the accelerator
    while it runs; "sequential": each layer) kept in CPU memory. Offloading needs an accelerator: on a
    CPU worker the option does nothing (logged), so one catalog serves CPU and GPU workers."""
    if not offload:
        pipe.to(device)
        return
    if device == "cpu":
        log.warning("options.cpu_offload = %r does nothing on the CPU (weights are in its memory)", offload)
        pipe.to(device)
        return
    try:
        if offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.enable_model_cpu_offload(device=device)
    except (ImportError, RuntimeError, ValueError) as e:
        raise ModelUnavailable(
            f"options.cpu_offload = {offload!r} on {device}: {type(e).__name__}: {e} (it needs the "
            f"accelerate package and an accelerator)"
        ) from e


def denoiser(pipe: Any) -> Any:
    """The pipeline's denoising model: its UNet or transformer (None for a pipeline with neither)."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if module is not None:
            return module
    return None


def apply_options(pipe: Any, opts: DiffusersOptions) -> None:
    """An entry's load-time GPU options on its loaded pipeline: channels-last weights, the attention
    backend, then torch.compile of the denoiser (last, so that it compiles what runs)."""
    import torch

    model = denoiser(pipe)
    needs_denoiser = [n for n in ("attention_backend", "compile") if getattr(opts, n) not in (None, False)]
    if model is None and needs_denoiser:
        raise ModelUnavailable(
            f"options.{needs_denoiser[0]}: {type(pipe).__name__} has no unet or transformer to apply it to"
        )
    if opts.channels_last:
        for module in (model, getattr(pipe, "vae", None)):
            if isinstance(module, torch.nn.Module):
                # Module.to converts the 4-D (convolution) weights; torch's stubs lack the argument
                module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if opts.attention_backend is not None:
        set_attention_backend(model, opts.attention_backend)
    mode = opts.compile_mode
    if mode is not None:
        # Module.compile: the module stays itself (components, LoRA loading, from_pipe unchanged) and
        # its calls go through torch.compile; kernels are compiled at the first call of each shape.
        model.compile(mode=None if mode == "default" else mode, backend=opts.compile_backend)


def set_attention_backend(model: Any, name: str) -> None:
    """diffusers' attention backend `name` for the model's attention layers, or ModelUnavailable saying
    why not: an unknown name, a backend whose package or hardware is missing (flash-attn, sageattention,
    xformers, a CUDA GPU), or a model whose attention does not dispatch through diffusers' backends (the
    UNets, SD3 and PixArt-Σ in diffusers 0.42: they call torch's scaled_dot_product_attention, which
    picks its own flash / memory-efficient kernels on CUDA). The process-wide default backend that
    diffusers' `set_attention_backend` also sets is put back: other models keep theirs."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    where = f"options.attention_backend = {name!r} for {type(model).__name__}"
    if not hasattr(model, "set_attention_backend"):
        raise ModelUnavailable(f"{where}: the model has no set_attention_backend (diffusers' backends)")
    previous = _AttentionBackendRegistry._active_backend
    try:
        model.set_attention_backend(name)
    except (ValueError, RuntimeError, ImportError) as e:
        raise ModelUnavailable(f"{where}: {e}") from e
    finally:
        _AttentionBackendRegistry.set_active_backend(previous)
    if not attention_backends(model):
        raise ModelUnavailable(
            f"{where}: its attention layers do not dispatch through diffusers' attention backends (they use "
            f"torch's scaled_dot_product_attention, which chooses flash / memory-efficient kernels itself on "
            f"CUDA): remove the option"
        )


def attention_backends(model: Any) -> set[str]:
    """The attention backends the model's attention processors are set to (empty: none dispatch)."""
    found = set()
    for module in model.modules():
        backend = getattr(getattr(module, "processor", None), "_attention_backend", None)
        if backend is not None:
            found.add(str(getattr(backend, "value", backend)))
    return found


def vae_tiling(pipe: Any, opts: DiffusersOptions, width: int, height: int) -> None:
    """VAE tiling on for a call that samples more than vae_tiling_above² pixels, off otherwise (also
    when the option is unset: entries that share a pipeline set it per call, so none inherits another's
    tiling); nothing for a VAE that cannot tile."""
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        return
    above = opts.vae_tiling_above
    if above is not None and width * height > above * above:
        vae.enable_tiling()
    elif getattr(vae, "use_tiling", False):
        vae.disable_tiling()


class DiffusersBackend:
    def __init__(self, settings: Settings, max_loaded: int | None = None) -> None:
        self.device = pick_device(settings.device)
        # A backend starts its worker's engine: torch's CPU threads are set here, once per process. An
        # `easel worker` hands in its resolved count; elsewhere (the in-process worker of `easel serve`,
        # `easel generate`, tests) auto leaves a core to the API.
        self.threads = configure_threads(settings.torch_threads, shares_cores=True)
        self.max_loaded = max_loaded or settings.max_loaded_models
        self.budget = budget_bytes(settings.model_memory, self.device)
        self.cache: PipelineCache[tuple[str, str | None], Any] = PipelineCache(self.budget, self.max_loaded)
        self._pipes = self.cache.items  # (source, revision) -> pipeline, least recently used first
        self._lock = threading.Lock()
        self.calls = 0  # pipeline calls made (one per batch): observable batching
        self.adapters = Adapters()
        self._seen: dict[
            Any, tuple[int, Loaded]
        ] = {}  # cache key -> (id of its pipeline, what loaded() says)
        log.info(
            "diffusers backend on %s, %d torch threads, model cache budget %s%s",
            self.device,
            self.threads,
            describe(self.budget),
            f", at most {self.max_loaded} models" if self.max_loaded else "",
        )

    def pipeline(
        self, source: str, options: dict[str, Any], family: str | None = None, revision: str | None = None
    ) -> Any:
        """The loaded pipeline of (source, revision), loading it when it is not: least recently used
        pipelines are unloaded first until its estimated bytes fit the budget, then until its measured
        bytes do."""
        key = (source, revision)
        with self._lock:
            pipe = self.cache.get(key)
            if pipe is not None:
                return pipe
            estimate = estimate_bytes(source, revision, parse_options(options), self.device)
            self._release(self.cache.make_room(estimate))
            at = f"@{revision}" if revision else ""
            log.info("loading model %s%s on %s (%s)", source, at, self.device, describe(estimate))
            pipe = load_pipeline(source, self.device, options, family, revision)
            size = pipeline_bytes(pipe) or estimate or 0
            self._release(self.cache.put(key, pipe, size))
            return pipe

    def _release(self, evicted: list[tuple[tuple[str, str | None], Any]]) -> None:
        """Free the memory of pipelines the cache evicted (called with the lock held)."""
        if not evicted:
            return
        for key, _pipe in evicted:
            self._seen.pop(key, None)
            log.info("unloading model %s (least recently used) to make room", key[0])
        evicted.clear()
        free_memory(self.device)

    # -- load / unload on request (the admin's, between batches), what is loaded ---------------------

    def load(self, model: ModelEntry) -> None:
        """The model's pipeline into the cache (least recently used ones leave when it does not fit)."""
        self.pipeline(model.source, model.options, model.family, model.revision)
        self.loaded()  # note when it arrived

    def unload(self, model: ModelEntry) -> bool:
        """Drop the pipeline of the model's source and free its memory (the garbage collector, and the
        CUDA / MPS caching allocator's unused blocks). Entries sharing the source share the pipeline,
        so they are unloaded too."""
        with self._lock:
            keys = [k for k in self._pipes if _source_of(k) == model.source]
            dropped = [self.cache.pop(k) for k in keys]
            for k in keys:
                self._seen.pop(k, None)
        if not dropped:
            return False
        log.info("unloading model %s", model.source)
        del dropped
        free_memory(self.device)
        return True

    def loaded(self) -> list[Loaded]:
        """The pipelines in the cache, each with the time this backend first saw it there (its load) and
        the bytes of its modules' weights."""
        with self._lock:
            pipes = list(self._pipes.items())
            for gone in set(self._seen) - set(self._pipes):
                del self._seen[gone]
            out = []
            for key, pipe in pipes:
                known = self._seen.get(key)
                if known is None or known[0] != id(pipe):
                    size = self.cache.sizes.get(key) or pipeline_bytes(pipe)
                    known = (id(pipe), Loaded(_source_of(key), datetime.now(UTC), size))
                    self._seen[key] = known
                out.append(known[1])
        return out

    def generate(
        self, request: BatchRequest, on_step: StepCallback, previews: PreviewHook | None = None
    ) -> list[PILImage]:
        import torch
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

        entry = request.model
        base = self.pipeline(request.source, entry.options, entry.family, entry.revision)
        width, height = request.width, request.height
        if entry.native_size:
            width, height = native_shape(width, height, entry.native_size, entry.multiple_of)
        vae_tiling(base, parse_options(entry.options), width, height)

        items = request.items
        if request.task is Task.TEXT_TO_IMAGE:
            pipe = base
        elif request.task in (Task.IMAGE_TO_IMAGE, Task.VARIATION):
            pipe = AutoPipelineForImage2Image.from_pipe(base)
        elif request.task is Task.INPAINT:
            pipe = AutoPipelineForInpainting.from_pipe(base)
        else:
            raise ValueError(f"unsupported task {request.task}")
        pipe.set_progress_bar_config(disable=True)
        kwargs = call_arguments(request, width, height)
        if request.task is not Task.TEXT_TO_IMAGE:
            kwargs["image"] = [_fit(it.source, width, height) for it in items]
            kwargs["strength"] = request.strength
        if request.task is Task.INPAINT:
            kwargs["mask_image"] = [_fit(it.mask, width, height, mode="L") for it in items]
        accepted = inspect.signature(pipe.__call__).parameters
        if request.task is Task.IMAGE_TO_IMAGE or request.task is Task.VARIATION:
            # Image-to-image draws at the source's size, which _fit made (width, height).
            kwargs = {k: v for k, v in kwargs.items() if k not in ("width", "height") or k in accepted}
        kwargs |= step_callback(accepted, request.steps, on_step, previews, pipe, (width, height))
        unexpected = sorted(set(kwargs) - set(accepted))
        if unexpected:
            name = type(pipe).__name__
            if entry.family is not None:
                raise TypeError(f"{name} takes no {unexpected} (the family table of {entry.family})")
            log.warning("%s takes no %s: not passed (set the entry's family)", name, unexpected)
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}

        try:
            with self.adapters.active(base, request.loras), torch.inference_mode():
                result = pipe(**kwargs)
        except _Stop:
            raise Interrupted() from None
        self.calls += 1
        out: list[PILImage] = list(result.images)
        if (width, height) != (request.width, request.height):
            flt = resample_filter(entry.upscale_filter)
            out = [im.resize((request.width, request.height), flt) for im in out]
        if request.task is Task.INPAINT:
            out = [keep_outside_mask(im, it) for im, it in zip(out, items, strict=True)]
        return out


def _source_of(key: Any) -> str:
    """The source of a pipeline cache key (the source itself, or a tuple that starts with it)."""
    return key if isinstance(key, str) else str(key[0])


def pipeline_bytes(pipe: Any) -> int | None:
    """The bytes of a pipeline's weights (parameters and buffers of its torch modules, each tensor
    counted once); None when it has no torch modules to count."""
    import torch

    components = getattr(pipe, "components", None)
    if not isinstance(components, dict):
        return None
    seen: set[int] = set()
    total = 0
    for component in components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for t in [*component.parameters(), *component.buffers()]:
            ptr = t.data_ptr()
            if ptr and ptr in seen:
                continue
            seen.add(ptr)
            total += t.numel() * t.element_size()
    return total or None


def free_memory(device: str) -> None:
    """Return what dropped pipelines held: collect them now, then empty the accelerator's cache."""
    gc.collect()
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.startswith("mps") and getattr(torch, "mps", None) is not None:
        torch.mps.empty_cache()


class _Stop(Exception):
    """Raised inside a step callback to stop the pipeline call (every job of the batch was canceled)."""


def call_arguments(request: BatchRequest, width: int, height: int) -> dict[str, Any]:
    """The pipeline arguments a batch means for its model's family: a negative prompt only where the
    family uses one (FLUX.1 with true CFG: always, "" when a job has none, so a job runs the same alone
    and in a batch), a guidance scale except where there is none (FLUX.1 [schnell]), the family's
    text-encoder sequence length, one seeded CPU generator per image."""
    import torch

    entry, items = request.model, request.items
    kwargs: dict[str, Any] = {
        "prompt": [it.prompt for it in items],
        "num_inference_steps": request.steps,
        "generator": [torch.Generator("cpu").manual_seed(it.seed) for it in items],
        "output_type": "pil",
        "width": width,
        "height": height,
    }
    negatives = [it.negative_prompt or "" for it in items]
    if entry.true_cfg_scale is not None:
        kwargs |= {"negative_prompt": negatives, "true_cfg_scale": entry.true_cfg_scale}
    elif entry.takes_negative_prompt and any(negatives):
        kwargs["negative_prompt"] = negatives
    if entry.guidance_kind is not Guidance.NONE:
        kwargs["guidance_scale"] = request.guidance
    if entry.sequence_length is not None:
        kwargs["max_sequence_length"] = entry.sequence_length
    family = FAMILIES.get(entry.family or "")
    if family is not None:
        kwargs |= dict(family.call_arguments)
    return kwargs


def step_callback(
    accepted: Any,
    steps: int,
    on_step: StepCallback,
    previews: PreviewHook | None = None,
    pipeline: Any = None,
    native: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    """The pipeline's per-step callback arguments: `callback_on_step_end`, or the older `callback` +
    `callback_steps` (PixArt). Returning False from `on_step` stops the call (raises _Stop). At the steps
    `previews` wants, the current estimate of each image is decoded (`preview_images`) and delivered
    before the step is reported."""
    if "callback_on_step_end" in accepted:

        def on_end(pipe: Any, i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = int(getattr(pipe, "num_timesteps", None) or steps)
            if previews is not None and previews.wanted(i + 1, total) and "latents" in tensors:
                previews.deliver(i + 1, total, preview_images(pipe, tensors["latents"], *native))
            if not on_step(i + 1, total):
                raise _Stop()
            return tensors

        return {"callback_on_step_end": on_end}
    if "callback" in accepted:

        def legacy(i: int, _t: Any, latents: Any) -> None:
            if previews is not None and pipeline is not None and previews.wanted(i + 1, steps):
                previews.deliver(i + 1, steps, preview_images(pipeline, latents, *native))
            if not on_step(i + 1, steps):
                raise _Stop()

        return {"callback": legacy, "callback_steps": 1}
    return {}


def predicted_clean(pipe: Any, latents: Any) -> Any:
    """The scheduler's current prediction of the clean latents where it keeps one (DPM-Solver++'s last
    model output is that prediction), else the current latents themselves (their noise fades as the
    steps go on)."""
    scheduler = getattr(pipe, "scheduler", None)
    outputs = getattr(scheduler, "model_outputs", None)
    algorithm = getattr(getattr(scheduler, "config", None), "algorithm_type", "")
    if outputs and algorithm in ("dpmsolver++", "sde-dpmsolver++"):
        last = outputs[-1]
        if last is not None and tuple(last.shape) == tuple(latents.shape):
            return last
    return latents


def preview_images(pipe: Any, latents: Any, width: int, height: int) -> list[PILImage]:
    """Decode the current estimate of a batch's images through the pipeline's own VAE, as the pipeline
    does at its end (FLUX.1's packed latents unpacked first); RGB pictures at the native size."""
    import torch

    vae = pipe.vae
    z = predicted_clean(pipe, latents)
    if z.ndim == 3 and hasattr(pipe, "_unpack_latents"):  # FLUX.1: (batch, tokens, channels)
        z = pipe._unpack_latents(z, height, width, pipe.vae_scale_factor)
    z = z / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", None) or 0.0)
    with torch.inference_mode():
        decoded = vae.decode(z.to(vae.dtype), return_dict=False)[0]
    images: list[PILImage] = pipe.image_processor.postprocess(decoded.float(), output_type="pil")
    return [im.convert("RGB") for im in images]


def keep_outside_mask(generated: PILImage, item: Any) -> PILImage:
    """Inpainting changes only the masked area: every pixel outside the mask is the source's.

    A pipeline works in latent space (and at a native resolution), so its output differs a little from
    the source everywhere; compositing with the (binarised) mask at the output size restores the source
    exactly where the client asked for no change.
    """
    size = generated.size
    source = _fit(item.source, *size)
    mask = _fit(item.mask, *size, mode="L").point(lambda v: 255 if v >= 128 else 0)
    return Image.composite(generated.convert("RGB"), source, mask)


def _fit(image: PILImage | None, width: int, height: int, mode: str = "RGB") -> PILImage:
    if image is None:
        raise ValueError("this task needs a source image and (for inpainting) a mask")
    image = image.convert(mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image
