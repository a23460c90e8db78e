"""Where a packed dataset lives: a local folder, an HTTP(S) base URL, or a Hub dataset repo.

How it works:
- `open_location(source, token)` turns what the user typed into a `Location`: `LocalLocation`
  (files under a folder) or `HttpLocation` (a base URL under which the folder's files are served:
  a mirror, a bucket, or a Hub repo's `resolve/{commit}/` URL). A Hub revision is pinned to its
  commit once, so the metadata and the shards read later come from the same commit.
- A Location reads small files whole (manifest, metadata) and shards by byte range. A range is
  streamed (`open_range`): one request serves a run of consecutive samples, and gaps between
  them are skipped (a seek locally, read through over HTTP, where a new request costs more).
- HTTP goes through `HttpClient`: keep-alive connections per process, the caller's headers
  (the token) on every request, redirects that drop `Authorization` when they leave the origin
  (the Hub's CDN and signed bucket URLs must not get it), retries of transient failures, and an
  interrupted body resumed at the byte where it stopped. Messages show URLs without query
  strings or credentials; headers are never printed.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import time
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from . import __version__
from .errors import LoaderError

DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
USER_AGENT = f"sousa-wds/{__version__}"
TIMEOUT_S = 60
# The first retry is immediate: a reused keep-alive socket the server already closed fails at
# once and a fresh connection fixes it. Later ones back off for overloaded servers.
RETRY_DELAYS_S = (0.0, 1.0, 4.0)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
# A gap this small between two wanted byte ranges is read through rather than paying another
# request's latency (about 40 ms of transfer at 50 MB/s, less than a typical round trip).
HTTP_RUN_GAP = 2 * 1024 * 1024
READ_CHUNK = 1 << 20

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class MissingFile(LoaderError):
    """A file of the dataset does not exist at the location (HTTP 404, no such local file)."""


class ShortRead(LoaderError):
    """A byte range ends past the end of its file: the file is truncated or is not the one the
    metadata describes."""


class HttpError(LoaderError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RangeReader(Protocol):
    """Sequential reads inside one byte range of one file."""

    def read(self, n: int) -> bytes:
        """Exactly `n` bytes, or ShortRead."""

    def skip(self, n: int) -> None: ...

    def close(self) -> None: ...


class Location(Protocol):
    description: str  # for messages: a path or a URL without credentials
    run_gap: int  # largest gap between wanted ranges worth reading through in one request
    cheap_seeks: bool  # reading out of order costs nothing extra (a local file)

    def read_file(self, path: str) -> bytes: ...

    def open_range(self, path: str, start: int, end: int) -> RangeReader:
        """A reader of bytes [start, end) of `path` (`/`-separated, from the dataset root)."""


# --- Local folder -----------------------------------------------------------------------------


class _FileRange:
    """Positioned reads (pread: one system call each, no seeks) of one open file."""

    def __init__(self, path: Path, start: int) -> None:
        self._path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._pos = start

    def read(self, n: int) -> bytes:
        data = os.pread(self._fd, n, self._pos)
        if len(data) < n:  # a regular file returns less only at its end
            raise ShortRead(f"{self._path} ends at byte {self._pos + len(data)}, before byte "
                            f"{self._pos + n}")
        self._pos += n
        return data

    def skip(self, n: int) -> None:
        self._pos += n

    def close(self) -> None:
        os.close(self._fd)


class LocalLocation:
    run_gap = 1 << 62  # skipping is free: one open file serves a whole shard
    cheap_seeks = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)

    def _path(self, path: str) -> Path:
        return self.root.joinpath(*path.split("/"))

    def read_file(self, path: str) -> bytes:
        try:
            return self._path(path).read_bytes()
        except FileNotFoundError as exc:
            raise MissingFile(f"{self._path(path)} does not exist") from exc
        except OSError as exc:
            raise LoaderError(f"cannot read {self._path(path)}: {exc.strerror or exc}") from exc

    def open_range(self, path: str, start: int, end: int) -> _FileRange:
        try:
            return _FileRange(self._path(path), start)
        except FileNotFoundError as exc:
            raise MissingFile(f"{self._path(path)} does not exist") from exc
        except OSError as exc:
            raise LoaderError(f"cannot read {self._path(path)}: {exc.strerror or exc}") from exc


# --- HTTP -------------------------------------------------------------------------------------


def redact(url: str) -> str:
    """The URL without credentials or query string (signed URLs carry secrets there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # loading the CA store once per process, not per socket


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class _Response:
    """An HTTP response being read; its connection goes back to the pool once fully read."""

    def __init__(self, client: HttpClient, origin: tuple[str, str],
                 conn: http.client.HTTPConnection, raw: http.client.HTTPResponse) -> None:
        self._client = client
        self._origin = origin
        self._conn: http.client.HTTPConnection | None = conn
        self.raw = raw
        self.status = raw.status

    def header(self, name: str) -> str | None:
        return self.raw.getheader(name)

    def read(self, n: int | None = None) -> bytes:
        data = self.raw.read() if n is None else self.raw.read(n)
        if self.raw.isclosed():
            self._finish()
        return data

    def _finish(self) -> None:
        if self._conn is not None:
            if self.raw.will_close:
                self._conn.close()
            else:
                self._client._release(self._origin, self._conn)
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:  # not fully read: the connection cannot carry another request
            self._conn.close()
            self._conn = None
        self.raw.close()


class HttpClient:
    """GET with keep-alive, Range, credential-safe redirects and retries. One pool per process."""

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self._headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_idle": {}}

    def __repr__(self) -> str:
        return "HttpClient()"  # never show the headers: they hold the token

    def _acquire(self, origin: tuple[str, str]) -> http.client.HTTPConnection:
        if self._pid != os.getpid():  # forked DataLoader worker: inherited sockets are the parent's
            self._idle, self._pid = {}, os.getpid()
        idle = self._idle.get(origin)
        if idle:
            return idle.pop()
        scheme, netloc = origin
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=TIMEOUT_S, context=_ssl_context())
        return http.client.HTTPConnection(netloc, timeout=TIMEOUT_S)

    def _release(self, origin: tuple[str, str], conn: http.client.HTTPConnection) -> None:
        if self._pid == os.getpid():
            self._idle.setdefault(origin, []).append(conn)

    def _send(self, url: str, headers: dict[str, str]) -> _Response:
        """One request, retried on connection failures and transient statuses."""
        origin = _origin(url)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for delay in (*RETRY_DELAYS_S, None):
            conn = self._acquire(origin)
            try:
                conn.request("GET", target, headers=headers)
                raw = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if delay is None:
                    raise LoaderError(f"cannot reach {redact(url)}: {exc}") from exc
                time.sleep(delay)
                continue
            response = _Response(self, origin, conn, raw)
            if raw.status in RETRY_STATUSES and delay is not None:
                response.close()
                time.sleep(delay)
                continue
            return response
        raise AssertionError("unreachable")

    def get(self, url: str, start: int | None = None, end: int | None = None) -> _Response:
        """GET `url`, or its bytes [start, end); returns the open response (200 or 206)."""
        headers = dict(self._headers)
        if start is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(url, headers)
            if response.status in (200, 206):
                return response
            if response.status not in REDIRECT_STATUSES:
                body = response.read()
                raise _status_error(url, response.status, body)
            target = response.header("Location")
            response.read()
            if not target:
                raise LoaderError(f"{redact(url)}: redirect without a Location header")
            url = urljoin(url, target)
            if _origin(url) != origin:
                # Credentials stay with the origin they were given for (the Hub's CDN and
                # signed bucket URLs must not get the token; S3 even rejects the request).
                headers.pop("Authorization", None)
        raise LoaderError(f"{redact(url)}: more than {MAX_REDIRECTS} redirects")


def _status_error(url: str, status: int, body: bytes) -> LoaderError:
    detail = body[:200].decode("utf-8", "replace").strip()
    where = redact(url)
    if status == 404:
        return MissingFile(f"{where} does not exist (HTTP 404)")
    if status == 416:
        return ShortRead(f"{where} is shorter than the requested range (HTTP 416)")
    if status in (401, 403):
        return HttpError(
            f"{where}: HTTP {status}: access denied. For a private Hub repo pass token=... "
            "(or --token), set HF_TOKEN or run `hf auth login`; for another server pass the "
            "token it expects", status)
    return HttpError(f"{where}: HTTP {status} {detail}", status)


class _HttpRange:
    """Bytes [start, end) of one URL, requested lazily and resumed where a body broke off."""

    def __init__(self, client: HttpClient, url: str, start: int, end: int) -> None:
        self._client = client
        self._url = url
        self._pos = start
        self._end = end
        self._available = end  # lowered when the server says the file is shorter
        self._response: _Response | None = None

    def _open(self) -> _Response:
        response = self._client.get(self._url, self._pos, self._end)
        if response.status == 206:
            content_range = response.header("Content-Range") or ""
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range)
            if not match or int(match.group(1)) != self._pos:
                response.close()
                raise LoaderError(f"{redact(self._url)}: unexpected Content-Range "
                                  f"{content_range!r} for byte {self._pos}")
            self._available = min(self._end, int(match.group(2)) + 1)
        else:  # the server ignored Range: read from the start and drop what comes before
            length = response.header("Content-Length")
            if length is not None:
                self._available = min(self._end, int(length))
            remaining = self._pos
            while remaining:
                chunk = response.read(min(remaining, READ_CHUNK))
                if not chunk:
                    break
                remaining -= len(chunk)
        return response

    def read(self, n: int) -> bytes:
        if self._pos + n > self._available:
            raise ShortRead(f"{redact(self._url)} ends at byte {self._available}, before byte "
                            f"{self._pos + n}")
        parts: list[bytes] = []
        want = n
        failures = 0
        while want:
            try:
                if self._response is None:
                    self._response = self._open()
                chunk = self._response.read(want)
            except (OSError, http.client.HTTPException) as exc:
                chunk, error = b"", exc
            else:
                error = None
            if chunk:
                parts.append(chunk)
                want -= len(chunk)
                self._pos += len(chunk)
                continue
            # The body ended early (connection dropped): ask again from the current byte.
            self.close()
            if self._pos >= self._available:
                raise ShortRead(f"{redact(self._url)} ends at byte {self._pos}")
            if failures == len(RETRY_DELAYS_S):
                raise LoaderError(f"{redact(self._url)}: the connection kept breaking at byte "
                                  f"{self._pos}: {error or 'empty body'}")
            time.sleep(RETRY_DELAYS_S[failures])
            failures += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def skip(self, n: int) -> None:
        if n < 0:
            raise LoaderError(f"{redact(self._url)}: cannot go back {-n} bytes in a stream")
        while n > 0:
            step = min(n, READ_CHUNK)
            self.read(step)
            n -= step

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None


class HttpLocation:
    """Files served under a base URL (an HTTP mirror, a bucket, the Hub's resolve URL)."""

    run_gap = HTTP_RUN_GAP
    cheap_seeks = False

    def __init__(self, base_url: str, client: HttpClient, description: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.description = description or redact(self.base_url)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{quote(path)}"

    def read_file(self, path: str) -> bytes:
        response = self.client.get(self.url(path))
        try:
            return response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise LoaderError(f"{redact(self.url(path))}: download broke off: {exc}") from exc
        finally:
            response.close()

    def open_range(self, path: str, start: int, end: int) -> _HttpRange:
        return _HttpRange(self.client, self.url(path), start, end)


# --- Parsing a source -------------------------------------------------------------------------


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_HUB_ENDPOINT).rstrip("/")


def hub_token(token: str | bool | None) -> str | None:
    """An explicit token, none (False), or huggingface_hub's (HF_TOKEN or the cached login)."""
    if token is False:
        return None
    if isinstance(token, str):
        return token
    from huggingface_hub import get_token

    return get_token()


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _hub_location(repo_id: str, revision: str, token: str | bool | None) -> HttpLocation:
    endpoint = hub_endpoint()
    client = HttpClient(_auth(hub_token(token)))
    name = f"hf://datasets/{repo_id}@{revision}"
    api = f"{endpoint}/api/datasets/{repo_id}/revision/{quote(revision, safe='')}"
    try:
        info = json.loads(client.get(api).read())
    except MissingFile as exc:
        raise LoaderError(
            f"{name}: no such dataset repo or revision on {endpoint} (or it is private: pass "
            "token=..., set HF_TOKEN or run `hf auth login`)") from exc
    except HttpError as exc:
        raise LoaderError(f"{name}: {exc}") from exc
    commit = info.get("sha")
    if not commit:
        raise LoaderError(f"{name}: {endpoint} did not report the revision's commit")
    return HttpLocation(f"{endpoint}/datasets/{repo_id}/resolve/{commit}", client, name)


def open_location(source: str | os.PathLike[str] | Location,
                  token: str | bool | None = None) -> Location:
    """Where `source` lives: a local folder, an http(s) base URL, `user/name[@revision]` or
    `hf://datasets/user/name[@revision]` (Hub, HF_ENDPOINT honoured).

    `token`: for the Hub, None means huggingface_hub's token (HF_TOKEN or the cached login);
    for other URLs a token is sent only when given.
    """
    if not isinstance(source, (str, os.PathLike)):
        return source
    text = os.fspath(source)
    if text.startswith("hf://"):
        rest = text[len("hf://"):]
        if not rest.startswith("datasets/"):
            raise LoaderError(f"{text}: only dataset repos are supported "
                              "(hf://datasets/USER/NAME[@REVISION])")
        repo, _, revision = rest[len("datasets/"):].strip("/").partition("@")
        if not _HUB_ID.fullmatch(repo):
            raise LoaderError(f"{text}: expected hf://datasets/USER/NAME[@REVISION]")
        return _hub_location(repo, unquote(revision) or "main", token)
    if text.startswith(("http://", "https://")):
        return HttpLocation(text, HttpClient(_auth(token if isinstance(token, str) else None)))
    path = Path(text).expanduser()
    if path.is_dir():
        return LocalLocation(path)
    if path.exists():
        raise LoaderError(f"{text} is a file; give the packed folder (the one with manifest.json)")
    repo, _, revision = text.partition("@")
    if _HUB_ID.fullmatch(repo):
        return _hub_location(repo, revision or "main", token)
    raise LoaderError(
        f"{text!r} is not a local folder, an http(s) URL or a Hub dataset "
        "(USER/NAME or hf://datasets/USER/NAME[@REVISION])")
