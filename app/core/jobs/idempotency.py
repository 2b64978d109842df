"""`Idempotency-Key` on creates: a retry with the same key and body gets the original resource.

A record maps (tenant, key, route) to the hash of the request and the id of what it
created. The same key with a different request is refused with 422, never replayed.
"""

import hashlib
import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.persistence.models import IdempotencyKey, utcnow
from trajx.errors import InvalidInput

MAX_KEY_LENGTH = 255


def check_key(key: str | None) -> str | None:
    """Validate an Idempotency-Key header value (None when absent); InvalidInput if unusable."""
    if key is None:
        return None
    if not (0 < len(key) <= MAX_KEY_LENGTH and key.isprintable()):
        raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
                           code="invalid_idempotency_key",
                           errors=[{"field": "Idempotency-Key", "message": "invalid value"}])
    return key


def request_hash(document: Any) -> str:
    """A stable hash of a JSON-able request description."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replayed_resource(session: Session, tenant_id: str, key: str, path: str, req_hash: str) -> str | None:
    """The id created earlier under this key, or None; InvalidInput `idempotency_key_reused` on a
    different body."""
    record = session.scalar(select(IdempotencyKey).where(
        IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key, IdempotencyKey.path == path))
    if record is None:
        return None
    if record.request_hash != req_hash:
        raise InvalidInput(f"Idempotency-Key {key!r} was already used with a different request on {path}",
                           code="idempotency_key_reused", errors=[{"field": "Idempotency-Key", "message": "reused with a different request"}])
    return record.resource_id


def remember(session: Session, tenant_id: str, key: str, path: str, req_hash: str, resource_id: str) -> None:
    """Record the key in the caller's transaction (unique per tenant, key and route)."""
    session.add(IdempotencyKey(tenant_id=tenant_id, key=key, path=path, request_hash=req_hash,
                               resource_id=resource_id, created_at=utcnow()))


def rebind(session: Session, tenant_id: str, key: str, path: str, resource_id: str) -> None:
    """Point an existing key at a new resource (its first one was deleted), in the caller's transaction."""
    session.execute(update(IdempotencyKey).where(
        IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key, IdempotencyKey.path == path,
    ).values(resource_id=resource_id))
