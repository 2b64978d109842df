"""Fixtures for end-to-end CLI tests: one real embedded server, tiny digits inputs, a CLI runner.

The server is `trajx serve` in a child process (SQLite, temp data dir, free port,
embedded worker), started once per test module that asks for it. The CLI runs as
a real `trajx` process, so exit codes and the stdout/stderr split are the real ones.
"""

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from trajx.demo.server import EmbeddedServer, trajx_command

ARCH = {"name": "mlp", "config": {"in_features": 64, "hidden": [16], "num_classes": 10}}


@pytest.fixture(scope="session")
def local_server(tmp_path_factory) -> EmbeddedServer:
    # Tiny jobs: one intra-op thread each avoids contention on a small shared machine.
    with EmbeddedServer(tmp_path_factory.mktemp("server"), env={"OMP_NUM_THREADS": "1"}) as running:
        yield running


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory, s3_endpoint, s3_bucket) -> EmbeddedServer:
    """The same server with its artifacts in a SeaweedFS bucket (tests/conftest.py)."""
    from tests.conftest import s3_settings

    data_dir = tmp_path_factory.mktemp("s3-server")
    env = {f"TRAJX_{name.upper()}": str(value) for name, value in s3_settings(s3_endpoint, s3_bucket, data_dir).items()}
    with EmbeddedServer(data_dir, env={"OMP_NUM_THREADS": "1", **env}) as running:
        yield running


@pytest.fixture
def server(request, store_backend) -> EmbeddedServer:
    """The local-store server; parametrize `store_backend` with "s3" for the S3 one."""
    return request.getfixturevalue(f"{store_backend}_server")


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        """The one JSON document stdout must hold (fails the test otherwise)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one JSON line on stdout, got: {self.stdout!r}\nstderr: {self.stderr}"
        return json.loads(lines[0])


@pytest.fixture
def cli(server, tmp_path):
    """`cli(*args, env=...)` runs `trajx ARGS` against the test server, from tmp_path."""
    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> CliResult:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "TRAJX_"))}
        environ.update({"TRAJX_URL": server.url, "TRAJX_API_KEY": server.api_key, **(env or {})})
        done = subprocess.run([*trajx_command(), *args], cwd=tmp_path, env=environ, capture_output=True,
                              text=True, timeout=timeout, check=False)
        return CliResult(done.returncode, done.stdout, done.stderr)
    return run


@pytest.fixture(scope="session")
def inputs_dir(tmp_path_factory) -> Path:
    """θ⁰, θᵀ (two seeded inits stand in for a trained run) and digits shards, as safetensors."""
    from trajx.demo.source import load_digits_split
    from trajx.engine.zoo import init_state_dict

    out = tmp_path_factory.mktemp("inputs")
    save_file(init_state_dict(ARCH["name"], ARCH["config"], 0), str(out / "theta0.safetensors"))
    save_file(init_state_dict(ARCH["name"], ARCH["config"], 100), str(out / "thetaT.safetensors"))
    split = load_digits_split()
    split.save_shards(out)
    save_file({"inputs": split.train_inputs[:64], "targets": torch.full((64,), 99, dtype=torch.int64)},
              str(out / "bad_targets.safetensors"))
    return out


def write_spec(directory: Path, inputs: Path, name: str = "spec.json", **overrides) -> Path:
    """A small FGMT spec naming local files in `inputs` (relative to the spec file)."""
    spec = {
        "method": "fgmt",
        "arch": ARCH,
        "source": [os.path.relpath(inputs / "theta0.safetensors", directory),
                   os.path.relpath(inputs / "thetaT.safetensors", directory)],
        "targets": [{"seed": 1}],
        "train_data": os.path.relpath(inputs / "train.safetensors", directory),
        "params": {"steps": 3, "batch_size": 64, "device": "cpu"},
        **overrides,
    }
    path = directory / name
    path.write_text(json.dumps(spec))
    return path
