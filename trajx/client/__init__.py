"""The Python client of the trajx HTTP API: `Client`, its typed resources and errors.

httpx (with httpx-sse and tenacity) and pydantic: no rich, never torch (progress
bars and spec validation belong to the CLI). Converting a `.pt` file, the one
thing that needs torch, imports it late (`trajx.client.convert`); mapping names and
merging Hugging Face shards (`prepare_checkpoint`) need no torch.
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
from trajx.client.keymap import KeyMapping
from trajx.client.models import Artifact, Event, Job, ResultFile
from trajx.client.prepare import PreparedFile, prepare_checkpoint

__all__ = [
    "ApiError", "Artifact", "ChecksumMismatch", "Client", "ClientError", "Event",
    "InvalidLocalInput", "Job", "KeyMapping", "PreparedFile", "ResultFile", "ServerUnreachable",
    "WaitTimeout", "prepare_checkpoint",
]
