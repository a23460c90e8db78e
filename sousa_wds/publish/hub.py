"""Every call sousa-wds makes to the Hugging Face Hub, and the translation of its errors.

How it works:
- Each function takes an `HfApi` whose endpoint and token are already set (`make_api`), so the
  same code runs against huggingface.co and, in-process, against tests/hubserver.py.
- Reads: `check_token` (whoami), `remote_state` (repo info, then the listing of that exact
  commit), `served_sha256s` and `read_file` (bytes of one pinned commit).
- Writes: `create_repo`, `send_data` (through `upload_folder`), `send_manifest` (last, in its
  own commit) and `delete_paths` (one commit).
- `translated()` turns the client's HTTP and network errors into one `SousaWdsError` line;
  `redact()` removes the token (in every form `auth.hide_token` knows) and every URL query
  string from it (signed upload and CDN URLs carry `sig=`/`X-Amz-Signature=`, which grant
  access to whoever reads the log).
- An explicit token enters through `resolve_token` (cleaned and checked by `auth.user_token`).
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..auth import hide_token, saved_token_source, user_token
from ..errors import SousaWdsError, UploadError, VerifyError
from ..format import MANIFEST
from ..io import stream_sha256
from .plan import RemoteFile, RemoteState, UploadPlan, upload_patterns

if TYPE_CHECKING:
    from huggingface_hub import HfApi, HfFileSystem

REPO_TYPE = "dataset"
DEFAULT_REVISION = "main"
LOGIN_HELP = (
    "log in with `hf auth login`, or set HF_TOKEN to a write token from "
    "https://huggingface.co/settings/tokens"
)
_QUERY = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"<>]*)\?[^\s#'\"<>]*")
_SIGNED = re.compile(r"(?i)\b(sig|signature|x-amz-signature|x-amz-credential|token)=[^\s&'\"]+")


class _HideSignedUrls(logging.Filter):
    """huggingface_hub logs every URL it retries (`HTTP Error 503 thrown while requesting PUT
    URL`), signed LFS URLs included, on stderr even when the run succeeds: logged here without
    their query strings, as every error of ours is."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = _SIGNED.sub(r"\1=<redacted>", _QUERY.sub(r"\1?<query redacted>", message))
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


logging.getLogger("huggingface_hub.utils._http").addFilter(_HideSignedUrls())


def make_api(token: str | None, endpoint: str | None = None) -> HfApi:
    """A client for `endpoint` (default: HF_ENDPOINT or huggingface.co) with exactly `token`.

    token=False when there is none: never fall back to a saved login the caller did not
    resolve (and name) itself.
    """
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token or False)


def resolve_token(explicit: str | None) -> tuple[str | None, str]:
    """The token to use and where it came from (named in messages; the token never is)."""
    explicit = user_token(explicit, "from --token")
    if explicit:
        return explicit, "--token"
    from huggingface_hub import get_token

    source = saved_token_source()
    return user_token(get_token(), f"from {source}"), source


def check_repo_id(repo_id: str) -> None:
    """An `UploadError` unless `repo_id` is USER/NAME as the Hub accepts it (huggingface_hub's
    own validator), before anything is read or written: the card is rendered for it.

    A bare NAME is refused too: the Hub would put it under the token's user, while the card
    and the snippets in it would name a repo nobody can load.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        # One line: the validator quotes the id as given, a CR or LF (from a CRLF file) too.
        reason = " ".join(str(exc).replace(" Use `repo_type` argument if needed.", "")
                          .rstrip(".").split())
    else:
        if repo_id.count("/") == 1:
            return
        reason = "it has no USER/ part"
    raise UploadError(f"{repo_id!r} is not a Hub dataset repo id ({reason}): give USER/NAME, "
                      "e.g. USER/SOUSA; nothing was written or sent")


def parse_hf_target(target: str) -> tuple[str, str]:
    """`hf://datasets/USER/NAME[@revision]` → (repo id, revision), by huggingface_hub's parser."""
    from huggingface_hub.errors import HfUriError
    from huggingface_hub.utils import parse_hf_uri

    try:
        uri = parse_hf_uri(target)
    except HfUriError:
        uri = None
    if uri is None or uri.type != "dataset" or uri.path_in_repo:
        raise VerifyError(f"{target!r} is not hf://datasets/USER/NAME[@revision]")
    return uri.id, uri.revision or DEFAULT_REVISION


def repo_url(endpoint: str, repo_id: str, revision: str) -> str:
    url = f"{endpoint.rstrip('/')}/datasets/{repo_id}"
    if revision != DEFAULT_REVISION:
        url += f"/tree/{urllib.parse.quote(revision, safe='')}"
    return url


def check_token(api: HfApi, token: str, source: str) -> str:
    """The user name behind `token`; an `UploadError` unless the Hub accepts it for writing.
    Network errors propagate: the caller knows what to suggest."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = api.whoami()
    except HfHubHTTPError as exc:
        if _status(exc) == 401:
            raise UploadError(f"the Hub rejected the token from {source} (401 Unauthorized): "
                              f"{LOGIN_HELP}") from None
        raise UploadError(f"could not check the token: {redact(exc, token)}") from None
    role = info.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise UploadError(f"the token from {source} is read-only: {LOGIN_HELP}")
    return str(info.get("name", "?"))


def remote_state(api: HfApi, repo_id: str, revision: str) -> RemoteState:
    """Repo info, then the listing of that exact commit. Raises RepositoryNotFoundError.

    Listing by commit id keeps plan and verification on one snapshot while others push.
    """
    from huggingface_hub.errors import RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    try:
        info = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision)
    except RevisionNotFoundError:
        raise UploadError(
            f"{repo_id} has no revision {revision!r} (a new branch is made with `hf repos "
            f"branch create {repo_id} {revision} --repo-type dataset`)"
        ) from None
    files = {}
    for entry in api.list_repo_tree(repo_id, repo_type=REPO_TYPE, revision=info.sha,
                                    recursive=True):
        if isinstance(entry, RepoFile):
            files[entry.path] = RemoteFile(entry.path, entry.size, entry.blob_id,
                                           entry.lfs.sha256 if entry.lfs else None)
    return RemoteState(True, bool(info.private), info.sha, files)


def dry_run_remote(
    api: HfApi, repo_id: str, revision: str, token: str | None, source: str
) -> tuple[RemoteState | None, str | None, str | None]:
    """The remote state if the Hub can be asked with reads only, else None and the reason;
    then what would refuse the real run (a token the Hub rejects or that cannot write, a
    revision the repo lacks), which a dry run reports as refused instead of planning on."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        if token is not None:
            check_token(api, token, source)
        return remote_state(api, repo_id, revision), None, None
    except UploadError as exc:
        return None, str(exc), str(exc)
    except RepositoryNotFoundError:
        if token is None:
            return (None, f"{repo_id} is not public, or new, and there is no token: "
                    f"{LOGIN_HELP}", None)
        return RemoteState(False, False, None, {}), None, None
    except HfHubHTTPError as exc:
        return None, redact(exc, token), None
    except _network_errors() as exc:
        return None, f"could not reach {api.endpoint}: {redact(exc, token)}", None


def repo_exists(api: HfApi, repo_id: str) -> bool:
    return bool(api.repo_exists(repo_id, repo_type=REPO_TYPE))


def create_repo(api: HfApi, repo_id: str, *, private: bool) -> None:
    api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)


def send_data(api: HfApi, root: Path, plan: UploadPlan, repo_id: str, revision: str,
              message: str, *, remote_manifest: bool) -> bool:
    """The data files of `plan` through `upload_folder`; whether any were to be sent.

    While data changes, the remote copy must not carry an outdated manifest (readers and
    `verify hf://` would trust it over the new shards, and a multi-commit upload can stop
    half-way): it is deleted first, in a commit of its own. The new one follows in
    `send_manifest`, once the caller has checked the data it lists.
    """
    data_changes = any(f.path != MANIFEST for f in plan.add)
    if data_changes and remote_manifest and any(f.path == MANIFEST for f in plan.add):
        api.delete_file(MANIFEST, repo_id=repo_id, repo_type=REPO_TYPE, revision=revision,
                        commit_message=f"{message} (retire the outdated {MANIFEST})")
    if data_changes:
        allow, ignore = upload_patterns(
            [f.path for f in (*plan.add, *plan.skip) if f.path != MANIFEST], _local_paths(root)
        )
        api.upload_folder(repo_id=repo_id, repo_type=REPO_TYPE, folder_path=root,
                          revision=revision, commit_message=message,
                          allow_patterns=allow, ignore_patterns=ignore)
    return data_changes


def send_manifest(api: HfApi, raw: bytes, repo_id: str, revision: str, message: str,
                  checked: str | None) -> None:
    """`manifest.json` last, in its own commit: a remote copy with a manifest is complete.

    `raw` is the manifest the data was checked against (not the file read again), committed
    on top of `checked`, the commit whose listing was compared: if anything landed since (a
    concurrent upload), the Hub refuses the commit instead of pairing this manifest with
    other data."""
    api.upload_file(path_or_fileobj=raw, path_in_repo=MANIFEST,
                    repo_id=repo_id, repo_type=REPO_TYPE, revision=revision,
                    commit_message=f"{message} ({MANIFEST})", parent_commit=checked)


def _local_paths(root: Path) -> list[str]:
    return [Path(folder, name).relative_to(root).as_posix()
            for folder, _dirs, names in os.walk(root) for name in names]


def delete_paths(api: HfApi, repo_id: str, revision: str, paths: Sequence[str],
                 count: int, listed: str | None) -> None:
    """One commit deleting `paths` (files, or folders ending in `/`), on top of `listed`, the
    commit whose listing named them: a file added since (which a folder's deletion would
    take along unnamed) makes the Hub refuse the commit."""
    from huggingface_hub import CommitOperationDelete

    api.create_commit(
        repo_id=repo_id, repo_type=REPO_TYPE, revision=revision,
        operations=[CommitOperationDelete(path_in_repo=p) for p in paths],
        commit_message=f"Delete {count} files not in the sousa-wds manifest",
        parent_commit=listed,
    )


def _filesystem(api: HfApi) -> HfFileSystem:
    from huggingface_hub import HfFileSystem

    return HfFileSystem(token=api.token, endpoint=api.endpoint, skip_instance_cache=True)


def served_sha256s(api: HfApi, repo_id: str, commit: str, paths: Sequence[str]
                   ) -> dict[str, str]:
    """sha256 of the bytes the Hub serves for each path at `commit` (streamed, not stored)."""
    fs = _filesystem(api)
    served = {}
    for path in paths:
        with fs.open(f"datasets/{repo_id}@{commit}/{path}", "rb", block_size=0) as fh:
            served[path] = stream_sha256(fh)
    return served


def read_file(api: HfApi, repo_id: str, commit: str, path: str) -> bytes:
    return _filesystem(api).cat_file(f"datasets/{repo_id}@{commit}/{path}")


@contextmanager
def translated(
    action: str, token: str | None, *, hint: str = "", error: type[SousaWdsError] = UploadError
) -> Iterator[None]:
    """Turn the Hub client's HTTP and network errors into one actionable, redacted line.

    The client sometimes wraps them (a failed LFS upload is a RuntimeError raised from the
    HTTP error), so the cause chain is searched; anything else is a bug and propagates.
    """
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except SousaWdsError:
        raise
    except Exception as exc:
        cause = _hub_cause(exc)
        if cause is None:
            raise
        where = "" if cause is exc else f"{redact(exc, token)} "
        if getattr(getattr(cause, "response", None), "status_code", None) == 401:
            hint = f"the token was rejected: {LOGIN_HELP}" + (f"; {hint}" if hint else "")
        if isinstance(cause, HfHubHTTPError):
            text = f"{action}: {where}{redact(cause, token)}"
        else:
            text = f"{action}, the Hub did not answer: {where}{redact(cause, token)}"
        raise error(text + (f"; {hint}" if hint else "")) from None


def redact(exc: BaseException | str, token: str | None) -> str:
    """One line from a library error without secrets: the token, and the query string of
    every URL (signed URLs: whoever holds one may use it until it expires)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = hide_token(text, token)
    text = _QUERY.sub(r"\1?<query redacted>", text)
    return _SIGNED.sub(r"\1=<redacted>", text)


def _hub_cause(exc: BaseException) -> BaseException | None:
    """The HTTP or network error `exc` is or was raised from, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _network_errors()):
            return seen
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


def _network_errors() -> tuple[type[BaseException], ...]:
    """Failures to get any answer from the Hub.

    huggingface_hub lets its HTTP library's transport errors through (httpx in 1.x, httpx2 in
    2.x); that library's base error is HfHubHTTPError's first base class. OSError covers
    offline mode (OfflineModeIsEnabled) and socket errors.
    """
    from huggingface_hub.errors import HfHubHTTPError

    return (HfHubHTTPError.__mro__[1], OSError)


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)
