"""Where the client finds the server and its key when the caller does not say.

Order: explicit argument, then `TRAJX_URL` / `TRAJX_API_KEY`, then the embedded
default (`trajx serve` on this machine): its URL and the local key file it writes
to `<data dir>/local-api-key`, the data dir being `$TRAJX_DATA_DIR` or `./var`.
That key file is only ever sent to a loopback address: a key for this machine's
server must not leak to whatever remote host `TRAJX_URL` names.
"""

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8000"
LOCAL_KEY_FILENAME = "local-api-key"


def data_dir() -> Path:
    """The embedded default's data directory (`$TRAJX_DATA_DIR`, else `./var`)."""
    return Path(os.environ.get("TRAJX_DATA_DIR") or "var")


def local_key_path() -> Path:
    return data_dir() / LOCAL_KEY_FILENAME


def resolve_url(url: str | None) -> str:
    return (url or os.environ.get("TRAJX_URL") or DEFAULT_URL).rstrip("/")


def is_loopback(url: str) -> bool:
    """Whether `url` names this machine (`localhost`, 127.0.0.0/8, ::1)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def resolve_api_key(api_key: str | None, url: str) -> str | None:
    """The key to send to `url`, or None when none is configured (the server will answer 401)."""
    if api_key:
        return api_key
    if os.environ.get("TRAJX_API_KEY"):
        return os.environ["TRAJX_API_KEY"]
    path = local_key_path()
    if is_loopback(url) and path.is_file():
        return path.read_text().strip() or None
    return None
