"""A small real HTTP server for the gateway's failure cases (tests/gateway): it answers the OpenAI Images
API and Replicate's predictions API the way a provider misbehaves, as a test tells it to.

`FakeProvider.modes` is a list of what the next calls do, one per call (then `default`):

- `ok`: images (PNG, solid colour, the size asked), `x-request-id: fake-N`;
- `429`: Too Many Requests with `Retry-After: 0`; `500`: an internal error;
- `malformed`: 200 with a body that is not the API's (no `data`);
- `policy`: 400 `content_policy_violation`, its message quoting the key it was sent (the gateway must
  not pass the key on);
- `slow`: holds the call until the client goes away (recorded in `disconnects`).

Replicate's shape: a prediction made `ok` succeeds after two polls with an image URL on this server; one
made `slow` runs until canceled (its cancel is recorded in `cancels`); `failed` ends failed.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]


def picture(width: int, height: int, index: int) -> Image.Image:
    """Image `index` of an answer: its colour, and a white block in a corner of its own (so that images
    differ in shape, not only in colour: the output check's perceptual hash sees shapes)."""
    image = Image.new("RGB", (width, height), COLOURS[index % 4])
    w, h = width // 2, height // 2
    x, y = (index % 2) * w, ((index // 2) % 2) * h
    image.paste((255, 255, 255), (x, y, x + w, y + h))
    return image


def png(width: int, height: int, index: int) -> bytes:
    out = io.BytesIO()
    picture(width, height, index).save(out, "PNG")
    return out.getvalue()


class FakeProvider:
    def __init__(self) -> None:
        self.modes: list[str] = []
        self.default = "ok"
        self.calls: list[dict[str, Any]] = []  # each call: path, headers, body
        self.disconnects = 0
        self.cancels: list[str] = []
        self.predictions: dict[str, dict[str, Any]] = {}
        self.base_url = ""
        self.lock = threading.Lock()
        self.app = self._app()

    def next_mode(self) -> str:
        with self.lock:
            return self.modes.pop(0) if self.modes else self.default

    def _record(self, request: Request, body: Any) -> int:
        with self.lock:
            self.calls.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
            return len(self.calls)

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/images/generations")
        async def generate(request: Request) -> Response:
            body = await request.json()
            n = self._record(request, body)
            mode = self.next_mode()
            if mode == "429":
                return JSONResponse({"error": {"message": "slow down"}}, 429, headers={"Retry-After": "0"})
            if mode == "500":
                return JSONResponse({"error": {"message": "internal"}}, 500)
            if mode == "malformed":
                return JSONResponse({"created": 1, "images": []})
            if mode == "policy":
                key = request.headers.get("authorization", "")
                message = f"Your request was rejected by the safety system (you sent {key})"
                return JSONResponse({"error": {"code": "content_policy_violation", "message": message}}, 400)
            if mode == "slow":
                return await self._hold(request)
            width, height = (int(v) for v in str(body.get("size", "64x64")).split("x"))
            data = [
                {"b64_json": base64.b64encode(png(width, height, i)).decode()}
                for i in range(int(body.get("n", 1)))
            ]
            return JSONResponse({"created": 1, "data": data}, headers={"x-request-id": f"fake-{n}"})

        @app.post("/v1/models/{owner}/{name}/predictions")
        async def create_prediction(owner: str, name: str, request: Request) -> Response:
            body = await request.json()
            n = self._record(request, body)
            mode = self.next_mode()
            if mode in ("429", "500"):
                return JSONResponse({"detail": mode}, int(mode), headers={"Retry-After": "0"})
            pid = f"p{n}"
            self.predictions[pid] = {"mode": mode, "polls": 0, "input": body["input"], "status": "starting"}
            return JSONResponse(self._prediction(pid), 201)

        @app.get("/v1/predictions/{pid}")
        async def get_prediction(pid: str) -> Response:
            p = self.predictions[pid]
            p["polls"] += 1
            if p["status"] == "starting":
                p["status"] = "processing"
            elif p["mode"] == "ok" and p["polls"] >= 2:
                p["status"] = "succeeded"
            elif p["mode"] == "failed":
                p["status"] = "failed"
            return JSONResponse(self._prediction(pid))

        @app.post("/v1/predictions/{pid}/cancel")
        async def cancel_prediction(pid: str) -> Response:
            self.cancels.append(pid)
            self.predictions[pid]["status"] = "canceled"
            return JSONResponse(self._prediction(pid))

        @app.get("/files/{pid}/{index}.png")
        async def file(pid: str, index: int) -> Response:
            inp = self.predictions[pid]["input"]
            return Response(png(inp["width"], inp["height"], index), media_type="image/png")

        return app

    def _prediction(self, pid: str) -> dict[str, Any]:
        p = self.predictions[pid]
        output = None
        if p["status"] == "succeeded":
            output = [f"{self.base_url}/files/{pid}/{i}.png" for i in range(p["input"]["num_outputs"])]
        return {
            "id": pid,
            "status": p["status"],
            "output": output,
            "error": "the model crashed" if p["status"] == "failed" else None,
            "urls": {
                "get": f"{self.base_url}/v1/predictions/{pid}",
                "cancel": f"{self.base_url}/v1/predictions/{pid}/cancel",
            },
        }

    async def _hold(self, request: Request) -> Response:
        for _ in range(600):
            if await request.is_disconnected():
                with self.lock:
                    self.disconnects += 1
                return Response(status_code=499)
            await asyncio.sleep(0.05)
        return JSONResponse({"error": {"message": "held too long"}}, 500)
