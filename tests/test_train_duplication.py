"""The prior study's duplication sampling (dup_both / dup_image), streamed."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from train_helpers import shared_assets

from dftrain.train.duplication import is_chosen, spread_copies


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def test_chosen_fraction_is_stable_per_key_and_near_the_fraction():
    keys = [f"{i:09d}" for i in range(20000)]
    chosen = [k for k in keys if is_chosen(k, 0.05, seed=0)]
    assert 0.045 < len(chosen) / len(keys) < 0.055
    assert chosen == [k for k in keys if is_chosen(k, 0.05, seed=0)]  # the same every epoch and rank
    assert chosen != [k for k in keys if is_chosen(k, 0.05, seed=1)]


def test_chosen_items_come_weight_times_spread_over_later_positions():
    items = [{"k": i} for i in range(400)]
    out = list(spread_copies(items, lambda it: it["k"] % 20 == 0, weight=5, window=50, rng=random.Random(0)))
    counts = Counter(item["k"] for item, _ in out)
    assert all(counts[i] == (5 if i % 20 == 0 else 1) for i in range(400))
    assert len(out) == 400 + 20 * 4
    positions = {}
    for position, (item, picked) in enumerate(out):
        assert picked == (item["k"] % 20 == 0)
        positions.setdefault(item["k"], []).append(position)
    for k in range(0, 400, 20):  # the original first, copies later, not all bunched next to it
        first, *copies = positions[k]
        assert [item["k"] for item, _ in out].index(k) == first and all(p > first for p in copies)
    spans = [positions[k][-1] - positions[k][0] for k in range(0, 380, 20)]
    assert sum(spans) / len(spans) > 10
    again = list(spread_copies(items, lambda it: it["k"] % 20 == 0, weight=5, window=50, rng=random.Random(0)))
    assert [i["k"] for i, _ in again] == [i["k"] for i, _ in out]  # replayable: resume sees the same stream


def test_stream_with_dup_both_and_dup_image(assets):
    from dftrain.shards import Manifest
    from dftrain.train.data import TrainStream

    n = Manifest.load(assets["shards"]).total_samples

    def epoch(mode):
        stream = TrainStream(assets["shards"], rank=0, world_size=1, resolution=32, precomputed=False,
                             shuffle_buffer=4, seed=0, dup_sampling=mode, dup_fraction=0.3, dup_weight=3)
        examples = []
        while stream.position.epoch == 0:
            examples.append(next(stream._iter))
        return examples[:-1] if stream.position.epoch else examples

    plain, both, image = epoch("none"), epoch("dup_both"), epoch("dup_image")
    assert len(plain) == n
    chosen = {e["key"] for e in plain if is_chosen(e["key"], 0.3, seed=0)}
    assert chosen, "the test set needs a chosen sample"
    assert len(both) == n + 2 * len(chosen) == len(image)
    counts = Counter(e["key"] for e in both)
    assert all(counts[k] == 3 for k in chosen)
    for e in image:  # a random caption of theirs: one of the sample's captions
        assert e["caption"] in e["captions"]


def test_training_with_dup_image_runs_and_resumes_exactly(assets, tmp_path, monkeypatch):
    from train_helpers import in_process_env, quick_config, read_metrics

    from dftrain.train.trainer import train

    in_process_env(monkeypatch)
    common = dict(export=False, steps=6, checkpoint_every=3, fusion="none", zero_stage=0, dup_sampling="dup_image",
                  dup_fraction=0.3, dup_weight=3)
    train(quick_config(assets, tmp_path / "straight", **common))
    train(quick_config(assets, tmp_path / "split", **{**common, "steps": 3}))
    train(quick_config(assets, tmp_path / "split", resume="auto", **common))
    assert [r["loss"] for r in read_metrics(tmp_path / "split")] == [r["loss"] for r in read_metrics(tmp_path / "straight")]


def test_dup_sampling_split_over_ranks_and_resumed_mid_epoch(assets):
    """Two ranks together draw each chosen sample `weight` times per epoch, the others once; a stream
    rebuilt at a recorded position (what resume does) continues with exactly the same examples."""
    from dftrain.shards import Manifest
    from dftrain.train.data import StreamPosition, TrainStream

    n = Manifest.load(assets["shards"]).total_samples

    def stream(rank, position=None):
        return TrainStream(assets["shards"], rank=rank, world_size=2, resolution=32, precomputed=False,
                           shuffle_buffer=4, seed=0, dup_sampling="dup_both", dup_fraction=0.3, dup_weight=3,
                           position=position)

    def first_epoch(s):
        keys = []
        while True:
            example = next(s._iter)
            if s.position.epoch:
                return keys
            keys.append(example["key"])

    per_rank = [first_epoch(stream(rank)) for rank in (0, 1)]
    counts = Counter(per_rank[0] + per_rank[1])
    assert set(counts) and len(counts) == n  # every sample on one rank or the other
    assert all(c == (3 if is_chosen(k, 0.3, seed=0) else 1) for k, c in counts.items())
    assert any(c == 3 for c in counts.values())

    whole = stream(1)
    taken = [next(whole._iter)["key"] for _ in range(3)]
    resumed = stream(1, StreamPosition(**whole.position.as_dict()))
    rest = [next(whole._iter)["key"] for _ in range(4)]
    assert [next(resumed._iter)["key"] for _ in range(4)] == rest and taken + rest == per_rank[1][:7]
