"""Request helpers shared by the API tests."""

from tests.support.files import data_shard, mlp_checkpoint

# A valid `mlp` config: the API checks built-in architectures' configs.
MLP_CONFIG = {"in_features": 8, "hidden": [16], "num_classes": 3}


def upload(api, tenant, content: bytes, name: str = "ckpt.safetensors", **headers):
    """POST raw bytes as an artifact of `tenant`; returns the response."""
    return api.post("/v1/artifacts", params={"name": name}, content=content,
                    headers={**tenant.headers, "Content-Type": "application/octet-stream", **headers})


def uploaded_id(api, tenant, content: bytes, name: str = "ckpt.safetensors") -> str:
    response = upload(api, tenant, content, name)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def transfer_spec(api, tenant, **overrides) -> dict:
    """A valid transfer spec over freshly uploaded artifacts of `tenant`."""
    source = [uploaded_id(api, tenant, mlp_checkpoint(fill=i)) for i in range(2)]
    spec = {"kind": "transfer", "method": "fgmt", "arch": {"name": "mlp", "config": MLP_CONFIG},
            "source": source, "targets": [{"seed": 1}],
            "train_data": uploaded_id(api, tenant, data_shard(), "train.safetensors"),
            "params": {"steps": 4}}
    return {**spec, **overrides}


def stored_files(store) -> list:
    """Every blob and temp file of a local store, every object and unfinished multipart
    upload under an S3 store's prefix."""
    if hasattr(store, "root"):
        return sorted(p for p in store.root.rglob("*") if p.is_file())
    from tests.support.seaweedfs import multipart_uploads, object_keys

    endpoint = store.client.meta.endpoint_url
    return sorted(object_keys(endpoint, store.bucket, store.prefix)
                  + [f"upload:{key}" for key in multipart_uploads(endpoint, store.bucket, store.prefix)])
