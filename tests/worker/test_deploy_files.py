"""docker-compose.yml and the Dockerfile: structure checks (Docker cannot run here)."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_production_services_with_health_checks():
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "api", "recovery", "worker-gpu", "worker-cpu"} <= set(services)
    for name in ("postgres", "redis", "api", "worker-gpu", "worker-cpu"):
        assert "healthcheck" in services[name], name


def test_services_start_in_order():
    services = _compose()["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "recovery", "worker-gpu", "worker-cpu"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_gpu_worker_reserves_a_gpu_and_runs_one_job_at_a_time():
    worker = _compose()["services"]["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    command = worker["command"]
    assert command[command.index("-Q") + 1] == "gpu" and command[command.index("-c") + 1] == "1"
    assert _compose()["services"]["worker-cpu"]["profiles"] == ["cpu"]


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${NAME:-default}` with the variables of `env`."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1), m.group(2)), text)


def _env_file(path: str) -> dict[str, str]:
    lines = (ROOT / path).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_api_and_workers_share_the_artifact_volume_by_default():
    compose = _compose()
    assert "artifacts" in compose["volumes"]
    for name in ("api", "worker-gpu", "worker-cpu"):
        assert [_interpolate(v, {}) for v in compose["services"][name]["volumes"]] == ["artifacts:/data"], name
        env = compose["services"][name]["environment"]
        assert env["TRAJX_STORAGE_DIR"].startswith("/data/") and env["TRAJX_DISPATCHER"] == "celery"
        assert _interpolate(env["TRAJX_STORAGE_BACKEND"], {}) == "local"


def test_the_s3_profile_shares_no_volume_between_api_and_workers():
    compose, env = _compose(), _env_file("deploy/s3.env")
    mounts = {name: {_interpolate(v, env).split(":")[0] for v in compose["services"][name]["volumes"]}
              for name in ("api", "worker-gpu", "worker-cpu")}
    assert mounts["api"].isdisjoint(mounts["worker-gpu"] | mounts["worker-cpu"])
    assert set().union(*mounts.values()) <= set(compose["volumes"])
    for name in ("api", "worker-gpu", "recovery"):
        settings = {k: _interpolate(str(v), env) for k, v in compose["services"][name]["environment"].items()}
        assert settings["TRAJX_STORAGE_BACKEND"] == "s3"
        assert settings["TRAJX_S3_ENDPOINT_URL"] == "http://seaweedfs:8333" and settings["TRAJX_S3_BUCKET"]
    assert compose["services"]["seaweedfs"]["profiles"] == ["s3"]
    assert compose["services"]["bucket"]["depends_on"]["seaweedfs"]["condition"] == "service_healthy"


def test_dockerfile_keeps_torch_out_of_the_api_image():
    text = (ROOT / "worker/docker/Dockerfile").read_text()
    api_stage = text.split("AS api", 1)[1].split("FROM ", 1)[0]
    assert "'.[api]'" in api_stage and "worker]" not in api_stage
    services = _compose()["services"]
    assert services["migrate"]["build"]["target"] == "api"
    assert {services[name]["image"] for name in ("migrate", "api", "recovery")} == {"trajx-api:latest"}


def test_gpu_worker_image_does_not_inherit_the_cpu_torch_pin():
    worker_stage = (ROOT / "worker/docker/Dockerfile").read_text().split("AS worker", 1)[1]
    assert "grep -v '^torch=='" in worker_stage and "-c /tmp/constraints-gpu.txt" in worker_stage
    assert "-c .ci/constraints.txt" not in worker_stage
