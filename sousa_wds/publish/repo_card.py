"""The dataset card an upload publishes names the repo it goes to.

`sousa-wds pack` renders README.md with `--repo-id` (default `USER/SOUSA`) in every code snippet,
so a pack made before the repo name was known would publish snippets that load someone else's
repo. This module is the only place publishing depends on `sousa_wds.card`.

How it works:
- The card is rendered again with `card.render_card`, from what the packed folder holds: the
  manifest's splits and layout, the license in the card's YAML, and the rudiment and profile
  counts of the metadata.
- It is only re-rendered when that is provably safe: the current README.md must be byte-equal
  to the card rendered for some repo id it quotes (or the default `USER/SOUSA`), i.e. an
  untouched card of this sousa-wds. An edited card is refused with the fix (`--keep-card`
  uploads it as it is; `pack --repo-id` renders it anew).
- The new README.md and a manifest with its new size and sha256 are written atomically, card
  first, before anything is sent; the folder then verifies as before. A run interrupted
  between the two renames leaves a card that already names the repo and a manifest that lists
  the old one: the next run sees that and rewrites only the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..format import CARD, MANIFEST, SPLITS, FileEntry, Manifest, metadata_path
from ..io import write_bytes_atomic

_QUOTED_REPO = re.compile(r"[\"']([A-Za-z0-9][\w.-]*/[\w.-]+)[\"']")


@dataclass(frozen=True)
class CardDecision:
    """What happens to README.md: a note for the plan, the new bytes (None: unchanged), the
    manifest to publish and its bytes, or the problem that blocks the upload."""

    note: str
    manifest: Manifest
    raw: bytes
    card: bytes | None = None
    problem: str | None = None
    raw_changed: bool = False  # the manifest is rewritten (new card, or one listed wrongly)


def decide(root: Path, manifest: Manifest, raw: bytes, repo_id: str, *,
           keep_card: bool = False) -> CardDecision:
    """How README.md in `root` is made to name `repo_id` (see the module docstring)."""
    path = root / CARD
    entry = manifest.file(CARD)
    if keep_card or entry is None or not path.is_file():
        kept = path.read_bytes() if keep_card and entry is not None and path.is_file() else None
        if kept is not None and (entry.bytes, entry.sha256) != _size_sha(kept):
            # The card edited by hand, kept as it is: the manifest must list these bytes.
            fixed = _with_card(manifest, kept)
            return CardDecision(f"uploaded as it is (--keep-card; {MANIFEST} updated to list "
                                "it)", fixed, fixed.to_json(), raw_changed=True)
        return CardDecision("uploaded as it is" + (" (--keep-card)" if keep_card else ""),
                            manifest, raw)
    current = path.read_bytes()
    render = _renderer(root, manifest, current)
    target = render(repo_id)
    if current == target:
        if (entry.bytes, entry.sha256) == _size_sha(current):
            return CardDecision(f"names {repo_id}", manifest, raw)
        fixed = _with_card(manifest, current)  # an interrupted earlier re-render
        return CardDecision(f"names {repo_id} ({MANIFEST} updated to list it)", fixed,
                            fixed.to_json(), raw_changed=True)
    for old in _candidates(current, repo_id):
        if render(old) == current:
            fixed = _with_card(manifest, target)
            return CardDecision(f"re-rendered for {repo_id} (pack wrote it for {old})", fixed,
                                fixed.to_json(), card=target, raw_changed=True)
    return CardDecision(
        f"does not name {repo_id}", manifest, raw,
        problem=f"{path} does not name {repo_id} and is not the card this sousa-wds renders "
        f"for the pack (edited by hand, or written by another version), so it cannot be "
        f"re-rendered safely: upload it as it is with --keep-card, or pack again with "
        f"--repo-id {repo_id}")


def apply(root: Path, decision: CardDecision) -> None:
    """Write the decided card, then the manifest listing it, each atomically."""
    if decision.card is not None:
        write_bytes_atomic(root / CARD, decision.card)
    if decision.raw_changed:
        write_bytes_atomic(root / MANIFEST, decision.raw)


def card_license(root: Path) -> str | None:
    """The license tag in the YAML of the folder's README.md."""
    return _license((root / CARD).read_bytes())


def _license(card: bytes) -> str | None:
    from huggingface_hub import DatasetCard

    return DatasetCard(card.decode("utf-8", "replace")).data.to_dict().get("license")


def _renderer(root: Path, manifest: Manifest, current: bytes) -> Callable[[str], bytes]:
    """`repo_id -> card bytes`, with every other input read once from the folder."""
    from ..card import render_card

    license = _license(current)
    rudiments, profiles = _distinct_counts(root)
    empty = {"samples": 0, "shards": 0, "bytes": 0}
    splits = {s: manifest.splits[s].to_dict() if s in manifest.splits else empty
              for s in SPLITS}

    def render(repo_id: str) -> bytes:
        return render_card(splits, repo_id=repo_id, license=license or "other",
                           layout=manifest.layout, rudiments=rudiments,
                           profiles=profiles).encode("utf-8")

    return render


def _distinct_counts(root: Path) -> tuple[int, int]:
    import pyarrow.parquet as pq

    rudiments: set[str] = set()
    profiles: set[str] = set()
    for split in SPLITS:
        path = root / metadata_path(split)
        if path.is_file():
            table = pq.read_table(path, columns=["rudiment_slug", "profile_id"])
            rudiments.update(table.column("rudiment_slug").to_pylist())
            profiles.update(table.column("profile_id").to_pylist())
    return len(rudiments), len(profiles)


def _candidates(card: bytes, repo_id: str) -> list[str]:
    """Repo ids the card may have been rendered for: those it quotes, and pack's default."""
    from ..card import DEFAULT_REPO_ID

    found = dict.fromkeys([DEFAULT_REPO_ID, *_QUOTED_REPO.findall(card.decode("utf-8",
                                                                             "replace"))])
    return [c for c in found if c != repo_id][:20]


def _size_sha(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


def _with_card(manifest: Manifest, card: bytes) -> Manifest:
    size, sha = _size_sha(card)
    files = tuple(FileEntry(f.path, size, sha) if f.path == CARD else f for f in manifest.files)
    return dataclasses.replace(manifest, files=files)
