"""Where OUT may be and what pack may delete there: the output folder's states.

How it works:
- OUT must be apart from the source: not the same folder, not inside it, not around it, after
  following links (`Path.resolve`) and by file identity (`os.path.samefile`: bind mounts,
  hard-to-spell paths). Checked before anything is written.
- An empty (or new) OUT starts a pack; a non-empty one needs `--resume` (an interrupted pack
  with the same `PackState`) or `--overwrite`, which deletes only what the previous pack wrote,
  and only in a folder that holds our manifest or pack state: the files its manifest lists,
  or for an interrupted pack (or a manifest this version cannot read) files named as pack
  names them in its layout (`format.written_by_pack`). Anything else in pack's folders, or an
  entry of another kind than pack makes (a folder named manifest.json), refuses it before
  anything is deleted, with the list; `--resume` likewise refuses anything its plan does not
  write. The manifest goes last, after the new state is written, so an overwrite stopped
  half-way is still a folder `--overwrite` recognises.
- A symbolic link among pack's folders (the state folder included) would have pack write
  wherever it points (into the source, say): refused for `--resume` and `--overwrite` alike.
- Paths must be UTF-8: Parquet and JSON store them as text, so a path that is not would fail
  half-way through.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..errors import PackError, listing
from ..format import (
    CARD,
    FORMAT_FOLDERS,
    LABEL_TABLES,
    MANIFEST,
    SPLITS,
    Manifest,
    preview_path,
    table_paths,
    written_by_pack,
)
from ..format.manifest import FORMAT_NAME
from ..io import temp_final
from .plan import PackPlan
from .state import LOCK_FILE, STATE_DIR, PackState, StateDir
from .tar import ShardResult

# Everything pack may create at OUT's top; --overwrite looks nowhere else.
MANAGED = (*FORMAT_FOLDERS, CARD, MANIFEST, STATE_DIR)
# The folders pack makes, deepest first: removed by --overwrite once empty.
PACK_FOLDERS = (*(f"{top}/{split}" for top in ("audio", "midi") for split in SPLITS),
                *(f"labels/{table}" for table in LABEL_TABLES), *FORMAT_FOLDERS)


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
    if not existing:
        states.start(state)
        return {}
    if not (resume or overwrite):
        hint = (f"it holds an interrupted pack ({STATE_DIR}/): add --resume to continue it"
                if states.exists() else "use --resume to continue an interrupted pack")
        raise PackError(
            f"{out} is not empty ({', '.join(existing[:5])}{' ...' if len(existing) > 5 else ''}): "
            f"{hint}, --overwrite to replace a previous pack's files, or choose an empty folder."
        )
    files, odd, links = _entries(out, [name for name in existing if name in MANAGED])
    if links:
        raise PackError(f"{out} has symbolic links where pack writes; pack would write wherever "
                        f"they point:{listing(links)}\nRemove the links, or choose another "
                        "folder.")
    if resume:
        planned = _planned(plan, state.options.layout)
        _refuse_foreign(out, odd + [rel for rel in files if not planned(rel)], "--resume",
                        "not part of the pack this run resumes")
        return _resumable(out, state, plan, states)
    if (files or odd) and not _holds_a_pack(out, states):
        raise PackError(
            f"--overwrite refused: {out} holds no sousa-wds pack (no {MANIFEST}, no "
            f"{STATE_DIR}/), so these were not written by pack and would be deleted:"
            f"{listing(files + odd)}\nChoose an empty folder, or move them away yourself."
        )
    wrote = _previous_pack(out, states)
    _refuse_foreign(out, odd + [rel for rel in files if not wrote(rel)], "--overwrite",
                    "not written by the pack it replaces")
    for rel in files:
        if rel != MANIFEST:
            (out / rel).unlink()
    for rel in PACK_FOLDERS:  # deepest first
        with contextlib.suppress(OSError):  # missing, or not empty (a user's empty folder)
            (out / rel).rmdir()
    if states.root.is_dir():
        shutil.rmtree(states.root)
    states.start(state)
    (out / MANIFEST).unlink(missing_ok=True)  # last: until the new state exists, it marks OUT
    return {}


def _entries(out: Path, names: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Under pack's entries in OUT: the regular files, the entries of another kind than pack
    makes there (a folder named manifest.json, a file named data), and the symbolic links, as
    paths relative to OUT. The state folder is pack's: its files are not listed, its links are."""
    files: list[str] = []
    odd: list[str] = []
    links: list[str] = []
    for name in names:
        top = out / name
        folder_name = name in FORMAT_FOLDERS or name == STATE_DIR
        if top.is_symlink():
            links.append(name)
        elif not (top.is_dir() if folder_name else top.is_file()):
            odd.append(name)
        elif not folder_name:
            files.append(name)
        else:
            for folder, dirs, names_here in os.walk(top):
                for entry in (*dirs, *names_here):
                    path = Path(folder, entry)
                    rel = path.relative_to(out).as_posix()
                    if path.is_symlink():
                        links.append(rel)
                    elif entry in names_here and name != STATE_DIR:
                        (files if path.is_file() else odd).append(rel)
    return files, odd, links


def _previous_pack(out: Path, states: StateDir) -> Callable[[str], bool]:
    """Whether a path in OUT is one the pack there wrote: a finished pack's manifest lists
    them (and their temporary names). An interrupted pack's, or one whose manifest this version
    cannot read (an older format), are known by pack's names, in its layout when known."""
    listed: set[str] = set()
    try:
        manifest = Manifest.from_json((out / MANIFEST).read_bytes(), str(out / MANIFEST))
        listed = {entry.path for entry in manifest.files} | {MANIFEST}
    except (OSError, ValueError):  # none, or not readable here (ManifestError is a ValueError)
        pass
    by_name = states.exists() or not listed
    layout = None
    if states.exists():
        with contextlib.suppress(PackError):
            layout = states.load().options.layout

    def wrote(rel: str) -> bool:
        if rel in listed or temp_final(rel) in listed:
            return True
        return by_name and written_by_pack(rel, layout)

    return wrote


def _planned(plan: PackPlan, layout: str) -> Callable[[str], bool]:
    """Whether a path in OUT is one the resumed pack writes (or its temporary name)."""
    names = {MANIFEST, *table_paths(layout), *map(preview_path, SPLITS)}
    names |= {shard.path for shard in plan.shards}

    def planned(rel: str) -> bool:
        if rel in names or temp_final(rel) in names:
            return True
        return layout == "loose" and written_by_pack(rel, "loose")  # media named by key

    return planned


def _refuse_foreign(out: Path, foreign: list[str], option: str, why: str) -> None:
    if foreign:
        raise PackError(
            f"{option} refused: pack's folders in {out} hold entries {why}, which it would "
            f"have to delete or leave among the new files:{listing(sorted(foreign))}\n"
            "Move them out of OUT, then rerun."
        )


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
