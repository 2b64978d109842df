"""Short-lived signed download links: a browser follows a plain link (it streams the file
to disk) where it could not send the Bearer header. The link names the tenant, the artifact
and an expiry, signed with HMAC-SHA256; nothing is stored."""

import base64
import hashlib
import hmac
import json
import secrets
import time

from app.api.problems import ProblemError

LINK_SECONDS = 300
_PROCESS_KEY = secrets.token_bytes(32)


def _key(secret: str | None) -> bytes:
    return secret.encode() if secret is not None else _PROCESS_KEY


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_link(secret: str | None, tenant_id: str, artifact_id: str, now: float | None = None) -> tuple[str, int]:
    """A token for `artifact_id` of `tenant_id`, and when it expires (unix seconds)."""
    expires = int(now if now is not None else time.time()) + LINK_SECONDS
    claims = _b64(json.dumps({"t": tenant_id, "a": artifact_id, "e": expires}, separators=(",", ":")).encode())
    return f"{claims}.{_b64(hmac.digest(_key(secret), claims.encode(), hashlib.sha256))}", expires


def verify_link(secret: str | None, token: str, artifact_id: str) -> str:
    """The tenant a valid, unexpired token for `artifact_id` was issued to; else 403 `invalid_link`."""
    claims, _, signature = token.partition(".")
    expected = _b64(hmac.digest(_key(secret), claims.encode(), hashlib.sha256))
    if not hmac.compare_digest(signature.encode(), expected.encode()):  # bytes: any text a URL carries
        raise ProblemError(403, "invalid_link", "this download link is not valid (or the server restarted "
                           "since it was made): ask the dashboard for a new one")
    data = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    if data["a"] != artifact_id or data["e"] < time.time():
        raise ProblemError(403, "invalid_link", "this download link has expired: ask the dashboard for a new one")
    return data["t"]
