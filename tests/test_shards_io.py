"""Shard writer, manifest and reader: round trip, damage handling, strict mode, rank splitting."""

from __future__ import annotations

import json
import logging
import tarfile

import pytest
from shards_helpers import (
    flip_byte,
    header_offset,
    key_of,
    make_jpeg,
    member_offset,
    truncate,
    write_dataset,
)

from dftrain.errors import DftrainError
from dftrain.shards import (
    Manifest,
    ShardError,
    ShardWriter,
    SkipStats,
    iter_samples,
    sha256_file,
    write_shard,
)


def read_all(folder, **kwargs):
    stats = kwargs.pop("stats", SkipStats())
    samples = list(iter_samples(folder, rank=0, world_size=1, stats=stats, **kwargs))
    return samples, stats


def test_round_trip_bytes_captions_and_manifest(tmp_path):
    written = write_dataset(tmp_path, n=10, per_shard=4)
    manifest = Manifest.load(tmp_path)
    assert [s.name for s in manifest.shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert [s.samples for s in manifest.shards] == [4, 4, 2]
    assert manifest.total_samples == 10 and manifest.kind == "train" and manifest.command == "test"
    for shard, path in zip(manifest.shards, manifest.shard_paths(tmp_path), strict=True):
        assert shard.sha256 == sha256_file(path)
        assert shard.bytes == path.stat().st_size
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["total_samples"] == 10 and on_disk["schema_version"] == 1
    assert not list(tmp_path.glob("*.tmp"))

    samples, stats = read_all(tmp_path)
    assert [s["__key__"] for s in samples] == [w["__key__"] for w in written]
    for got, want in zip(samples, written, strict=True):
        assert got["jpg"] == want["jpg"]
        assert got["txt"] == want["txt"]
        assert got["json"] == want["json"]
        assert got["image"].mode == "RGB" and got["image"].size == (24, 24)
        assert got["__shard__"].endswith(".tar")
    assert stats.yielded == 10 and stats.total_skipped == 0


def test_tars_are_standard_webdataset_members(tmp_path):
    write_dataset(tmp_path, n=2, per_shard=5)
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert names == [f"{key_of(i)}.{ext}" for i in range(2) for ext in ("jpg", "json", "txt")]


def test_writes_are_deterministic(tmp_path):
    write_dataset(tmp_path / "a", n=5, per_shard=2)
    write_dataset(tmp_path / "b", n=5, per_shard=2)
    sha_a = [s.sha256 for s in Manifest.load(tmp_path / "a").shards]
    sha_b = [s.sha256 for s in Manifest.load(tmp_path / "b").shards]
    assert sha_a == sha_b


def test_cls_int_round_trips_and_decode_false_keeps_bytes(tmp_path):
    with ShardWriter(tmp_path, samples_per_shard=10, kind="objects") as writer:
        writer.write({"__key__": "a", "jpg": make_jpeg(1), "cls": 7, "json": {"class_name": "cat"}})
    (sample,) = list(iter_samples(tmp_path, rank=0, world_size=1, require=("jpg", "cls"), decode=False))
    assert sample["cls"] == 7 and "image" not in sample and sample["json"]["class_name"] == "cat"


def test_writer_error_leaves_no_manifest_and_no_temp(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, samples_per_shard=3) as writer:
            for i in range(5):
                writer.write({"__key__": key_of(i), "jpg": make_jpeg(i), "txt": "x"})
            raise RuntimeError("crash")
    assert not (tmp_path / "manifest.json").exists()
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ShardError, match="no manifest.json"):
        iter_samples(tmp_path)


def test_writer_rejects_duplicate_and_bad_keys(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        with ShardWriter(tmp_path, samples_per_shard=1) as writer:
            writer.write({"__key__": "a", "txt": "x"})
            writer.write({"__key__": "a", "txt": "y"})
    with pytest.raises(ValueError, match="invalid sample key"):
        write_shard(tmp_path / "x.tar", [{"__key__": "a.b", "txt": "x"}])
    assert not (tmp_path / "x.tar").exists() and not (tmp_path / "x.tar.tmp").exists()


def test_rewrite_replaces_old_dataset(tmp_path):
    write_dataset(tmp_path, n=9, per_shard=3)
    write_dataset(tmp_path, n=4, per_shard=3)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    samples, _ = read_all(tmp_path)
    assert len(samples) == 4


def test_write_shard_is_one_atomic_tar(tmp_path):
    info = write_shard(tmp_path / "one.tar", (
        {"__key__": key_of(i), "jpg": make_jpeg(i), "txt": "t"} for i in range(3)))
    assert info.name == "one.tar" and info.samples == 3
    assert info.sha256 == sha256_file(tmp_path / "one.tar") and info.bytes == (tmp_path / "one.tar").stat().st_size
    Manifest(kind="train", shards=[info]).save(tmp_path)
    assert len(read_all(tmp_path)[0]) == 3
    # a generator that fails midway leaves nothing that looks finished
    def failing():
        yield {"__key__": "a", "txt": "t"}
        raise OSError("disk gone")
    with pytest.raises(OSError):
        write_shard(tmp_path / "two.tar", failing())
    assert not (tmp_path / "two.tar").exists() and not (tmp_path / "two.tar.tmp").exists()


def test_manifest_invalid_is_a_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ShardError, match="cannot read"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99, "shards": []}))
    with pytest.raises(DftrainError, match="schema_version"):
        Manifest.load(tmp_path)


# --- damage: every case is counted with its key, and strict mode names shard and key -----------------

BAD_SAMPLES = {
    2: {"txt": None},  # missing caption
    4: {"txt": b"caf\xe9 latin-1"},  # non-UTF-8 caption
    6: {"jpg": b"\x00\x01 this is not a jpeg"},  # undecodable image
}
BAD_REASONS = {key_of(2): "missing txt", key_of(4): "non-utf8 txt", key_of(6): "undecodable image"}


def test_reader_counts_each_bad_sample_with_its_key(tmp_path, caplog):
    write_dataset(tmp_path, n=9, per_shard=3, bad=BAD_SAMPLES)
    with caplog.at_level(logging.WARNING, logger="dftrain.shards"):
        samples, stats = read_all(tmp_path)
    assert len(samples) == 6 and stats.yielded == 6
    assert dict(stats.problems) == BAD_REASONS
    assert stats.skipped == {"missing txt": 1, "non-utf8 txt": 1, "undecodable image": 1}
    for key, reason in BAD_REASONS.items():
        assert any(key in record.getMessage() and reason in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("index", sorted(BAD_SAMPLES))
def test_reader_strict_stops_with_shard_and_key(tmp_path, index):
    write_dataset(tmp_path, n=9, per_shard=3, bad={index: BAD_SAMPLES[index]})
    with pytest.raises(ShardError) as info:
        read_all(tmp_path, strict=True)
    message = str(info.value)
    assert key_of(index) in message and BAD_REASONS[key_of(index)] in message
    assert f"shard-{index // 3:06d}.tar" in message


def test_reader_truncated_tar_keeps_samples_before_damage(tmp_path):
    write_dataset(tmp_path, n=8, per_shard=4)
    shard = tmp_path / "shard-000000.tar"
    offset, size = member_offset(shard, f"{key_of(2)}.jpg")
    truncate(shard, offset + size // 2)  # cut inside sample 2's image
    samples, stats = read_all(tmp_path)
    assert [s["__key__"] for s in samples] == [key_of(i) for i in (0, 1, 4, 5, 6, 7)]
    assert stats.skipped == {"corrupt tar": 2}  # samples 2 and 3 are lost
    assert stats.problems[0] == (key_of(2), "corrupt tar")
    with pytest.raises(ShardError, match="corrupt tar"):
        read_all(tmp_path, strict=True)


def test_reader_truncated_at_member_boundary_is_noticed(tmp_path):
    write_dataset(tmp_path, n=4, per_shard=4)
    shard = tmp_path / "shard-000000.tar"
    truncate(shard, header_offset(shard, f"{key_of(3)}.jpg"))  # a clean cut between samples 2 and 3
    samples, stats = read_all(tmp_path)
    assert [s["__key__"] for s in samples] == [key_of(i) for i in (0, 1)]
    assert stats.skipped == {"corrupt tar": 2}


def test_reader_flipped_byte_in_image_is_an_undecodable_image(tmp_path):
    write_dataset(tmp_path, n=6, per_shard=3)
    shard = tmp_path / "shard-000001.tar"
    offset, _ = member_offset(shard, f"{key_of(4)}.jpg")
    flip_byte(shard, offset)  # the JPEG start-of-image marker
    samples, stats = read_all(tmp_path)
    assert len(samples) == 5
    assert stats.problems == [(key_of(4), "undecodable image")]


def test_reader_flipped_byte_in_tar_header_is_a_corrupt_tar(tmp_path):
    write_dataset(tmp_path, n=6, per_shard=3)
    shard = tmp_path / "shard-000000.tar"
    flip_byte(shard, header_offset(shard, f"{key_of(1)}.txt") + 3)  # inside the member's name
    samples, stats = read_all(tmp_path)
    assert [s["__key__"] for s in samples] == [key_of(i) for i in (0, 3, 4, 5)]
    assert stats.skipped["corrupt tar"] == 2  # the damaged sample and the one after it
    assert stats.problems[0][1] == "corrupt tar"


def test_reader_garbage_file_is_a_corrupt_tar(tmp_path):
    write_dataset(tmp_path, n=6, per_shard=3)
    (tmp_path / "shard-000000.tar").write_bytes(b"garbage" * 100)
    samples, stats = read_all(tmp_path)
    assert [s["__key__"] for s in samples] == [key_of(i) for i in (3, 4, 5)]
    assert stats.skipped == {"corrupt tar": 3}


# --- splitting, shuffling, epochs ---------------------------------------------------------------------

@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_rank_split_covers_every_sample_once(tmp_path, world_size):
    write_dataset(tmp_path, n=17, per_shard=3)  # 6 shards, the last one short
    seen = []
    for rank in range(world_size):
        keys = [s["__key__"] for s in iter_samples(tmp_path, rank=rank, world_size=world_size, decode=False)]
        shards = {s for s in keys}
        assert shards  # every rank gets work with 6 shards
        seen.extend(keys)
    assert sorted(seen) == [key_of(i) for i in range(17)]


def test_rank_from_environment(tmp_path, monkeypatch):
    write_dataset(tmp_path, n=6, per_shard=3)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    keys = [s["__key__"] for s in iter_samples(tmp_path, decode=False)]
    assert keys == [key_of(i) for i in (3, 4, 5)]


def test_shuffle_is_seeded_and_complete(tmp_path):
    write_dataset(tmp_path, n=12, per_shard=3)

    def order(seed):
        return [s["__key__"] for s in iter_samples(tmp_path, rank=0, world_size=1, decode=False,
                                                    shuffle_buffer=5, seed=seed)]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == [key_of(i) for i in range(12)]
    assert order(1) != [key_of(i) for i in range(12)]


def test_epochs(tmp_path):
    write_dataset(tmp_path, n=3, per_shard=2)
    two = [s["__key__"] for s in iter_samples(tmp_path, rank=0, world_size=1, decode=False, epochs=2)]
    assert sorted(two) == sorted([key_of(i) for i in range(3)] * 2)
    forever = iter_samples(tmp_path, rank=0, world_size=1, decode=False, epochs=None)
    assert len([next(forever) for _ in range(10)]) == 10


def test_forever_with_no_valid_sample_raises_instead_of_spinning(tmp_path):
    write_dataset(tmp_path, n=2, per_shard=2, bad={0: {"txt": None}, 1: {"txt": None}})
    with pytest.raises(ShardError, match="no valid sample"):
        next(iter(iter_samples(tmp_path, rank=0, world_size=1, epochs=None)))


@pytest.mark.multiproc
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_dataset_rank_and_worker_split_covers_every_sample_once(tmp_path, world_size):
    import torch

    from dftrain.shards import ShardDataset

    write_dataset(tmp_path, n=20, per_shard=2)  # 10 shards
    seen = []
    for rank in range(world_size):
        dataset = ShardDataset(tmp_path, rank=rank, world_size=world_size, decode=False,
                               transform=lambda s: s["__key__"])
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
        seen.extend(loader)
    assert sorted(seen) == [key_of(i) for i in range(20)]


def test_missing_shard_is_counted(tmp_path):
    write_dataset(tmp_path, n=6, per_shard=3)
    (tmp_path / "shard-000000.tar").unlink()
    samples, stats = read_all(tmp_path)
    assert len(samples) == 3 and stats.skipped == {"missing shard": 3}
    with pytest.raises(ShardError, match="missing shard"):
        read_all(tmp_path, strict=True)


def test_reads_tars_written_by_webdataset(tmp_path):
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "shard-000000.tar")) as writer:
        for i in range(3):
            writer.write({"__key__": key_of(i), "jpg": make_jpeg(i), "txt": f"t{i}", "json": b'{"i": 1}'})
    samples = list(iter_samples(tmp_path / "shard-000000.tar", rank=0, world_size=1))
    assert [(s["__key__"], s["txt"], s["json"]) for s in samples] == [(key_of(i), f"t{i}", {"i": 1}) for i in range(3)]


def test_atomic_write_gives_ordinary_file_mode(tmp_path):
    import os
    import stat

    from dftrain.shards.manifest import atomic_write_bytes

    target = tmp_path / "x.json"
    atomic_write_bytes(target, b"{}")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
