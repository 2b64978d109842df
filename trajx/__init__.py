"""trajx: transfer a learning trajectory to a new initialization.

Importing `trajx` is cheap and never imports torch: the engine lives in
`trajx.engine` (torch, scipy), the HTTP client in `trajx.client` (httpx only),
and the job spec in `trajx.job_spec` (pydantic only), which the API reuses.
"""

from trajx.version import __version__

__all__ = ["Client", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import trajx` stays torch-free for the API and the client.
    if name == "Client":
        from trajx.client import Client

        return Client
    raise AttributeError(f"module 'trajx' has no attribute {name!r}")
