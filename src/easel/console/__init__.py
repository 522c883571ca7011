"""The web console (docs/console.md): pages served at `/` and `/console/...`.

Server-rendered Jinja2 templates give each page its markup; small vanilla-JS modules (static/js/, no
build step) fill it by calling the public native API with the API key the user signed in with, kept in
the browser's session storage. The console has no back door: this package imports nothing of Easel but
its settings and the scopes' names, and every asset it needs is served from here (no CDN), under a
Content-Security-Policy that lets a page talk to this server only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import Scope

from easel import __version__
from easel.domain.keys import DEFAULT_SCOPES, SCOPES
from easel.settings import Settings

HERE = Path(__file__).parent

# page name -> (path, template, title, the scope its nav entry needs)
PAGES: dict[str, tuple[str, str, str, str | None]] = {
    "playground": ("/console/", "playground.html", "Playground", "generations:write"),
    "gallery": ("/console/gallery", "gallery.html", "Gallery", "images:read"),
    "queue": ("/console/queue", "queue.html", "Queue", "generations:read"),
    "admin": ("/console/admin", "admin.html", "Admin", "admin"),
}


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def content_security_policy(settings: Settings) -> str:
    """Scripts, styles and requests: this server only. Images may also come from where the server's
    links point (EASEL_PUBLIC_URL, presigned S3 URLs), and from data:/blob: (previews, the mask)."""
    images = ["'self'", "data:", "blob:"]
    extra = [_origin(settings.public_url)]
    if settings.storage_url and settings.storage_url.startswith("s3://") and settings.s3_presign:
        endpoint = settings.s3_public_endpoint_url or settings.s3_endpoint_url
        extra.append(_origin(endpoint) if endpoint else "https://*.amazonaws.com")
    images += [o for o in extra if o and o not in images]
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(images)}",
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class _Static(StaticFiles):
    """The console's assets, revalidated on every load (they change with the server's version)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install(app: FastAPI, settings: Settings) -> None:
    """Add the console's pages and assets to the app (nothing when EASEL_CONSOLE_ENABLED is false)."""
    if not settings.console_enabled:
        return
    templates = Jinja2Templates(directory=HERE / "templates")
    headers = {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # signed image links never leak through Referer
        "Cache-Control": "no-store",
    }
    router = APIRouter(include_in_schema=False)

    def render(request: Request, template: str, page: str, title: str, **context: object) -> HTMLResponse:
        nav = [(name, path, label, scope) for name, (path, _t, label, scope) in PAGES.items()]
        return templates.TemplateResponse(
            request,
            template,
            {
                "page": page,
                "title": title,
                "nav": nav,
                "version": __version__,
                "scopes": SCOPES,
                "default_scopes": DEFAULT_SCOPES,
                **context,
            },
            headers=headers,
        )

    @router.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    @router.get("/console")
    async def console_root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    @router.get("/console/signin", response_class=HTMLResponse)
    async def signin(request: Request) -> HTMLResponse:
        return render(request, "signin.html", "signin", "Sign in")

    @router.get("/console/images/{image_id}", response_class=HTMLResponse)
    async def image_page(request: Request, image_id: str) -> HTMLResponse:
        return render(request, "image.html", "gallery", "Image", image_id=image_id)

    def page_route(name: str, template: str, title: str) -> Callable[[Request], Awaitable[HTMLResponse]]:
        async def page(request: Request) -> HTMLResponse:
            return render(request, template, name, title)

        return page

    for name, (path, template, title, _scope) in PAGES.items():
        router.add_api_route(
            path, page_route(name, template, title), methods=["GET"], response_class=HTMLResponse
        )

    app.include_router(router)
    app.mount("/console/static", _Static(directory=HERE / "static"), name="console-static")
