"""docs/bring-your-own-model.md is a test: its code blocks run, in order, against a live server.

`<!-- file: NAME -->` before a fenced block writes the block to NAME; `<!-- run -->`
before a bash block runs each of its lines. The service is the embedded default (`trajx
serve`) or the production shape (API, Celery worker, PostgreSQL, Redis), started from
other directories: none of the guide's code is importable on its side.
"""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.core.persistence.migrate import upgrade
from tests.conftest import scratch_postgres
from tests.support.services import celery_stack, redis_server
from trajx.demo.server import EmbeddedServer

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "bring-your-own-model.md"
_BLOCK = re.compile(r"<!-- (file: (?P<name>\S+)|run) -->\n```\w*\n(?P<body>.*?)```", re.DOTALL)



@contextmanager
def embedded(root: Path) -> Iterator[tuple[str, str]]:
    with EmbeddedServer(root, env={"OMP_NUM_THREADS": "1"}) as server:
        yield server.url, server.api_key


@contextmanager
def celery_and_postgres(root: Path) -> Iterator[tuple[str, str]]:
    with redis_server(root) as broker, scratch_postgres("trajx_guide") as database:
        upgrade(database)
        with celery_stack(database, root, broker.url) as stack:
            yield stack.api.url, stack.api_key


def guide_steps() -> list[tuple[str | None, str]]:
    """(file name or None for a command block, content), in the guide's order."""
    return [(m["name"], m["body"]) for m in _BLOCK.finditer(GUIDE.read_text())]


def test_the_guide_has_files_and_commands():
    steps = guide_steps()
    assert {"mymodel.py", "train.py", "fgmt.json", "naive.json", "evaluate.py"} <= {n for n, _ in steps}
    commands = "\n".join(body for name, body in steps if name is None)
    assert "trajx export" in commands and "trajx submit" in commands


@pytest.mark.slow
@pytest.mark.parametrize("service", [
    pytest.param(embedded, id="embedded"),
    pytest.param(celery_and_postgres, id="celery-postgres", marks=[pytest.mark.postgres, pytest.mark.redis]),
])
def test_the_guide_runs_against_a_live_service_and_fgmt_beats_naive(tmp_path, service):
    work, root = tmp_path / "user", tmp_path / "service"
    work.mkdir()
    root.mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    output = []
    with service(root) as (url, api_key):
        env.update(TRAJX_URL=url, TRAJX_API_KEY=api_key)
        for name, body in guide_steps():
            if name is not None:
                (work / name).write_text(body)
                continue
            for command in filter(None, (line.strip() for line in body.splitlines())):
                done = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True,
                                      text=True, timeout=900, check=False)
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
                output.append(done.stdout)

    accuracy = {m["run"]: float(m["value"]) for m in re.finditer(
        r"(?P<run>\S+)-results: held-out accuracy (?P<value>[\d.]+)", output[-1])}
    print(accuracy)
    assert accuracy["fgmt"] >= accuracy["naive"] + 0.05
