"""The Python client of the trajx HTTP API: `Client`, its typed resources and errors.

Only httpx, pydantic and rich beyond the standard library; never torch.
"""

from trajx.client.api import Client
from trajx.client.errors import (
    ApiError,
    ChecksumMismatch,
    ClientError,
    InvalidLocalInput,
    ServerUnreachable,
    WaitTimeout,
)
from trajx.client.models import Artifact, Event, Job

__all__ = [
    "ApiError", "Artifact", "ChecksumMismatch", "Client", "ClientError", "Event",
    "InvalidLocalInput", "Job", "ServerUnreachable", "WaitTimeout",
]
