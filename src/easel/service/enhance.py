"""Prompt enhancement: the built-in template enhancer, and an optional LLM enhancer.

With `EASEL_ENHANCE_URL` set (any OpenAI-compatible chat-completions API: OpenAI, a gateway, a local
llama.cpp or vLLM server), prompts are rewritten by that model following the template's brief. Any
failure (network, timeout, status, an empty or over-long answer) falls back to the deterministic
built-in enhancer, so a create never fails because the enhancer did.
"""

from __future__ import annotations

import logging

import httpx

from easel.domain.enhance import TEMPLATES, enhance
from easel.settings import Settings

log = logging.getLogger(__name__)

BRIEFS: dict[str, str] = {
    "general": "balanced detail, lighting and composition",
    "photorealistic": "photography terms: lens, aperture, lighting, depth of field",
    "illustration": "art style, linework, composition and colour palette",
    "minimalist": "clean, simple, essential elements, negative space",
    "sticker": "bold outlines, limited colours, flat vector style",
    "product": "studio lighting, materials, clean backdrop, commercial look",
    "comic": "action lines, expressions, inks, panel composition",
}
MAX_ENHANCED_CHARS = 2000


class PromptEnhancer:
    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        self.url = settings.enhance_url.rstrip("/") if settings.enhance_url else None
        self.key = settings.enhance_api_key
        self.model = settings.enhance_model
        self.timeout = settings.enhance_timeout_seconds
        self._transport = transport

    def enhance(self, prompt: str, template: str) -> tuple[str, str]:
        """(enhanced prompt, which enhancer made it: "llm" or "builtin")."""
        if self.url is not None:
            try:
                return self._llm(prompt, template), "llm"
            except Exception as e:  # any failure: the built-in enhancer answers instead
                log.warning(
                    "LLM prompt enhancer failed (%s: %s); using the built-in one", type(e).__name__, e
                )
        return enhance(prompt, template), "builtin"

    def _llm(self, prompt: str, template: str) -> str:
        brief = BRIEFS.get(template, BRIEFS["general"])
        body = {
            "model": self.model,
            "temperature": 0,
            "messages": [
                {
                    "role": "system",
                    "content": (
                        "You rewrite prompts for an image generator. Keep the user's subject and every "
                        f"stated attribute; add {brief}. Answer with the rewritten prompt only, one "
                        "paragraph, "
                        "under 80 words."
                    ),
                },
                {"role": "user", "content": prompt},
            ],
        }
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        with httpx.Client(timeout=self.timeout, transport=self._transport, follow_redirects=False) as client:
            r = client.post(f"{self.url}/chat/completions", json=body, headers=headers)
            r.raise_for_status()
            text = str(r.json()["choices"][0]["message"]["content"]).strip().strip('"').strip()
        if not text or len(text) > MAX_ENHANCED_CHARS:
            raise ValueError(f"unusable answer of {len(text)} characters")
        return text


__all__ = ["TEMPLATES", "PromptEnhancer"]
