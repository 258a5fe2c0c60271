"""idlegrid: an open network that rents out idle GPUs and CPUs as Ray clusters.

``idlegrid.Client`` is the SDK's client (``idlegrid.sdk.Client``), imported on
first use so that ``import idlegrid`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from idlegrid.version import __version__

__all__ = ["Client", "__version__"]

if TYPE_CHECKING:
    from idlegrid.sdk import Client


def __getattr__(name: str) -> Any:
    if name == "Client":
        from idlegrid.sdk import Client

        return Client
    raise AttributeError(f"module 'idlegrid' has no attribute {name!r}")
