"""The LLM prompt enhancer against a real OpenAI-compatible HTTP server, and its fallback."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from easel.domain.enhance import enhance
from easel.domain.spec import GenerationSpec
from easel.service.enhance import PromptEnhancer
from easel.settings import Settings


class ChatServer:
    """Answers POST /v1/chat/completions with a fixed reply (or a status), recording requests."""

    def __init__(self) -> None:
        self.reply: str | None = "A crisp studio photo of a red circle, soft light"
        self.status = 200
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                payload = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": outer.reply}}]}
                )
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_llm_enhancer_rewrites_with_the_templates_brief(chat: ChatServer) -> None:
    enhancer = PromptEnhancer(Settings(enhance_url=chat.url, enhance_api_key="k", enhance_model="m"))
    assert enhancer.enhance("a red circle", "product") == (chat.reply, "llm")
    [req] = chat.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k" and req["model"] == "m"
    assert (
        "studio lighting" in req["messages"][0]["content"] and req["messages"][1]["content"] == "a red circle"
    )


@pytest.mark.parametrize("failure", ["status", "empty", "too-long", "down"])
def test_any_failure_falls_back_to_the_builtin_enhancer(chat: ChatServer, failure: str) -> None:
    url = chat.url
    if failure == "status":
        chat.status = 500
    elif failure == "empty":
        chat.reply = "  "
    elif failure == "too-long":
        chat.reply = "x" * 5000
    else:
        url = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    enhancer = PromptEnhancer(Settings(enhance_url=url, enhance_timeout_seconds=5))
    assert enhancer.enhance("a red circle", "comic") == (enhance("a red circle", "comic"), "builtin")


def test_without_a_url_the_builtin_enhancer_is_used() -> None:
    assert PromptEnhancer(Settings()).enhance("a cat", "general") == (enhance("a cat", "general"), "builtin")


def test_a_generation_stores_the_llm_prompt_and_the_original(runtime, chat: ChatServer) -> None:
    runtime.generations.enhancer = PromptEnhancer(Settings(enhance_url=chat.url))
    gen = runtime.generations.submit(
        runtime.principal(),
        GenerationSpec(prompt="a red circle", enhance=True, enhance_template="photorealistic", size="64x64"),
    )
    assert gen.spec.prompt == chat.reply and gen.spec.original_prompt == "a red circle"
    assert gen.spec.enhance_template == "photorealistic"
