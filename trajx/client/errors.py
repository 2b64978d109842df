"""Errors the client raises: one for problem+json answers, a few for local failures.

Every error carries the CLI exit code it maps to, so the command line and a
Python caller agree on what each failure means (see `trajx.cli.remote`).
"""

from typing import Any

# Stable exit codes of the `trajx` remote commands (docs/usage.md and docs/ci.md, "Exit codes").
EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_JOB_CANCELLED = 3
EXIT_WAIT_TIMEOUT = 4
EXIT_UNREACHABLE = 5
EXIT_INTERNAL = 6  # an unexpected error on this side: a bug to report, not a verdict on the job


class ClientError(Exception):
    """Base of every client error; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_USAGE
    code = "client_error"

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "detail": str(self)}


class ApiError(ClientError):
    """The server answered with an error status; `problem` is the full problem+json body.

    4xx answers (bad input, auth, not found, conflict) are the caller's to fix: exit 2.
    5xx answers that survive the retries mean the service is unwell: exit 5.
    """

    def __init__(self, status: int, code: str, detail: str, problem: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.problem = problem
        self.exit_code = EXIT_UNREACHABLE if status >= 500 else EXIT_USAGE

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The per-field/artifact/tensor messages of a validation problem, if any."""
        return list(self.problem.get("errors") or [])

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, **self.problem, "code": self.code, "detail": self.detail}


class ServerUnreachable(ClientError):
    """No HTTP answer at all (connection refused, DNS, timeout) after the retries."""

    exit_code = EXIT_UNREACHABLE
    code = "server_unreachable"


class WaitTimeout(ClientError):
    """`Client.wait` ran out of time; `job` is the last state seen."""

    exit_code = EXIT_WAIT_TIMEOUT
    code = "wait_timeout"

    def __init__(self, message: str, job: Any) -> None:
        super().__init__(message)
        self.job = job


class ChecksumMismatch(ClientError):
    """A downloaded file's sha256 differs from the artifact's; the partial file is removed."""

    exit_code = EXIT_UNREACHABLE
    code = "checksum_mismatch"


class InvalidLocalInput(ClientError):
    """A local file or spec the client was asked to send cannot be used (exit 2)."""

    code = "invalid_local_input"
