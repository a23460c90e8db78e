"""The example generator writes what the SOUSA generator writes (docs: SOUSA input format)."""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from pathlib import Path

import mido
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from sousa_wds.errors import SousaWdsError
from sousa_wds.example import RUDIMENTS, ExampleError, make_example

SAMPLES = 23  # 4 full groups of 5 and a last group cut to 3
DURATION = (0.4, 0.7)

SAMPLE_COLUMNS = [
    "sample_id", "profile_id", "rudiment_slug", "tempo_bpm", "duration_sec", "num_cycles",
    "skill_tier", "skill_tier_binary", "dominant_hand", "midi_path", "audio_path",
    "num_strokes", "num_measures", "soundfont", "augmentation_preset", "augmentation_group_id",
    "aug_soundfont", "aug_room_type", "aug_room_wet_dry", "aug_mic_distance", "aug_mic_type",
    "aug_compression_ratio", "aug_noise_level_db", "aug_bit_depth", "aug_sample_rate",
]
EXERCISE_COLUMNS = [
    "timing_accuracy", "timing_consistency", "tempo_stability", "subdivision_evenness",
    "velocity_control", "accent_differentiation", "accent_accuracy", "hand_balance",
    "weak_hand_index", "flam_quality", "diddle_quality", "roll_sustain", "groove_feel_proxy",
    "overall_score", "tier_confidence", "sample_id",
]
MEASURE_COLUMNS = [
    "index", "stroke_start", "stroke_end", "timing_mean_error_ms", "timing_std_ms",
    "timing_max_error_ms", "velocity_mean", "velocity_std", "velocity_consistency",
    "lr_velocity_ratio", "lr_timing_diff_ms", "sample_id",
]
STROKE_COLUMNS = [
    "index", "hand", "stroke_type", "intended_time_ms", "actual_time_ms", "timing_error_ms",
    "intended_velocity", "actual_velocity", "velocity_error", "is_grace_note", "is_accent",
    "diddle_position", "flam_spacing_ms", "parent_stroke_index", "buzz_count", "sample_id",
]
FAMILY_COLUMNS = {
    "exercises": ("flam_quality", "diddle_quality", "roll_sustain"),
    "strokes": ("diddle_position", "flam_spacing_ms", "buzz_count"),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("example") / "sousa"
    summary = make_example(root, samples=SAMPLES, seed=3, duration_sec=DURATION)
    assert summary.num_samples == SAMPLES and summary.path == root
    return root


def _table(root: Path, name: str) -> pa.Table:
    return pq.read_table(root / "labels" / f"{name}.parquet")


def _samples(root: Path) -> list[dict]:
    return _table(root, "samples").to_pylist()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_folder_layout_and_index(dataset: Path) -> None:
    rows = _samples(dataset)
    assert len(rows) == SAMPLES
    assert {p.name for p in dataset.iterdir()} == {
        "audio", "midi", "labels", "index.json", "splits.json", "validation_report.json"}
    assert sorted(p.name for p in (dataset / "labels").iterdir()) == [
        "exercises.parquet", "measures.parquet", "samples.parquet", "strokes.parquet"]
    index = json.loads((dataset / "index.json").read_text())
    assert index == {"num_samples": SAMPLES, "sample_ids": [r["sample_id"] for r in rows],
                     "config": {"audio_format": "flac", "sample_rate": 44100}}
    for row in rows:
        assert row["audio_path"] == f"audio/{row['rudiment_slug']}/{row['sample_id']}.flac"
        assert (dataset / row["audio_path"]).is_file()
    flacs = list((dataset / "audio").rglob("*.flac"))
    assert len(flacs) == SAMPLES
    report = json.loads((dataset / "validation_report.json").read_text())
    assert report["dataset_path"].startswith("/") and report["generated_at"]


def test_ids_profiles_and_groups(dataset: Path) -> None:
    rows = _samples(dataset)
    tier3 = {"beginner": "beg", "intermediate": "int", "advanced": "adv", "professional": "pro"}
    for row in rows:
        slug, tempo = row["rudiment_slug"], row["tempo_bpm"]
        match = re.fullmatch(rf"([a-z]{{3}})(\d{{3}})_{slug}_{tempo}bpm_([a-z0-9]{{1,8}})_"
                             r"([a-z]+)", row["sample_id"])
        assert match, row["sample_id"]
        assert match.group(1) == tier3[row["skill_tier"]]
        assert match.group(4) == row["augmentation_preset"].replace("_", "")
        assert uuid.UUID(row["profile_id"]).version == 4
        assert row["augmentation_group_id"] == f"{row['profile_id'][:8]}_{slug}_{tempo}"
        assert row["skill_tier_binary"] == (
            "skilled" if row["skill_tier"] in ("advanced", "professional") else "novice")
    assert len({r["sample_id"] for r in rows}) == SAMPLES
    assert len({r["rudiment_slug"] for r in rows}) >= 4  # a mix of rudiment families


def test_exact_sample_count_cuts_the_last_group(dataset: Path) -> None:
    sizes = defaultdict(int)
    for row in _samples(dataset):
        sizes[row["augmentation_group_id"]] += 1
    assert list(sizes.values()) == [5, 5, 5, 5, 3]


def test_midi_is_shared_per_group(dataset: Path) -> None:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in _samples(dataset):
        groups[row["augmentation_group_id"]].append(row)
    for rows in groups.values():
        first = rows[0]
        assert first["midi_path"] == f"midi/{first['rudiment_slug']}/{first['sample_id']}.mid"
        assert (dataset / first["midi_path"]).is_file()
        assert all(r["midi_path"] is None for r in rows[1:])
    presets = {rows[0]["augmentation_preset"] for rows in groups.values()}
    assert len(presets) > 1  # the group's first preset is random, as in the generator
    assert len(list((dataset / "midi").rglob("*.mid"))) == len(groups)


def test_audio_is_stereo_pcm24_with_tail_and_peak(dataset: Path) -> None:
    raw = packed = 0
    for row in _samples(dataset):
        path = dataset / row["audio_path"]
        info = sf.info(path)
        assert (info.format, info.subtype, info.samplerate, info.channels) == (
            "FLAC", "PCM_24", 44100, 2)
        assert info.frames == round((row["duration_sec"] + 0.5) * 44100)
        audio, _ = sf.read(path)
        peak_db = 20 * np.log10(np.abs(audio).max())
        assert -1.1 < peak_db <= -0.9
        rms_db = 10 * np.log10(np.mean(audio**2))
        assert -45 < rms_db < -6  # percussive: loud hits, quiet gaps
        assert np.abs(audio[-2000:]).max() > 0  # a noise floor, never digital silence
        assert DURATION[0] <= row["duration_sec"] <= DURATION[1]
        raw += info.frames * info.channels * 3
        packed += path.stat().st_size
    assert 0.45 < packed / raw < 0.8  # compresses like recorded drums, not silence or noise


def test_mono_option(tmp_path: Path) -> None:
    make_example(tmp_path / "mono", samples=2, channels=1, duration_sec=(0.3, 0.3))
    for path in (tmp_path / "mono" / "audio").rglob("*.flac"):
        info = sf.info(path)
        assert (info.channels, info.subtype, info.samplerate) == (1, "PCM_24", 44100)


def test_midi_files_match_stroke_labels(dataset: Path) -> None:
    strokes = _table(dataset, "strokes").to_pandas()
    for row in _samples(dataset):
        if row["midi_path"] is None:
            continue
        midi = mido.MidiFile(dataset / row["midi_path"])
        assert (midi.type, midi.ticks_per_beat, len(midi.tracks)) == (1, 480, 1)
        messages = list(midi.tracks[0])
        assert messages[0].type == "set_tempo"
        assert messages[0].tempo == mido.bpm2tempo(row["tempo_bpm"])
        assert messages[-1].type == "end_of_track"
        assert {m.type for m in messages[1:-1]} == {"note_on", "note_off"}
        ticks, velocities, now = [], [], 0
        for message in messages:
            now += message.time
            if message.type == "note_on":
                ticks.append(now)
                velocities.append(message.velocity)
        mine = strokes[strokes.sample_id == row["sample_id"]]
        assert len(ticks) == row["num_strokes"] == len(mine)
        order = np.argsort(mine.actual_time_ms.to_numpy(), kind="stable")
        expected = mine.actual_time_ms.to_numpy()[order] / 60000 * row["tempo_bpm"] * 480
        assert np.abs(np.array(ticks) - expected).max() <= 0.5
        assert velocities == mine.actual_velocity.to_numpy()[order].tolist()


def test_parquet_columns_and_types(dataset: Path) -> None:
    expected = {"samples": SAMPLE_COLUMNS, "exercises": EXERCISE_COLUMNS,
                "measures": MEASURE_COLUMNS, "strokes": STROKE_COLUMNS}
    for name, columns in expected.items():
        path = dataset / "labels" / f"{name}.parquet"
        schema = pq.read_schema(path)
        assert schema.names == columns
        assert b"pandas" in schema.metadata  # written through pandas, like the generator's
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "SNAPPY"
        assert path.stat().st_mode & 0o777 == 0o600
        for field in schema:
            if field.name == "sample_id" or field.name in ("hand", "stroke_type"):
                assert field.type == pa.large_string()
    samples = pq.read_schema(dataset / "labels" / "samples.parquet")
    assert samples.field("aug_bit_depth").type == pa.null()
    assert samples.field("aug_sample_rate").type == pa.null()
    assert samples.field("midi_path").type == pa.large_string()
    assert samples.field("tempo_bpm").type == pa.int64()
    for column in ("aug_compression_ratio", "aug_noise_level_db"):
        assert samples.field(column).type == pa.float64()
        assert _table(dataset, "samples").column(column).null_count > 0
    strokes = pq.read_schema(dataset / "labels" / "strokes.parquet")
    assert strokes.field("is_accent").type == pa.bool_()
    assert strokes.field("parent_stroke_index").type == pa.float64()  # optional int → double
    for name, columns in FAMILY_COLUMNS.items():
        table = _table(dataset, name)
        for column in columns:  # the default mix has every family: double with real nulls
            assert table.schema.field(column).type == pa.float64()
            assert 0 < table.column(column).null_count < table.num_rows


def test_family_columns_are_null_typed_when_the_family_is_absent(tmp_path: Path) -> None:
    root = tmp_path / "flams_and_drags"
    make_example(root, samples=4, augmentations=1, duration_sec=(0.5, 0.5),
                 rudiments=("flam_tap", "single_drag_tap"))
    exercises, strokes = _table(root, "exercises"), _table(root, "strokes")
    for column in ("diddle_quality", "roll_sustain"):
        assert exercises.schema.field(column).type == pa.null()
    for column in ("diddle_position", "buzz_count"):
        assert strokes.schema.field(column).type == pa.null()
    assert exercises.schema.field("flam_quality").type == pa.float64()
    assert strokes.schema.field("flam_spacing_ms").type == pa.float64()
    rows = _samples(root)
    assert all(r["midi_path"] is not None for r in rows)  # one augmentation: each row has it


def test_label_rows_follow_samples_and_repeat_per_group(dataset: Path) -> None:
    rows = _samples(dataset)
    order = [r["sample_id"] for r in rows]
    for name, count in (("strokes", "num_strokes"), ("measures", "num_measures")):
        table = _table(dataset, name).to_pandas()
        assert table.sample_id.drop_duplicates().tolist() == order
        assert not table.duplicated(["sample_id", "index"]).any()
        sizes = table.groupby("sample_id", sort=False).size()
        assert sizes.tolist() == [r[count] for r in rows]
        for _, part in table.groupby("sample_id", sort=False):
            assert sorted(part["index"]) == list(range(len(part)))  # buzz rolls: not in order
        by_group = defaultdict(list)
        for row in rows:
            part = table[table.sample_id == row["sample_id"]].drop(columns="sample_id")
            by_group[row["augmentation_group_id"]].append(part.reset_index(drop=True))
        for parts in by_group.values():
            for part in parts[1:]:
                assert part.equals(parts[0])
    exercises = _table(dataset, "exercises").to_pandas()
    assert exercises.sample_id.tolist() == order
    measures = _table(dataset, "measures").to_pandas()
    assert (measures.stroke_end > measures.stroke_start).all()


def _buzz_rolls(strokes: pd.DataFrame, rows: list[dict]) -> list[pd.DataFrame]:
    """The stroke rows of each multiple_bounce_roll sample, in file order."""
    ids = [r["sample_id"] for r in rows if r["rudiment_slug"] == "multiple_bounce_roll"]
    return [strokes[strokes.sample_id == sid] for sid in ids]


def test_buzz_rolls_number_primaries_first_and_write_rows_in_time_order(dataset: Path) -> None:
    strokes = _table(dataset, "strokes").to_pandas()
    rolls = _buzz_rolls(strokes, _samples(dataset))
    assert rolls, "the default rudiment mix must include a buzz roll"
    for part in rolls:
        index = part["index"].tolist()
        assert sorted(index) == list(range(len(part)))  # unique, covering 0..n-1
        assert index != sorted(index)  # yet not increasing row by row
        primary = ~part.is_grace_note
        primaries = part[primary]
        assert primaries["index"].tolist() == list(range(len(primaries)))  # numbered first
        subs = part[~primary]
        assert subs["index"].tolist() == list(range(len(primaries), len(part)))  # then these
        assert (part.stroke_type == "buzz").all() and not part.is_accent.any()
        assert subs.buzz_count.isna().all() and primaries.parent_stroke_index.isna().all()
        counts = subs.parent_stroke_index.astype(int).value_counts()
        by_index = primaries.set_index("index")
        assert set(counts.index) <= set(by_index.index)
        for parent, bounces in counts.items():
            assert by_index.buzz_count[parent] == 1 + bounces  # primary + its bounces
        # Time order: each bounce comes right after its primary (or a sibling bounce).
        current = None
        for row in part.itertuples():
            if row.is_grace_note:
                assert row.parent_stroke_index == current
                assert row.hand == by_index.hand[current]
            else:
                current = row.index
        assert (part.intended_time_ms.diff().dropna() > 0).all()
    others = strokes[~strokes.sample_id.isin(pd.concat(rolls).sample_id)]
    assert others.buzz_count.isna().all()
    assert (others.parent_stroke_index.notna() == (others.stroke_type == "grace")).all()


def test_buzz_roll_measures_cut_rows_in_file_order(dataset: Path) -> None:
    """Like the generator: chunks of one cycle's stroke count over the rows as written, with
    stroke_start/stroke_end as row positions (not stroke indexes)."""
    strokes = _table(dataset, "strokes").to_pandas()
    measures = _table(dataset, "measures").to_pandas()
    for part in _buzz_rolls(strokes, _samples(dataset)):
        mine = measures[measures.sample_id == part.sample_id.iloc[0]]
        starts, ends = mine.stroke_start.tolist(), mine.stroke_end.tolist()
        assert starts[0] == 0 and ends[-1] == len(part) and starts[1:] == ends[:-1]
        assert all(e - s == 8 for s, e in zip(starts[:-1], ends[:-1]))  # 8 strokes a cycle
        first = part.iloc[starts[0]:ends[0]]
        assert mine.velocity_mean.iloc[0] == pytest.approx(first.actual_velocity.mean())


def test_the_shared_example_has_a_buzz_roll_in_a_split(example_dataset: Path) -> None:
    """Every test that checks or packs conftest's example goes through unordered indexes."""
    rows = _samples(example_dataset)
    splits = json.loads((example_dataset / "splits.json").read_text())
    profiles = {p for k in ("train_profile_ids", "val_profile_ids", "test_profile_ids")
                for p in splits[k]}
    rolls = _buzz_rolls(_table(example_dataset, "strokes").to_pandas(),
                        [r for r in rows if r["profile_id"] in profiles])
    assert rolls and all(p["index"].tolist() != sorted(p["index"]) for p in rolls)


def test_splits_partition_profiles(dataset: Path) -> None:
    splits = json.loads((dataset / "splits.json").read_text())
    assert set(splits) == {"train_profile_ids", "val_profile_ids", "test_profile_ids", "stats"}
    parts = [set(splits[k]) for k in ("train_profile_ids", "val_profile_ids",
                                      "test_profile_ids")]
    assert all(parts)
    assert sum(len(p) for p in parts) == len(set().union(*parts))
    assert set().union(*parts) == {r["profile_id"] for r in _samples(dataset)}
    assert splits["stats"]["total_profiles"] == len(set().union(*parts))
    for name in ("samples", "exercises"):
        assert "split" not in _table(dataset, name).column_names


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    options = {"samples": 6, "duration_sec": (0.3, 0.5),
               "rudiments": ("multiple_bounce_roll", "single_paradiddle")}
    a = _files(make_example(tmp_path / "a", seed=7, **options).path)
    b = _files(make_example(tmp_path / "b", seed=7, **options).path)
    c = _files(make_example(tmp_path / "c", seed=8, **options).path)
    assert a == b
    flac = [k for k in a if k.endswith(".flac")]
    assert len(flac) == 6
    assert set(a) != set(c)  # other profiles, tiers and tempos, so other ids
    assert sorted(v for k, v in a.items() if k.endswith(".flac")) != sorted(
        v for k, v in c.items() if k.endswith(".flac"))


def test_flat_layout(tmp_path: Path) -> None:
    root = make_example(tmp_path / "flat", samples=6, flat=True, duration_sec=(0.3, 0.3)).path
    rows = _samples(root)
    for row in rows:
        assert row["audio_path"] == f"audio/{row['sample_id']}.flac"
        assert (root / row["audio_path"]).is_file()
        if row["midi_path"] is not None:
            assert row["midi_path"] == f"midi/{row['sample_id']}.mid"
            assert (root / row["midi_path"]).is_file()
    assert all(p.is_file() for p in (root / "audio").iterdir())


def test_refuses_a_non_empty_folder_and_accepts_an_empty_one(tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(ExampleError, match="not an empty folder") as info:
        make_example(used, samples=1)
    assert isinstance(info.value, SousaWdsError) and isinstance(info.value, ValueError)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    make_example(empty, samples=1, duration_sec=(0.3, 0.3))
    assert (empty / "index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "used"]


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sousa_wds.example.write as write

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(write, "_write_labels", fail)
    with pytest.raises(OSError, match="disk full"):
        make_example(tmp_path / "out", samples=2, duration_sec=(0.3, 0.3))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("options", [
    {"samples": 0},
    {"duration_sec": (2.0, 1.0)},
    {"duration_sec": (0.0, 1.0)},
    {"channels": 6},
    {"rudiments": ("moeller",)},
    {"rudiments": ()},
    {"augmentations": 6},
])
def test_bad_options(tmp_path: Path, options: dict) -> None:
    with pytest.raises(ExampleError):
        make_example(tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_every_pas_rudiment_plays(tmp_path: Path) -> None:
    assert len(RUDIMENTS) == 40
    root = make_example(tmp_path / "all", samples=40, augmentations=1, rudiments=tuple(RUDIMENTS),
                        duration_sec=(0.25, 0.4)).path
    rows = _samples(root)
    assert [r["rudiment_slug"] for r in rows] == list(RUDIMENTS)
    strokes = _table(root, "strokes").to_pandas()
    assert set(strokes.stroke_type) == {"tap", "accent", "grace", "diddle", "buzz"}
    graces = strokes[strokes.is_grace_note]
    for sample_id, part in strokes.groupby("sample_id"):
        primary = part.set_index("index").loc[graces[graces.sample_id == sample_id]
                                              .parent_stroke_index.astype(int)]
        assert not primary.is_grace_note.any()
    assert all(r["num_strokes"] >= 1 for r in rows)
