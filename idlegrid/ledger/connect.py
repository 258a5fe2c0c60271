"""Which chain adapter a URL names: ``make_chain``.

It stands above the contract (``chain.py``) and both adapters (``litesvm.py``,
``rpc.py``), which import the contract and never this; so the contract does not
import its own implementations. Each adapter is imported only when its URL is
asked for: a control plane on an RPC cluster never loads the embedded VM.
"""

from __future__ import annotations

from pathlib import Path

from solders.keypair import Keypair

from idlegrid.ledger.chain import Chain


def make_chain(url: str, authority: Keypair, state_file: Path | None = None) -> Chain:
    """The adapter a URL names: ``litesvm`` or ``embedded`` (state in ``state_file``), or
    ``http(s)://…`` for an RPC cluster."""
    if url in ("litesvm", "embedded"):
        from idlegrid.ledger.litesvm import LiteSvmChain

        return LiteSvmChain(authority, state_file)
    if url.startswith(("http://", "https://")):
        from idlegrid.ledger.rpc import RpcChain

        return RpcChain(authority, url)
    raise ValueError(f"unknown chain url {url!r}: use 'litesvm', 'embedded' or http(s)://…")
