"""Where a packed dataset lives: a local folder, an HTTP(S) base URL, or a Hub dataset repo.

How it works:
- `open_location(source, token)` turns what the user typed into a `Location`: `LocalLocation`
  (files under a folder) or `HttpLocation` (a base URL under which the folder's files are served:
  a mirror, a bucket, or a Hub repo's `resolve/{commit}/` URL). A Hub revision is pinned to its
  commit once, so the metadata and the shards read later come from the same commit.
- A Location reads small files whole (manifest, metadata) and shards by byte range. A range is
  streamed (`open_range`): one request serves a run of consecutive samples, and gaps between
  them are skipped (a seek locally, read through over HTTP, where a new request costs more).
- HTTP goes through `HttpClient`, a thin layer on an `httpx2.Client` (the HTTP library
  huggingface_hub uses): httpx2 keeps connections alive, follows redirects and drops
  `Authorization` when one leaves the origin (the Hub's CDN and signed bucket URLs must not get
  the token), and honours HTTP(S)_PROXY/NO_PROXY. Ours on top: one httpx2 client per process (a
  forked DataLoader worker makes its own; an HttpClient holds only headers, so it pickles), the
  caller's headers (the token) on every request, no cookies, retries of transient failures, and
  a range whose body broke off (or that the server capped) asked again from the byte where it
  stopped. Messages and httpx2's request log show URLs without query strings or credentials;
  headers are never printed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx2

from . import __version__
from .errors import LoaderError, MissingFile

DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
USER_AGENT = f"sousa-wds/{__version__}"
# For connecting and for each read: a stalled server fails the request instead of hanging it.
TIMEOUT_S = 60
# The first retry is immediate: a reused keep-alive socket the server already closed fails at
# once and a fresh connection fixes it. Later ones back off for overloaded servers.
RETRY_DELAYS_S = (0.0, 1.0, 4.0)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Failures worth another try (a timeout, a refused or dropped connection, a keep-alive connection
# closed under us); others (a redirect loop, an unsupported scheme, a bad proxy) fail at once.
TRANSIENT_ERRORS = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)
# The Hub needs one (resolve URL → CDN); more than a few is a loop.
MAX_REDIRECTS = 5
# Byte offsets count the file as stored: a compressed body would not match Content-Range.
NO_CONTENT_CODING = {"Accept-Encoding": "identity"}
# A gap this small between two wanted byte ranges is read through rather than paying another
# request's latency (about 40 ms of transfer at 50 MB/s, less than a typical round trip).
HTTP_RUN_GAP = 2 * 1024 * 1024
READ_CHUNK = 1 << 20

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


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
        try:
            data = os.pread(self._fd, n, self._pos)
        except OSError as exc:
            raise LoaderError(f"cannot read {self._path} at byte {self._pos}: "
                              f"{exc.strerror or exc}") from exc
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


class _RedactUrls(logging.Filter):
    """httpx2 logs every request's URL at INFO: show it without credentials or query string
    (`http://user:pw@host/…`, signed CDN URLs), whatever level the application logs at."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
                isinstance(arg, httpx2.URL) for arg in record.args):
            record.args = tuple(redact(str(arg)) if isinstance(arg, httpx2.URL) else arg
                                for arg in record.args)
        return True


_httpx_log = logging.getLogger("httpx2")
if not any(isinstance(f, _RedactUrls) for f in _httpx_log.filters):
    _httpx_log.addFilter(_RedactUrls())


# One httpx2 client per process (its pool and TLS context are shared by every location), made on
# first use in each process: a forked DataLoader worker must not use its parent's sockets, and
# drops the inherited client without closing it (those sockets are still the parent's).
_shared: tuple[int, httpx2.Client] | None = None


def _session() -> httpx2.Client:
    global _shared
    if _shared is None or _shared[0] != os.getpid():
        # No cookie is ever stored: credentials come only from a caller's own headers, never
        # from what another location's server set.
        no_cookies = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
        _shared = (os.getpid(), httpx2.Client(
            headers={"User-Agent": USER_AGENT, **NO_CONTENT_CODING}, cookies=no_cookies,
            timeout=TIMEOUT_S, follow_redirects=True, max_redirects=MAX_REDIRECTS))
    return _shared[1]


class HttpClient:
    """GET with the caller's headers (the token), Range and retries, on the process's client."""

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self._headers = dict(headers or {})

    def __repr__(self) -> str:
        return "HttpClient()"  # never show the headers: they hold the token

    def get(self, url: str, start: int | None = None,
            end: int | None = None) -> httpx2.Response:
        """GET `url`, or its bytes [start, end): the streaming response (200 or 206), to close."""
        session = _session()
        headers = self._headers if start is None else {
            **self._headers, "Range": f"bytes={start}-{'' if end is None else end - 1}"}
        for delay in (*RETRY_DELAYS_S, None):
            try:
                response = session.send(session.build_request("GET", url, headers=headers),
                                        stream=True)
            except TRANSIENT_ERRORS as exc:
                if delay is None:
                    raise LoaderError(f"cannot reach {redact(url)}: {exc}") from exc
            except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
                raise LoaderError(f"{redact(url)}: {exc}") from exc
            else:
                if response.status_code in (200, 206):
                    return response
                if response.status_code not in RETRY_STATUSES or delay is None:
                    raise _status_error(response)
                response.close()
            time.sleep(delay)
        raise AssertionError("unreachable")

    def fetch(self, url: str) -> bytes:
        """The whole body of `url`."""
        response = self.get(url)
        try:
            return response.read()
        except httpx2.TransportError as exc:
            raise LoaderError(f"{redact(url)}: download broke off: {exc}") from exc
        finally:
            response.close()


def _status_error(response: httpx2.Response) -> LoaderError:
    status = response.status_code
    where = redact(str(response.url))  # where the redirects led
    try:
        detail = response.read()[:200].decode("utf-8", "replace").strip()
    except httpx2.TransportError:
        detail = ""
    finally:
        response.close()
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
        self._response: httpx2.Response | None = None
        self._body_end: int | None = None  # the file byte where the open response's body ends
        self._chunks: Iterator[bytes] = iter(())  # the body as it arrives
        self._chunk = b""
        self._taken = 0  # bytes of _chunk already returned

    def _open(self) -> None:
        response = self._client.get(self._url, self._pos, self._end)
        self._response, self._chunks = response, response.iter_raw()
        self._chunk, self._taken = b"", 0
        if response.status_code == 206:
            content_range = response.headers.get("Content-Range", "")
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range)
            if not match or int(match.group(1)) != self._pos:
                self.close()
                raise LoaderError(f"{redact(self._url)}: unexpected Content-Range "
                                  f"{content_range!r} for byte {self._pos}")
            # The body may end before the requested end (servers and CDNs cap range responses):
            # only the file's total size bounds what can be read; the rest is asked for again.
            self._body_end = int(match.group(2)) + 1
            if match.group(3) != "*":
                self._available = min(self._end, int(match.group(3)))
        else:  # the server ignored Range: read from the start and drop what comes before
            length = response.headers.get("Content-Length")
            self._body_end = None if length is None else int(length)
            if self._body_end is not None:
                self._available = min(self._end, self._body_end)
            remaining = self._pos
            while remaining:
                chunk = self._take(min(remaining, READ_CHUNK))
                if not chunk:
                    break
                remaining -= len(chunk)

    def _take(self, n: int) -> bytes:
        """Up to `n` bytes of the open body; empty at its end."""
        if self._taken == len(self._chunk):
            self._chunk, self._taken = next(self._chunks, b""), 0
        data = self._chunk[self._taken:self._taken + n]  # the chunk itself when taken whole
        self._taken += len(data)
        return data

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
                    self._open()
                chunk = self._take(want)
            except httpx2.TransportError as exc:
                chunk, error = b"", exc
            else:
                error = None
            if chunk:
                parts.append(chunk)
                want -= len(chunk)
                self._pos += len(chunk)
                if self._pos == self._body_end:  # the rest, if any, is asked for again
                    self._finish_body()
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

    def _finish_body(self) -> None:
        """Every byte of the open body was taken: read its end and close it. Reading the end (no
        more bytes) lets httpx2 reuse the connection; closing a body before it closes the
        connection. A failure there loses no data, so it is not an error."""
        with contextlib.suppress(httpx2.TransportError):
            next(self._chunks, b"")
        self.close()

    def skip(self, n: int) -> None:
        if n < 0:
            raise LoaderError(f"{redact(self._url)}: cannot go back {-n} bytes in a stream")
        while n > 0:
            step = min(n, READ_CHUNK)
            self.read(step)
            n -= step

    def close(self) -> None:
        if self._response is not None:  # a body not read to its end closes its connection
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
        return self.client.fetch(self.url(path))

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
        info = json.loads(client.fetch(api))
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
