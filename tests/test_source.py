"""The reader: splits, MIDI sharing, JSON-safe labels, and one test per validation rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sousa_wds.cli import main
from sousa_wds.errors import DatasetError
from sousa_wds.format import LABEL_COLUMNS, SPLITS
from sousa_wds.source import checks, read_dataset


def _labels(root: Path, name: str) -> pa.Table:
    return pq.read_table(root / "labels" / f"{name}.parquet")


def _write_labels(root: Path, name: str, table: pa.Table) -> None:
    pq.write_table(table, root / "labels" / f"{name}.parquet")


def _set_column(root: Path, name: str, column: str, values: list) -> None:
    table = _labels(root, name)
    index = table.column_names.index(column)
    typ = table.schema.field(column).type
    _write_labels(root, name, table.set_column(index, column, pa.array(values, typ)))


def _error(root: Path) -> str:
    with pytest.raises(DatasetError) as info:
        read_dataset(root)
    return str(info.value)


# --- what the reader returns -----------------------------------------------------------------

def test_splits_follow_profiles_in_splits_json(example_dataset: Path) -> None:
    dataset = read_dataset(example_dataset)
    splits = json.loads((example_dataset / "splits.json").read_text())
    owner = {p: "train" for p in splits["train_profile_ids"]}
    owner |= {p: "validation" for p in splits["val_profile_ids"]}
    owner |= {p: "test" for p in splits["test_profile_ids"]}
    profiles = dict(zip(dataset.labels.column("sample_id").to_pylist(),
                        dataset.labels.column("profile_id").to_pylist()))
    assert len(dataset.samples) == 40
    for sample in dataset.samples:
        assert sample.split == owner[profiles[sample.key]]
    assert {s.split for s in dataset.samples} == set(SPLITS)


def test_order_is_split_then_key(example_dataset: Path) -> None:
    samples = read_dataset(example_dataset).samples
    order = [(SPLITS.index(s.split), s.key) for s in samples]
    assert order == sorted(order)


def test_midi_is_resolved_through_the_augmentation_group(example_dataset: Path) -> None:
    dataset = read_dataset(example_dataset)
    source = _labels(example_dataset, "samples").to_pylist()
    group_midi = {r["augmentation_group_id"]: r["midi_path"] for r in source if r["midi_path"]}
    group_of = {r["sample_id"]: r["augmentation_group_id"] for r in source}
    shared = [r for r in source if r["midi_path"] is None]
    assert shared, "the example must have rows that share their group's MIDI"
    for sample in dataset.samples:
        assert sample.midi_path == group_midi[group_of[sample.key]]
        assert sample.midi_bytes == (example_dataset / sample.midi_path).stat().st_size
        assert sample.audio_bytes == (example_dataset / sample.audio_path).stat().st_size


def test_labels_are_json_safe_with_canonical_types(dataset_copy: Path) -> None:
    # A NaN that slipped into a score must come out as null, never as NaN.
    table = _labels(dataset_copy, "exercises")
    scores = table.column("overall_score").to_pylist()
    scores[0] = math.nan
    _set_column(dataset_copy, "exercises", "overall_score", scores)
    dataset = read_dataset(dataset_copy)
    labels = dataset.label_rows(dataset.samples)  # held compact; given out canonical
    assert list(labels.schema.names) == list(LABEL_COLUMNS)
    assert dict(zip(labels.schema.names, labels.schema.types)) == LABEL_COLUMNS
    records = labels.to_pylist()
    text = json.dumps(records, allow_nan=False)  # raises on NaN
    assert json.loads(text)[0]["aug_bit_depth"] is None
    nan_id = table.column("sample_id")[0].as_py()
    assert next(r for r in records if r["sample_id"] == nan_id)["overall_score"] is None


def test_input_has_the_quirks_the_reader_must_handle(example_dataset: Path) -> None:
    schema = pq.read_schema(example_dataset / "labels" / "samples.parquet")
    assert schema.field("aug_bit_depth").type == pa.null()
    assert schema.field("sample_id").type == pa.large_string()


def test_summary_counts(example_dataset: Path) -> None:
    summary = read_dataset(example_dataset).summary()
    assert summary["samples"] == 40
    assert sum(s["samples"] for s in summary["splits"].values()) == 40
    assert sum(summary["skill_tiers"].values()) == 40
    assert summary["audio_bytes"] == sum(
        p.stat().st_size for p in (example_dataset / "audio").rglob("*.flac"))


def test_unreferenced_media_is_a_warning(dataset_copy: Path) -> None:
    (dataset_copy / "audio" / "stray.flac").write_bytes(b"not listed")
    dataset = read_dataset(dataset_copy)
    assert len(dataset.warnings) == 1
    assert "audio/stray.flac" in dataset.warnings[0]


def test_check_cli_prints_summary(example_dataset: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(example_dataset)]) == 0
    out = capsys.readouterr().out
    assert "valid SOUSA dataset" in out and "40 samples" in out and "validation" in out


# --- validation: each rule stops the run and names the culprit ----------------------------------

def test_missing_folder(tmp_path: Path) -> None:
    assert str(tmp_path / "nope") in _error(tmp_path / "nope")


@pytest.mark.parametrize("name", ["samples", "exercises", "strokes", "measures"])
def test_missing_label_file(dataset_copy: Path, name: str) -> None:
    (dataset_copy / "labels" / f"{name}.parquet").unlink()
    assert f"labels/{name}.parquet" in _error(dataset_copy)


def test_missing_splits_json(dataset_copy: Path) -> None:
    (dataset_copy / "splits.json").unlink()
    assert "splits.json" in _error(dataset_copy)


def test_unreadable_parquet(dataset_copy: Path) -> None:
    (dataset_copy / "labels" / "exercises.parquet").write_bytes(b"garbage, not parquet")
    message = _error(dataset_copy)
    assert "unreadable Parquet" in message and "exercises.parquet" in message


def test_missing_required_columns(dataset_copy: Path) -> None:
    _write_labels(dataset_copy, "samples", _labels(dataset_copy, "samples").drop_columns(
        ["tempo_bpm", "audio_path"]))
    message = _error(dataset_copy)
    assert "samples.parquet lacks required columns" in message
    assert "tempo_bpm" in message and "audio_path" in message


def test_duplicate_sample_id(dataset_copy: Path) -> None:
    ids = _labels(dataset_copy, "samples").column("sample_id").to_pylist()
    ids[1] = ids[0]
    _set_column(dataset_copy, "samples", "sample_id", ids)
    message = _error(dataset_copy)
    assert "duplicate sample_id" in message and ids[0] in message


@pytest.mark.parametrize("bad", ["take1.v2", "a/b", "with space", "tab\there", ""])
def test_keys_webdataset_would_mis_split(dataset_copy: Path, bad: str) -> None:
    samples = _labels(dataset_copy, "samples")
    ids = samples.column("sample_id").to_pylist()
    old = ids[3]
    ids[3] = bad
    _set_column(dataset_copy, "samples", "sample_id", ids)
    ex = _labels(dataset_copy, "exercises")
    ex_ids = [bad if i == old else i for i in ex.column("sample_id").to_pylist()]
    _set_column(dataset_copy, "exercises", "sample_id", ex_ids)
    message = _error(dataset_copy)
    assert "cannot be WebDataset keys" in message
    assert f"row 3: {bad!r}" in message


def test_profile_in_no_split(dataset_copy: Path) -> None:
    splits = json.loads((dataset_copy / "splits.json").read_text())
    lost = splits["test_profile_ids"].pop()
    (dataset_copy / "splits.json").write_text(json.dumps(splits))
    message = _error(dataset_copy)
    assert "profiles in no split" in message and lost in message


def test_profile_in_two_splits(dataset_copy: Path) -> None:
    splits = json.loads((dataset_copy / "splits.json").read_text())
    twice = splits["train_profile_ids"][0]
    splits["val_profile_ids"].append(twice)
    (dataset_copy / "splits.json").write_text(json.dumps(splits))
    message = _error(dataset_copy)
    assert "two splits" in message and twice in message


def test_missing_audio_file(dataset_copy: Path) -> None:
    rel = _labels(dataset_copy, "samples").column("audio_path")[5].as_py()
    (dataset_copy / rel).unlink()
    message = _error(dataset_copy)
    assert "audio files that do not exist" in message and rel in message


def test_missing_midi_file(dataset_copy: Path) -> None:
    midi = [m for m in _labels(dataset_copy, "samples").column("midi_path").to_pylist() if m]
    (dataset_copy / midi[0]).unlink()
    message = _error(dataset_copy)
    assert "MIDI files that do not exist" in message and midi[0] in message


def test_group_without_midi(dataset_copy: Path) -> None:
    samples = _labels(dataset_copy, "samples")
    groups = samples.column("augmentation_group_id").to_pylist()
    victim = groups[0]
    midi = [None if g == victim else m
            for g, m in zip(groups, samples.column("midi_path").to_pylist())]
    _set_column(dataset_copy, "samples", "midi_path", midi)
    message = _error(dataset_copy)
    assert "groups with no MIDI" in message and victim in message


def test_sample_without_exercise_row(dataset_copy: Path) -> None:
    ex = _labels(dataset_copy, "exercises")
    gone = ex.column("sample_id")[7].as_py()
    _write_labels(dataset_copy, "exercises",
                  ex.filter(pc.not_equal(ex.column("sample_id"), gone)))
    message = _error(dataset_copy)
    assert "samples without an exercise row" in message and gone in message


def test_exercise_row_without_sample(dataset_copy: Path) -> None:
    samples = _labels(dataset_copy, "samples")
    gone = samples.column("sample_id")[7].as_py()
    _write_labels(dataset_copy, "samples",
                  samples.filter(pc.not_equal(samples.column("sample_id"), gone)))
    message = _error(dataset_copy)
    assert "exercise rows for unknown samples" in message and gone in message


def test_many_problems_are_listed_with_a_cap(dataset_copy: Path) -> None:
    for path in sorted((dataset_copy / "audio").rglob("*.flac"))[:30]:
        path.unlink()
    message = _error(dataset_copy)
    assert "audio files that do not exist (30)" in message
    assert "... and 10 more" in message


def test_check_cli_fails_with_one_error(dataset_copy: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    (dataset_copy / "splits.json").unlink()
    assert main(["check", str(dataset_copy)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sousa-wds check: error:") and "splits.json" in err


def test_label_table_with_wrong_column_type(dataset_copy: Path) -> None:
    strokes = _labels(dataset_copy, "strokes")
    index = strokes.column_names.index("is_accent")
    _write_labels(dataset_copy, "strokes", strokes.set_column(
        index, "is_accent", pa.array(["maybe"] * strokes.num_rows)))
    message = _error(dataset_copy)
    assert "strokes.parquet has columns of an unexpected type" in message
    assert "is_accent: string, expected bool" in message


def test_stroke_rows_for_unknown_samples(dataset_copy: Path) -> None:
    strokes = _labels(dataset_copy, "strokes")
    ids = strokes.column("sample_id").to_pylist()
    ids[-1] = "ghost_sample"
    _set_column(dataset_copy, "strokes", "sample_id", ids)
    message = _error(dataset_copy)
    assert "rows for unknown samples" in message and "ghost_sample" in message


def test_repeated_stroke_index(dataset_copy: Path) -> None:
    strokes = _labels(dataset_copy, "strokes")
    _write_labels(dataset_copy, "strokes", pa.concat_tables([strokes.slice(0, 2),
                                                              strokes.slice(1)]))
    message = _error(dataset_copy)
    first = strokes.column("sample_id")[1].as_py()
    index = strokes.column("index")[1].as_py()
    assert f"repeated (sample_id, index) rows in {dataset_copy}/labels/strokes.parquet" in message
    assert f"{first} index {index}" in message


def test_problems_are_listed_label_files_first_then_rules_then_media(dataset_copy: Path) -> None:
    """The stroke and measure checks run while the media are checked; the report keeps its
    order all the same: label rows, then the split and group rules, then the media."""
    ids = _labels(dataset_copy, "strokes").column("sample_id").to_pylist()
    ids[-1] = "ghost_sample"
    _set_column(dataset_copy, "strokes", "sample_id", ids)
    splits = json.loads((dataset_copy / "splits.json").read_text())
    lost = splits["test_profile_ids"].pop()
    (dataset_copy / "splits.json").write_text(json.dumps(splits))
    rel = _labels(dataset_copy, "samples").column("audio_path")[5].as_py()
    (dataset_copy / rel).unlink()
    message = _error(dataset_copy)
    assert lost in message
    found = [message.index(what) for what in
             ("rows for unknown samples", "profiles in no split",
              "audio files that do not exist")]
    assert found == sorted(found), message


ORDERS = ["in order", "reversed", "shuffled", "a gap wider than the slack", "unknown and null"]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("batch_rows", [1, 7, 1000])
def test_label_row_lookup_gives_what_a_full_lookup_gives(order: str, batch_rows: int) -> None:
    """`_RowKeys` looks a batch's samples up near the last batch's first: whatever the row
    order, each row gets its position among all samples, as `index_in` over all of them."""
    import random

    known = pa.array([f"s{i:04d}" for i in range(500)])
    ids: list[str | None] = [f"s{i:04d}" for i in range(500) for _ in range(i % 4)]
    if order == "reversed":
        ids.reverse()
    elif order == "shuffled":
        random.Random(0).shuffle(ids)
    elif order == "a gap wider than the slack":
        ids = [i for i in ids if not "s0100" <= i < f"s{100 + checks.LOOKUP_SLACK + 5:04d}"]
    elif order == "unknown and null":
        ids[3:3] = ["ghost", None, "ghost"]
        ids[len(ids) // 2:len(ids) // 2] = [None]
    keys = checks._RowKeys(known)
    for start in range(0, len(ids), batch_rows):
        batch = pa.array(ids[start:start + batch_rows], pa.string())
        assert keys._codes(batch).to_pylist() == pc.index_in(batch, value_set=known).to_pylist()


def test_damaged_media_is_caught_before_packing(dataset_copy: Path) -> None:
    samples = _labels(dataset_copy, "samples")
    audio = samples.column("audio_path")[2].as_py()
    (dataset_copy / audio).write_bytes(b"RIFF not a flac")
    midi = next(m for m in samples.column("midi_path").to_pylist() if m)
    (dataset_copy / midi).write_bytes(b"garbage")
    message = _error(dataset_copy)
    assert "audio files that are not FLAC" in message and audio in message
    assert "MIDI files that are not MIDI" in message and midi in message


def test_media_paths_must_stay_inside_the_dataset(dataset_copy: Path) -> None:
    paths = _labels(dataset_copy, "samples").column("audio_path").to_pylist()
    paths[0] = "/etc/passwd"
    paths[1] = "../elsewhere/x.flac"
    _set_column(dataset_copy, "samples", "audio_path", paths)
    message = _error(dataset_copy)
    assert "outside the dataset folder" in message
    assert "'/etc/passwd'" in message and "'../elsewhere/x.flac'" in message


@pytest.mark.parametrize("bad", ["nul\x00key", "esc\x1bkey", "zero\u200bwidth", "é"])
def test_keys_outside_the_allowed_set(bad: str) -> None:
    from sousa_wds.format import key_problem

    assert key_problem(bad) is not None
    assert key_problem("adv000_single_paradiddle_70bpm_fluidr3g_garage") is None


# --- real generator output: buzz rolls, any row order inside a sample ---------------------------

SUB_STROKES = 2  # buzz sub-strokes appended to each primary in the rewritten strokes


def _as_buzz_rolls(root: Path, samples: int = 3) -> pa.Table:
    """Rewrite the first `samples` samples' strokes the way the generator writes buzz rolls.

    Primaries keep indexes 0..P-1; each one's sub-strokes are numbered P, P+1, ... after all
    primaries but written right after their primary (time order), with `is_grace_note` and
    `parent_stroke_index`. Returns the rewritten table (rows in file order).
    """
    strokes = _labels(root, "strokes")
    rows = strokes.to_pylist()
    ids = list(dict.fromkeys(r["sample_id"] for r in rows))[:samples]
    out: list[dict] = []
    next_index: dict[str, int] = {}
    for row in rows:
        out.append(row)
        if row["sample_id"] not in ids:
            continue
        count = sum(1 for r in rows if r["sample_id"] == row["sample_id"])
        row.update(stroke_type="buzz", buzz_count=float(SUB_STROKES + 1))
        for k in range(SUB_STROKES):
            index = next_index.get(row["sample_id"], count)
            next_index[row["sample_id"]] = index + 1
            out.append(row | {"index": index, "is_grace_note": True, "buzz_count": None,
                              "parent_stroke_index": float(row["index"]),
                              "intended_time_ms": row["intended_time_ms"] + 10.0 * (k + 1),
                              "actual_time_ms": row["actual_time_ms"] + 10.0 * (k + 1)})
    table = pa.Table.from_pylist(out, schema=strokes.schema)
    _write_labels(root, "strokes", table)
    return table


def test_buzz_roll_stroke_order_is_accepted(dataset_copy: Path) -> None:
    table = _as_buzz_rolls(dataset_copy)
    first = table.filter(pc.equal(table.column("sample_id"), table.column("sample_id")[0]))
    index = first.column("index").to_pylist()
    assert index != sorted(index) and sorted(index) == list(range(len(index)))
    assert table.schema.field("sample_id").type == pa.large_string()  # pandas 3 flavour
    assert len(read_dataset(dataset_copy).samples) == 40


def test_measures_in_any_row_order_are_accepted(dataset_copy: Path) -> None:
    measures = _labels(dataset_copy, "measures")
    _write_labels(dataset_copy, "measures", measures.take(
        pa.array(range(measures.num_rows - 1, -1, -1))))  # every sample's rows reversed
    assert len(read_dataset(dataset_copy).samples) == 40


@pytest.mark.parametrize("batch_rows", [65_536, 7])  # 7: most batches hold one split's rows
def test_packed_labels_keep_the_source_row_order(dataset_copy: Path, tmp_path: Path,
                                                 batch_rows: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from sousa_wds.format import labels_path
    from sousa_wds.pack import pack, tables

    monkeypatch.setattr(tables, "STREAM_BATCH_ROWS", batch_rows)
    source = _as_buzz_rolls(dataset_copy)
    pack(dataset_copy, tmp_path / "out", workers=1, progress=False)
    split_of = {s.key: s.split for s in read_dataset(dataset_copy).samples}
    for split in SPLITS:
        packed = pq.read_table(tmp_path / "out" / labels_path("strokes", split))
        keep = pa.array([split_of[k] == split for k in source.column("sample_id").to_pylist()])
        expected = source.filter(keep)
        assert packed.column("sample_id").to_pylist() == expected.column("sample_id").to_pylist()
        assert packed.column("index").to_pylist() == expected.column("index").to_pylist()
        assert packed.column("timing_error_ms").to_pylist() == \
            expected.column("timing_error_ms").to_pylist()


@pytest.mark.parametrize("batch_rows", [65_536, 5])
def test_sub_stroke_index_repeating_a_primary(dataset_copy: Path, batch_rows: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "STREAM_BATCH_ROWS", batch_rows)  # 5: rows carried over
    table = _as_buzz_rolls(dataset_copy)
    index = table.column("index").to_pylist()
    victim = table.column("sample_id")[0].as_py()
    index[1] = 0  # the first sub-stroke numbered like its primary
    _set_column(dataset_copy, "strokes", "index", index)
    assert f"{victim} index 0" in _error(dataset_copy)


@pytest.mark.parametrize("batch_rows", [65_536, 5])
def test_repeat_across_two_runs_of_one_sample(dataset_copy: Path, batch_rows: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A sample's rows split around another sample's: with small batches the two runs are
    # streamed apart, and the second pass over that sample's rows finds the repeat.
    monkeypatch.setattr(checks, "STREAM_BATCH_ROWS", batch_rows)
    strokes = _labels(dataset_copy, "strokes")
    ids = strokes.column("sample_id")
    a, b = ids[0].as_py(), next(i for i in ids.to_pylist() if i != ids[0].as_py())
    rows_a = strokes.filter(pc.equal(ids, a))
    rows_b = strokes.filter(pc.equal(ids, b))
    rest = strokes.filter(pc.invert(pc.is_in(ids, pa.array([a, b]))))
    head, tail = rows_a.slice(0, 3), rows_a.slice(2)  # row 2 of sample a appears twice
    _write_labels(dataset_copy, "strokes", pa.concat_tables([head, rows_b, tail, rest]))
    message = _error(dataset_copy)
    assert f"{a} index {rows_a.column('index')[2].as_py()}" in message
    _write_labels(dataset_copy, "strokes", pa.concat_tables([head, rows_b, rows_a.slice(3),
                                                             rest]))
    assert len(read_dataset(dataset_copy).samples) == 40  # split but unique: accepted


def test_samples_carry_size_and_mtime_of_their_files(example_dataset: Path) -> None:
    for sample in read_dataset(example_dataset).samples[:5]:
        audio = (example_dataset / sample.audio_path).stat()
        midi = (example_dataset / sample.midi_path).stat()
        assert (sample.audio_bytes, sample.audio_mtime_ns) == (audio.st_size, audio.st_mtime_ns)
        assert (sample.midi_bytes, sample.midi_mtime_ns) == (midi.st_size, midi.st_mtime_ns)


def test_mono_audio_and_flat_folders_are_accepted(tmp_path: Path) -> None:
    import soundfile

    from sousa_wds.example import make_example

    make_example(tmp_path / "flat", samples=10, channels=1, flat=True, duration_sec=(0.5, 0.6))
    dataset = read_dataset(tmp_path / "flat")
    assert len(dataset.samples) == 10
    first = dataset.samples[0]
    assert first.audio_path.count("/") == 1  # audio/<id>.flac
    assert soundfile.info(tmp_path / "flat" / first.audio_path).channels == 1


@pytest.mark.parametrize(("table", "column"), [("samples", "tempo_bpm"),
                                               ("strokes", "intended_velocity")])
def test_values_that_do_not_fit_the_column_type(dataset_copy: Path, table: str,
                                                column: str) -> None:
    # Optional integers arrive as double (accepted); a fractional one cannot be an int64.
    data = _labels(dataset_copy, table)
    values = [float(v) for v in data.column(column).to_pylist()]
    values[0] += 0.5
    index = data.column_names.index(column)
    _write_labels(dataset_copy, table, data.set_column(index, column, pa.array(values)))
    message = _error(dataset_copy)
    assert f"{table}.parquet" in message
    assert "do not fit their column type" in message or "damaged or invalid rows" in message


def test_splits_json_without_a_profile_list(dataset_copy: Path) -> None:
    splits = json.loads((dataset_copy / "splits.json").read_text())
    del splits["val_profile_ids"]
    (dataset_copy / "splits.json").write_text(json.dumps(splits))
    message = _error(dataset_copy)
    assert "lacks profile lists" in message and "val_profile_ids" in message


def test_duplicate_exercise_row(dataset_copy: Path) -> None:
    ex = _labels(dataset_copy, "exercises")
    _write_labels(dataset_copy, "exercises", pa.concat_tables([ex, ex.slice(4, 1)]))
    message = _error(dataset_copy)
    assert f"duplicate sample_id in {dataset_copy}/labels/exercises.parquet" in message
    assert ex.column("sample_id")[4].as_py() in message


def test_identities_keep_only_key_split_and_row(example_dataset: Path) -> None:
    """What pack keeps of the samples once their media are written: a media column asked of
    it is an error, never zeros standing in for sizes."""
    samples = read_dataset(example_dataset).samples
    kept = samples.identities()
    assert kept.table.column_names == ["key", "split", "row"] and len(kept) == len(samples)
    assert kept.keys() == samples.keys() and kept.column("row") == samples.column("row")
    assert kept.split("test").keys() == samples.split("test").keys()
    with pytest.raises(KeyError):
        kept.column("audio_bytes")
