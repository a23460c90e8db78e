"""Where a packed dataset lives: a local folder, an HTTP(S) base URL, or a Hub dataset repo.

How it works:
- `open_location(source, token, retries)` turns what the user typed into a `Location`:
  `LocalLocation` (files under a folder) or `HttpLocation` (a base URL under which the folder's
  files are served: a mirror, a bucket, or a Hub repo's `resolve/{commit}/` URL). `hf://` URIs
  are parsed by huggingface_hub's `parse_hf_uri`, the token comes from its `get_token`. A Hub
  revision is pinned to its commit once, so the metadata and the shards read later come from the
  same commit.
- A Location reads small files whole (manifest, metadata) and shards by byte range. A range is
  streamed (`open_range`): one request serves a run of consecutive samples, and gaps between
  them are skipped (a seek locally, read through over HTTP, where a new request costs more).
  HTTP details (retries, resumed bodies) live in `sousa_wds.read.http`.
- A local range is checked against the file's size before any byte is read, so a member whose
  size is wrong (a crafted or damaged metadata row claiming gigabytes) is a named `ShortRead`,
  not a MemoryError; members over 1 GiB are read in pieces into one buffer (Linux returns at
  most ~2 GiB per read call, and SOUSA-style packs may hold members of 8 GiB and more).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from ..auth import saved_token_source, user_token
from ..errors import HttpError, LoaderError, MissingFile, ShortRead
from .http import HTTP_RUN_GAP, HttpClient, _HttpRange, redact

DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
# Reads larger than this go piecewise into one preallocated buffer.
LARGE_READ = 1 << 30

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


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
        self._size = os.fstat(self._fd).st_size
        self._pos = start

    def read(self, n: int) -> bytes:
        if self._pos + n > self._size:  # before allocating: the claim may be absurd
            raise ShortRead(f"{self._path} ends at byte {self._size}, before byte "
                            f"{self._pos + n}")
        try:
            data = os.pread(self._fd, n, self._pos) if n <= LARGE_READ else self._read_large(n)
        except OSError as exc:
            raise LoaderError(f"cannot read {self._path} at byte {self._pos}: "
                              f"{exc.strerror or exc}") from exc
        except MemoryError:
            raise LoaderError(f"{self._path}: a member of {n} bytes at byte {self._pos} does "
                              "not fit in memory") from None
        if len(data) < n:  # the file shrank under us
            raise ShortRead(f"{self._path} ends at byte {self._pos + len(data)}, before byte "
                            f"{self._pos + n}")
        self._pos += n
        return data

    def _read_large(self, n: int) -> bytes:
        buffer = bytearray(n)
        view = memoryview(buffer)
        done = 0
        while done < n:
            got = os.preadv(self._fd, [view[done:done + LARGE_READ]], self._pos + done)
            if not got:
                return bytes(view[:done])
            done += got
        return buffer  # a bytearray: hashlib, soundfile and json read it like bytes

    def skip(self, n: int) -> None:
        self._pos += n

    # Bound now: a stream iterator left suspended is closed at interpreter exit, after the
    # module's globals (`os`) may already be gone.
    _close = staticmethod(os.close)

    def close(self) -> None:
        self._close(self._fd)


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


# --- HTTP and the Hub -------------------------------------------------------------------------


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


def hub_endpoint() -> str:
    """HF_ENDPOINT as it is now (huggingface_hub's constant is frozen at its import)."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_HUB_ENDPOINT).rstrip("/")


def hub_token(token: str | bool | None) -> str | None:
    """An explicit token, none (False), or huggingface_hub's (HF_TOKEN or the cached login)."""
    if token is False:
        return None
    if isinstance(token, str):
        return token
    from huggingface_hub import get_token

    return user_token(get_token(), f"from {saved_token_source()}")


def _auth(token: str | None) -> dict[str, str]:
    """The header every request of a location carries: the one place a token enters reading."""
    token = user_token(token, "given (token= or --token)")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _hub_location(repo_id: str, revision: str, token: str | bool | None,
                  retries: int | None) -> HttpLocation:
    endpoint = hub_endpoint()
    client = HttpClient(_auth(hub_token(token)), retries)
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
    commit = info.get("sha") if isinstance(info, dict) else None
    if not commit:
        raise LoaderError(f"{name}: {endpoint} did not report the revision's commit")
    return HttpLocation(f"{endpoint}/datasets/{repo_id}/resolve/{commit}", client, name)


def _parse_hub(uri: str) -> tuple[str, str]:
    """(repo id, revision) of `hf://datasets/USER/NAME[@REVISION]`, by huggingface_hub's parser."""
    from huggingface_hub import parse_hf_uri
    from huggingface_hub.errors import HfUriError

    try:
        parsed = parse_hf_uri(uri)
    except HfUriError as exc:
        raise LoaderError(f"{uri}: expected hf://datasets/USER/NAME[@REVISION] ({exc})") from None
    if parsed.type != "dataset" or parsed.path_in_repo:
        raise LoaderError(f"{uri}: give a dataset repo's root, "
                          "hf://datasets/USER/NAME[@REVISION]")
    return parsed.id, parsed.revision or "main"


def open_location(source: str | os.PathLike[str] | Location, token: str | bool | None = None,
                  retries: int | None = None) -> Location:
    """Where `source` lives: a local folder, an http(s) base URL, `user/name[@revision]` or
    `hf://datasets/user/name[@revision]` (Hub, HF_ENDPOINT honoured).

    `token`: for the Hub, None means huggingface_hub's token (HF_TOKEN or the cached login);
    for other URLs a token is sent only when given. `retries`: HTTP failures in a row without
    progress before a read gives up (default: SOUSA_WDS_RETRIES, else 6).
    """
    if not isinstance(source, (str, os.PathLike)):
        return source
    text = os.fspath(source)
    if text.startswith("hf://"):
        return _hub_location(*_parse_hub(text), token, retries)
    if text.startswith(("http://", "https://")):
        client = HttpClient(_auth(token if isinstance(token, str) else None), retries)
        return HttpLocation(text, client)
    path = Path(text).expanduser()
    if path.is_dir():
        return LocalLocation(path)
    if path.exists():
        raise LoaderError(f"{text} is a file; give the packed folder (the one with manifest.json)")
    if _HUB_ID.fullmatch(text.partition("@")[0]):
        user = Path(text.partition("/")[0])
        if user.is_dir():  # a local path with a typo reads as USER/NAME: say so, at once
            raise LoaderError(
                f"{text!r} is not a local folder ({user}/ has no {text.partition('/')[2]!r}); "
                f"for the Hub dataset of that name, give hf://datasets/{text}")
        return _hub_location(*_parse_hub(f"hf://datasets/{text}"), token, retries)
    raise LoaderError(
        f"{text!r} is not a local folder, an http(s) URL or a Hub dataset "
        "(USER/NAME or hf://datasets/USER/NAME[@REVISION])")
