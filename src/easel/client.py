"""`easel.client`: the Python client, where the server package is installed too.

The client itself is the separate distribution `easel-client` (clients/python, import name
`easel_client`, httpx only), so that an application installs it without the server's dependencies;
this module re-exports it for code that has Easel installed anyway (docs/client.md)."""

from __future__ import annotations

try:
    from easel_client import *  # noqa: F403
    from easel_client import __all__  # noqa: F401
except ImportError as e:  # the server installed without its client
    raise ImportError("easel.client needs the client package: pip install -e clients/python") from e
