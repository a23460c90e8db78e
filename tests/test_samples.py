"""The columnar sample table, and metadata written a row group at a time from shard parts."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sousa_wds.format import LOCATION_COLUMNS, SPLITS
from sousa_wds.pack import plan_shards, tables
from sousa_wds.source import SampleTable, SourceSample, read_dataset


def test_the_table_holds_exactly_the_samples_it_was_given(example_dataset: Path) -> None:
    samples = read_dataset(example_dataset).samples
    objects = list(samples)
    assert len(objects) == len(samples) == 40
    assert all(isinstance(s, SourceSample) for s in objects)
    assert SampleTable.of(objects) == samples
    assert list(SampleTable.of(objects)) == objects
    assert samples[0] == objects[0] and samples[-1] == objects[-1]
    assert list(samples[3:9]) == objects[3:9] and list(samples[::7]) == objects[::7]
    with pytest.raises(IndexError):
        samples[40]
    mixed = SampleTable.of(objects[::2] + objects[1::2])  # a split's rows not in one run
    for split in SPLITS:
        assert list(samples.split(split)) == [s for s in objects if s.split == split]
        assert list(mixed.split(split)) == [s for s in mixed if s.split == split]
    assert list(samples.take([5, 1])) == [objects[5], objects[1]]
    assert samples.media_bytes() == sum(s.audio_bytes + s.midi_bytes for s in objects)
    assert samples.keys() == [s.key for s in objects]


def test_the_plan_holds_positions_and_gives_each_sample_once(example_dataset: Path) -> None:
    samples = read_dataset(example_dataset).samples
    plan = plan_shards(samples, max_samples_per_shard=3)
    planned = [s for shard in plan.shards for s in shard.samples]
    assert sorted(planned, key=lambda s: s.key) == sorted(samples, key=lambda s: s.key)
    assert all(len(shard.positions) == len(shard.samples) <= 3 for shard in plan.shards)
    # the same plan from plain objects: planning reads keys, splits and sizes only
    again = plan_shards(list(samples), max_samples_per_shard=3)
    assert [s.samples.keys() for s in again.shards] == [s.samples.keys() for s in plan.shards]


def test_metadata_written_in_row_groups_is_the_table_written_whole(
    example_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts of uneven sizes, cut into row groups across their boundaries: the same bytes as
    `pq.write_table` of the whole split (what pack wrote before it streamed)."""
    dataset = read_dataset(example_dataset)
    monkeypatch.setattr(tables, "ROW_GROUP_SIZE", 4)
    plan = plan_shards(dataset.samples, max_samples_per_shard=3)
    parts: dict[str, list] = {split: [] for split in SPLITS}
    for shard in plan.shards:
        keys = shard.samples.keys()
        locations = pa.table({name: pa.array(keys, typ) if name == "key" else
                              pa.nulls(len(keys), typ)
                              for name, typ in LOCATION_COLUMNS.items() if name != "split"})
        parts[shard.split].append((shard.positions, locations))
    (tmp_path / "metadata").mkdir()
    tables.write_metadata(dataset, tmp_path, {split: iter(p) for split, p in parts.items()})
    for split in SPLITS:
        whole = pa.concat_tables(tables.metadata_table(dataset, split, positions, locations)
                                 for positions, locations in parts[split])
        pq.write_table(whole, tmp_path / "whole.parquet", row_group_size=4,
                       **tables.PARQUET_OPTIONS)
        written = tmp_path / "metadata" / f"{split}.parquet"
        assert written.read_bytes() == (tmp_path / "whole.parquet").read_bytes(), split
        groups = pq.ParquetFile(written).metadata
        assert groups.num_rows == whole.num_rows == len(dataset.split(split))
        assert groups.num_row_groups == -(-whole.num_rows // 4) > 1
