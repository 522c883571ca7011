"""The built-in prompt enhancer: deterministic, offline, template-driven.

Each template adds the vocabulary its use case needs (photography terms, art direction, product
staging...). The same prompt and template always give the same enhanced prompt.
"""

from __future__ import annotations

TEMPLATES: dict[str, str] = {
    "general": "{prompt}, detailed, balanced composition, harmonious colors, sharp focus",
    "photorealistic": (
        "A photorealistic photograph of {prompt}, captured with an 85mm lens at f/1.8, natural lighting, "
        "soft shadows, fine detail, shallow depth of field"
    ),
    "illustration": (
        "An illustration of {prompt}, clean linework, cohesive color palette, expressive composition"
    ),
    "minimalist": (
        "A minimalist image of {prompt}, simple shapes, negative space, limited palette, clean background"
    ),
    "sticker": "A sticker of {prompt}, bold outlines, flat vector style, limited colors, white border",
    "product": (
        "A product photo of {prompt}, studio lighting, clean backdrop, crisp materials, commercial look"
    ),
    "comic": "A comic panel of {prompt}, dynamic action lines, expressive faces, bold inks, halftone shading",
}


def enhance(prompt: str, template: str = "general") -> str:
    """The enhanced prompt; a prompt that already ends with the template's additions is left alone."""
    text = prompt.strip().rstrip(".")
    out = TEMPLATES[template].format(prompt=text)
    return prompt.strip() if prompt.strip() == out else out
