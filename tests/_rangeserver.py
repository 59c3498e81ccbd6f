"""A small HTTP/1.1 range server on loopback, with per-object fault hooks.

Serves the files under a directory (GET and HEAD) with ``Range: bytes=a-b`` (206 and
``Content-Range``), a strong ``ETag`` (content hash + a version counter) and ``If-Match``
(412 when it does not match). Every request is logged (method, path, Range, If-Match, the
``x-fastdata-node`` header, status), so tests can count exactly. Hooks on
``server.fault(path)`` change one object's behaviour between requests:

* ``lie_bytes`` — answer every GET with 200 and a ``Content-Length`` equal to a body cut to
  this many bytes (the object "was replaced" by a shorter one);
* ``shift_range`` — answer a ranged GET with 206, the right length, but the bytes (and an
  honest ``Content-Range``) of the range this many bytes further on;
* ``throttle`` / ``retry_after`` — 503 with ``Retry-After`` for the first N requests;
* ``replace_with`` — after the first ranged GET, the object's bytes become these (new ETag);
* ``ignore_range`` — answer every GET with 200 and the whole object, whatever its ``Range``;
* ``flaky`` — 404 for any GET of an object whose every byte was already served once (or
  ``flaky`` = N times): LitData's ``_FlakyRemoteDownloader``, a download more than expected is a bug.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class ObjectFaults:
    lie_bytes: int | None = None
    shift_range: int = 0
    throttle: int = 0
    retry_after: float = 2.0
    replace_with: bytes | None = None
    flaky: bool | int = False  #: True: one full serve; N: N full serves
    ignore_range: bool = False


@dataclass
class Logged:
    method: str
    path: str
    range: str | None
    if_match: str | None
    node: str | None
    status: int
    time: float = 0.0


@dataclass
class _Object:
    data: bytes
    version: int = 0
    served: list[tuple[int, int]] = field(default_factory=list)  # merged byte intervals sent
    full_serves: int = 0  # times every byte of the object was sent

    @property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.data).hexdigest()[:16]}-{self.version}"'

    def mark_served(self, start: int, end: int) -> None:
        spans = sorted([*self.served, (start, end)])
        merged = [spans[0]]
        for s, e in spans[1:]:
            if s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        self.served = merged
        if merged == [(0, len(self.data))]:  # every byte sent once more: count it, start again
            self.full_serves += 1
            self.served = []


class RangeServer:
    """``with RangeServer(root) as server: fsspec reads server.url + '/name'``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.log: list[Logged] = []
        self._faults: dict[str, ObjectFaults] = {}
        self._objects: dict[str, _Object] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
                server._serve(self, body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                server._serve(self, body=False)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name="rangeserver")

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    def fault(self, path: str) -> ObjectFaults:
        """The fault hooks of the object at URL path ``path`` (e.g. ``/ds/shard-00000.fds``)."""
        with self._lock:
            return self._faults.setdefault(path, ObjectFaults())

    def replace(self, path: str, data: bytes) -> None:
        """Give the object new bytes and a new ETag now."""
        with self._lock:
            obj = self._object(path)
            obj.data, obj.version, obj.served = data, obj.version + 1, []

    def requests(self, method: str | None = None, path: str | None = None) -> list[Logged]:
        with self._lock:
            return [r for r in self.log if (method is None or r.method == method)
                    and (path is None or r.path == path)]

    def _object(self, path: str) -> _Object | None:
        if path not in self._objects:
            local = os.path.join(self.root, *path.lstrip("/").split("/"))
            if ".." in path.split("/") or not os.path.isfile(local):
                return None
            with open(local, "rb") as f:
                self._objects[path] = _Object(f.read())
        return self._objects[path]

    def _serve(self, req: BaseHTTPRequestHandler, body: bool) -> None:
        with self._lock:
            status, headers, payload = self._answer(req, body)
            h = req.headers
            self.log.append(Logged(req.command, req.path, h.get("Range"), h.get("If-Match"),
                                   h.get("x-fastdata-node"), status, time.monotonic()))
        req.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(payload))}.items():
            req.send_header(k, v)
        req.end_headers()
        if body:
            req.wfile.write(payload)

    def _answer(self, req: BaseHTTPRequestHandler, body: bool) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for one request (called under the lock)."""
        path, faults = req.path.split("?", 1)[0], self._faults.get(req.path.split("?", 1)[0], ObjectFaults())
        obj = self._object(path)
        if obj is None:
            return 404, {}, b"not found"
        if faults.throttle > 0:
            faults.throttle -= 1
            return 503, {"Retry-After": f"{faults.retry_after:g}"}, b"slow down"
        if body and faults.flaky and obj.full_serves >= int(faults.flaky):
            return 404, {}, b"flaky remote: served once already"
        if_match = req.headers.get("If-Match")
        if if_match is not None and if_match.strip() not in ("*", obj.etag):
            return 412, {"ETag": obj.etag}, b"precondition failed"
        size, data = len(obj.data), obj.data
        headers = {"ETag": obj.etag, "Accept-Ranges": "bytes"}
        if faults.lie_bytes is not None:
            return 200, headers, data[:faults.lie_bytes]
        match = RANGE.match(req.headers.get("Range", "").strip())
        if match is None or faults.ignore_range:
            if body:
                obj.mark_served(0, size)
            return 200, headers, data
        first, last = match.groups()
        start, end = (size - int(last), size) if first == "" else (int(first), size if last == "" else
                                                                   min(int(last) + 1, size))
        if start >= size or start >= end:
            return 416, {"Content-Range": f"bytes */{size}"}, b""
        start, end = start + faults.shift_range, min(end + faults.shift_range, size)
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if body:
            obj.mark_served(start, end)
            if faults.replace_with is not None:
                new, faults.replace_with = faults.replace_with, None
                self._objects[path] = _Object(new, obj.version + 1)
        return 206, headers, data[start:end]
