"""`manifest.json`, the contract between a pack and everything that reads it, as one type.

How it works:
- `Manifest.from_json(raw, where)` is the only place a manifest is parsed. It checks every field
  (format name and version, layout, options, split counts, each file's path, size and sha256)
  and raises `ManifestError` naming `where` and each bad field, so verify, upload and the loader
  never meet a half-valid dict.
- `Manifest.to_json()` gives the exact bytes pack writes (sorted keys, two-space indent), so the
  same pack gives the same manifest bytes.
- File paths are relative POSIX paths inside the pack: no absolute path, no `..`, no empty part.
  A reader joins them to a folder or URL, so an unchecked path could reach outside the pack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ManifestError
from .names import FORMAT_VERSION, MANIFEST, SPLITS

FORMAT_NAME = "sousa-wds"
LAYOUTS: tuple[str, ...] = ("shards", "loose")
ORDERS: tuple[str, ...] = ("shuffle", "sorted")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileEntry:
    """A file the pack holds: the bytes any copy must serve under `path`."""

    path: str
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "path": self.path, "sha256": self.sha256}


@dataclass(frozen=True)
class PackOptions:
    """The options that decide a pack's bytes (with the source, they fix the output)."""

    layout: str
    shard_size: int
    max_samples_per_shard: int | None
    seed: int
    order: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "max_samples_per_shard": self.max_samples_per_shard,
            "order": self.order,
            "seed": self.seed,
            "shard_size": self.shard_size,
        }


@dataclass(frozen=True)
class SplitCounts:
    """How much of a split the pack holds: samples, shards and FLAC bytes."""

    samples: int
    shards: int
    bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"bytes": self.bytes, "samples": self.samples, "shards": self.shards}


@dataclass(frozen=True)
class Manifest:
    """A finished pack: its layout, options, per-split counts and every file it holds."""

    layout: str
    source_fingerprint: str
    options: PackOptions
    splits: dict[str, SplitCounts]
    files: tuple[FileEntry, ...]
    format_version: int = FORMAT_VERSION
    _by_path: dict[str, FileEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_path", {f.path: f for f in self.files})

    @property
    def samples(self) -> int:
        return sum(counts.samples for counts in self.splits.values())

    def file(self, path: str) -> FileEntry | None:
        """The entry for `path`, or None when the manifest does not list it."""
        return self._by_path.get(path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [f.to_dict() for f in self.files],
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "layout": self.layout,
            "options": self.options.to_dict(),
            "source_fingerprint": self.source_fingerprint,
            "splits": {name: counts.to_dict() for name, counts in self.splits.items()},
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes | str, where: str = MANIFEST) -> Manifest:
        """Parse and check a manifest; `where` names it in errors (a path or URL)."""
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, RecursionError, ValueError) as exc:
            raise ManifestError(f"{where} is not JSON ({type(exc).__name__}: {exc}); "
                                f"{_FIX}") from None
        return cls.from_dict(data, where)

    @classmethod
    def from_dict(cls, data: object, where: str = MANIFEST) -> Manifest:
        check = _Checker(where)
        obj = check.mapping(data, "the manifest")
        if obj.get("format") != FORMAT_NAME:
            raise ManifestError(f"{where} is not a sousa-wds manifest (its 'format' is "
                                f"{obj.get('format')!r}, not {FORMAT_NAME!r}); {_FIX}")
        version = obj.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"{where} is sousa-wds format version {version!r}; this sousa-wds reads version "
                f"{FORMAT_VERSION}. Install the sousa-wds release that wrote it, or pack again")
        layout = check.choice(obj.get("layout"), LAYOUTS, "layout")
        manifest = cls(
            layout=layout,
            source_fingerprint=check.text(obj.get("source_fingerprint"), "source_fingerprint"),
            options=_options(check, obj.get("options"), layout),
            splits=_splits(check, obj.get("splits")),
            files=_files(check, obj.get("files")),
        )
        check.raise_if_any()
        return manifest


_FIX = "pack again with `sousa-wds pack --overwrite`, or download the manifest again"


class _Checker:
    """Collects every bad field of one manifest, so one error lists them all."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[str] = []

    def bad(self, what: str) -> None:
        self.problems.append(what)

    def mapping(self, value: object, name: str) -> Mapping[str, Any]:
        if isinstance(value, Mapping):
            return value
        raise ManifestError(f"{self.where}: {name} is {type(value).__name__}, not an object; "
                            f"{_FIX}")

    def integer(self, value: object, name: str, *, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.bad(f"{name} must be an integer >= {minimum}, got {value!r}")
            return minimum
        return value

    def text(self, value: object, name: str) -> str:
        if not isinstance(value, str):
            self.bad(f"{name} must be a string, got {value!r}")
            return ""
        return value

    def choice(self, value: object, choices: tuple[str, ...], name: str) -> str:
        if value not in choices:
            self.bad(f"{name} must be one of {', '.join(choices)}, got {value!r}")
            return choices[0]
        return str(value)

    def raise_if_any(self) -> None:
        if self.problems:
            shown = "; ".join(self.problems[:10])
            more = f"; and {len(self.problems) - 10} more" if len(self.problems) > 10 else ""
            raise ManifestError(f"{self.where} is damaged: {shown}{more}; {_FIX}")


def _options(check: _Checker, value: object, layout: str) -> PackOptions:
    obj = check.mapping(value, "options")
    per_shard = obj.get("max_samples_per_shard")
    return PackOptions(
        layout=check.choice(obj.get("layout"), (layout,), "options.layout"),
        shard_size=check.integer(obj.get("shard_size"), "options.shard_size", minimum=1),
        max_samples_per_shard=None if per_shard is None else check.integer(
            per_shard, "options.max_samples_per_shard", minimum=1),
        seed=check.integer(obj.get("seed"), "options.seed"),
        order=check.choice(obj.get("order"), ORDERS, "options.order"),
    )


def _splits(check: _Checker, value: object) -> dict[str, SplitCounts]:
    obj = check.mapping(value, "splits")
    unknown = sorted(set(obj) - set(SPLITS), key=str)
    if unknown:
        check.bad(f"splits has unknown names {unknown}; known: {', '.join(SPLITS)}")
    splits = {}
    for name in SPLITS:
        if name not in obj:
            continue
        entry = check.mapping(obj[name], f"splits.{name}")
        splits[name] = SplitCounts(
            samples=check.integer(entry.get("samples"), f"splits.{name}.samples"),
            shards=check.integer(entry.get("shards"), f"splits.{name}.shards"),
            bytes=check.integer(entry.get("bytes"), f"splits.{name}.bytes"),
        )
    return splits


def _files(check: _Checker, value: object) -> tuple[FileEntry, ...]:
    if not isinstance(value, list):
        check.bad(f"files must be a list, got {type(value).__name__}")
        return ()
    entries = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            check.bad(f"files[{i}] is not an object")
            continue
        path = check.text(item.get("path"), f"files[{i}].path")
        problem = pack_path_problem(path)
        if problem:
            check.bad(f"files[{i}].path {path!r} {problem}")
        elif path in seen:
            check.bad(f"files[{i}].path {path!r} is listed twice")
        seen.add(path)
        sha = check.text(item.get("sha256"), f"files[{i}].sha256")
        if sha and not _SHA256.fullmatch(sha):
            check.bad(f"files[{i}].sha256 of {path!r} is not 64 lowercase hex digits")
        entries.append(FileEntry(path, check.integer(item.get("bytes"), f"files[{i}].bytes"),
                                 sha))
    return tuple(entries)


def pack_path_problem(path: str) -> str | None:
    """Why `path` cannot name a file inside a pack, or None when it can."""
    if not path:
        return "is empty"
    if path.startswith("/") or "\\" in path or "\0" in path:
        return "is not a relative POSIX path"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "has an empty, '.' or '..' part"
    if path == MANIFEST:
        return "is the manifest itself"
    return None
