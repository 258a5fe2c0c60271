"""Identity: an Ed25519 (Solana) keypair, in the Solana CLI's JSON keypair file.

A device, a wallet, an owner and the control plane's authority are each such a
keypair. The file is a JSON array of the 64 secret-key bytes, as ``solana-keygen``
writes it, so the same file works with the Solana CLI as the payout wallet. It is
created with mode 0600 and refused when others can read it.

The agent's command, the CLI, the server (its authority) and the local network
all read these files, so they live here, beneath all of them, not in the worker.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from solders.keypair import Keypair


class KeypairFileError(Exception):
    pass


def load_or_create_keypair(path: Path) -> tuple[Keypair, bool]:
    """The keypair at ``path``, creating it if absent. True when it was created."""
    if path.exists():
        return load_keypair(path), False
    path.parent.mkdir(parents=True, exist_ok=True)
    keypair = Keypair()
    data = json.dumps(list(bytes(keypair))).encode()
    # O_EXCL: two agents racing on one path must not both write a key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return keypair, True


def load_keypair(path: Path) -> Keypair:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeypairFileError(
            f"{path} is readable by others (mode {oct(mode & 0o777)}); run: chmod 600 {path}"
        )
    try:
        raw = json.loads(path.read_text())
        if not (isinstance(raw, list) and len(raw) == 64 and all(isinstance(b, int) for b in raw)):
            raise ValueError("expected a JSON array of 64 integers")
        return Keypair.from_bytes(bytes(raw))
    except (ValueError, json.JSONDecodeError) as exc:
        raise KeypairFileError(f"{path} is not a Solana keypair file: {exc}") from exc
