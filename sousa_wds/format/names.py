"""Names and paths of the sousa-wds format: splits, members, files, keys, tar headers.

Every path a pack writes or a reader opens is built here. Changing anything here is a format
change: bump FORMAT_VERSION and say so in docs/format.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..io import HASHED_TEMP, temp_final

if TYPE_CHECKING:
    import tarfile

FORMAT_VERSION = 2  # 2: metadata holds mid_sha256 and json_sha256 (docs/format.md)

# Output split names, in the order every listing uses; the generator's names map onto them.
SPLITS: tuple[str, ...] = ("train", "validation", "test")
SOURCE_SPLIT_FIELDS: dict[str, str] = {
    "train": "train_profile_ids",
    "validation": "val_profile_ids",
    "test": "test_profile_ids",
}

# One WebDataset key group per sample, written in this order inside the tar (sorted by
# extension, the order webdataset's own TarWriter would choose).
MEMBERS: tuple[str, ...] = ("flac", "json", "mid")

# Fixed tar header fields: an integer mtime keeps tarfile from adding a PAX header per member
# (a float mtime does), and fixed owner/mode make the bytes independent of who packs.
TAR_MTIME = 0
TAR_USER = "sousa"
TAR_GROUP = "sousa"
TAR_MODE = 0o444
TAR_BLOCK = 512  # tar stores everything in 512-byte blocks
TAR_RECORD = 20 * TAR_BLOCK  # tarfile ends an archive on a multiple of this


def tar_padded(size: int) -> int:
    """Bytes a member of `size` bytes of data occupies in a tar, padding included."""
    return -(-size // TAR_BLOCK) * TAR_BLOCK


def tar_member_info(name: str, size: int) -> tarfile.TarInfo:
    """A member header with the format's fixed fields: same input, same bytes."""
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = TAR_MODE
    info.uname = TAR_USER
    info.gname = TAR_GROUP
    return info


def tar_framing(
    members: Sequence[tuple[str, int]], *, at: int = 0, last: bool = True,
) -> tuple[list[tuple[int, bytes]], list[int], int]:
    """Every byte of a shard that is not member data as (offset, bytes), where each member's
    data starts, and where the framing ends.

    A shard holding `members` (name, size) in this order is exactly these bytes around the
    members' data: each header as stdlib `tarfile` writes it in its default (PAX) format, the
    data, zeros to the next block; at the end two zero blocks and zeros to a whole record.
    `at` and `last` describe a run of members starting at offset `at`, not the whole shard
    (no end unless `last`). Deep verification compares these bytes instead of hashing the
    whole shard a second time.
    """
    import tarfile

    framing: list[tuple[int, bytes]] = []
    starts: list[int] = []
    for name, size in members:
        header = tar_member_info(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8",
                                                   "surrogateescape")
        framing.append((at, header))
        starts.append(at + len(header))
        at += len(header) + size
        if pad := tar_padded(size) - size:
            framing.append((at, bytes(pad)))
            at += pad
    if last:
        end = -(-(at + 2 * TAR_BLOCK) // TAR_RECORD) * TAR_RECORD
        framing.append((at, bytes(end - at)))
        at = end
    return framing, starts, at


MANIFEST = "manifest.json"
# Top-level folders a pack writes and readers glob (the card's data_files, the loader): a file
# there that the manifest does not list would be read as data.
FORMAT_FOLDERS: tuple[str, ...] = ("data", "metadata", "labels", "index", "audio", "midi",
                                   "preview")
CARD = "README.md"
LABEL_TABLES: tuple[str, ...] = ("strokes", "measures")

# Hugging Face Hub limits (its documented guidance): beyond these, commits fail or crawl.
HUB_MAX_FILES = 100_000
HUB_MAX_FILES_PER_FOLDER = 10_000
HUB_MAX_FILE_BYTES = 50 * 10**9

# Keys are SOUSA sample ids: ASCII letters, digits, '_' and '-'. Anything else either breaks
# WebDataset's name splitting ('.', '/') or tar member names (NUL, control characters), or
# makes URLs and shell use fragile.
_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BAD_KEY_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.tar"


def shard_path(split: str, index: int) -> str:
    return f"data/{shard_name(split, index)}"


def metadata_path(split: str) -> str:
    return f"metadata/{split}.parquet"


def labels_path(table: str, split: str) -> str:
    return f"labels/{table}/{split}.parquet"


def index_path(split: str) -> str:
    return f"index/{split}.json"


def preview_path(split: str) -> str:
    """A few samples' FLAC in Parquet: the card's `preview` config, played by the Hub viewer."""
    return f"preview/{split}.parquet"


def loose_audio_path(split: str, key: str) -> str:
    return f"audio/{split}/{key}.flac"


def loose_midi_path(split: str, key: str) -> str:
    return f"midi/{split}/{key}.mid"


def table_paths(layout: str) -> list[str]:
    """What a pack writes besides its media and preview: the card, then each split's metadata,
    label tables and (sharded) shard index."""
    paths = [CARD]
    for split in SPLITS:
        paths.append(metadata_path(split))
        paths += [labels_path(table, split) for table in LABEL_TABLES]
        if layout == "shards":
            paths.append(index_path(split))
    return paths


_SPLIT_NAMES = "|".join(SPLITS)
# What `shard_name`, `metadata_path`, ... give, and nothing else: ASCII digits, five of them
# unless the index needs more (`{index:05d}`).
_PACK_FILE = {
    "both": rf"{re.escape(CARD)}|{re.escape(MANIFEST)}"
            rf"|(?:metadata|preview)/(?:{_SPLIT_NAMES})\.parquet"
            rf"|labels/(?:{'|'.join(LABEL_TABLES)})/(?:{_SPLIT_NAMES})\.parquet",
    "shards": rf"data/(?:{_SPLIT_NAMES})-(?:[0-9]{{5}}|[1-9][0-9]{{5,}})\.tar"
              rf"|index/(?:{_SPLIT_NAMES})\.json",
    "loose": rf"(?:audio/(?:{_SPLIT_NAMES})/{_KEY.pattern}\.flac"
             rf"|midi/(?:{_SPLIT_NAMES})/{_KEY.pattern}\.mid)",
}
_PACK_FILES = {layout: re.compile(f"{_PACK_FILE['both']}|{_PACK_FILE[layout]}", re.ASCII)
               for layout in ("shards", "loose")}
# A loose key can be too long for a temporary name of its own (`io.temp_sibling` hashes it).
_LOOSE_FOLDER = re.compile(rf"(?:audio|midi)/(?:{_SPLIT_NAMES})")


def written_by_pack(rel: str, layout: str | None = None) -> bool:
    """Whether `rel` (a POSIX path in OUT) is a name pack writes in `layout` ("shards",
    "loose"; None: either), or its temporary name: what an interrupted pack may have left."""
    folder, _, name = rel.rpartition("/")
    if HASHED_TEMP.fullmatch(name):
        return layout != "shards" and _LOOSE_FOLDER.fullmatch(folder) is not None
    final = temp_final(rel) or rel
    return any(_PACK_FILES[form].fullmatch(final) is not None
               for form in ((layout,) if layout else ("shards", "loose")))


def key_problem(key: object) -> str | None:
    """Why `key` cannot be a WebDataset key, or None when it can.

    WebDataset splits a member name at the first dot of its basename, so a dot, a slash or
    whitespace would silently produce a different sample on read; the allowed set is the
    one SOUSA ids use.
    """
    if not isinstance(key, str) or key == "":
        return "is empty"
    if _KEY.fullmatch(key):
        return None
    bad = _BAD_KEY_CHAR.search(key)
    assert bad is not None
    return f"contains {bad.group()!r}"

__all__ = [
    "FORMAT_VERSION",
    "SPLITS",
    "SOURCE_SPLIT_FIELDS",
    "MEMBERS",
    "TAR_MTIME",
    "TAR_USER",
    "TAR_GROUP",
    "TAR_MODE",
    "TAR_BLOCK",
    "TAR_RECORD",
    "tar_padded",
    "tar_member_info",
    "tar_framing",
    "MANIFEST",
    "FORMAT_FOLDERS",
    "CARD",
    "LABEL_TABLES",
    "HUB_MAX_FILES",
    "HUB_MAX_FILES_PER_FOLDER",
    "HUB_MAX_FILE_BYTES",
    "shard_name",
    "shard_path",
    "metadata_path",
    "labels_path",
    "index_path",
    "preview_path",
    "loose_audio_path",
    "loose_midi_path",
    "key_problem",
    "written_by_pack",
    "table_paths",
]
