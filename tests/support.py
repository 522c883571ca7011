"""Test data builders shared by test modules (import from here, not from conftest)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_catalog(path: Path, model_dir: Path) -> Path:
    """A catalog: the tiny model as default (`tiny`, aliases `dall-e-2`) and a restricted `tiny-square`."""
    path.write_text(f'''
default_model = "tiny"

[models.tiny]
source = "{model_dir}"
tasks = ["text-to-image", "image-to-image", "inpaint", "variation"]
min_size = 32
max_size = 512
max_n = 4
max_prompt_length = 200
credits_per_image = 2
aliases = ["dall-e-2", "tiny-alias"]

[models.tiny.defaults]
steps = 4
guidance = 4.0
image_size = "thumbnail"

[models.tiny-square]
source = "{model_dir}"
aspect_ratios = ["1:1"]
max_size = 128
max_n = 1
credits_per_image = 0.5

[models.tiny-square.defaults]
steps = 2
guidance = 1.0

# Vendor dialects' models (api/pictory, api/placewise) and styles, all on the tiny model.
[styles.photorealistic]
prompt_suffix = "photo"
negative_prompt = "cartoon"
guidance = 5.0

[styles.cartoon]
prompt_suffix = "cartoon"

[styles.artistic]
[styles.minimalist]
[styles.vintage]
[styles.futuristic]

[models."seedream3.0"]
source = "{model_dir}"
tasks = ["text-to-image", "image-to-image"]
aspect_ratios = ["1:1", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 2
styles = ["photorealistic", "artistic", "cartoon", "minimalist", "vintage", "futuristic"]
defaults = {{ steps = 2, guidance = 4.0, strength = 0.75 }}

[models.flux-schnell]
source = "{model_dir}"
tasks = ["text-to-image", "image-to-image"]
aspect_ratios = ["1:1", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 0.6
styles = ["photorealistic", "artistic", "cartoon", "minimalist", "vintage", "futuristic"]
defaults = {{ steps = 1 }}

[models.nanobanana]
source = "{model_dir}"
tasks = ["text-to-image"]
aspect_ratios = ["1:1", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 4
defaults = {{ steps = 2 }}

[models.nanobanana-pro]
source = "{model_dir}"
tasks = ["text-to-image"]
aspect_ratios = ["1:1", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 14
defaults = {{ steps = 2 }}

[models.placewise-small]
source = "{model_dir}"
aspect_ratios = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 1
styles = []
defaults = {{ steps = 1, guidance = 4.0 }}

[models.placewise-medium]
source = "{model_dir}"
aspect_ratios = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 2
styles = []
defaults = {{ steps = 2, guidance = 4.0 }}

[models.placewise-large]
source = "{model_dir}"
aspect_ratios = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 4
styles = ["photorealistic"]
defaults = {{ steps = 2, guidance = 4.0 }}
''')
    return path


def key_headers(key: str) -> dict[str, str]:
    """The key in every dialect's header form (Bearer, X-API-Key, X-Client-Authorization)."""
    return {"Authorization": f"Bearer {key}", "X-API-Key": key, "X-Client-Authorization": key}


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Poll `predicate` until true; fail naming `what` after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextmanager
def serve(app: Any, startup_timeout: float = 60.0) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (a free port) until the block ends; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="none", http="h11")
    server = uvicorn.Server(config)
    # uvicorn installs signal handlers only in the main thread; this one is not.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
