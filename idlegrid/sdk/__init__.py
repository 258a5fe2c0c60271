"""The idlegrid SDK: a typed httpx client for the control plane."""

from idlegrid.sdk.client import Client, KeypairAuth

__all__ = ["Client", "KeypairAuth"]
