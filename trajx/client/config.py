"""Where the client finds the server and its key when the caller does not say.

Order: explicit argument, then `TRAJX_URL` / `TRAJX_API_KEY`, then the embedded
default (`trajx serve` on this machine): its URL and the local key file it writes
to `<data dir>/local-api-key`, the data dir being `$TRAJX_DATA_DIR` or `./var`.
"""

import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"
LOCAL_KEY_FILENAME = "local-api-key"


def data_dir() -> Path:
    """The embedded default's data directory (`$TRAJX_DATA_DIR`, else `./var`)."""
    return Path(os.environ.get("TRAJX_DATA_DIR") or "var")


def local_key_path() -> Path:
    return data_dir() / LOCAL_KEY_FILENAME


def resolve_url(url: str | None) -> str:
    return (url or os.environ.get("TRAJX_URL") or DEFAULT_URL).rstrip("/")


def resolve_api_key(api_key: str | None) -> str | None:
    """The key to send, or None when none is configured (the server will answer 401)."""
    if api_key:
        return api_key
    if os.environ.get("TRAJX_API_KEY"):
        return os.environ["TRAJX_API_KEY"]
    path = local_key_path()
    if path.is_file():
        return path.read_text().strip() or None
    return None
