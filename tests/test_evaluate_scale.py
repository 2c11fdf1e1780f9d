"""`evaluate` at scale: per-shard descriptors on disk, split across ranks and merged, reused by content,
searched memory-mapped; only the asked descriptors; a seeded reference sample; clean-fid's resizing."""

import json

import numpy as np
import pytest
import torch
from evaluate_helpers import planted_copy, scene_images, write_generations, write_train_shards
from typer.testing import CliRunner

from dftrain.cli import app
from dftrain.errors import ConfigError
from dftrain.evaluate import metrics
from dftrain.evaluate.descriptors import EmbeddedDescriptor
from dftrain.evaluate.inputs import decode_image
from dftrain.evaluate.retrieval import IVFParams, exact_search, nearest_streamed, random_rows
from dftrain.evaluate.run import EvaluateOptions, evaluate
from dftrain.evaluate.store import TrainSet, reference_positions, save_entry
from dftrain.shards import iter_samples

FIGURES = ("n_train", "n_generations", "sim_mean", "sim_std", "sim_p95", "frac_above_0_5", "bg_n", "bg_sim_mean",
           "bg_sim_p95", "own_match_rate", "own_group_match_rate", "own_group_chance", "diversity", "fd_embedded",
           "fd_descriptor", "split")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """14 training scenes in shards of 3 (5 shards); generations: 4 planted copies + 2 unrelated."""
    tmp = tmp_path_factory.mktemp("scale")
    train = scene_images(14, seed=40)
    keys = write_train_shards(tmp / "train", train, samples_per_shard=3)
    rng = np.random.default_rng(1)
    gens = [planted_copy(train[i], rng) for i in (0, 4, 8, 13)] + scene_images(2, seed=41)
    write_generations(tmp / "gen", gens, [keys[0], keys[4], keys[8], keys[13], None, None])
    return tmp


def _cli(*args):
    result = CliRunner().invoke(app, ["evaluate", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_two_ranks_then_merge_equal_one_process(data, tmp_path):
    common = ["--generations", data / "gen", "--train-shards", data / "train", "--reference-n", "6"]
    one = evaluate(data / "gen", data / "train", tmp_path / "one",
                   EvaluateOptions(cache_dir=tmp_path / "c1", reference_n=6))
    shared = ["--cache-dir", tmp_path / "c2"]
    out0 = _cli(*common, *shared, "--out", tmp_path / "split", "--rank", 0, "--world-size", 2)
    assert "rank 0 of 2" in out0 and "computed for 3 shard(s)" in out0 and "2 of 5 shards still missing" in out0
    assert not (tmp_path / "split" / "report.json").exists()  # rank 0 ran first: nothing to merge yet
    out1 = _cli(*common, *shared, "--out", tmp_path / "split", "--rank", 1, "--world-size", 2)
    assert "computed for 2 shard(s)" in out1 and "0 of 5 shards still missing" in out1
    assert not (tmp_path / "split" / "report.json").exists()  # only rank 0 or a world-size-1 call merges
    _cli(*common, *shared, "--out", tmp_path / "split", "--world-size", 1)
    merged = json.loads((tmp_path / "split" / "report.json").read_text())
    assert merged["cache"]["train_computed"] == 0 and merged["cache"]["train_shards_reused"] == 5
    for key in FIGURES:
        assert merged[key] == pytest.approx(one[key], abs=1e-9) if isinstance(one[key], float) else \
            merged[key] == one[key], key
    assert (tmp_path / "split" / "matches.jsonl").read_text() == (tmp_path / "one" / "matches.jsonl").read_text()
    # The environment gives the rank too (torchrun / SLURM): rank 0 of 2 finds every shard present and merges.
    result = CliRunner().invoke(app, ["evaluate", *map(str, common), *map(str, shared), "--out",
                                      str(tmp_path / "env")], env={"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "env" / "report.json").read_text())["sim_p95"] == pytest.approx(one["sim_p95"])


def test_rank_options_are_checked(data, tmp_path):
    with pytest.raises(ConfigError, match="--no-cache works in one process"):
        evaluate(data / "gen", data / "train", tmp_path / "o", EvaluateOptions(no_cache=True, rank=0, world_size=2))
    result = CliRunner().invoke(app, ["evaluate", "--generations", str(data / "gen"), "--train-shards",
                                      str(data / "train"), "--out", str(tmp_path / "o"), "--rank", "2",
                                      "--world-size", "2"])
    # A ConfigError: dftrain.cli.main prints it as one line `error: ...`.
    assert isinstance(result.exception, ConfigError) and "rank must be in [0, 2), got 2" in str(result.exception)


class _TinySSCD(torch.nn.Module):
    """Stands in for an SSCD TorchScript file: per-channel means and standard deviations (6-d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


class _TinyInception(torch.nn.Module):
    """Has `layers`, as inception-2015-12-05.pt: clean-fid and dftrain call layers((x - 128) / 128)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(torch.nn.Conv2d(3, channels, 1), torch.nn.AdaptiveAvgPool2d(2),
                                          torch.nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - 128) / 128)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.jit.script(_TinySSCD()).save(str(folder / "sscd.pt"))
    torch.jit.script(_TinyInception()).save(str(folder / "inception.pt"))  # 12 features: a quick FID
    (folder / "cleanfid").mkdir()  # the file name InceptionV3W loads; 2048 features, as it expects
    torch.jit.script(_TinyInception(512)).save(str(folder / "cleanfid" / "inception-2015-12-05.pt"))
    return folder


def _sample_images(train_dir, n, seed):
    """The training images of the seeded reference sample, independently of the store."""
    samples = list(iter_samples(train_dir, decode=False, require=("jpg",)))
    shards = sorted({s["__shard__"] for s in samples})
    by_shard = [[s for s in samples if s["__shard__"] == name] for name in shards]
    positions = reference_positions([len(b) for b in by_shard], n, seed)
    return [decode_image(b[p]["jpg"]) for b, ps in zip(by_shard, positions, strict=True) for p in ps]


def test_only_the_asked_descriptors_are_computed_and_reused(data, weights, tmp_path):
    from dftrain.evaluate.fid import InceptionFeatures

    opts = EvaluateOptions(descriptor="sscd", weights=weights / "sscd.pt", inception=weights / "inception.pt",
                           cache_dir=tmp_path / "cache", reference_n=5, device="cpu")
    first = evaluate(data / "gen", data / "train", tmp_path / "a", opts)
    folders = sorted(p.name for p in (tmp_path / "cache" / "shards").iterdir())
    assert [f.split("-")[0] for f in folders] == ["inception", "sscd"]  # no embedded descriptor
    assert first["fd_embedded"] is None and "--fd-embedded" in first["fd_embedded_reason"]
    assert first["cache"]["train_computed"] == 14
    assert first["cache"]["reference_inception"]["rows_computed"] == 5  # only the reference sample
    assert first["reference_n"] == 5 and first["bg_n"] == 5
    # FID against the 5 sampled training images, as brute force from their Inception features.
    feats = InceptionFeatures(weights / "inception.pt", device="cpu")
    gen = feats.embed([decode_image(p.read_bytes()) for p in sorted((data / "gen").glob("*.png"))]).astype(np.float64)
    ref = feats.embed(_sample_images(data / "train", 5, 0)).astype(np.float64)
    expected = metrics.frechet_distance(gen.mean(0), np.cov(gen, rowvar=False), ref.mean(0), np.cov(ref, rowvar=False))
    assert first["fid"] == pytest.approx(expected, rel=1e-4)

    second = evaluate(data / "gen", data / "train", tmp_path / "b", opts)
    cache = second["cache"]
    assert cache["train_computed"] == 0 and cache["gen_computed"] == 0
    assert cache["reference_inception"]["rows_computed"] == 0 and cache["reference_inception"]["rows_reused"] == 5
    assert second["fid"] == pytest.approx(first["fid"], abs=1e-9)
    assert second["sim_p95"] == first["sim_p95"]

    # --fd-embedded: the embedded descriptor on the reference sample only.
    third = evaluate(data / "gen", data / "train", tmp_path / "c",
                     EvaluateOptions(**{**opts.__dict__, "fd_embedded": True}))
    assert third["cache"]["reference_embedded"]["rows_computed"] == 5 and third["cache"]["train_computed"] == 0
    d = EmbeddedDescriptor()
    g = d.embed([decode_image(p.read_bytes()) for p in sorted((data / "gen").glob("*.png"))]).astype(np.float64)
    r = d.embed(_sample_images(data / "train", 5, 0)).astype(np.float16).astype(np.float64)
    fd = metrics.frechet_distance(g.mean(0), np.cov(g, rowvar=False), r.mean(0), np.cov(r, rowvar=False))
    assert third["fd_embedded"] == pytest.approx(fd, rel=1e-3)


def test_fid_preprocessing_matches_clean_fid(weights):
    """clean-fid's own code (installed without its dependencies; nothing downloads) on the same images."""
    resize = pytest.importorskip("cleanfid.resize")
    inception_torchscript = pytest.importorskip("cleanfid.inception_torchscript")
    from dftrain.evaluate.fid import InceptionFeatures, clean_resize

    images = scene_images(3, seed=7, size=70) + [scene_images(1, seed=8, size=400)[0].crop((0, 0, 400, 250))]
    theirs_resize = resize.build_resizer("clean")
    for im in images:
        np.testing.assert_array_equal(clean_resize(im), theirs_resize(np.asarray(im.convert("RGB"))))
    model = inception_torchscript.InceptionV3W(str(weights / "cleanfid"), download=False)
    batch = torch.from_numpy(np.stack([theirs_resize(np.asarray(im)) for im in images])).permute(0, 3, 1, 2)
    with torch.no_grad():
        theirs = model(batch.contiguous()).numpy()
    ours = InceptionFeatures(weights / "cleanfid" / "inception-2015-12-05.pt", device="cpu").embed(images)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def _synthetic_store(root, sizes, dim, seed):
    """Entries of unit vectors in the store's layout (as the benchmark writes them); returns (TrainSet, all rows)."""
    rng = np.random.default_rng(seed)
    stems, blocks = [], []
    for i, n in enumerate(sizes):
        x = rng.standard_normal((n, dim)).astype(np.float32)
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
        stem = root / f"shard{i:03d}"
        ids = np.stack([np.arange(n), np.zeros(n), np.arange(n)], axis=1)
        save_entry(stem, x, [f"{i}-{j}" for j in range(n)], ids, {"shard": f"{i}.tar"})
        stems.append(stem)
        blocks.append(x.astype(np.float32))
    return TrainSet(stems), np.concatenate(blocks)


def test_exact_search_over_memory_mapped_shards_equals_in_memory(tmp_path):
    train, full = _synthetic_store(tmp_path, [50, 0, 33, 17, 90], dim=16, seed=0)
    assert len(train) == 190 and train.dim == 16
    chunks = list(train.chunks(rows=40))
    assert [len(c) for c in chunks] == [40, 40, 40, 40, 30]  # chunks span entries
    q = np.random.default_rng(1).standard_normal((25, 16)).astype(np.float32)
    streamed = exact_search(q, train.chunks(rows=40), k=3)
    in_memory = exact_search(q, full, k=3)
    np.testing.assert_array_equal(streamed.ids, in_memory.ids)
    np.testing.assert_allclose(streamed.sims, in_memory.sims, atol=1e-6)
    np.testing.assert_array_equal(streamed.ids[:, 0], (q @ full.T).argmax(axis=1))
    rows = np.array([189, 3, 120, 50])
    np.testing.assert_array_equal(train.gather(rows), full[rows])
    assert train.keys_of(rows) == ["4-89", "0-3", "4-20", "2-0"]  # offsets 0, 50, 50, 83, 100


def test_ivf_over_memory_mapped_shards_finds_near_copies(tmp_path):
    train, full = _synthetic_store(tmp_path, [400] * 5, dim=32, seed=2)
    rng = np.random.default_rng(3)
    targets = rng.choice(len(full), 100, replace=False)
    q = full[targets] + rng.normal(scale=0.2 / np.sqrt(32), size=(100, 32)).astype(np.float32)
    result = nearest_streamed(q, lambda: train.chunks(rows=256), len(train),
                              lambda size: train.gather(random_rows(len(train), size, 0)), method="ivf",
                              ivf=IVFParams(nlist=16, nprobe=4))
    exact = exact_search(q, full)
    assert metrics.recall_at_1(exact.ids, result.ids) >= 0.9
    assert (result.ids[:, 0] == targets).mean() >= 0.9


def test_reference_sample_is_seeded_and_per_shard():
    counts = [5, 0, 7, 3]
    a = reference_positions(counts, 6, seed=0)
    assert len(a) == 4 and sum(len(p) for p in a) == 6
    for positions, n in zip(a, counts, strict=True):
        assert (np.diff(positions) > 0).all() and (positions >= 0).all() and (positions < n).all()
    same, other = reference_positions(counts, 6, seed=0), reference_positions(counts, 6, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, same, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, other, strict=True))
    assert [p.tolist() for p in reference_positions([2, 3], 10, seed=0)] == [[0, 1], [0, 1, 2]]  # all when fewer
