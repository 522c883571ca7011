"""Typed dependencies shared by every dialect's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from easel.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_project(runtime: RuntimeDep) -> str:
    """The project a request acts for. Until API keys exist, every request acts for the local project."""
    return runtime.default_project_id


ProjectDep = Annotated[str, Depends(get_project)]


def base_url(request: Request, runtime: Runtime) -> str:
    """The public base URL for links: configured, else the one the client used."""
    return (runtime.settings.public_url or str(request.base_url)).rstrip("/")


def image_url(request: Request, runtime: Runtime, image_id: str, ttl: int | None = None) -> str:
    """A signed, expiring link to an image's bytes."""
    return f"{base_url(request, runtime)}/api/v1/images/{image_id}/file?{runtime.signer.query(image_id, ttl)}"
