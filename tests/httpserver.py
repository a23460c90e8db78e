"""A folder served over HTTP on 127.0.0.1, for tests of remote readers (standard library only).

What it does, and what a test can check afterwards:
- serves the files under a folder with GET and HEAD, keep-alive (HTTP/1.1), and single byte
  ranges (`Range: bytes=a-b`, `a-`, `-n`) answered with 206 and Content-Range, 416 when the range
  starts past the end; `ranges=False` imitates a server that ignores Range (always 200);
- `token="..."` requires `Authorization: Bearer <token>` on every request (401 otherwise);
- records every request (`requests`: method, path, Range, status, body bytes sent, the
  Authorization header) and sums bytes served (`bytes_sent(prefix)`);
- `break_next(n)` makes the next file response stop after `n` body bytes and drop the
  connection, as a flaky network does;
- `max_range=n` answers a range with at most `n` bytes (a valid shorter 206 whose
  Content-Range says so), as servers and CDNs that cap range responses do.

    with FolderServer(packed_dir, token="secret") as server:
        read(server.url + "/manifest.json")
        assert all(r.authorization == "Bearer secret" for r in server.requests)
"""

from __future__ import annotations

import http.server
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # decoded, relative to the served folder, without a leading slash
    range: str | None
    status: int
    bytes_sent: int  # body bytes
    authorization: str | None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - no stderr log
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        owner = self.server.owner
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        auth = self.headers.get("Authorization")
        rng = self.headers.get("Range")
        owner._started()
        status, sent = 0, 0
        try:
            status, sent = self._answer(owner, rel, auth, rng, body)
        finally:
            owner._record(Request(self.command, rel, rng, status, sent, auth))

    def _answer(self, owner: FolderServer, rel: str, auth: str | None, rng: str | None,
                body: bool) -> tuple[int, int]:
        if owner.token is not None and auth != f"Bearer {owner.token}":
            return self._plain(401, b"token required\n", body), 0
        path = (owner.root / rel).resolve()
        if owner.root not in path.parents or not path.is_file():
            return self._plain(404, b"not found\n", body), 0
        size = path.stat().st_size
        start, end = 0, size  # end exclusive
        status = 200
        parsed = _parse_range(rng, size) if rng and owner.ranges else "ignore"
        if parsed != "ignore":
            if parsed is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 416, 0
            start, end = parsed
            if owner.max_range is not None:
                end = min(end, start + owner.max_range)
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes" if owner.ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if not body:
            return status, 0
        limit = owner._take_break()
        sent = 0
        with open(path, "rb") as fh:
            fh.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = fh.read(min(remaining, 1 << 20))
                if limit is not None:
                    chunk = chunk[: max(0, limit - sent)]
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
                remaining -= len(chunk)
        if limit is not None and remaining > 0:
            self.close_connection = True
        return status, sent

    def _plain(self, status: int, text: bytes, body: bool) -> int:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if body:
            self.wfile.write(text)
        return status


def _parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """(start, end exclusive) of a single `bytes=` range, None when unsatisfiable, "ignore" when
    it is not a single range (served whole, as most servers do)."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match.group(1) == match.group(2) == "":
        return "ignore"
    if match.group(1) == "":
        start = max(0, size - int(match.group(2)))
        return (start, size) if size else None
    start = int(match.group(1))
    end = min(size, int(match.group(2)) + 1) if match.group(2) else size
    return (start, end) if start < size and start < end else None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: FolderServer

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up is normal
            super().handle_error(request, client_address)


class FolderServer:
    """Serve `root` on 127.0.0.1 (a free port) in a background thread; a context manager."""

    def __init__(self, root: str | os.PathLike[str], *, token: str | None = None,
                 ranges: bool = True, max_range: int | None = None) -> None:
        self.root = Path(root).resolve()
        self.token = token
        self.ranges = ranges
        self.max_range = max_range
        self._lock = threading.Condition()
        self._requests: list[Request] = []
        self._in_flight = 0
        self._break: int | None = None
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FolderServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[Request]:
        """Every finished request. Waits for requests being answered: a client can have read
        the whole body before the serving thread gets to record it."""
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout=10)
            return list(self._requests)

    def clear(self) -> None:
        """Forget the finished requests, after waiting for those being answered (as
        `requests` does): one recorded late would count as the next one's."""
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout=10)
            self._requests.clear()

    def bytes_sent(self, prefix: str = "") -> int:
        return sum(r.bytes_sent for r in self.requests if r.path.startswith(prefix))

    def break_next(self, after_bytes: int) -> None:
        """Cut the next file response after `after_bytes` body bytes and close the connection."""
        with self._lock:
            self._break = after_bytes

    def _take_break(self) -> int | None:
        with self._lock:
            limit, self._break = self._break, None
            return limit

    def _started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)
            self._in_flight -= 1
            self._lock.notify_all()
