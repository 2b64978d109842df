"""The content-addressed store, both backends: layout, dedup, atomic writes, limits,
no user-chosen keys, removal that never blocks and never loses a committed blob,
the workers' blob cache. S3 runs against a real SeaweedFS server (no mock)."""

import hashlib
import os

import pytest

from app.core.settings import Settings
from app.core.storage.blob_cache import BlobCache
from app.core.storage.errors import StorageFull, TooLarge
from app.core.storage.local_store import LocalStore
from app.core.storage.s3_store import S3Store
from app.core.storage.store import open_store
from tests.conftest import s3_settings
from tests.support.http import stored_files


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    return open_store(Settings(**s3_settings(endpoint, bucket, tmp_path), s3_part_bytes=5 * 1024**2))


def _read(store, sha):
    with store.open(sha) as f:
        return f.read()


def test_put_stream_dedups_and_round_trips(store):
    sha, size = store.put_stream([b"hello ", b"world"])
    assert (sha, size) == (hashlib.sha256(b"hello world").hexdigest(), 11)
    assert store.put_stream([b"hello world"]) == (sha, 11)
    assert len(stored_files(store)) == 1 and store.exists(sha)
    assert _read(store, sha) == b"hello world"
    assert store.remove_unreferenced(sha, lambda: False)
    assert not store.exists(sha) and stored_files(store) == []


def test_local_layout_is_by_hash(tmp_path):
    store = LocalStore(tmp_path / "store")
    sha, _ = store.put_stream([b"x"])
    assert stored_files(store) == [store.root / sha[:2] / sha[2:4] / sha]


def test_multipart_upload_of_several_parts(store):
    # Over two S3 parts (5 MiB each here), hashed on the way; a range reads across the seam.
    chunks = [bytes([i]) * 1_000_000 for i in range(11)]
    sha, size = store.put_stream(chunks)
    whole = b"".join(chunks)
    assert (sha, size) == (hashlib.sha256(whole).hexdigest(), len(whole))
    with store.open(sha) as f:
        f.seek(5 * 1024**2 - 3)
        assert f.read(6) == whole[5 * 1024**2 - 3:5 * 1024**2 + 3]
    assert b"".join(store.read_blob(sha, 10, 5 * 1024**2 + 5)) == whole[10:5 * 1024**2 + 6]
    assert b"".join(store.read_blob(sha)) == whole


def test_limit_failed_check_and_broken_stream_leave_nothing(store):
    with pytest.raises(TooLarge):
        store.put_stream([b"a" * 10, b"b" * 10], max_bytes=15)

    def refuse(file, size):
        raise ValueError(f"no thanks: {file.read(3)!r} of {size}")

    with pytest.raises(ValueError, match="no thanks: b'abc' of 3"):
        store.put_stream([b"abc"], check=refuse)

    def broken():
        yield b"partial"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.put_stream(broken())
    # No object, no temp file and (S3) no unfinished multipart upload is left.
    assert stored_files(store) == []


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABCDEF" + "0" * 58, "0" * 63, "x.safetensors"])
def test_keys_come_only_from_hashes(tmp_path, bad):
    with pytest.raises(ValueError):
        LocalStore(tmp_path).path(bad)
    with pytest.raises(ValueError):
        S3Store(None, "bucket", "p/", BlobCache(tmp_path / "cache", 100)).key(bad)


def test_incremental_writeback_keeps_the_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr("app.core.storage.local_store.WRITEBACK_BYTES", 1000)
    store = LocalStore(tmp_path / "store")
    chunks = [bytes([i]) * 700 for i in range(20)]
    sha, size = store.put_stream(chunks)
    assert size == 14_000 and store.path(sha).read_bytes() == b"".join(chunks)


def test_a_removal_racing_a_writer_of_the_same_bytes_loses_nothing(store):
    """The writer published (dedup onto the existing blob) but has not committed its row;
    a removal runs to the end at once (no lock to wait on). The writer's `settle` after
    its commit puts the bytes back."""
    sha, _ = store.put_stream([b"shared bytes"])
    with store.writer() as writer:
        writer.write(b"shared bytes")
        assert writer.finish() == sha
        assert writer.commit() is False  # already stored
        assert store.remove_unreferenced(sha, lambda: False)  # nobody's row yet: removed
        assert not store.exists(sha)
        writer.settle()  # after the writer's row committed
    assert _read(store, sha) == b"shared bytes"
    assert len(stored_files(store)) == 1  # the writer's own copy is gone


def test_a_row_that_commits_during_a_removal_keeps_the_blob(store):
    sha, _ = store.put_stream([b"bytes"])
    answers = iter([False, True])  # no row at the first look, one at the second
    assert not store.remove_unreferenced(sha, lambda: next(answers))
    assert _read(store, sha) == b"bytes" and len(stored_files(store)) == 1


def test_a_full_disk_is_storage_full_and_keeps_nothing(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")

    def no_space(*args):
        raise OSError(28, "No space left on device")

    with store.writer() as writer:
        monkeypatch.setattr(writer._file, "writelines", no_space)
        with pytest.raises(StorageFull, match="no space left"):
            writer.write(b"abc")
    assert stored_files(store) == []


def test_blob_cache_verifies_bounds_and_survives_eviction(tmp_path):
    cache = BlobCache(tmp_path / "cache", max_bytes=25)
    blobs = {hashlib.sha256(data).hexdigest(): data for data in (b"a" * 10, b"b" * 10, b"c" * 10)}
    downloads = []

    def read(sha):
        downloads.append(sha)
        if sha not in blobs:
            raise FileNotFoundError(sha)
        yield blobs[sha]

    first, second, third = blobs
    job = tmp_path / "job"
    linked = cache.checkout(first, job, read)
    assert linked.read_bytes() == blobs[first] and linked.parent == job
    cache.checkout(second, tmp_path / "job2", read)
    os.utime(cache.path(second), (1, 1))  # least recently used
    cache.checkout(third, tmp_path / "job3", read)  # over 25 bytes: evicts `second`
    assert not cache.path(second).exists() and cache.path(first).exists()
    assert cache.checkout(first, tmp_path / "job4", read).read_bytes() == blobs[first]
    assert downloads == [first, second, third]  # the last one was a hit
    os.remove(cache.path(first))  # evicted under a running job: its link still reads
    assert linked.read_bytes() == blobs[first]
    assert cache.checkout("0" * 64, job, read) is None

    def corrupt(sha):
        yield b"not the bytes"

    from app.core.storage.errors import StorageUnavailable

    with pytest.raises(StorageUnavailable, match="arrived with sha256"):
        cache.checkout(hashlib.sha256(b"x").hexdigest(), job, corrupt)
    assert list(cache.tmp_dir.iterdir()) == []
