"""verify under damage (issue 9.7): every damage is a named problem, never a traceback or a
false OK, and the manifest's own fields are checked against what the folder holds."""

from __future__ import annotations

import json
import random
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sousa_wds.cli import main
from sousa_wds.errors import VerifyError
from sousa_wds.format import MANIFEST
from sousa_wds.verification import verify

from .craft import edit_manifest, relist

INDEX = "index/train.json"


def problems(folder: Path, *, deep: bool = False) -> str:
    report = verify(folder, deep=deep)
    assert not report.ok, "damage not reported"
    return "\n".join(report.problems)


# --- index JSON: damage of any byte is named -------------------------------------------------


@pytest.mark.parametrize(("damage", "named"), [
    (lambda raw: raw[:10] + b"\xff" + raw[11:], "not UTF-8"),  # was UnicodeDecodeError
    (lambda raw: raw.replace(b'"url"', b'"urk"', 1), "shardlist[0].url is None"),  # KeyError
    (lambda raw: b"[" + raw + b"]", "not a wids shard index"),  # was AttributeError
    (lambda raw: b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),  # was RecursionError
    (lambda raw: raw[:-3], "not JSON"),
])
def test_damaged_index_json_is_a_named_problem(packed_copy: Path, damage, named) -> None:
    path = packed_copy / INDEX
    path.write_bytes(damage(path.read_bytes()))
    relist(packed_copy, INDEX)
    assert f"{INDEX}: {named}" in problems(packed_copy)


def test_index_counts_sizes_and_hashes_are_checked(packed_copy: Path) -> None:
    path = packed_copy / INDEX
    index = json.loads(path.read_text())
    index["shardlist"][0]["nsamples"] += 1
    index["shardlist"][1]["sha256"] = "0" * 64
    path.write_text(json.dumps(index))
    relist(packed_copy, INDEX)
    text = problems(packed_copy)
    assert f"{INDEX}: data/train-00000.tar: nsamples" in text
    assert f"{INDEX}: data/train-00001.tar: sha256" in text


# --- members and metadata rows -----------------------------------------------------------------


def test_json_member_that_is_not_an_object_is_named(packed_copy: Path) -> None:
    shard = packed_copy / "data/train-00000.tar"
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".json"))
    data = bytearray(shard.read_bytes())
    body = b"[" + b" " * (member.size - 2) + b"]"  # same size: only the content changes
    data[member.offset_data:member.offset_data + member.size] = body
    shard.write_bytes(bytes(data))
    relist(packed_copy, "data/train-00000.tar")
    assert ".json is a JSON list, not an object" in problems(packed_copy)  # was AttributeError


def test_metadata_row_with_a_null_key_is_named(packed_copy: Path) -> None:
    path = packed_copy / "metadata/test.parquet"
    table = pq.read_table(path)
    keys = table.column("key").to_pylist()
    keys[0] = None
    table = table.set_column(table.schema.get_field_index("key"), "key", pa.array(keys))
    pq.write_table(table, path)
    relist(packed_copy, "metadata/test.parquet")
    assert "metadata/test.parquet: row 0: key is None" in problems(packed_copy)  # was TypeError


# --- the manifest's own fields -----------------------------------------------------------------


def _set(path: str, value):
    def change(m: dict) -> None:
        *parents, last = path.split(".")
        node = m
        for name in parents:
            node = node[name]
        node[last] = value(node[last]) if callable(value) else value
    return change


@pytest.mark.parametrize(("field", "value", "named"), [
    ("options.seed", lambda s: s + 1, "do not give the train samples"),
    ("options.order", "sorted", "do not give the train samples"),
    ("options.shard_size", lambda s: s * 2, "shards planned"),
    ("options.max_samples_per_shard", 1, "shards planned"),
    ("source_fingerprint", "not-a-fingerprint", "is not a sha256 hex digest"),
    ("splits.train.bytes", lambda b: b + 1, "splits.train.bytes is"),
    ("splits.test.samples", lambda n: n + 1, "metadata/test.parquet: 10 rows, manifest says 11"),
    ("splits.validation.shards", lambda n: n + 1, "splits.validation.shards is"),
])
def test_altered_manifest_field_is_not_a_false_ok(packed_copy: Path, field, value,
                                                   named) -> None:
    edit_manifest(packed_copy, _set(field, value))
    assert named in problems(packed_copy)


def test_other_format_version_or_layout_is_named(packed_copy: Path) -> None:
    saved = (packed_copy / MANIFEST).read_bytes()
    edit = json.loads(saved)
    edit["format_version"] = 99
    (packed_copy / MANIFEST).write_text(json.dumps(edit))
    with pytest.raises(VerifyError, match="format version 99"):
        verify(packed_copy)
    (packed_copy / MANIFEST).write_bytes(saved)
    edit_manifest(packed_copy, lambda m: m.update(layout="loose") or m["options"].update(
        layout="loose"))
    assert "layout 'loose' but it lists tar shards" in problems(packed_copy)


def test_manifest_edited_without_changing_its_content_is_named(packed_copy: Path) -> None:
    raw = (packed_copy / MANIFEST).read_bytes()
    (packed_copy / MANIFEST).write_bytes(raw.replace(b"\n  ", b"\n\t", 1))  # still valid JSON
    assert "manifest.json: not the bytes pack writes" in problems(packed_copy)


def test_cli_prints_named_problems_without_traceback(packed_copy: Path, capsys) -> None:
    (packed_copy / INDEX).write_bytes(b"[" * 50_000)
    assert main(["verify", str(packed_copy), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert f"{INDEX}: " in out and "Traceback" not in out + err


# --- a random byte-flip campaign ---------------------------------------------------------------

FLIPS = 40


@pytest.mark.parametrize("where", ["anywhere", "outside shards"])
def test_every_random_byte_flip_is_caught(packed_copy: Path, where: str) -> None:
    """Flip FLIPS random bytes (seeded), one at a time, anywhere in the folder (mostly audio)
    or in the files beside the shards (manifest, card, Parquet, indexes): `verify --deep`
    names every one, plain `verify` some (it reads structure, not every byte), and neither
    ever raises anything but a VerifyError (an unparseable manifest)."""
    files = sorted(p for p in packed_copy.rglob("*") if p.is_file()
                   and (where == "anywhere" or p.parent.name != "data"))
    sizes = [p.stat().st_size for p in files]
    rng = random.Random(9)
    caught = {"plain": 0, "deep": 0}
    missed = []
    for _ in range(FLIPS):
        at = rng.randrange(sum(sizes))
        index = 0
        while at >= sizes[index]:
            at -= sizes[index]
            index += 1
        path = files[index]
        original = path.read_bytes()
        damaged = bytearray(original)
        damaged[at] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(damaged))
        for mode, deep in (("plain", False), ("deep", True)):
            try:
                found = not verify(packed_copy, deep=deep).ok
            except VerifyError:
                found = True
            caught[mode] += found
            if deep and not found:
                missed.append(f"{path.relative_to(packed_copy)}@{at}")
        path.write_bytes(original)
    print(f"byte flips {where}: caught plain {caught['plain']}/{FLIPS}, "
          f"deep {caught['deep']}/{FLIPS}")
    assert missed == [] and caught["deep"] == FLIPS
    assert verify(packed_copy, deep=True).ok  # every flip was undone
