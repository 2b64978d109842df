"""API keys: `trx_` + 43 url-safe characters, stored as sha256 hex of the whole key.

Keys carry 256 random bits, so a fast unsalted hash is enough: nobody brute-forces
that space, and lookup stays one indexed equality.
"""

import hashlib
import secrets
import time
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.persistence.models import ApiKey, Tenant, utcnow

KEY_PREFIX = "trx_"
SHOWN_PREFIX_CHARS = 12
# Writing last_used_at on every request would turn each poll into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def issue_key(session: Session, tenant: Tenant, name: str = "") -> tuple[ApiKey, str]:
    """Create a key for `tenant`; returns (row, plaintext key). The plaintext is never stored."""
    key = generate_key()
    row = ApiKey(tenant_id=tenant.id, prefix=key[:SHOWN_PREFIX_CHARS], key_hash=hash_key(key), name=name,
                 created_at=utcnow())
    session.add(row)
    session.flush()
    return row, key


def authenticate(session: Session, key: str) -> ApiKey | None:
    """The live key row for `key`, or None (unknown, malformed or revoked). Commits last_used_at."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.commit()
    return row


class KeyCache:
    """Recently authenticated keys: key hash -> tenant id, for `ttl_seconds`.

    Status polling is the hot path; a hit authenticates without touching the database.
    The price is that a revoked key keeps working for up to `ttl_seconds` (0 disables).
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl_seconds = ttl_seconds
        self._entries: dict[str, tuple[str, float]] = {}

    def get(self, key: str) -> str | None:
        entry = self._entries.get(hash_key(key))
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key: str, tenant_id: str) -> None:
        if self.ttl_seconds <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()  # crude, but bounded; the next requests refill it
        self._entries[hash_key(key)] = (tenant_id, time.monotonic() + self.ttl_seconds)
