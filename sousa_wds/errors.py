"""Every exception sousa-wds raises, and the one collector that lists many problems at once.

Each message says what is wrong, where (a file, a URL, a key) and how to fix it; the CLI prints
it as it is, with a non-zero exit code. Classes also derive from the standard library's own
(a missing file is a `FileNotFoundError`, a bad value a `ValueError`), so callers can catch
either family.
"""

from __future__ import annotations

from collections.abc import Iterable

# How many culprits one message lists before it says "and N more".
MAX_LISTED = 20


class SousaWdsError(Exception):
    """Base class: the message says what is wrong, where, and how to fix it."""


class DatasetError(SousaWdsError, ValueError):
    """The SOUSA source dataset is missing, unreadable or inconsistent."""


class PackError(SousaWdsError):
    """Packing cannot start or continue (output folder, options, interrupted run)."""


class VerifyError(SousaWdsError):
    """A packed folder or remote copy does not match its manifest."""


class ManifestError(VerifyError, ValueError):
    """`manifest.json` is unreadable, of another format version, or has a bad field."""


class UploadError(SousaWdsError):
    """Publishing to the Hub cannot proceed (login, limits, remote state)."""


class TokenError(SousaWdsError, ValueError):
    """A token given by the user cannot be sent (a character no HTTP header can carry)."""


class LoaderError(SousaWdsError):
    """A consumer-side read failed (source, shard, sample)."""


class MissingFile(LoaderError, FileNotFoundError):
    """A file the pack should hold is absent at the source (local folder, mirror, Hub)."""


class ExtractError(SousaWdsError):
    """A packed dataset cannot be restored as a SOUSA folder (unsafe names, bad bytes, target)."""


def listing(items: Iterable[str], *, indent: str = "    ", limit: int = MAX_LISTED) -> str:
    """Items one per line, at most `limit` of them, then "... and N more"."""
    items = list(items)
    lines = [f"\n{indent}{item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"\n{indent}... and {len(items) - limit} more")
    return "".join(lines)


class Problems:
    """Collects every problem of a run so the user can fix them all in one go."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.messages)

    def add(self, what: str, items: Iterable[str], fix: str) -> None:
        """One problem: `what` is wrong for each of `items`; `fix` says what to do."""
        items = list(items)
        if items:
            self.messages.append(f"{what} ({len(items)}):{listing(items)}\n  fix: {fix}")

    def extend(self, other: Problems) -> None:
        """Add the problems `other` collected, after these."""
        self.messages += other.messages

    def raise_if_any(self, error: type[SousaWdsError], subject: str) -> None:
        """Raise `error` saying `subject` (e.g. "DIR is not a valid SOUSA dataset") and why."""
        if self.messages:
            body = "\n".join(f"- {m}" for m in self.messages)
            raise error(f"{subject}:\n{body}")


class ShortRead(LoaderError):
    """A byte range ends past the end of its file: the file is truncated or is not the one the
    metadata describes."""


class HttpError(LoaderError):
    """An HTTP request failed with a status that retrying does not fix (or retries ran out)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class QueryError(LoaderError, ValueError):
    """A `where=` query string uses something outside the allowed grammar or an unknown column."""


class IntegrityError(LoaderError):
    """A member's bytes do not match its tar header or the sha256 in the metadata."""


class ResumeMismatch(PackError):
    """The interrupted pack in OUT was started from another input, options or version."""


class PackInterrupted(PackError):
    """A pack was stopped (Ctrl-C); finished shards stay for `--resume`."""


class ExampleError(SousaWdsError, ValueError):
    """The example cannot be written as asked (output folder in use, bad option)."""
