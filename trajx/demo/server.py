"""Run `trajx serve` (the embedded default) in a child process, for the demo and tests.

The child gets its own data directory (SQLite database, artifact store, local
key file) and port; `EmbeddedServer` waits until `/readyz` answers and the key
file exists, and stops the child's whole process group on exit (the API process
starts an embedded worker process of its own).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx

from trajx.client.config import LOCAL_KEY_FILENAME


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def trajx_command() -> list[str]:
    """The `trajx` console command of this interpreter's environment."""
    script = Path(sys.executable).with_name("trajx")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from trajx.cli import main; main()"]


class EmbeddedServer:
    """`with EmbeddedServer(data_dir) as server:` gives `server.url` and `server.api_key`.

    Raises RuntimeError with the tail of the server log when it exits or is not
    ready within `start_timeout` seconds.
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, start_timeout: float = 90.0,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = ""
        self.log_path = self.data_dir / "server.log"
        self.start_timeout = start_timeout
        self.extra_env = env or {}
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """The `trajx serve` process (its embedded worker is a child of it)."""
        return self._process.pid if self._process is not None else None

    def environment(self) -> dict[str, str]:
        # Every path explicit, so nothing lands in the caller's ./var.
        return {
            **os.environ,
            "TRAJX_DATA_DIR": str(self.data_dir),
            "TRAJX_DATABASE_URL": f"sqlite:///{self.data_dir / 'trajx.db'}",
            "TRAJX_STORAGE_DIR": str(self.data_dir / "artifacts"),
            "TRAJX_DISPATCHER": "embedded",
            **self.extra_env,
        }

    def start(self) -> "EmbeddedServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [*trajx_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            # A session of its own: stop() signals the API and its embedded worker together.
            self._process = subprocess.Popen(command, env=self.environment(), stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready()
        self.api_key = (self.data_dir / LOCAL_KEY_FILENAME).read_text().strip()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL it if still alive after `timeout`."""
        if self._process is None or self._process.poll() is not None:
            return
        pgid = self._process.pid  # the group id of the session we created
        os.killpg(pgid, signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self._process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        key_file = self.data_dir / LOCAL_KEY_FILENAME
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"trajx serve exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200 and key_file.exists():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"trajx serve not ready after {self.start_timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
