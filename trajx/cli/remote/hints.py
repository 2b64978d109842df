"""Hints for the usual setup mistakes, printed under the error they cause: a URL that ends
in /v1, https against a plain-http server, no API key or a refused one."""

from urllib.parse import urlsplit, urlunsplit

from trajx.client import ApiError, ClientError, ServerUnreachable
from trajx.client.config import local_key_path

_TLS_MARKERS = ("WRONG_VERSION_NUMBER", "record layer failure", "SSL", "TLS")


def _root(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path.removesuffix("/v1"), "", ""))


def setup_hint(error: ClientError, url: str, key_sent: bool) -> str | None:
    """What to change, when `error` looks like a setup mistake (else None)."""
    if isinstance(error, ApiError) and error.status == 404 and urlsplit(url).path.rstrip("/").endswith("/v1"):
        return f"--url is the server's address without /v1: try --url {_root(url)}"
    if isinstance(error, ServerUnreachable) and url.startswith("https://") and any(
            marker in str(error) for marker in _TLS_MARKERS):
        return f"the server does not speak https here (a plain `trajx serve` does not): try --url http://{url[8:]}"
    if isinstance(error, ApiError) and error.status == 401:
        if not key_sent:
            return ("no API key was sent: pass --api-key, set TRAJX_API_KEY, or, for a `trajx serve` on this "
                    f"machine, run from where its key file is ({local_key_path()}; TRAJX_DATA_DIR names the dir)")
        return ("the server refused this API key (revoked, mistyped, or another server's): check --api-key / "
                "TRAJX_API_KEY, or ask for a new one (`trajx admin create-key`)")
    if isinstance(error, ServerUnreachable) and "refused" in str(error).lower():
        return "nothing answers at that address: is the server running (`trajx serve`) and is --url right?"
    return None
