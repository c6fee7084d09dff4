"""Helpers for tests that write to the local S3-compatible server (the `s3_endpoint` fixture): a
connection to it, a bucket, S3's atomic conditional PUT where moto lacks it, and a proxy that loses
requests or answers on the way."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


def aws_connection_json(endpoint: str, **extra: Any) -> str:
    """An `aws` connection to the local S3 server, in AIRFLOW_CONN_* JSON form; `extra` adds to its extra."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1", **extra},
        }
    )


def create_bucket(endpoint: str, name: str) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)


# --- what real S3 guarantees and moto's server mode does not --------------------------------


@contextlib.contextmanager
def atomic_conditional_puts() -> Iterator[None]:
    """Make the in-process moto server apply PutObject's If-Match / If-None-Match atomically.

    S3 checks the condition and stores the object as one step, so of two conditional PUTs
    against the same version at most one succeeds. moto 5.2.5 checks, then stores, in separate
    steps on the request's own thread: two racing PUTs can both pass (seen here in about one
    race in fifty when threads switch often). Serialising its PutObject handler restores S3's
    guarantee; only tests that race writers need it.
    """
    from moto.s3.responses import S3Response

    original = S3Response.put_object
    lock = threading.Lock()

    def put_object(self: Any) -> Any:
        with lock:
            return original(self)

    S3Response.put_object = put_object  # type: ignore[method-assign]
    try:
        yield
    finally:
        S3Response.put_object = original  # type: ignore[method-assign]


# --- a proxy that loses requests or answers ------------------------------------------------


@dataclass
class Fault:
    """Requests matching `method` and `path` (a regex on path and query) get `action`, `times` times."""

    method: str
    path: str
    action: str  # "lose_answer", "lose_request" or "pretend_deleted"
    times: int | None = None  # None: every matching request
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        left = self.times is None or self.fired < self.times
        return left and method == self.method and re.search(self.path, path) is not None


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}
_EMPTY_DELETE_RESULT = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></DeleteResult>'
)


class S3FaultProxy:
    """An HTTP proxy in front of the local S3 server that loses what the test tells it to.

    - ``lose_answer``: the request reaches S3 and takes effect; the client gets no answer (the
      connection closes), as when a response is lost on the network or a read times out.
    - ``lose_request``: the connection closes before the request is forwarded: nothing happens.
    - ``pretend_deleted``: a DeleteObjects request is answered "done" (an empty quiet-mode
      result, as S3 gives when every key was deleted) without being forwarded.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> S3FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def add(self, method: str, path: str, action: str, times: int | None = None) -> Fault:
        fault = Fault(method, path, action, times)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.fired += 1
                    return fault
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._fault_for(self.command, self.path)
                if fault is not None and fault.action == "lose_request":
                    self.close_connection = True
                    return
                if fault is not None and fault.action == "pretend_deleted":
                    self.answer(200, [("Content-Type", "application/xml")], _EMPTY_DELETE_RESULT)
                    return
                status, headers, data = self.forward(body)
                if fault is not None and fault.action == "lose_answer":
                    self.close_connection = True
                    return
                self.answer(status, headers, data)

            def forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    return response.status, response.getheaders(), data
                finally:
                    connection.close()

            def answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                length = dict((k.lower(), v) for k, v in headers).get("content-length")
                is_head = self.command == "HEAD"
                self.send_header("Content-Length", length if is_head and length else str(len(data)))
                self.end_headers()
                if not is_head:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_one

        return Handler
