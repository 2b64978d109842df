"""Issue 14: slow clients are cut off. A real uvicorn server with `trajx serve`'s protocol:
request headers that never complete close the connection, a stalled body gets 408."""

import asyncio
import json
import socket
import threading
import time

import pytest
import uvicorn

from app.api.slow_clients import header_timeout_protocol
from app.main import create_app

LIMIT = 0.5


@pytest.fixture
def database_url(sqlite_url) -> str:
    return sqlite_url


@pytest.fixture
def server_address(settings):
    app = create_app(settings.model_copy(update={"body_timeout_seconds": LIMIT}))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=header_timeout_protocol(LIMIT), log_config=None, access_log=False,
                            lifespan="on", timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listener])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield listener.getsockname()
    server.should_exit = True
    thread.join(10)
    listener.close()


def _connect(address) -> socket.socket:
    return socket.create_connection(address, timeout=10)


def _read_until_closed(connection: socket.socket) -> bytes:
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    return data


def test_incomplete_headers_are_cut_off(server_address):
    with _connect(server_address) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")  # never the blank line
        started = time.monotonic()
        assert _read_until_closed(connection) == b""
        assert time.monotonic() - started < 8  # closed by the server, not by the socket timeout
    with _connect(server_address) as silent:  # connecting and sending nothing is cut off too
        assert _read_until_closed(silent) == b""


def test_a_kept_alive_connection_gets_the_same_limit_for_its_next_request(server_address):
    with _connect(server_address) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += connection.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        time.sleep(LIMIT * 2)  # idle between requests: uvicorn's keep-alive timeout (30 s) applies
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        assert _read_until_closed(connection) == b""


def test_a_stalled_body_gets_408(server_address, tenant):
    body = json.dumps({"spec": {}}).encode()
    with _connect(server_address) as connection:
        connection.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                           + f"Authorization: Bearer {tenant.key}\r\nContent-Length: {len(body) + 100}\r\n\r\n".encode()
                           + body)
        response = _read_until_closed(connection)
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), response
    assert json.loads(payload)["code"] == "request_timeout"


def test_a_stalled_upload_gets_408_and_keeps_nothing(server_address, tenant, store):
    with _connect(server_address) as connection:
        connection.sendall(b"POST /v1/artifacts?name=a.safetensors HTTP/1.1\r\nHost: test\r\n"
                           + f"Authorization: Bearer {tenant.key}\r\nContent-Length: 1000\r\n\r\n".encode()
                           + b"\0" * 100)
        response = _read_until_closed(connection)
    assert response.startswith(b"HTTP/1.1 408"), response
    assert [p for p in store.root.rglob("*") if p.is_file()] == []
