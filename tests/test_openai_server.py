"""The local OpenAI-compatible test server (tests/support/tapir_testing)."""

from __future__ import annotations

import json
import socket
import time

import tapir_testing
from tapir_testing.openai_server import OpenAIServer


def _post(sock: socket.socket, body: bytes) -> None:
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)


def test_answer_is_one_write_with_nodelay():
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    with OpenAIServer() as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _post(sock, body)
            time.sleep(0.2)  # let everything the server wrote arrive
            first = sock.recv(65536)  # one write from the server: headers and body in one segment here
            head, _, rest = first.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            assert len(rest) == length
            assert json.loads(rest)["choices"][0]["message"]["content"] == "echo: hi"
            # Back-to-back requests on one keep-alive connection take no delayed-ACK stall (~40 ms each).
            started = time.perf_counter()
            for _ in range(20):
                _post(sock, body)
                got = b""
                while not got.endswith(b"}"):
                    got += sock.recv(65536)
            assert (time.perf_counter() - started) / 20 < 0.03


def test_helpers_live_outside_the_runtime_package():
    import importlib.util

    assert importlib.util.find_spec("tapir.openai_server") is None
    assert importlib.util.find_spec("tapir.testing") is None
    assert "tests" in tapir_testing.SUPPORT_DIR.parts
