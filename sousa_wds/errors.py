"""Exceptions that carry an actionable message; the CLI prints them as one line."""


class SousaWdsError(Exception):
    """Base class: the message says what is wrong, where, and how to fix it."""


class DatasetError(SousaWdsError):
    """The SOUSA source dataset is missing, unreadable or inconsistent."""


class PackError(SousaWdsError):
    """Packing cannot start or continue (output folder, options, interrupted run)."""


class VerifyError(SousaWdsError):
    """A packed folder or remote copy does not match its manifest."""


class UploadError(SousaWdsError):
    """Publishing to the Hub cannot proceed (login, limits, remote state)."""


class LoaderError(SousaWdsError):
    """A consumer-side read failed (source, shard, sample)."""
