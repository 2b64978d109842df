"""The content-addressed store: layout, dedup, atomic writes, limits, no user-chosen paths."""

import hashlib
import threading

import pytest

from app.core.storage.store import ArtifactStore, TooLarge
from tests.support.http import stored_files


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def test_put_stream_lays_out_by_hash_and_dedups(store):
    sha, size = store.put_stream([b"hello ", b"world"])
    assert (sha, size) == (hashlib.sha256(b"hello world").hexdigest(), 11)
    assert store.path(sha) == store.root / sha[:2] / sha[2:4] / sha
    assert store.put_stream([b"hello world"]) == (sha, 11)
    assert stored_files(store) == [store.path(sha)]
    with store.open(sha) as f:
        assert f.read() == b"hello world"
    store.delete(sha)
    assert not store.exists(sha) and stored_files(store) == []


def test_put_file_copies(store, tmp_path):
    source = tmp_path / "x.bin"
    source.write_bytes(b"\x00" * 3_000_000)
    sha, size = store.put_file(source)
    assert size == 3_000_000 and store.path(sha).read_bytes() == source.read_bytes()


def test_limit_and_failed_check_leave_nothing(store):
    with pytest.raises(TooLarge):
        store.put_stream([b"a" * 10, b"b" * 10], max_bytes=15)

    def refuse(path):
        raise ValueError(f"no thanks: {path.name}")

    with pytest.raises(ValueError):
        store.put_stream([b"abc"], check=refuse)
    assert stored_files(store) == []


def test_interrupted_stream_leaves_nothing(store):
    def broken():
        yield b"partial"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.put_stream(broken())
    assert stored_files(store) == []


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABCDEF" + "0" * 58, "0" * 63, "x.safetensors"])
def test_paths_come_only_from_hashes(store, bad):
    with pytest.raises(ValueError):
        store.path(bad)


def test_incremental_writeback_keeps_the_bytes(store, monkeypatch):
    monkeypatch.setattr("app.core.storage.store.WRITEBACK_BYTES", 1000)
    chunks = [bytes([i]) * 700 for i in range(20)]
    sha, size = store.put_stream(chunks)
    assert size == 14_000 and store.path(sha).read_bytes() == b"".join(chunks)
    assert sha == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_blob_lock_excludes_other_holders(store):
    sha = hashlib.sha256(b"x").hexdigest()
    order = []

    def other_holder():
        with store.lock(sha):
            order.append("other")

    with store.lock(sha):
        thread = threading.Thread(target=other_holder)
        thread.start()
        thread.join(0.2)
        order.append("first")
    thread.join(5)
    assert order == ["first", "other"]
