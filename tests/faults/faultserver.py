"""A folder served over HTTP on 127.0.0.1 that misbehaves on request (standard library only).

Like tests/httpserver.py (GET, keep-alive, single byte ranges answered with 206), plus a queue
of faults, each used by the next request whose path starts with its prefix:

- `Fault("reset", after=K)`: send the headers and K body bytes, then abort the connection (RST);
- `Fault("fin", after=K)`: send K body bytes of a longer body, then close cleanly (FIN) — a
  truncated response;
- `Fault("status", status=429, retry_after="3")`: answer with that status (and Retry-After);
- `Fault("stall", after=K, seconds=S)`: send K bytes, then go silent for S seconds, then close;
- `Fault("flip", at=N)`: serve the body with the byte at file offset N inverted (wrong bytes);
- `Fault("endless", status=404, after=K)`: answer with that status, claim a 1 TiB body and send
  up to K bytes of it, until the client goes away.

Every request is recorded (`requests`: path, Range, status, body bytes sent). Loops are bounded:
each fault is used once, stalls end after their seconds or when the server stops.

    with FaultServer(packed_dir) as server:
        server.add("data/", Fault("reset", after=1000), Fault("status", status=503))
        read(server.url + "/data/train-00000.tar")
"""

from __future__ import annotations

import http.server
import re
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Fault:
    kind: str  # reset | fin | status | stall | flip | endless
    after: int = 0
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0
    at: int = 0


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None
    status: int
    bytes_sent: int
    fault: str | None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - no stderr log
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        fault, generation = owner._begin(rel)
        status, sent = 0, 0
        try:
            status, sent = self._answer(owner, rel, rng, fault)
        finally:
            owner._record(generation,
                          Request(rel, rng, status, sent, fault.kind if fault else None))

    def _answer(self, owner: FaultServer, rel: str, rng: str | None,
                fault: Fault | None) -> tuple[int, int]:
        if fault is not None and fault.kind == "endless":
            return fault.status, self._endless(owner, fault)
        if fault is not None and fault.kind == "status":
            self.send_response(fault.status)
            if fault.retry_after is not None:
                self.send_header("Retry-After", fault.retry_after)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"busy")
            return fault.status, 0
        path = (owner.root / rel).resolve()
        if owner.root not in path.parents or not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return 404, 0
        data = path.read_bytes()
        start, end, status = 0, len(data), 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", (rng or "").strip())
        if match:
            start = int(match.group(1))
            end = min(len(data), int(match.group(2)) + 1) if match.group(2) else len(data)
            status = 206
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 416, 0
        body = data[start:end]
        if fault is not None and fault.kind == "flip" and start <= fault.at < end:
            i = fault.at - start
            body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if fault is None or fault.kind == "flip":
            self.wfile.write(body)
            return status, len(body)
        return status, self._misbehave(fault, body)

    def _endless(self, owner: FaultServer, fault: Fault) -> int:
        self.send_response(fault.status)
        self.send_header("Content-Length", str(1 << 40))
        self.end_headers()
        chunk, sent = b"not found " * 6554, 0
        try:
            while sent < fault.after and not owner._stop.is_set():
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:  # the client closed the connection
            pass
        self.close_connection = True
        return sent

    def _misbehave(self, fault: Fault, body: bytes) -> int:
        part = body[:fault.after]
        self.wfile.write(part)
        self.wfile.flush()
        if fault.kind == "stall":
            self.server.owner._stop.wait(fault.seconds)
        if fault.kind == "reset":  # SO_LINGER 0: close sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()
        return len(part)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: FaultServer

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, OSError, ValueError)):
            super().handle_error(request, client_address)


class FaultServer:
    """Serve `root` on 127.0.0.1 (a free port) in a background thread; a context manager."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._lock = threading.Condition()
        self._generation = 0  # bumped by clear(): a handler of an earlier test records nothing
        self._in_flight = 0  # requests of this generation answered but not yet recorded
        self._faults: list[tuple[str, Fault]] = []
        self._requests: list[Request] = []
        self._stop = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, prefix: str, *faults: Fault) -> None:
        """Queue faults for the next requests whose path starts with `prefix`, in order."""
        with self._lock:
            self._faults.extend((prefix, f) for f in faults)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def requests(self) -> list[Request]:
        """The requests since `clear`, once every request already received has been recorded.

        The client can see a whole response before the handler thread records it; waiting here
        keeps a count read right after the client returns from racing that thread.
        """
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout=10)
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._in_flight = 0
            self._requests.clear()
            self._faults.clear()

    def _begin(self, path: str) -> tuple[Fault | None, int]:
        """Count the request in flight and take the first fault queued for its path."""
        with self._lock:
            self._in_flight += 1
            for i, (prefix, fault) in enumerate(self._faults):
                if path.startswith(prefix):
                    del self._faults[i]
                    return fault, self._generation
        return None, self._generation

    def _record(self, generation: int, request: Request) -> None:
        with self._lock:
            if generation != self._generation:
                return
            self._requests.append(request)
            self._in_flight -= 1
            self._lock.notify_all()
