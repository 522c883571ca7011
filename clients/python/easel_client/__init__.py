"""The Python client of Easel's native API (`/api/v1`).

    from easel_client import Easel

    with Easel("http://127.0.0.1:8000", api_key="easel_sk_...") as easel:
        gen = easel.generate("a large red circle on a blue background", seed=42)
        gen.images[0].save("circle.png")

`AsyncEasel` has the same methods for asyncio. Its only dependency is httpx; docs/client.md documents it.
"""

from easel_client._async import AsyncEasel
from easel_client._base import __version__
from easel_client._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    EaselError,
    FieldProblem,
    GenerationCanceled,
    GenerationError,
    GenerationFailed,
    InternalServerError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    WaitTimeout,
)
from easel_client._sync import Easel
from easel_client._types import (
    CompletedEvent,
    Generation,
    Image,
    Page,
    PreviewEvent,
    Progress,
    ProgressEvent,
    QueuedEvent,
    StreamEvent,
    UnknownEvent,
)

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncEasel",
    "AuthenticationError",
    "BadRequestError",
    "CompletedEvent",
    "ConflictError",
    "Easel",
    "EaselError",
    "FieldProblem",
    "Generation",
    "GenerationCanceled",
    "GenerationError",
    "GenerationFailed",
    "Image",
    "InternalServerError",
    "NotFoundError",
    "Page",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "PreviewEvent",
    "Progress",
    "ProgressEvent",
    "QueuedEvent",
    "RateLimitError",
    "StreamEvent",
    "UnknownEvent",
    "UnprocessableEntityError",
    "WaitTimeout",
    "__version__",
]
