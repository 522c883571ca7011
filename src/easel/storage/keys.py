"""Where image bytes live in a BlobStore: the one place that names storage keys."""

from __future__ import annotations


def generated_image_key(project_id: str, generation_id: str, index: int, ext: str) -> str:
    """Deterministic: a re-run of the same job overwrites its images instead of adding new ones."""
    return f"{project_id}/{generation_id}/{index}.{ext}"


def upload_key(project_id: str, image_id: str) -> str:
    """A client's image (uploaded, or fetched from a URL), stored as PNG."""
    return f"{project_id}/uploads/{image_id}.png"
