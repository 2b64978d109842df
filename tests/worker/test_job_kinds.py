"""A new job kind through the two registries alone: spec model + executor, then the API's
create and the worker's run_job carry it end to end without knowing it."""

from pathlib import Path
from typing import Literal

import pytest
import torch
from safetensors.torch import load, load_file, save_file

from app.api.routes.jobs import job_public
from app.core.jobs.lifecycle import create_job
from tests.support.jobs import submit_job, upload_file
from tests.support.rows import load_job
from trajx import executors
from trajx import job_spec as spec
from trajx.executors import ResultManifest, RunContext, RunProgress, file_entry, register_executor
from trajx.job_spec import ArtifactRef, JobSpecBase, register_job_kind
from worker.context import worker_context
from worker.runner import run_job

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class ScaleJob(JobSpecBase):
    """Toy kind: multiply every tensor of a checkpoint by `factor`."""

    kind: Literal["scale"] = "scale"
    checkpoint: ArtifactRef
    factor: float

    def artifact_refs(self) -> dict[str, str]:
        return {"checkpoint": self.checkpoint}

    def input_kind(self, location: str) -> Literal["checkpoint"]:
        return "checkpoint"

    def queue(self) -> Literal["cpu"]:
        return "cpu"


def run_scale(job: ScaleJob, resolve, out_dir: Path, ctx: RunContext) -> ResultManifest:
    tensors = load_file(str(resolve(job.checkpoint)))
    path = out_dir / "scaled" / "checkpoint.safetensors"
    path.parent.mkdir()
    save_file({name: tensor * job.factor for name, tensor in tensors.items()}, str(path))
    ctx.on_progress(RunProgress(1, 1, {"tensors": len(tensors)}))
    return ResultManifest([file_entry(out_dir, path, "scaled", metadata={"factor": job.factor})],
                          {"tensors": len(tensors)})


@pytest.fixture
def scale_kind(monkeypatch):
    """Register the toy kind for this test only (both registries restored afterwards)."""
    monkeypatch.setattr(spec, "JOB_KINDS", dict(spec.JOB_KINDS))
    monkeypatch.setattr(executors.registry, "_EXECUTORS", dict(executors.registry._EXECUTORS))
    register_job_kind(ScaleJob)
    register_executor("scale", run_scale)


@pytest.mark.parametrize("store_backend", ["local", "s3"])
def test_a_kind_registered_in_the_registries_runs_end_to_end(scale_kind, settings, tenant_id, tmp_path):
    weights = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    save_file(weights, str(tmp_path / "w.safetensors"))
    ctx = worker_context(settings)
    uploaded = upload_file(settings, tenant_id, tmp_path / "w.safetensors")
    job_id = submit_job(settings, tenant_id, {"kind": "scale", "checkpoint": uploaded, "factor": 2.5})
    assert (load_job(settings, job_id).kind, load_job(settings, job_id).queue) == ("scale", "cpu")

    assert run_job(job_id, settings) == "succeeded"
    job = load_job(settings, job_id)
    (file,) = job.result["files"]
    assert (file["role"], file["target"], file["path"], file["metadata"]) == \
        ("scaled", None, "scaled/checkpoint.safetensors", {"factor": 2.5})
    assert job.summary == {"tensors": 1} and (job.progress_step, job.progress_total) == (1, 1)
    with ctx.store.open(file["sha256"]) as blob:
        stored = load(blob.read())
    assert torch.equal(stored["w"], weights["w"] * 2.5)
    with ctx.sessions() as session:
        public = job_public(session.merge(job))
    assert public.result["scaled"] == file["artifact"] and public.result["files"] == [file]


def test_an_unregistered_kind_is_refused_with_its_name(settings, tenant_id):
    with worker_context(settings).sessions() as session, pytest.raises(Exception) as info:
        create_job(session, tenant_id, {"kind": "scale"}, max_attempts=1, idempotency_key=None)
    assert getattr(info.value, "code", None) == "unknown_kind"
