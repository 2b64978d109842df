"""A client-only install: the client needs no rich and no torch, the remote CLI never imports torch.

Each check runs in a fresh interpreter, so nothing imported by other tests counts.
"""

import json
import subprocess
import sys
from pathlib import Path

from trajx.demo.server import free_port

# Makes the named top-level packages uninstalled for this interpreter: importing them fails.
_BLOCK = """
import sys
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _NotInstalled())
"""

_USE_CLIENT = """
import httpx, trajx
job = {"id": "job_1", "status": "succeeded", "created_at": "2025-01-02T03:04:05Z", "new_field": 1,
       "progress": {"step": 3, "total": 3}, "result": {"files": [{"role": "last", "target": 0,
       "path": "target-0/last.safetensors", "sha256": "0" * 64, "size": 1, "metadata": {}, "artifact": "art_1"}]}}
client = trajx.Client("http://trajx.test", "k", transport=httpx.MockTransport(
    lambda request: httpx.Response(200, json=job)))
got = client.wait("job_1", timeout=5)
assert got.done and got.created_at.year == 2025 and got.result_files() == {"target-0/last.safetensors": "art_1"}
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False,
                          timeout=120)


def test_client_works_with_rich_and_torch_not_installed():
    code = (_BLOCK.format(blocked={"rich", "torch"}) + "import trajx.client\n" + _USE_CLIENT
            + "print(sorted(m for m in ('rich', 'torch') if m in sys.modules))")

    done = _python(code)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_importing_the_client_loads_no_torch():
    # Without a block: httpx itself imports rich for its own command line when rich is installed,
    # so only torch can be asserted absent here (the test above covers rich).
    done = _python("import sys, trajx.client; print('torch' in sys.modules)")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_remote_cli_imports_without_torch():
    done = _python("import sys, trajx, trajx.cli.remote; trajx.Client; print('torch' in sys.modules)")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_pt_upload_without_torch_is_a_usage_error_naming_the_extra(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not read: torch is missing first")
    code = _BLOCK.format(blocked={"torch"}) + "from trajx.cli import main; sys.argv[0] = 'trajx'; main()"

    done = subprocess.run(
        [sys.executable, "-c", code, "upload", "model.pt", "--json", "--url", f"http://127.0.0.1:{free_port()}"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120)

    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "invalid_local_input"
    assert "model.pt" in error["detail"] and "pip install 'trajx[convert]'" in error["detail"]
    assert "Traceback" not in done.stderr


def _trajx(blocked: set[str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    code = _BLOCK.format(blocked=blocked) + "from trajx.cli import main; sys.argv[0] = 'trajx'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False,
                          timeout=120, cwd=cwd)


def test_server_commands_are_offered_only_with_the_server_extras():
    full = _trajx(set(), "--help")
    client_only = _trajx({"fastapi", "sqlalchemy", "uvicorn", "alembic", "torch"}, "--help")

    assert full.returncode == 0 and client_only.returncode == 0, client_only.stderr
    assert {"serve", "admin", "submit", "run"} <= _commands(full.stdout)
    assert {"submit", "run", "demo"} <= _commands(client_only.stdout)
    assert not {"serve", "admin"} & _commands(client_only.stdout)


def _commands(help_text: str) -> set[str]:
    """The command names in the rows of `--help`'s boxes (`│ name   description │`)."""
    return {line.split()[1] for line in help_text.splitlines()
            if line.startswith("│ ") and len(line.split()) > 2 and not line.startswith("│  ")}


def test_local_run_without_the_engine_names_the_extra(tmp_path):
    spec = {"arch": {"name": "mlp", "config": {"in_features": 4, "hidden": [4], "num_classes": 2}}, "source": ["a.safetensors", "b.safetensors"], "targets": [{"seed": 1}],
            "train_data": "d.safetensors"}
    (tmp_path / "job.json").write_text(json.dumps(spec))

    done = _trajx({"torch"}, "run", "job.json", "--out", "out", cwd=tmp_path)

    assert done.returncode == 2 and "pip install 'trajx[engine]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
