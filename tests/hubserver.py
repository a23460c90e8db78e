"""A local Hugging Face Hub protocol server for tests (standard library only).

It answers the endpoints that ``huggingface_hub`` 2.4.0 really calls when ``HF_HUB_DISABLE_XET=1``
(legacy Git-LFS upload path), so the real client (``HfApi``, ``hf_hub_download``, ``HfFileSystem``)
and plain HTTP readers can be tested offline.

Quick start::

    from tests.hubserver import HubServer

    with HubServer() as hub:
        env = hub.client_env(hf_home=tmp_path / "hf")  # HF_ENDPOINT, HF_TOKEN, ...
        proc = hub.run_client("from huggingface_hub import HfApi; print(HfApi().whoami()['name'])",
                              hf_home=tmp_path / "hf")
        assert proc.returncode == 0, proc.stderr

Or, in ``tests/conftest.py``: ``from tests.hubserver import hub_server  # noqa: F401`` and use the
``hub_server`` fixture.

Model of the Hub kept by the server:

* repos keyed by ``(repo_type, repo_id)``, public or private; every repo has a ``main`` branch and a
  linear history of commits; each commit holds a full snapshot ``{path: entry}``. New repos get an
  initial commit with the Hub's default ``.gitattributes`` (like the real Hub; pass
  ``gitattributes=False`` to skip it).
* file contents live on disk, content-addressed by sha256, in a temp dir.
* a file is "LFS" when the preupload answer said so (binary sample, size >= ``lfs_threshold``, or
  a ``filter=lfs`` pattern of the repo's ``.gitattributes``); LFS objects are uploaded per repo
  through the LFS batch API and a signed PUT URL, then referenced by an ``lfsFile`` commit line.
* ``resolve`` of an LFS file answers ``302`` to a signed URL on a second "CDN" port (different
  origin, no auth needed), like the real Hub; ``lfs_redirect=False`` serves the bytes directly.

Everything is recorded in :attr:`HubServer.log` (see :class:`RequestRecord`).

Endpoints (``{t}`` = models|datasets|spaces, ``{p}`` = "" | "datasets/" | "spaces/")::

    GET  /api/whoami-v2                              POST /api/repos/create
    GET  /api/agent-harnesses (an empty registry)
    DELETE /api/repos/delete                         POST /api/validate-yaml
    PUT  /api/{t}/{repo}/settings
    GET  /api/{t}/{repo}[/revision/{rev}]            GET  /api/{t}/{repo}/refs
    GET  /api/{t}/{repo}/commits/{rev}               POST /api/{t}/{repo}/preupload/{rev}
    POST /{p}{repo}.git/info/lfs/objects/batch       PUT/POST /_hubserver/lfs*  (signed upload URLs)
    POST /api/{t}/{repo}/commit/{rev}                (NDJSON: header, file, lfsFile, deletedFile,
                                                      deletedFolder; commits to an existing branch)
    GET  /api/{t}/{repo}/tree/{rev}[/{path}]         (recursive, expand, cursor pagination + Link)
    POST /api/{t}/{repo}/paths-info/{rev}            (form or JSON: paths, expand)
    GET|HEAD /{p}{repo}/resolve/{rev}/{path}          (Range; ETag, X-Repo-Commit, X-Linked-*)
    GET|HEAD <cdn_url>/cdn/{sha256}/{name}?sig=...    (signed, Range; the LFS redirect target)

Revisions: "main", a full commit oid, or a unique prefix (>= 7 hex). Not supported: Xet (the
``xet-*-token`` endpoints answer 501 with a hint to set HF_HUB_DISABLE_XET=1), pull requests
(``create_pr``), other branches/tags, CommitOperationCopy of LFS files across repos, gated repos,
organizations' permissions (any write token may write to any namespace).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as _dt
import fnmatch
import hashlib
import hmac
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

DEFAULT_TOKEN = "hf_test_token"
READ_TOKEN = "hf_test_read_token"
DEFAULT_USER = "testuser"

_TYPE_FROM_PLURAL = {
    "models": "model",
    "datasets": "dataset",
    "spaces": "space",
    "kernels": "kernel",
}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}

# Default .gitattributes of a new repo on the Hub (abridged to the patterns that matter here).
DEFAULT_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.lz4 filter=lfs diff=lfs merge=lfs -text
*.mds filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
# Audio files - uncompressed
*.pcm filter=lfs diff=lfs merge=lfs -text
*.sam filter=lfs diff=lfs merge=lfs -text
*.raw filter=lfs diff=lfs merge=lfs -text
# Audio files - compressed
*.aac filter=lfs diff=lfs merge=lfs -text
*.flac filter=lfs diff=lfs merge=lfs -text
*.mp3 filter=lfs diff=lfs merge=lfs -text
*.ogg filter=lfs diff=lfs merge=lfs -text
*.wav filter=lfs diff=lfs merge=lfs -text
# Image files - uncompressed
*.bmp filter=lfs diff=lfs merge=lfs -text
*.gif filter=lfs diff=lfs merge=lfs -text
*.png filter=lfs diff=lfs merge=lfs -text
*.tiff filter=lfs diff=lfs merge=lfs -text
# Image files - compressed
*.jpg filter=lfs diff=lfs merge=lfs -text
*.jpeg filter=lfs diff=lfs merge=lfs -text
*.webp filter=lfs diff=lfs merge=lfs -text
# Video files - compressed
*.mp4 filter=lfs diff=lfs merge=lfs -text
*.webm filter=lfs diff=lfs merge=lfs -text
"""


# --------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------


def git_blob_oid(data: bytes) -> str:
    """Git blob sha1 of ``data`` (what the Hub reports as ``oid`` for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def _iso(d: _dt.datetime) -> str:
    return (
        d.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{d.microsecond // 1000:03d}Z"
    )


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """A file of a commit snapshot. ``size``/``sha256``/``oid`` are the metadata the server reports;
    ``blob`` is the sha256 key of the bytes it actually serves (differs only after
    :meth:`HubServer.alter_file`)."""

    path: str
    size: int
    sha256: str
    lfs: bool
    oid: str  # git blob oid: of the content (regular) or of the LFS pointer (LFS)
    blob: str

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "file",
            "oid": self.oid,
            "size": self.size,
            "path": self.path,
        }
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        return out


@dataclasses.dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    description: str
    date: _dt.datetime
    author: str
    #: ``(kind, path)`` with kind in "file" (regular add), "lfsFile", "deletedFile",
    #: "deletedFolder" (same keys as the NDJSON commit payload).
    operations: list[tuple[str, str]]
    tree: dict[str, FileEntry] = dataclasses.field(repr=False)


@dataclasses.dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: _dt.datetime
    branches: dict[str, str] = dataclasses.field(default_factory=dict)
    commits: dict[str, Commit] = dataclasses.field(default_factory=dict)
    history: list[str] = dataclasses.field(default_factory=list)  # all commit oids, oldest first
    lfs_objects: set[str] = dataclasses.field(default_factory=set)  # sha256 uploaded to this repo

    def head(self, branch: str = "main") -> Commit:
        return self.commits[self.branches[branch]]

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.commits:
            return self.commits[revision]
        if len(revision) >= 7 and re.fullmatch(r"[0-9a-f]+", revision):
            matches = [oid for oid in self.commits if oid.startswith(revision)]
            if len(matches) == 1:
                return self.commits[matches[0]]
        return None


class _RequestRecordBase(NamedTuple):
    method: str
    path: str
    status: int
    bytes_received: int
    bytes_sent: int
    had_auth: bool


class RequestRecord(_RequestRecordBase):
    """One served request. Unpacks as ``(method, path, status, bytes_received, bytes_sent,
    had_auth)``; extra attributes: ``route`` (e.g. "resolve", "cdn", "lfs_put", "commit"),
    ``is_write``, ``query`` (raw query string), ``range`` (Range header or None), ``token``
    (bearer token or None), ``server`` ("hub" or "cdn"), ``repo`` (repo_id or None), ``time``.
    ``path`` is the raw (URL-encoded) path without query; ``decoded_path`` is unquoted."""

    route: str
    is_write: bool
    query: str
    range: str | None
    token: str | None
    server: str
    repo: str | None
    time: float

    @property
    def decoded_path(self) -> str:
        return urllib.parse.unquote(self.path)


@dataclasses.dataclass
class _Fault:
    status: int = 503
    action: str = "status"  # "status" | "close" | "truncate"
    route: str | None = None
    method: str | None = None
    path_contains: str | None = None
    times: int | None = 1  # None = forever
    after: int = 0  # let this many matching requests pass first
    delay: float = 0.0
    seen: int = 0

    def matches(self, method: str, route: str, path: str) -> bool:
        if self.route is not None and self.route != route:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path_contains is None or self.path_contains in urllib.parse.unquote(path)


class HubError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, headers=None, extra=None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Req:
    """Request/response wrapper used by the route handlers (counts bytes both ways)."""

    def __init__(self, handler: _Handler, server_kind: str):
        self.h = handler
        self.server_kind = server_kind
        self.method = handler.command
        split = urllib.parse.urlsplit(handler.path)
        self.path = split.path
        self.query_string = split.query
        self.query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        self.headers = handler.headers
        self.bytes_received = 0
        self.bytes_sent = 0
        self.status: int | None = None
        self.route = "unknown"
        self.is_write = False
        self.repo: str | None = None
        self._body_done = False
        auth = self.headers.get("Authorization")
        self.had_auth = auth is not None
        self.token: str | None = None
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            self.token = value.strip() if scheme.lower() == "bearer" else auth

    # -- request -----------------------------------------------------------------------------

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def qbool(self, name: str) -> bool:
        return (self.q(name) or "").lower() in ("1", "true", "yes")

    def iter_body(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        if self._body_done:
            return
        self._body_done = True
        rfile = self.h.rfile
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                line = rfile.readline(65537)
                self.bytes_received += len(line)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        trailer = rfile.readline(65537)
                        self.bytes_received += len(trailer)
                        if trailer in (b"\r\n", b"\n", b""):
                            return
                remaining = size
                while remaining > 0:
                    data = rfile.read(min(chunk_size, remaining))
                    if not data:
                        raise ConnectionError("client closed during chunked body")
                    remaining -= len(data)
                    self.bytes_received += len(data)
                    yield data
                self.bytes_received += len(rfile.readline(65537))  # CRLF after chunk
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                data = rfile.read(min(chunk_size, remaining))
                if not data:
                    raise ConnectionError("client closed during body")
                remaining -= len(data)
                self.bytes_received += len(data)
                yield data

    def body(self) -> bytes:
        return b"".join(self.iter_body())

    def drain(self) -> None:
        for _ in self.iter_body():
            pass

    def json_body(self) -> Any:
        raw = self.body()
        try:
            return json.loads(raw or b"null")
        except ValueError as e:
            raise HubError(400, f"invalid JSON body: {e}") from e

    # -- response ----------------------------------------------------------------------------

    def start(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.h.send_response(status)
        self.h.send_header("X-Request-Id", uuid.uuid4().hex)
        for key, value in (headers or {}).items():
            self.h.send_header(key, str(value))
        self.h.end_headers()

    def send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json; charset=utf-8",
    ) -> None:
        hdrs = {"Content-Type": content_type, "Content-Length": str(len(body))}
        hdrs.update(headers or {})
        self.start(status, hdrs)
        if self.method != "HEAD" and body:
            self.h.wfile.write(body)
            self.bytes_sent += len(body)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(obj).encode(), headers)

    def send_error_json(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message.encode("ascii", "replace").decode()}
        if err.code:
            headers["X-Error-Code"] = err.code
        headers.update(err.headers)
        self.send_json(err.status, {"error": err.message, **err.extra}, headers)

    def send_file(
        self,
        path: Path,
        headers: dict[str, str],
        range_header: str | None,
        truncate: bool = False,
    ) -> None:
        """Serve ``path`` with Range support (single range)."""
        size = path.stat().st_size
        rng = _parse_range(range_header, size)
        if rng == "unsatisfiable":
            self.send_json(
                416,
                {"error": f"Requested range not satisfiable: {range_header}"},
                {"Content-Range": f"bytes */{size}", **headers},
            )
            return
        if rng is None:
            status, start, length = 200, 0, size
        else:
            status, (start, end) = 206, rng
            length = end - start + 1
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
        hdrs = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            "Accept-Ranges": "bytes",
            **headers,
        }
        self.start(status, hdrs)
        if self.method == "HEAD":
            return
        to_send = length // 2 if truncate else length
        with open(path, "rb") as f:
            f.seek(start)
            while to_send > 0:
                data = f.read(min(1 << 20, to_send))
                if not data:
                    break
                self.h.wfile.write(data)
                self.bytes_sent += len(data)
                to_send -= len(data)
        if truncate:
            self.h.wfile.flush()
            self.h.close_connection = True


def _parse_range(header: str | None, size: int):
    """Return None (serve all), (start, end_inclusive), or "unsatisfiable"."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # multi-range or garbage: ignore, like many servers
    if m.group(1) == "":
        suffix = int(m.group(2))
        if suffix == 0:
            return "unsatisfiable"
        start = max(0, size - suffix)
        end = size - 1
    else:
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
        end = min(end, size - 1)
        if start >= size or end < start:
            return "unsatisfiable"
    return (start, end)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubserver/1.0"
    timeout = 60  # idle keep-alive connections are closed after this

    def log_message(self, format, *args):  # noqa: A002 - silence default stderr access log
        pass

    def _dispatch(self) -> None:
        self.server.hub._serve(self, self.server.kind)  # type: ignore[attr-defined]

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, hub: HubServer, kind: str):
        self.hub = hub
        self.kind = kind
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


_API_RE = re.compile(
    r"^/api/(models|datasets|spaces|kernels)/([^/]+)/([^/]+)(?:/([^/]+)(?:/([^/]+)(?:/(.*))?)?)?$"
)
_RESOLVE_RE = re.compile(r"^/(?:(datasets|spaces|kernels)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")
_LFS_BATCH_RE = re.compile(
    r"^/(?:(datasets|spaces|kernels)/)?([^/]+)/([^/]+?)\.git/info/lfs/objects/batch$"
)


class HubServer:
    """Local Hub protocol server. Use as a context manager or call :meth:`start`/:meth:`stop`.

    Args:
        root: folder for stored contents (a fresh temp dir by default, removed on stop).
        token: the valid write token (``hf_test_token``); ``read_token`` is a valid read-only token.
        username: name returned by whoami and the default namespace.
        lfs_threshold: files at least this big go LFS (Hub: 10 MB); regular files above it are
            rejected in commits, like the Hub.
        lfs_redirect: answer ``resolve`` of LFS files with a 302 to the "CDN" port (like the Hub).
        tree_page_size / tree_page_size_expand: pagination of the tree endpoint (Hub: 1000 / 50).
        multipart_chunk_size: if set, LFS objects larger than this are uploaded with the Hub's
            multipart protocol (parts PUT + completion POST) instead of one PUT.
        gitattributes: new repos start with an initial commit holding the default .gitattributes.
        strict_auth: a request carrying an invalid token gets 401 even on public repos.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        token: str = DEFAULT_TOKEN,
        read_token: str = READ_TOKEN,
        username: str = DEFAULT_USER,
        lfs_threshold: int = 10 * 1024 * 1024,
        lfs_redirect: bool = True,
        tree_page_size: int = 1000,
        tree_page_size_expand: int = 50,
        multipart_chunk_size: int | None = None,
        gitattributes: bool = True,
        strict_auth: bool = True,
    ):
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="hubserver-"))
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.read_token = read_token
        self.username = username
        self.tokens: dict[str, dict[str, str]] = {
            token: {"user": username, "role": "write"},
            read_token: {"user": username, "role": "read"},
        }
        self.lfs_threshold = lfs_threshold
        self.lfs_redirect = lfs_redirect
        self.tree_page_size = tree_page_size
        self.tree_page_size_expand = tree_page_size_expand
        self.multipart_chunk_size = multipart_chunk_size
        self.gitattributes = gitattributes
        self.strict_auth = strict_auth

        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._log: list[RequestRecord] = []
        # Requests whose response is sent but whose record is not yet logged: `log` waits for
        # them, so a test reading the log right after a response never misses that request.
        self._in_flight = 0
        self._settled = threading.Condition(threading.Lock())
        self.unknown_routes: list[str] = []
        self._faults: list[_Fault] = []
        self._upload_fault: tuple[int, int] | None = None  # (remaining successes, status)
        self._commit_fault: tuple[int, int] | None = None
        self._multipart: dict[str, dict[str, Any]] = {}
        self._secret = os.urandom(16)
        self._hub: _HTTPServer | None = None
        self._cdn: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> HubServer:
        if self._hub is not None:
            return self
        self._hub = _HTTPServer(self, "hub")
        self._cdn = _HTTPServer(self, "cdn")
        for srv in (self._hub, self._cdn):
            t = threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for srv in (self._hub, self._cdn):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        self._hub = self._cdn = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Endpoint base, e.g. ``http://127.0.0.1:40123`` (use as HF_ENDPOINT)."""
        assert self._hub is not None, "server not started"
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        assert self._cdn is not None, "server not started"
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    # ---------------------------------------------------------------- client helpers

    def client_env(
        self,
        hf_home: str | os.PathLike,
        token: str | None = DEFAULT_TOKEN,
        extra: dict[str, str] | None = None,
        base: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Environment for a client subprocess: copies ``base`` (default ``os.environ``) without
        any ``HF_*``/``HUGGINGFACE_*`` variable, then sets HF_ENDPOINT, HF_HUB_DISABLE_XET=1,
        HF_TOKEN (unless ``token`` is None), HF_HOME, telemetry/progress bars off, NO_PROXY."""
        env = {
            k: v
            for k, v in (os.environ if base is None else base).items()
            if not k.startswith(("HF_", "HUGGINGFACE_"))
        }
        env.update(
            HF_ENDPOINT=self.url,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_SYMLINKS_WARNING="1",
            HF_HOME=str(hf_home),
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            PYTHONUNBUFFERED="1",
        )
        if token is not None:
            env["HF_TOKEN"] = token
        env.update(extra or {})
        return env

    def run_client(
        self,
        code: str,
        hf_home: str | os.PathLike,
        token: str | None = DEFAULT_TOKEN,
        extra_env: dict[str, str] | None = None,
        timeout: float = 120,
        args: Iterable[str] = (),
        cwd: str | os.PathLike | None = None,
    ) -> subprocess.CompletedProcess:
        """Run ``python -c code *args`` with :meth:`client_env`; returns the CompletedProcess."""
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            env=self.client_env(hf_home, token=token, extra=extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )

    # ---------------------------------------------------------------- state API for tests

    def create_repo(
        self, repo_id: str, *, repo_type: str = "dataset", private: bool = False
    ) -> None:
        """Create a repo server-side (no-op if it exists)."""
        with self._lock:
            if (repo_type, repo_id) not in self._repos:
                self._new_repo(repo_type, repo_id, private)

    def put_file(
        self,
        repo_id: str,
        path: str,
        data: bytes,
        *,
        repo_type: str = "dataset",
        lfs: bool | None = None,
        message: str | None = None,
    ) -> str:
        """Commit one file server-side (creates the repo if needed). Returns the commit oid."""
        return self.put_files(repo_id, {path: data}, repo_type=repo_type, lfs=lfs, message=message)

    def put_files(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        repo_type: str = "dataset",
        lfs: bool | None = None,
        message: str | None = None,
    ) -> str:
        """Commit several files server-side in one commit (``lfs=None``: preupload rule)."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id)) or self._new_repo(
                repo_type, repo_id, False
            )
            tree = dict(repo.head().tree)
            ops = []
            for path, data in files.items():
                is_lfs = self._decide_lfs(repo, path, len(data), data[:512]) if lfs is None else lfs
                sha = self._store_bytes(data)
                if is_lfs:
                    repo.lfs_objects.add(sha)
                tree[path] = self._entry(path, data, sha, is_lfs)
                ops.append(("lfsFile" if is_lfs else "file", path))
            return self._add_commit(
                repo, tree, message or f"Seed {len(files)} file(s)", "", ops
            ).oid

    def remove_file(self, repo_id: str, path: str, *, repo_type: str = "dataset") -> str:
        """Delete a file server-side with a commit. Returns the commit oid."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            tree = dict(repo.head().tree)
            del tree[path]
            return self._add_commit(repo, tree, f"Delete {path}", "", [("deletedFile", path)]).oid

    def alter_file(
        self, repo_id: str, path: str, new_bytes: bytes, *, repo_type: str = "dataset"
    ) -> None:
        """Simulate storage corruption: ``path`` on main now serves ``new_bytes`` while every
        listed metadata (oid, size, lfs sha256, ETag, X-Linked-Size) stays the old one. No commit.
        The stored LFS object of the old content is untouched, so re-committing it heals the file.
        (To simulate a legitimate remote change instead, use :meth:`put_file`.)"""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            head = repo.head()
            old = head.tree[path]
            head.tree[path] = dataclasses.replace(old, blob=self._store_bytes(new_bytes))

    def files(
        self, repo_id: str, *, repo_type: str = "dataset", revision: str = "main"
    ) -> dict[str, bytes]:
        """``{path: bytes}`` as served at ``revision`` (includes ``.gitattributes``)."""
        with self._lock:
            commit = self._get_repo(repo_type, repo_id).resolve(revision)
            assert commit is not None, f"unknown revision {revision}"
            entries = list(commit.tree.values())
        return {e.path: (self.objects_dir / e.blob).read_bytes() for e in entries}

    def entries(
        self, repo_id: str, *, repo_type: str = "dataset", revision: str = "main"
    ) -> dict[str, FileEntry]:
        """``{path: FileEntry}`` (size, sha256, lfs flag, git oid) at ``revision``."""
        with self._lock:
            commit = self._get_repo(repo_type, repo_id).resolve(revision)
            assert commit is not None, f"unknown revision {revision}"
            return dict(commit.tree)

    def commits(self, repo_id: str, *, repo_type: str = "dataset") -> list[Commit]:
        """All commits of the repo, oldest first (the first one is the repo's initial commit)."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            return [repo.commits[oid] for oid in repo.history]

    def repo_exists(self, repo_id: str, *, repo_type: str = "dataset") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def is_private(self, repo_id: str, *, repo_type: str = "dataset") -> bool:
        with self._lock:
            return self._get_repo(repo_type, repo_id).private

    def lfs_objects(self, repo_id: str, *, repo_type: str = "dataset") -> set[str]:
        """sha256 of the LFS objects uploaded to the repo."""
        with self._lock:
            return set(self._get_repo(repo_type, repo_id).lfs_objects)

    # -- request log

    @property
    def log(self) -> list[RequestRecord]:
        """Copy of the request log (see :class:`RequestRecord`), once in-flight requests settle."""
        with self._settled:
            self._settled.wait_for(lambda: self._in_flight == 0, timeout=5)
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self.unknown_routes.clear()

    def requests(
        self, route: str | None = None, method: str | None = None, path_contains: str | None = None
    ) -> list[RequestRecord]:
        """Filtered log. ``path_contains`` is matched against the decoded path."""
        return [
            r
            for r in self.log
            if (route is None or r.route == route)
            and (method is None or r.method == method)
            and (path_contains is None or path_contains in r.decoded_path)
        ]

    def writes(self) -> list[RequestRecord]:
        """Attempted (any status) state-changing requests: create/delete repo, settings, LFS data
        uploads (PUT of an object or part, multipart completion), commits. Not: preupload, LFS
        batch, verify, reads."""
        return [r for r in self.log if r.is_write]

    def uploaded_bytes(self) -> int:
        """Request body bytes of LFS data uploads and commit payloads."""
        return sum(
            r.bytes_received for r in self.log if r.route in ("lfs_put", "lfs_part", "commit")
        )

    def assert_no_unknown_routes(self) -> None:
        assert not self.unknown_routes, (
            f"hubserver: unimplemented routes hit: {self.unknown_routes}"
        )

    # -- faults

    def fail_after_uploads(self, k: int, status: int = 507) -> None:
        """After ``k`` more successful LFS object uploads, every LFS data upload (PUT of an object
        or of a part) answers ``status`` until :meth:`clear_faults`.

        The default status 507 is not retried by huggingface_hub; 500/502/503/504/429 are retried
        by ``http_backoff`` 5 times with 1+2+4+8+8 s sleeps (~23 s per failing file)."""
        with self._lock:
            self._upload_fault = (k, status)

    def fail_after_commits(self, k: int, status: int = 507) -> None:
        """After ``k`` more successful commits, commits answer ``status`` (see
        :meth:`fail_after_uploads` about retried statuses)."""
        with self._lock:
            self._commit_fault = (k, status)

    def inject_fault(
        self,
        *,
        route: str | None = None,
        method: str | None = None,
        path_contains: str | None = None,
        status: int = 503,
        action: str = "status",
        times: int | None = 1,
        after: int = 0,
        delay: float = 0.0,
    ) -> None:
        """Generic fault on matching requests (all given criteria must match; route names are
        those of :class:`RequestRecord`). ``action``: "status" (answer ``status`` with a JSON
        error), "close" (drop the connection without answering), "truncate" (file downloads
        only: send headers and half the body, then close). ``after`` lets that many matching
        requests pass first; ``times=None`` repeats forever; ``delay`` sleeps before acting."""
        assert action in ("status", "close", "truncate")
        with self._lock:
            self._faults.append(
                _Fault(status, action, route, method, path_contains, times, after, delay)
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._upload_fault = None
            self._commit_fault = None

    # ---------------------------------------------------------------- internals: storage

    def _store_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        target = self.objects_dir / sha
        if not target.exists():
            tmp = self.tmp_dir / uuid.uuid4().hex
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return sha

    def _entry(
        self, path: str, data_or_none: bytes | None, sha: str, lfs: bool, size=None
    ) -> FileEntry:
        if lfs:
            size = size if size is not None else len(data_or_none)  # type: ignore[arg-type]
            return FileEntry(path, size, sha, True, git_blob_oid(lfs_pointer(sha, size)), sha)
        assert data_or_none is not None
        return FileEntry(path, len(data_or_none), sha, False, git_blob_oid(data_or_none), sha)

    def _new_repo(self, repo_type: str, repo_id: str, private: bool) -> _Repo:
        now = _dt.datetime.now(_dt.timezone.utc)
        repo = _Repo(repo_type, repo_id, private, now)
        self._repos[(repo_type, repo_id)] = repo
        tree: dict[str, FileEntry] = {}
        ops = []
        if self.gitattributes:
            data = DEFAULT_GITATTRIBUTES.encode()
            tree[".gitattributes"] = self._entry(
                ".gitattributes", data, self._store_bytes(data), False
            )
            ops.append(("file", ".gitattributes"))
        self._add_commit(repo, tree, "initial commit", "", ops, parent=None)
        return repo

    def _add_commit(
        self, repo, tree, message, description, ops, parent="head", author=None
    ) -> Commit:
        parent_oid = repo.branches.get("main") if parent == "head" else parent
        now = _dt.datetime.now(_dt.timezone.utc)
        oid = hashlib.sha1(
            f"{repo.repo_id}\0{parent_oid}\0{message}\0{time.time_ns()}\0{uuid.uuid4()}".encode()
        ).hexdigest()
        commit = Commit(
            oid, parent_oid, message, description, now, author or self.username, ops, tree
        )
        repo.commits[oid] = commit
        repo.history.append(oid)
        repo.branches["main"] = oid
        return commit

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        try:
            return self._repos[(repo_type, repo_id)]
        except KeyError:
            raise KeyError(f"no {repo_type} repo {repo_id!r} on the test server") from None

    def _lfs_patterns(self, repo: _Repo) -> list[str]:
        entry = repo.head().tree.get(".gitattributes")
        if entry is None:
            return []
        text = (self.objects_dir / entry.blob).read_text(errors="replace")
        return [
            line.split()[0]
            for line in text.splitlines()
            if line.strip() and not line.startswith("#") and "filter=lfs" in line
        ]

    def _decide_lfs(self, repo: _Repo, path: str, size: int, sample: bytes) -> bool:
        if size == 0:
            return False
        if size >= self.lfs_threshold or b"\x00" in sample:
            return True
        name = path.rsplit("/", 1)[-1]
        for pattern in self._lfs_patterns(repo):
            if "/" in pattern:
                if fnmatch.fnmatch(path, pattern.replace("**/", "*")):
                    return True
            elif fnmatch.fnmatch(name, pattern):
                return True
        return False

    def _last_commit_for(self, repo: _Repo, head: Commit, path: str, is_dir: bool) -> Commit:
        c = head
        while c.parent is not None:
            p = repo.commits[c.parent]
            if is_dir:
                prefix = path + "/"
                keys = {k for k in (*c.tree, *p.tree) if k.startswith(prefix)}
            else:
                keys = {path}
            if any(c.tree.get(k) != p.tree.get(k) for k in keys):
                return c
            c = p
        return c

    # ---------------------------------------------------------------- internals: HTTP

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "\0".join(parts).encode(), hashlib.sha256).hexdigest()[:32]

    def _serve(self, handler: _Handler, kind: str) -> None:
        with self._settled:
            self._in_flight += 1
        req = _Req(handler, kind)
        try:
            try:
                if kind == "cdn":
                    self._route_cdn(req)
                else:
                    self._route(req)
            except HubError as e:
                req.drain()
                req.send_error_json(e)
            except _CloseConnection:
                handler.close_connection = True
                req.status = 0
            else:
                req.drain()
        except (ConnectionError, TimeoutError):
            handler.close_connection = True
            if req.status is None:
                req.status = 0
        except Exception as e:  # a server bug: answer 500 and make it visible
            import traceback

            traceback.print_exc()
            print(f"hubserver: internal error on {req.method} {req.path}: {e!r}", file=sys.stderr)
            if req.status is None:
                with contextlib.suppress(Exception):
                    req.drain()
                    req.send_json(500, {"error": f"hubserver internal error: {e!r}"})
            handler.close_connection = True
        finally:
            record = RequestRecord(
                req.method,
                req.path,
                req.status if req.status is not None else 0,
                req.bytes_received,
                req.bytes_sent,
                req.had_auth,
            )
            record.route = req.route
            record.is_write = req.is_write
            record.query = req.query_string
            record.range = req.headers.get("Range")
            record.token = req.token
            record.server = kind
            record.repo = req.repo
            record.time = time.time()
            with self._lock:
                self._log.append(record)
            with self._settled:
                self._in_flight -= 1
                self._settled.notify_all()

    def _check_faults(self, req: _Req, download: bool = False) -> bool:
        """Apply a matching generic fault. Returns True if the download must be truncated."""
        fault = None
        with self._lock:
            for f in self._faults:
                if f.matches(req.method, req.route, req.path):
                    f.seen += 1
                    if f.seen <= f.after:
                        continue
                    if f.times is not None:
                        if f.times <= 0:
                            continue
                        f.times -= 1
                    fault = f
                    break
        if fault is None:
            return False
        if fault.delay:
            time.sleep(fault.delay)
        if fault.action == "close":
            raise _CloseConnection()
        if fault.action == "truncate":
            if download:
                return True
            raise _CloseConnection()
        raise HubError(fault.status, f"hubserver: injected fault ({fault.status}) on {req.route}")

    # -- auth

    def _token_info(self, req: _Req) -> dict[str, str] | None:
        if req.token is None:
            return None
        info = self.tokens.get(req.token)
        if info is None and self.strict_auth:
            raise HubError(401, "Invalid credentials in Authorization header")
        return info

    def _repo_for_read(self, req: _Req, repo_type: str, repo_id: str) -> _Repo:
        req.repo = repo_id
        info = self._token_info(req)
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if repo.private and info is None:
            raise HubError(401, "Repository not found", "RepoNotFound")
        return repo

    def _require_write(self, req: _Req) -> dict[str, str]:
        info = self._token_info(req)
        if info is None:
            raise HubError(401, "You must be authenticated to access this resource")
        if info["role"] != "write":
            raise HubError(
                403, "You don't have the rights to write to this repo: the token is read-only"
            )
        return info

    def _repo_for_write(self, req: _Req, repo_type: str, repo_id: str) -> _Repo:
        req.repo = repo_id
        self._require_write(req)
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def _commit_for(repo: _Repo, rev_quoted: str) -> Commit:
        rev = urllib.parse.unquote(rev_quoted)
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    # -- routing

    def _route(self, req: _Req) -> None:
        path, method = req.path, req.method

        simple = {
            ("/api/whoami-v2", "GET"): ("whoami", False),
            ("/api/repos/create", "POST"): ("create_repo", True),
            ("/api/repos/delete", "DELETE"): ("delete_repo", True),
            ("/api/validate-yaml", "POST"): ("validate_yaml", False),
            ("/api/agent-harnesses", "GET"): ("agent_harnesses", False),
        }
        if (path, method) in simple:
            req.route, req.is_write = simple[(path, method)]
            self._check_faults(req)
            return getattr(self, f"_r_{req.route}")(req)
        if path.startswith("/_hubserver/"):
            return self._route_lfs_data(req)

        m = _API_RE.match(path)
        if m:
            repo_type = _TYPE_FROM_PLURAL[m.group(1)]
            repo_id = f"{m.group(2)}/{m.group(3)}"
            action, rev, rest = m.group(4), m.group(5), m.group(6)
            if "xet" in (action or ""):
                req.route = "xet"
                raise HubError(
                    501,
                    "hubserver does not implement Xet storage: run the client with "
                    "HF_HUB_DISABLE_XET=1 (HubServer.client_env does it)",
                )
            table = {
                (None, "GET"): "repo_info",
                ("revision", "GET"): "repo_info",
                ("preupload", "POST"): "preupload",
                ("commit", "POST"): "commit",
                ("tree", "GET"): "tree",
                ("paths-info", "POST"): "paths_info",
                ("commits", "GET"): "list_commits",
                ("refs", "GET"): "refs",
                ("settings", "PUT"): "settings",
            }
            route = table.get((action, method))
            if route is not None:
                req.route = route
                req.repo = repo_id
                self._check_faults(req)
                return getattr(self, f"_r_{route}")(req, repo_type, repo_id, rev, rest)

        m = _LFS_BATCH_RE.match(path)
        if m and method == "POST":
            req.route = "lfs_batch"
            repo_type = _TYPE_FROM_PLURAL[m.group(1)] if m.group(1) else "model"
            self._check_faults(req)
            return self._r_lfs_batch(req, repo_type, f"{m.group(2)}/{m.group(3)}")

        m = _RESOLVE_RE.match(path)
        if m and method in ("GET", "HEAD"):
            req.route = "resolve"
            repo_type = _TYPE_FROM_PLURAL[m.group(1)] if m.group(1) else "model"
            truncate = self._check_faults(req, download=True)
            return self._r_resolve(
                req, repo_type, f"{m.group(2)}/{m.group(3)}", m.group(4), m.group(5), truncate
            )

        self._unknown(req)

    def _unknown(self, req: _Req) -> None:
        desc = f"{req.method} {req.path}" + (f"?{req.query_string}" if req.query_string else "")
        with self._lock:
            self.unknown_routes.append(desc)
        print(f"\n*** hubserver: NO ROUTE for {desc} -> 404 ***\n", file=sys.stderr, flush=True)
        raise HubError(404, f"hubserver: no route for {desc}")

    # -- simple API routes

    def _r_whoami(self, req: _Req) -> None:
        info = self._token_info(req)
        if info is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        req.send_json(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(info["user"].encode()).hexdigest()[:24],
                "name": info["user"],
                "fullname": info["user"].title(),
                "email": f"{info['user']}@example.com",
                "emailVerified": True,
                "isPro": False,
                "canPay": False,
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "hubserver", "role": info["role"]},
                },
            },
        )

    def _r_agent_harnesses(self, req: _Req) -> None:
        """The registry huggingface_hub fetches once a day to detect AI agents: none known."""
        req.send_json(200, {"standardEnvVars": [], "harnesses": {}})

    def _r_create_repo(self, req: _Req) -> None:
        info = self._require_write(req)
        payload = req.json_body() or {}
        name = payload.get("name")
        if not name:
            raise HubError(400, "name is required")
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"invalid repo type {repo_type!r}")
        repo_id = f"{payload.get('organization') or info['user']}/{name}"
        req.repo = repo_id
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        url = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise HubError(
                    409, f"You already created this {repo_type} repo", extra={"url": url}
                )
            self._new_repo(repo_type, repo_id, private)
        req.send_json(200, {"url": url, "name": repo_id, "id": uuid.uuid4().hex[:24]})

    def _r_delete_repo(self, req: _Req) -> None:
        info = self._require_write(req)
        payload = req.json_body() or {}
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or info['user']}/{payload.get('name')}"
        req.repo = repo_id
        with self._lock:
            if self._repos.pop((repo_type, repo_id), None) is None:
                raise HubError(404, "Repository not found", "RepoNotFound")
        req.send_json(200, {})

    def _r_validate_yaml(self, req: _Req) -> None:
        payload = req.json_body() or {}
        content = payload.get("content") or ""
        errors = []
        if content.startswith("---"):
            parts = re.split(r"^---\s*$", content, maxsplit=2, flags=re.M)
            if len(parts) < 3:
                errors.append({"message": "metadata block is not closed with ---"})
            else:
                try:
                    import yaml  # optional

                    yaml.safe_load(parts[1])
                except ImportError:
                    pass
                except Exception as e:  # yaml.YAMLError
                    errors.append({"message": f"invalid YAML: {e}"})
        req.send_json(400 if errors else 200, {"errors": errors, "warnings": []})

    def _repo_info_json(self, repo: _Repo, commit: Commit, blobs: bool) -> dict[str, Any]:
        siblings = []
        for e in sorted(commit.tree.values(), key=lambda e: e.path):
            s: dict[str, Any] = {"rfilename": e.path}
            if blobs:
                s["size"] = e.size
                s["blobId"] = e.oid
                if e.lfs:
                    s["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": e.pointer_size}
            siblings.append(s)
        owner = repo.repo_id.split("/")[0]
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": owner,
            "sha": commit.oid,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created_at),
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(e.size for e in commit.tree.values()),
        }

    def _r_repo_info(self, req, repo_type, repo_id, rev, rest) -> None:
        with self._lock:
            repo = self._repo_for_read(req, repo_type, repo_id)
            commit = repo.head() if rev is None else self._commit_for(repo, rev)
            body = self._repo_info_json(repo, commit, req.qbool("blobs"))
        req.send_json(200, body)

    def _r_settings(self, req, repo_type, repo_id, rev, rest) -> None:
        req.is_write = True
        payload = req.json_body() or {}
        with self._lock:
            repo = self._repo_for_write(req, repo_type, repo_id)
            if "private" in payload:
                repo.private = bool(payload["private"])
            if "visibility" in payload:
                repo.private = payload["visibility"] == "private"
        req.send_json(200, {})

    def _r_refs(self, req, repo_type, repo_id, rev, rest) -> None:
        with self._lock:
            repo = self._repo_for_read(req, repo_type, repo_id)
            branches = [
                {"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid}
                for b, oid in repo.branches.items()
            ]
        req.send_json(200, {"branches": branches, "converts": [], "tags": []})

    def _r_list_commits(self, req, repo_type, repo_id, rev, rest) -> None:
        with self._lock:
            repo = self._repo_for_read(req, repo_type, repo_id)
            c: Commit | None = self._commit_for(repo, rev)
            out = []
            while c is not None:
                out.append(
                    {
                        "id": c.oid,
                        "title": c.message,
                        "message": c.description,
                        "authors": [{"user": c.author, "avatar": None}],
                        "date": _iso(c.date),
                    }
                )
                c = repo.commits[c.parent] if c.parent else None
        req.send_json(200, out)

    # -- tree / paths-info

    def _dir_oid(self, tree: dict[str, FileEntry], prefix: str) -> str:
        h = hashlib.sha1()
        for p in sorted(k for k in tree if k.startswith(prefix + "/")):
            h.update(f"{p}\0{tree[p].oid}\n".encode())
        return h.hexdigest()

    def _dir_set(self, tree: dict[str, FileEntry]) -> set[str]:
        dirs = set()
        for p in tree:
            parts = p.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs

    def _path_json(self, repo, commit, path, is_dir, expand) -> dict[str, Any]:
        if is_dir:
            out = {
                "type": "directory",
                "oid": self._dir_oid(commit.tree, path),
                "size": 0,
                "path": path,
            }
        else:
            out = commit.tree[path].to_json()
        if expand:
            last = self._last_commit_for(repo, commit, path, is_dir)
            out["lastCommit"] = {"id": last.oid, "title": last.message, "date": _iso(last.date)}
            if not is_dir:
                out["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }
        return out

    def _r_tree(self, req, repo_type, repo_id, rev, rest) -> None:
        if rev is None:
            raise HubError(400, "revision is required")
        recursive, expand = req.qbool("recursive"), req.qbool("expand")
        base = urllib.parse.unquote(rest or "").strip("/")
        with self._lock:
            repo = self._repo_for_read(req, repo_type, repo_id)
            commit = self._commit_for(repo, rev)
            dirs = self._dir_set(commit.tree)
            if base and base not in dirs:
                if base in commit.tree:
                    raise HubError(404, f"{base} is a file, not a directory", "EntryNotFound")
                raise HubError(404, f"Entry not found: {base}", "EntryNotFound")
            prefix = base + "/" if base else ""
            items: list[tuple[str, bool]] = []
            for d in dirs:
                if d.startswith(prefix) and (recursive or "/" not in d[len(prefix) :]):
                    items.append((d, True))
            for p in commit.tree:
                if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :]):
                    items.append((p, False))
            # directories first, then files, each sorted (what the Hub does for one level)
            items.sort(key=lambda t: (not t[1], t[0]) if not recursive else (t[0], not t[1]))
            page = self.tree_page_size_expand if expand else self.tree_page_size
            start = int(req.q("cursor") or 0)
            chunk = items[start : start + page]
            body = [self._path_json(repo, commit, p, d, expand) for p, d in chunk]
        headers = {}
        if start + page < len(items):
            params = urllib.parse.urlencode(
                {"recursive": str(recursive), "expand": str(expand), "cursor": start + page}
            )
            headers["Link"] = f'<{self.url}{req.path}?{params}>; rel="next"'
        req.send_json(200, body, headers)

    def _r_paths_info(self, req, repo_type, repo_id, rev, rest) -> None:
        ctype = (req.headers.get("Content-Type") or "").lower()
        raw = req.body()
        if "json" in ctype:
            payload = json.loads(raw or b"{}")
            paths = payload.get("paths") or []
            expand = bool(payload.get("expand"))
        else:
            form = urllib.parse.parse_qs(raw.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = (form.get("expand") or ["false"])[0].lower() in ("1", "true")
        if isinstance(paths, str):
            paths = [paths]
        with self._lock:
            repo = self._repo_for_read(req, repo_type, repo_id)
            commit = self._commit_for(repo, rev)
            dirs = self._dir_set(commit.tree)
            out = []
            for p in paths:
                p = p.strip("/")
                if p in commit.tree:
                    out.append(self._path_json(repo, commit, p, False, expand))
                elif p in dirs:
                    out.append(self._path_json(repo, commit, p, True, expand))
        req.send_json(200, out)

    # -- upload: preupload, LFS batch, LFS data, commit

    def _r_preupload(self, req, repo_type, repo_id, rev, rest) -> None:
        payload = req.json_body() or {}
        if req.qbool("create_pr"):
            raise HubError(400, "hubserver does not support create_pr")
        with self._lock:
            repo = self._repo_for_write(req, repo_type, repo_id)
            commit = self._commit_for(repo, rev)
            ignore_patterns = _gitignore_patterns(payload.get("gitIgnore"))
            if payload.get("gitIgnore") is None and ".gitignore" in commit.tree:
                text = (self.objects_dir / commit.tree[".gitignore"].blob).read_text(
                    errors="replace"
                )
                ignore_patterns = _gitignore_patterns(text)
            out = []
            for f in payload.get("files") or []:
                path, size = f["path"], int(f["size"])
                sample = base64.b64decode(f.get("sample") or "")
                lfs = self._decide_lfs(repo, path, size, sample)
                existing = commit.tree.get(path)
                oid = None
                if existing is not None:
                    oid = existing.sha256 if existing.lfs else existing.oid
                out.append(
                    {
                        "path": path,
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": _is_ignored(path, ignore_patterns),
                        "oid": oid,
                    }
                )
        req.send_json(200, {"files": out, "commitOid": commit.oid})

    def _r_lfs_batch(self, req: _Req, repo_type: str, repo_id: str) -> None:
        payload = req.json_body() or {}
        if payload.get("operation") != "upload":
            raise HubError(400, "hubserver only implements the LFS 'upload' operation")
        with self._lock:
            repo = self._repo_for_write(req, repo_type, repo_id)
            present = set(repo.lfs_objects)
        transfers = payload.get("transfers") or ["basic"]
        objects = []
        for obj in payload.get("objects") or []:
            oid, size = obj["oid"], int(obj["size"])
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                objects.append(
                    {"oid": oid, "size": size, "error": {"code": 422, "message": "bad oid"}}
                )
                continue
            if oid in present:
                stored = (self.objects_dir / oid).stat().st_size
                if stored != size:
                    objects.append(
                        {
                            "oid": oid,
                            "size": size,
                            "error": {"code": 422, "message": "size mismatch"},
                        }
                    )
                else:
                    objects.append({"oid": oid, "size": size})  # already there: no actions
                continue
            expires = _iso(_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(hours=1))
            auth = {"Authorization": req.headers.get("Authorization", "")}
            verify = {
                "href": f"{self.url}/_hubserver/lfs-verify/{repo_type}/{repo_id}",
                "header": auth,
                "expires_at": expires,
            }
            chunk = self.multipart_chunk_size
            if chunk and size > chunk and "multipart" in transfers:
                upload_id = uuid.uuid4().hex
                nparts = -(-size // chunk)
                sig = self._sign("mp", upload_id)
                header = {"chunk_size": str(chunk)}
                for i in range(1, nparts + 1):
                    header[f"{i:05d}"] = f"{self.url}/_hubserver/lfs-part/{upload_id}/{i}?sig={sig}"
                with self._lock:
                    self._multipart[upload_id] = {
                        "repo": (repo_type, repo_id),
                        "oid": oid,
                        "size": size,
                        "nparts": nparts,
                        "parts": {},
                    }
                upload = {
                    "href": f"{self.url}/_hubserver/lfs-complete/{upload_id}?sig={sig}",
                    "header": header,
                    "expires_at": expires,
                }
            else:
                sig = self._sign("put", repo_type, repo_id, oid, str(size))
                q = urllib.parse.urlencode({"size": size, "sig": sig})
                upload = {
                    "href": f"{self.url}/_hubserver/lfs/{repo_type}/{repo_id}/{oid}?{q}",
                    "expires_at": expires,
                }
            objects.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {"upload": upload, "verify": verify},
                }
            )
        body = json.dumps({"transfer": "basic", "objects": objects}).encode()
        req.send(200, body, content_type="application/vnd.git-lfs+json")

    def _upload_fault_check(self, reserve: bool) -> bool:
        """Raise the injected upload failure if the budget is spent; with ``reserve``, take one
        unit of the budget (returned by :meth:`_upload_refund` if the upload then fails)."""
        with self._lock:
            if self._upload_fault is None:
                return False
            remaining, status = self._upload_fault
            if remaining <= 0:
                raise HubError(status, f"hubserver: injected upload failure ({status})")
            if reserve:
                self._upload_fault = (remaining - 1, status)
            return reserve

    def _upload_refund(self, reserved: bool) -> None:
        with self._lock:
            if reserved and self._upload_fault is not None:
                self._upload_fault = (self._upload_fault[0] + 1, self._upload_fault[1])

    def _receive_to_tmp(self, req: _Req) -> tuple[Path, str, int]:
        tmp = self.tmp_dir / uuid.uuid4().hex
        h = hashlib.sha256()
        n = 0
        with open(tmp, "wb") as f:
            for data in req.iter_body():
                h.update(data)
                f.write(data)
                n += len(data)
        return tmp, h.hexdigest(), n

    def _route_lfs_data(self, req: _Req) -> None:
        parts = req.path.split("/")  # ['', '_hubserver', kind, ...]
        kind = parts[2] if len(parts) > 2 else ""
        req.is_write = kind != "lfs-verify"
        if kind == "lfs" and req.method == "PUT" and len(parts) == 7:
            req.route = "lfs_put"
            self._check_faults(req)
            repo_type, repo_id, oid = parts[3], f"{parts[4]}/{parts[5]}", parts[6]
            req.repo = repo_id
            size = req.q("size") or ""
            if not hmac.compare_digest(
                req.q("sig") or "", self._sign("put", repo_type, repo_id, oid, size)
            ):
                raise HubError(403, "invalid or missing upload signature")
            reserved = self._upload_fault_check(reserve=True)
            try:
                tmp, sha, n = self._receive_to_tmp(req)
                if sha != oid or n != int(size):
                    tmp.unlink()
                    raise HubError(400, f"uploaded content does not match oid/size ({sha}, {n})")
                os.replace(tmp, self.objects_dir / oid)
                with self._lock:
                    repo = self._repos.get((repo_type, repo_id))
                    if repo is None:
                        raise HubError(404, "Repository not found", "RepoNotFound")
                    repo.lfs_objects.add(oid)
            except BaseException:
                self._upload_refund(reserved)
                raise
            req.send(200, b"", content_type="text/plain")
            return
        if kind == "lfs-part" and req.method == "PUT" and len(parts) == 5:
            req.route = "lfs_part"
            self._check_faults(req)
            upload_id, part = parts[3], int(parts[4])
            if not hmac.compare_digest(req.q("sig") or "", self._sign("mp", upload_id)):
                raise HubError(403, "invalid or missing upload signature")
            self._upload_fault_check(reserve=False)
            with self._lock:
                mp = self._multipart.get(upload_id)
            if mp is None:
                raise HubError(404, "unknown multipart upload")
            req.repo = mp["repo"][1]
            tmp, _, _ = self._receive_to_tmp(req)
            etag = hashlib.md5(tmp.read_bytes()).hexdigest()
            with self._lock:
                mp["parts"][part] = (tmp, etag)
            req.send(200, b"", {"ETag": f'"{etag}"'}, content_type="text/plain")
            return
        if kind == "lfs-complete" and req.method == "POST" and len(parts) == 4:
            req.route = "lfs_complete"
            self._check_faults(req)
            upload_id = parts[3]
            if not hmac.compare_digest(req.q("sig") or "", self._sign("mp", upload_id)):
                raise HubError(403, "invalid or missing upload signature")
            payload = req.json_body() or {}
            with self._lock:
                mp = self._multipart.get(upload_id)
            if mp is None:
                raise HubError(404, "unknown multipart upload")
            req.repo = mp["repo"][1]
            listed = payload.get("parts") or []
            if len(listed) != mp["nparts"] or payload.get("oid") != mp["oid"]:
                raise HubError(400, "multipart completion does not match the upload")
            reserved = self._upload_fault_check(reserve=True)
            try:
                self._complete_multipart(upload_id, mp, listed)
            except BaseException:
                self._upload_refund(reserved)
                raise
            req.send_json(200, {})
            return
        if kind == "lfs-verify" and req.method == "POST" and len(parts) == 6:
            req.route = "lfs_verify"
            self._check_faults(req)
            repo_type, repo_id = parts[3], f"{parts[4]}/{parts[5]}"
            payload = req.json_body() or {}
            with self._lock:
                repo = self._repo_for_write(req, repo_type, repo_id)
                ok = payload.get("oid") in repo.lfs_objects
            if not ok:
                raise HubError(404, f"LFS object {payload.get('oid')} not found")
            size = (self.objects_dir / payload["oid"]).stat().st_size
            if payload.get("size") is not None and int(payload["size"]) != size:
                raise HubError(422, "LFS object size mismatch")
            req.send_json(200, {"oid": payload["oid"], "size": size})
            return
        self._unknown(req)

    def _complete_multipart(self, upload_id: str, mp: dict, listed: list) -> None:
        out = self.tmp_dir / uuid.uuid4().hex
        h = hashlib.sha256()
        with open(out, "wb") as f:
            for item in sorted(listed, key=lambda p: p["partNumber"]):
                got = mp["parts"].get(item["partNumber"])
                if got is None or item["etag"].strip('"') != got[1]:
                    raise HubError(400, f"part {item['partNumber']} missing or etag mismatch")
                data = got[0].read_bytes()
                h.update(data)
                f.write(data)
        if h.hexdigest() != mp["oid"] or out.stat().st_size != mp["size"]:
            out.unlink()
            raise HubError(400, "assembled multipart object does not match oid/size")
        os.replace(out, self.objects_dir / mp["oid"])
        with self._lock:
            for tmp, _ in mp["parts"].values():
                tmp.unlink(missing_ok=True)
            self._multipart.pop(upload_id, None)
            repo = self._repos.get(mp["repo"])
            if repo is not None:
                repo.lfs_objects.add(mp["oid"])

    def _r_commit(self, req, repo_type, repo_id, rev, rest) -> None:
        req.is_write = True
        self._require_write(req)
        raw = req.body()
        if req.qbool("create_pr"):
            raise HubError(400, "hubserver does not support create_pr")
        try:
            lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except ValueError as e:
            raise HubError(400, f"invalid NDJSON commit payload: {e}") from e
        with self._lock:
            repo = self._repo_for_write(req, repo_type, repo_id)
            branch = urllib.parse.unquote(rev)
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if self._commit_fault is not None and self._commit_fault[0] <= 0:
                status = self._commit_fault[1]
                raise HubError(status, f"hubserver: injected commit failure ({status})")
            head = repo.head(branch)
            header: dict[str, Any] = {}
            tree = dict(head.tree)
            ops: list[tuple[str, str]] = []
            for item in lines:
                key, value = item.get("key"), item.get("value") or {}
                if key == "header":
                    header = value
                    continue
                path = (value.get("path") or "").strip("/")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    data = base64.b64decode(value.get("content") or "")
                    if len(data) >= self.lfs_threshold:
                        raise HubError(
                            400,
                            f"Your push was rejected because it contains files larger than "
                            f"{self.lfs_threshold} bytes ({path}). Please use git-lfs.",
                        )
                    if b"\x00" in data[:8000]:
                        raise HubError(
                            400,
                            f"Your push was rejected because it contains binary files ({path}). "
                            "Please use git-lfs.",
                        )
                    tree[path] = self._entry(path, data, self._store_bytes(data), False)
                    ops.append(("file", path))
                elif key == "lfsFile":
                    oid = value.get("oid") or ""
                    if value.get("algo", "sha256") != "sha256" or oid not in repo.lfs_objects:
                        raise HubError(
                            422,
                            "Your push was rejected because an LFS pointer pointed to a file "
                            f"that does not exist. OID: {oid} ({path})",
                        )
                    size = (self.objects_dir / oid).stat().st_size
                    if value.get("size") is not None and int(value["size"]) != size:
                        raise HubError(422, f"LFS object size mismatch for {path}")
                    tree[path] = self._entry(path, None, oid, True, size=size)
                    ops.append(("lfsFile", path))
                elif key == "deletedFile":
                    if path not in tree:
                        raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
                    del tree[path]
                    ops.append(("deletedFile", path))
                elif key == "deletedFolder":
                    doomed = [p for p in tree if p.startswith(path + "/")] if path else list(tree)
                    if not doomed:
                        raise HubError(404, f"Entry not found: {path}/", "EntryNotFound")
                    for p in doomed:
                        del tree[p]
                    ops.append(("deletedFolder", path))
                else:
                    raise HubError(400, f"unsupported commit operation key {key!r}")
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(parent):
                raise HubError(
                    412,
                    "A commit has happened since. Please refresh and try again.",
                    "PreconditionFailed",
                )
            commit = self._add_commit(
                repo,
                tree,
                header.get("summary") or "Upload",
                header.get("description") or "",
                ops,
                author=self.tokens[req.token]["user"],  # type: ignore[index]
            )
            if self._commit_fault is not None:
                self._commit_fault = (self._commit_fault[0] - 1, self._commit_fault[1])
        prefix = _URL_PREFIX[repo_type]
        req.send_json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{commit.oid}",
                "commitMessage": commit.message,
                "hookOutput": "",
                "pullRequestUrl": None,
            },
        )

    # -- download

    def _r_resolve(self, req, repo_type, repo_id, rev, path_quoted, truncate) -> None:
        path = urllib.parse.unquote(path_quoted)
        with self._lock:
            repo = self._repo_for_read(req, repo_type, repo_id)
            commit = self._commit_for(repo, rev)
            entry = commit.tree.get(path)
        common = {"X-Repo-Commit": commit.oid, "Vary": "Origin, Range"}
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers=common)
        blob = self.objects_dir / entry.blob
        if entry.lfs:
            headers = {
                **common,
                "X-Linked-Etag": f'"{entry.sha256}"',
                "X-Linked-Size": str(entry.size),
            }
            if self.lfs_redirect:
                expires = str(int(time.time()) + 3600)
                sig = self._sign("cdn", entry.blob, expires)
                q = urllib.parse.urlencode({"expires": expires, "sig": sig})
                name = urllib.parse.quote(path.rsplit("/", 1)[-1])
                location = f"{self.cdn_url}/cdn/{entry.blob}/{name}?{q}"
                req.send(
                    302,
                    f"Found. Redirecting to {location}".encode(),
                    {**headers, "ETag": f'"{entry.oid}"', "Location": location},
                    content_type="text/plain; charset=utf-8",
                )
                return
            headers["ETag"] = f'"{entry.sha256}"'
        else:
            headers = {**common, "ETag": f'"{entry.oid}"'}
        req.send_file(blob, headers, req.headers.get("Range"), truncate=truncate)

    def _route_cdn(self, req: _Req) -> None:
        m = re.fullmatch(r"/cdn/([0-9a-f]{64})(?:/[^/]*)?", req.path)
        if not m or req.method not in ("GET", "HEAD"):
            return self._unknown(req)
        req.route = "cdn"
        truncate = self._check_faults(req, download=True)
        blob = m.group(1)
        expires = req.q("expires") or "0"
        if not hmac.compare_digest(req.q("sig") or "", self._sign("cdn", blob, expires)):
            raise HubError(403, "AccessDenied: bad signature")
        if int(expires) < time.time():
            raise HubError(403, "AccessDenied: Request has expired")
        req.send_file(
            self.objects_dir / blob, {"ETag": f'"{blob}"'}, req.headers.get("Range"), truncate
        )


class _CloseConnection(Exception):
    pass


def _gitignore_patterns(text: str | None) -> list[str]:
    if not text:
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _is_ignored(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat[1:] if negate else pat
        pat = pat.rstrip("/")
        if pat.startswith("/"):
            hit = fnmatch.fnmatch(path, pat[1:])
        elif "/" in pat:
            hit = fnmatch.fnmatch(path, pat.replace("**/", "*"))
        else:
            hit = fnmatch.fnmatch(name, pat) or any(
                fnmatch.fnmatch(part, pat) for part in path.split("/")[:-1]
            )
        if hit:
            ignored = not negate
    return ignored


# --------------------------------------------------------------------------------------------
# pytest fixture
# --------------------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - usable without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def hub_server(tmp_path_factory):
        """A started :class:`HubServer` (function scope). Warns at teardown if unimplemented
        routes were hit. Import it in conftest.py: ``from tests.hubserver import hub_server``."""
        server = HubServer(tmp_path_factory.mktemp("hubserver"))
        with server:
            yield server
            if server.unknown_routes:
                warnings.warn(
                    f"hubserver: unimplemented routes were requested: {server.unknown_routes}",
                    stacklevel=1,
                )
