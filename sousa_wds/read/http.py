"""HTTP range reads for the reader: one httpx2 client per process, retries that follow the server.

How it works:
- `HttpClient.get` sends a GET (optionally with `Range`) through a process-wide `httpx2.Client`
  (the HTTP library huggingface_hub uses): keep-alive, redirects followed, `Authorization`
  dropped when a redirect leaves the origin (the Hub's CDN and signed bucket URLs must not get
  the token), HTTP(S)_PROXY/NO_PROXY honoured, no cookies. A forked DataLoader worker makes its
  own client; an HttpClient holds only headers and the retry budget, so it pickles.
- Retries: connection errors, 429 and 5xx are retried. A `Retry-After` header (seconds or a
  date) is obeyed; otherwise the wait doubles from `BACKOFF_BASE_S` with random jitter (so many
  workers do not retry in step). The budget counts failures *without progress*: `_HttpRange`
  resets it whenever bytes arrive, so a flaky link that keeps delivering never gives up, and a
  dead one gives up after `retries` failures in a row (`retries=`, or `SOUSA_WDS_RETRIES`).
- `_HttpRange` streams bytes [start, end) of one URL; a body that broke off, or a range the
  server capped (it says so in Content-Range), is asked for again from the byte where it stopped.
- Messages and httpx2's request log show URLs without query strings or credentials; headers
  (the token) are never printed.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import urlsplit, urlunsplit

import httpx2

from .. import __version__
from ..errors import HttpError, LoaderError, MissingFile, ShortRead

log = logging.getLogger(__name__)

USER_AGENT = f"sousa-wds/{__version__}"
# For connecting and for each read: a stalled server fails the request instead of hanging it.
TIMEOUT_S = 60.0
# Failures in a row, without a byte of progress, before a read gives up (about a minute of
# waiting with the backoff below). SOUSA_WDS_RETRIES or retries= change it.
DEFAULT_RETRIES = 6
RETRIES_ENV = "SOUSA_WDS_RETRIES"
# The first retry is immediate: a reused keep-alive socket the server already closed fails at
# once and a fresh connection fixes it. Later ones wait BASE * 2**n (jittered), at most MAX.
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
# A server asking for a longer pause than this is treated as down: the error says so.
RETRY_AFTER_MAX_S = 300.0
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
_shared_lock = threading.Lock()  # threads of one process share one client


def _session() -> httpx2.Client:
    global _shared
    with _shared_lock:
        return _client()


def _client() -> httpx2.Client:
    global _shared
    if _shared is None or _shared[0] != os.getpid():
        # No cookie is ever stored: credentials come only from a caller's own headers, never
        # from what another location's server set.
        no_cookies = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
        _shared = (os.getpid(), httpx2.Client(
            headers={"User-Agent": USER_AGENT, **NO_CONTENT_CODING}, cookies=no_cookies,
            timeout=TIMEOUT_S, follow_redirects=True, max_redirects=MAX_REDIRECTS))
    return _shared[1]


def retry_budget(retries: int | None) -> int:
    """`retries` if given, else SOUSA_WDS_RETRIES, else DEFAULT_RETRIES."""
    if retries is None:
        text = os.environ.get(RETRIES_ENV)
        try:
            retries = DEFAULT_RETRIES if text is None else int(text)
        except ValueError:
            raise LoaderError(f"{RETRIES_ENV}={text!r} must be an integer (failures in a row "
                              "before a read gives up)") from None
    if retries < 0:
        raise LoaderError(f"retries must be 0 or more, not {retries}")
    return retries


def retry_after(response: httpx2.Response) -> float | None:
    """Seconds the server asks us to wait (Retry-After: seconds or an HTTP date), or None."""
    text = response.headers.get("Retry-After", "").strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def backoff(failures: int, asked: float | None = None) -> float:
    """The pause before retry number `failures` (1 = the first): what the server asked for,
    else immediate, then doubling with jitter."""
    if asked is not None:
        return asked * random.uniform(1.0, 1.1)  # never earlier than asked
    if failures <= 1:
        return 0.0
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (failures - 2)) * random.uniform(0.5, 1.0)


class HttpClient:
    """GET with the caller's headers (the token), Range and retries, on the process's client."""

    def __init__(self, headers: Mapping[str, str] | None = None,
                 retries: int | None = None) -> None:
        self._headers = dict(headers or {})
        self.retries = retry_budget(retries)

    def __repr__(self) -> str:
        return "HttpClient()"  # never show the headers: they hold the token

    def get(self, url: str, start: int | None = None,
            end: int | None = None) -> httpx2.Response:
        """GET `url`, or its bytes [start, end): the streaming response (200 or 206), to close."""
        session = _session()
        headers = self._headers if start is None else {
            **self._headers, "Range": f"bytes={start}-{'' if end is None else end - 1}"}
        failures = 0
        while True:
            asked = None
            try:
                response = session.send(session.build_request("GET", url, headers=headers),
                                        stream=True)
            except TRANSIENT_ERRORS as exc:
                if failures >= self.retries:
                    raise LoaderError(f"cannot reach {redact(url)} ({failures + 1} tries): "
                                      f"{exc}") from exc
            except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
                raise LoaderError(f"{redact(url)}: {exc}") from exc
            else:
                if response.status_code in (200, 206):
                    return response
                asked = retry_after(response)
                if (response.status_code not in RETRY_STATUSES or failures >= self.retries
                        or (asked or 0) > RETRY_AFTER_MAX_S):
                    raise _status_error(response, failures + 1, asked)
                response.close()
            failures += 1
            pause = backoff(failures, asked)
            log.debug("retrying %s in %.1f s (failure %d of %d)", redact(url), pause, failures,
                      self.retries)
            time.sleep(pause)

    def fetch(self, url: str) -> bytes:
        """The whole body of `url`; a body that breaks off is resumed by range where it broke."""
        response = self.get(url)
        length = response.headers.get("Content-Length", "")
        parts: list[bytes] = []
        try:
            parts.extend(response.iter_raw())
        except httpx2.TransportError as exc:
            if not length.isdigit():
                raise LoaderError(f"{redact(url)}: download broke off: {exc}") from exc
        finally:
            response.close()
        got = sum(map(len, parts))
        if length.isdigit() and got < int(length):
            reader = _HttpRange(self, url, got, int(length))
            try:
                parts.append(reader.read(int(length) - got))
            finally:
                reader.close()
        return b"".join(parts)


ERROR_DETAIL_BYTES = 200  # of an error page, quoted in the message


def _body_start(response: httpx2.Response) -> bytes:
    """The first bytes of an error's body, not the rest: a server may send one without end."""
    start = b""
    for chunk in response.iter_raw():
        start += chunk[:ERROR_DETAIL_BYTES - len(start)]
        if len(start) >= ERROR_DETAIL_BYTES:
            break
    return start


def _status_error(response: httpx2.Response, tries: int, asked: float | None) -> LoaderError:
    status = response.status_code
    where = redact(str(response.url))  # where the redirects led
    try:
        detail = _body_start(response).decode("utf-8", "replace").strip()
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
    if status in RETRY_STATUSES:
        wait = f"; it asks to wait {asked:.0f} s" if asked else ""
        return HttpError(
            f"{where}: HTTP {status} {detail} after {tries} tries{wait}. The server is busy or "
            f"down: try again later, or allow more retries (retries=, {RETRIES_ENV})", status)
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
        self._failures = 0  # breaks in a row without a byte of progress

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
        while want:
            try:
                if self._response is None:
                    self._open()
                    if self._pos + want > self._available:  # the file is shorter than claimed
                        self.close()
                        raise ShortRead(f"{redact(self._url)} ends at byte {self._available}, "
                                        f"before byte {self._pos + want}")
                chunk = self._take(want)
            except httpx2.TransportError as exc:
                chunk, error = b"", exc
            else:
                error = None
            if chunk:
                parts.append(chunk)
                want -= len(chunk)
                self._pos += len(chunk)
                self._failures = 0  # progress: the budget starts again
                if self._pos == self._body_end:  # the rest, if any, is asked for again
                    self._finish_body()
                continue
            self._broke_off(error)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _broke_off(self, error: Exception | None) -> None:
        """The body ended early (connection dropped or stalled): wait, then ask again from the
        current byte, unless the failures in a row without progress used up the budget."""
        self.close()
        if self._pos >= self._available:
            raise ShortRead(f"{redact(self._url)} ends at byte {self._pos}")
        self._failures += 1
        if self._failures > self._client.retries:
            raise LoaderError(f"{redact(self._url)}: the connection broke {self._failures} times "
                              f"in a row at byte {self._pos} without progress: "
                              f"{error or 'empty body'}. Allow more retries (retries=, "
                              f"{RETRIES_ENV}) on a flaky link")
        time.sleep(backoff(self._failures))

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
