"""Where OUT may be and what pack may delete there: the output folder's states.

How it works:
- OUT must be apart from the source: not the same folder, not inside it, not around it, after
  following links (`Path.resolve`) and by file identity (`os.path.samefile`: bind mounts,
  hard-to-spell paths). Checked before anything is written.
- An empty (or new) OUT starts a pack; a non-empty one needs `--resume` (an interrupted pack
  with the same `PackState`) or `--overwrite`, which deletes only the names pack writes, and
  only in a folder that holds our manifest or pack state. Anything else is refused with the
  list of what would have been deleted.
- Paths must be UTF-8: Parquet and JSON store them as text, so a path that is not would fail
  half-way through.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import PackError, listing
from ..format import CARD, FORMAT_FOLDERS, MANIFEST
from ..format.manifest import FORMAT_NAME
from .plan import PackPlan
from .state import LOCK_FILE, STATE_DIR, PackState, StateDir
from .tar import ShardResult

# Everything pack may create; --overwrite removes these and nothing else in OUT.
MANAGED = (*FORMAT_FOLDERS, CARD, MANIFEST, STATE_DIR)


def check_utf8(*paths: str | os.PathLike) -> None:
    """Parquet and JSON hold text as UTF-8: a path that is not would fail half-way through."""
    for path in paths:
        text = os.fsdecode(path)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise PackError(f"{text!r} is not a valid UTF-8 path; rename it (or pick another "
                            "folder) so pack can record it") from None


def check_apart(source: Path, out: Path) -> None:
    """Refuse an OUT that is the source, or inside it, or holds it, however it is spelled."""
    src, dst = source.resolve(), out.resolve()
    if _within(dst, src) or _within(src, dst):
        raise PackError(
            f"{out} and the source dataset {source} overlap (the same folder, or one inside "
            "the other, after following links); pick an output folder apart from the dataset"
        )


def _within(inner: Path, outer: Path) -> bool:
    """Whether `inner` is `outer` or below it, by resolved path or by file identity."""
    if inner == outer or outer in inner.parents:
        return True
    if not outer.exists():
        return False
    return any(p.exists() and os.path.samefile(p, outer) for p in (inner, *inner.parents))


def _holds_a_pack(out: Path, states: StateDir) -> bool:
    if states.exists():
        return True
    try:
        data = json.loads((out / MANIFEST).read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


def prepare_out(
    out: Path, state: PackState, plan: PackPlan, states: StateDir, *, resume: bool,
    overwrite: bool,
) -> dict[str, ShardResult]:
    """Make OUT ready and return the shard results a resumed run can keep."""
    existing = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
    if existing and resume:
        return _resumable(out, state, plan, states)
    if existing and not overwrite:
        raise PackError(
            f"{out} is not empty ({', '.join(existing[:5])}{' ...' if len(existing) > 5 else ''}). "
            "Use --resume to continue an interrupted pack, --overwrite to replace a previous "
            "pack's files, or choose an empty folder."
        )
    ours = [name for name in existing if name in MANAGED]
    if ours and not _holds_a_pack(out, states):
        raise PackError(
            f"--overwrite refused: {out} holds no sousa-wds pack (no {MANIFEST}, no "
            f"{STATE_DIR}/), so these were not written by pack and would be deleted:"
            f"{listing(ours)}\nChoose an empty folder, or move them away yourself."
        )
    for name in ours:
        target = out / name
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    states.start(state)
    return {}


def _resumable(out: Path, state: PackState, plan: PackPlan,
               states: StateDir) -> dict[str, ShardResult]:
    if not states.exists():
        if (out / MANIFEST).is_file():
            raise PackError(
                f"{out} holds a finished pack (it has {MANIFEST}); nothing to resume. Use "
                "--overwrite to pack again."
            )
        raise PackError(f"{out} holds no interrupted pack to resume ({states.state_file} is "
                        "missing)")
    state.validate(states.load(), out)
    (out / MANIFEST).unlink(missing_ok=True)  # the old one would call a mixed folder finished
    return states.finished(plan, out)
