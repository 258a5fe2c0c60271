"""Buyers' API keys: made on a wallet's signature, stored hashed, revocable at once.

A key is ``ig_<id>_<secret>``; only its SHA-256 is stored, and it is shown once.
Every request with a key looks it up (one unique-index read): no cache, so a
revocation holds from the next request on, on every replica.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.errors import InvalidApiKey, UnknownApiKey
from idlegrid.protocol import ApiKeyView
from idlegrid.server.db.models import ApiKey

log = logging.getLogger("idlegrid.server.api_keys")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyService:
    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], float]) -> None:
        self.sessions = sessions
        self.clock = clock

    def create(self, owner: str, name: str) -> ApiKeyView:
        key_id = secrets.token_hex(4)
        key = f"ig_{key_id}_{secrets.token_urlsafe(32)}"
        now = self.clock()
        with self.sessions.begin() as db:
            db.add(
                ApiKey(id=key_id, owner=owner, name=name, key_hash=hash_key(key), created_at=now)
            )
        return ApiKeyView(id=key_id, name=name, owner=owner, created_at=now, key=key)

    def owner_of(self, key: str) -> str:
        """The buyer an API key acts for; ``InvalidApiKey`` if none (or revoked)."""
        with self.sessions() as db:
            owner = db.scalar(
                select(ApiKey.owner).where(
                    ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)
                )
            )
        if owner is None:
            raise InvalidApiKey()
        return owner

    def list(self, owner: str) -> list[ApiKeyView]:
        """The owner's keys, newest first, revoked ones included (never the keys)."""
        with self.sessions() as db:
            rows = db.scalars(
                select(ApiKey).where(ApiKey.owner == owner).order_by(ApiKey.created_at.desc())
            )
            return [_key_view(k) for k in rows]

    def revoke(self, owner: str, key_id: str) -> ApiKeyView:
        """Revoke one of the owner's keys; revoking a revoked key changes nothing."""
        with self.sessions.begin() as db:
            row = db.get(ApiKey, key_id, with_for_update=True)
            if row is None or row.owner != owner:
                raise UnknownApiKey(key_id=key_id)
            if row.revoked_at is None:
                row.revoked_at = self.clock()
                log.info("API key %s of %s revoked", key_id, owner)
            return _key_view(row)


def _key_view(k: ApiKey) -> ApiKeyView:
    return ApiKeyView(
        id=k.id, name=k.name, owner=k.owner, created_at=k.created_at, revoked_at=k.revoked_at
    )
