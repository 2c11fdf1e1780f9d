"""`dftrain evaluate` and `dftrain compare` end to end on planted copies, against brute-force numpy."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluate_helpers import jpeg_bytes, planted_set, scene_images, write_generations, write_train_shards
from typer.testing import CliRunner

from dftrain.cli import app
from dftrain.errors import DftrainError
from dftrain.evaluate.compare import compare
from dftrain.evaluate.descriptors import EmbeddedDescriptor
from dftrain.evaluate.inputs import decode_image
from dftrain.evaluate.metrics import frechet_distance
from dftrain.evaluate.run import EvaluateOptions, evaluate
from dftrain.shards import iter_samples

N_COPIES, N_UNRELATED = 8, 8


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Planted set: 24 training scenes; generations = copies of 8 (2 prompts of 4) + 8 unrelated."""
    tmp = tmp_path_factory.mktemp("planted")
    train_imgs, keys = planted_set(tmp, n_train=24, n_copies=N_COPIES, n_unrelated=N_UNRELATED)
    rows = [json.loads(line) for line in (tmp / "gen" / "prompts.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):  # two prompts with 4 generations each, so diversity is defined
        row["prompt"] = ["prompt a", "prompt b"][i % 2] if i < N_COPIES else None
    (tmp / "gen" / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = evaluate(tmp / "gen", tmp / "train", tmp / "out", EvaluateOptions(cache_dir=tmp / "cache"))
    return tmp, keys, report


def brute_force(tmp):
    d = EmbeddedDescriptor()
    train = [(s["__key__"], decode_image(s["jpg"])) for s in iter_samples(tmp / "train", decode=False, require=("jpg",))]
    rows = [json.loads(line) for line in (tmp / "gen" / "prompts.jsonl").read_text().splitlines()]
    gen = d.embed([decode_image((tmp / "gen" / r["file"]).read_bytes()) for r in rows])
    # Training descriptors are stored as float16 per shard (dftrain.evaluate.store): compare at that precision.
    tr = d.embed([im for _, im in train]).astype(np.float16).astype(np.float32)
    return [k for k, _ in train], tr, rows, gen


def test_report_equals_brute_force(planted):
    tmp, keys, report = planted
    train_keys, tr, rows, gen = brute_force(tmp)
    full = gen.astype(np.float64) @ tr.T
    best = full.max(axis=1)
    assert report["n_generations"] == len(rows) and report["n_train"] == len(train_keys)
    assert report["sim_mean"] == pytest.approx(best.mean(), abs=1e-5)
    assert report["sim_std"] == pytest.approx(best.std(), abs=1e-5)
    for p in (75, 90, 95):
        assert report[f"sim_p{p}"] == pytest.approx(np.percentile(best, p), abs=1e-5)
    assert report["frac_above_threshold"] == pytest.approx((best > report["threshold"]).mean())
    assert report["frac_above_0_5"] == pytest.approx((best > 0.5).mean())
    self_sims = tr.astype(np.float64) @ tr.T
    np.fill_diagonal(self_sims, -np.inf)
    bg = self_sims.max(axis=1)
    assert report["bg_sim_mean"] == pytest.approx(bg.mean(), abs=1e-5)
    assert report["bg_sim_p95"] == pytest.approx(np.percentile(bg, 95), abs=1e-5)
    best_keys = [train_keys[i] for i in full.argmax(axis=1)]
    own = [b == r["train_key"] for b, r in zip(best_keys, rows, strict=True) if r["train_key"] is not None]
    assert report["own_match_rate"] == pytest.approx(np.mean(own))
    per_prompt = []
    for prompt in ("prompt a", "prompt b"):
        idx = [i for i, r in enumerate(rows) if r["prompt"] == prompt]
        per_prompt.append(np.mean([1 - gen[i] @ gen[j] for a, i in enumerate(idx) for j in idx[a + 1:]]))
    assert report["diversity"] == pytest.approx(np.mean(per_prompt), abs=1e-5)
    fd = frechet_distance(gen.mean(0), np.cov(gen, rowvar=False), tr.mean(0), np.cov(tr, rowvar=False))
    assert report["fd_embedded"] == pytest.approx(fd, rel=1e-3, abs=1e-4)


def test_planted_copies_found_unrelated_not(planted):
    tmp, keys, report = planted
    matches = [json.loads(line) for line in (tmp / "out" / "matches.jsonl").read_text().splitlines()]
    assert len(matches) == N_COPIES + N_UNRELATED
    for m in matches[:N_COPIES]:
        assert m["best_key"] == m["train_key"] and m["own"] is True
        assert m["best_sim"] > report["threshold"]
    for m in matches[N_COPIES:]:
        assert m["own"] is None and m["best_sim"] < report["threshold"]
    assert report["own_match_rate"] == 1.0
    assert report["frac_above_threshold"] == pytest.approx(N_COPIES / (N_COPIES + N_UNRELATED))
    assert report["frac_above_0_5"] >= report["frac_above_threshold"]
    assert report["fid"] is None and "Inception" in report["fid_reason"]
    for name in ("report.md", "similarity_histogram.png", "most_copied.png"):
        assert (tmp / "out" / name).stat().st_size > 0
    md = (tmp / "out" / "report.md").read_text()
    assert f"{report['sim_p95']:.4f}" in md and "most_copied.png" in md


def test_cache_reused_and_invalidated_when_an_image_changes(tmp_path):
    """Training descriptors are cached per shard, keyed by its sha256: a changed image recomputes its shard."""
    train_imgs = scene_images(10, seed=3)
    write_train_shards(tmp_path / "train", train_imgs, samples_per_shard=4)  # shards of 4, 4, 2
    write_generations(tmp_path / "gen", scene_images(3, seed=4), [None] * 3)
    opts = EvaluateOptions(cache_dir=tmp_path / "cache")
    first = evaluate(tmp_path / "gen", tmp_path / "train", tmp_path / "out", opts)["cache"]
    assert first == {"train_reused": 0, "train_computed": 10, "train_shards_reused": 0, "train_shards_computed": 3,
                     "gen_reused": 0, "gen_computed": 3}
    again = evaluate(tmp_path / "gen", tmp_path / "train", tmp_path / "out", opts)
    assert again["cache"] == {"train_reused": 10, "train_computed": 0, "train_shards_reused": 3,
                              "train_shards_computed": 0, "gen_reused": 3, "gen_computed": 0}
    train_imgs[7] = scene_images(1, seed=77)[0]  # one training image changes (the second shard)
    write_train_shards(tmp_path / "train", train_imgs, samples_per_shard=4)
    scene_images(1, seed=78)[0].save(tmp_path / "gen" / "000001.png")  # and one generation
    changed = evaluate(tmp_path / "gen", tmp_path / "train", tmp_path / "out", opts)
    assert changed["cache"] == {"train_reused": 6, "train_computed": 4, "train_shards_reused": 2,
                                "train_shards_computed": 1, "gen_reused": 2, "gen_computed": 1}
    fresh = evaluate(tmp_path / "gen", tmp_path / "train", tmp_path / "out2", EvaluateOptions(no_cache=True))
    for key in ("sim_mean", "sim_p95", "bg_sim_mean", "fd_embedded"):
        assert changed[key] == pytest.approx(fresh[key], abs=1e-6)
    # The cache is keyed by content, not by place: a copy of the training folder elsewhere reuses it.
    import shutil

    shutil.copytree(tmp_path / "train", tmp_path / "moved")
    moved = evaluate(tmp_path / "gen", tmp_path / "moved", tmp_path / "out3", opts)
    assert moved["cache"]["train_computed"] == 0 and moved["cache"]["train_reused"] == 10


class _TinyFeatures(torch.nn.Module):
    """Stands in for the Inception TorchScript: accepts return_features and returns (N, 6) features."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x / 255.0, 2)  # (N, 3, 2, 2)
        return pooled.flatten(1)[:, :6]


def test_fid_with_a_local_torchscript_file(planted, tmp_path):
    tmp, _, _ = planted
    path = tmp_path / "inception.pt"
    torch.jit.script(_TinyFeatures()).save(str(path))
    report = evaluate(tmp / "gen", tmp / "train", tmp_path / "out",
                      EvaluateOptions(inception=path, no_cache=True))
    from dftrain.evaluate.fid import InceptionFeatures

    feats = InceptionFeatures(path, device="cpu")
    train = [decode_image(s["jpg"]) for s in iter_samples(tmp / "train", decode=False, require=("jpg",))]
    rows = [json.loads(line) for line in (tmp / "gen" / "prompts.jsonl").read_text().splitlines()]
    a = feats.embed([decode_image((tmp / "gen" / r["file"]).read_bytes()) for r in rows]).astype(np.float64)
    b = feats.embed(train).astype(np.float64)
    expected = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert report["fid"] == pytest.approx(expected, rel=1e-4)
    assert "fid_reason" not in report


def test_input_errors_are_clear(tmp_path):
    write_train_shards(tmp_path / "train", scene_images(3, seed=1))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DftrainError, match="no generated images"):
        evaluate(tmp_path / "empty", tmp_path / "train", tmp_path / "out")
    with pytest.raises(DftrainError, match="does not exist"):
        evaluate(tmp_path / "nowhere", tmp_path / "train", tmp_path / "out")
    write_generations(tmp_path / "gen", scene_images(2, seed=2), [None, None])
    with (tmp_path / "gen" / "prompts.jsonl").open("a") as f:
        f.write(json.dumps({"file": "gone.png", "prompt": "x", "train_key": None, "seed": 0}) + "\n")
    with pytest.raises(DftrainError, match="1 image.*gone.png"):
        evaluate(tmp_path / "gen", tmp_path / "train", tmp_path / "out")
    (tmp_path / "gen" / "prompts.jsonl").write_text("{not json\n")
    with pytest.raises(DftrainError, match="prompts.jsonl:1"):
        evaluate(tmp_path / "gen", tmp_path / "train", tmp_path / "out")
    (tmp_path / "gen" / "prompts.jsonl").unlink()  # a plain folder of images also works
    (tmp_path / "empty_train").mkdir()
    with pytest.raises(DftrainError):
        evaluate(tmp_path / "gen", tmp_path / "empty_train", tmp_path / "out", EvaluateOptions(no_cache=True))
    with pytest.raises(DftrainError, match="needs --weights"):
        evaluate(tmp_path / "gen", tmp_path / "train", tmp_path / "out", EvaluateOptions(descriptor="dino"))


def test_undecodable_training_image_is_counted_not_fatal(tmp_path):
    from dftrain.shards import ShardWriter

    with ShardWriter(tmp_path / "train", kind="train") as w:
        for i, img in enumerate(scene_images(4, seed=5)):
            w.write({"__key__": f"k{i}", "jpg": jpeg_bytes(img), "txt": "c", "json": {"caption": "c"}})
        w.write({"__key__": "broken", "jpg": b"\xff\xd8 not really a jpeg", "txt": "c", "json": {"caption": "c"}})
    write_generations(tmp_path / "gen", scene_images(2, seed=6), [None, None])
    report = evaluate(tmp_path / "gen", tmp_path / "train", tmp_path / "out", EvaluateOptions(no_cache=True))
    assert report["n_train"] == 4
    skipped = report["skipped"]
    assert "broken" in skipped["train"] or sum(skipped["train_shards"].values()) == 1


def fake_run(folder, **values):
    folder.mkdir(parents=True)
    base = {"n_generations": 10, "descriptor": "embedded", "descriptor_id": "embedded-v1", "sim_mean": 0.5,
            "bg_sim_p95": 0.6, "own_match_rate": 0.1, "fid": None, "fd_embedded": 1.0, "diversity": 0.3}
    base.update(values)
    (folder / "report.json").write_text(json.dumps(base))
    return folder


def test_compare_table_numbers(tmp_path):
    base = fake_run(tmp_path / "baseline", sim_p95=0.8, frac_above_0_5=0.4, fid=20.0, fd_embedded=1.0, diversity=0.3)
    ours = fake_run(tmp_path / "dual_fusion", sim_p95=0.6, frac_above_0_5=0.1, fid=23.0, fd_embedded=1.5,
                    diversity=0.36)
    result = CliRunner().invoke(app, ["compare", str(base), str(ours), "--baseline", str(base),
                                      "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "cmp" / "compare.csv").read_text())))
    assert [r["run"] for r in rows] == ["baseline", "dual_fusion"]
    ours_row = rows[1]
    assert float(ours_row["sim_p95_reduction_pct"]) == pytest.approx(25.0)
    assert float(ours_row["frac_above_0_5_reduction_pct"]) == pytest.approx(75.0)
    assert float(ours_row["fid_delta"]) == pytest.approx(3.0)
    assert float(ours_row["fd_embedded_delta"]) == pytest.approx(0.5)
    assert float(ours_row["diversity_delta"]) == pytest.approx(0.06)
    assert float(rows[0]["sim_p95_reduction_pct"]) == 0.0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| dual_fusion | 10 | embedded |" in md and "25.0000" in md
    # Runs made with different descriptors are not comparable.
    other = fake_run(tmp_path / "sscd_run", descriptor="sscd", descriptor_id="sscd-x", sim_p95=0.5, frac_above_0_5=0)
    with pytest.raises(DftrainError, match="different descriptors"):
        compare([base, other], base)
    with pytest.raises(DftrainError, match="no report.json"):
        compare([base, tmp_path], base)


def test_evaluate_cli(planted, tmp_path):
    tmp, _, _ = planted
    result = CliRunner().invoke(app, ["evaluate", "--generations", str(tmp / "gen"), "--train-shards",
                                      str(tmp / "train"), "--out", str(tmp_path / "o"), "--cache-dir",
                                      str(tmp / "cache"), "--search", "ivf", "--nlist", "2", "--nprobe", "2",
                                      "--threshold", "0.5"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["search"] == "ivf" and report["threshold"] == 0.5
    assert "sim_p95" in result.output and "wrote" in result.output


def test_duplicated_training_images_split_and_group_match(tmp_path):
    """Image 0 is in the training set 4 times (exact copies): a copy of it prompted by any of its keys
    counts as an own match by group, and the figures are split by duplicated vs unique prompts."""
    scenes = scene_images(6, seed=21)
    images = [scenes[0]] * 4 + scenes[1:]  # keys 000000-000003 are copies of one image
    keys = write_train_shards(tmp_path / "train", images)
    rng = np.random.default_rng(0)
    from evaluate_helpers import planted_copy

    gens = [planted_copy(scenes[0], rng) for _ in range(3)] + [planted_copy(scenes[4], rng)] + scene_images(2, seed=99)
    own = [keys[3], keys[1], keys[2], keys[7], keys[5], keys[6]]  # the last two prompts got unrelated images
    write_generations(tmp_path / "gen", gens, own)
    report = evaluate(tmp_path / "gen", tmp_path / "train", tmp_path / "out", EvaluateOptions(no_cache=True))
    assert report["own_group_match_rate"] == pytest.approx(4 / 6)
    assert report["own_group_chance"] == pytest.approx((3 * 4 / 9 + 3 * 1 / 9) / 6)
    assert report["own_match_rate"] < report["own_group_match_rate"]  # exact keys miss most copies
    dup, uni = report["split"]["duplicated"], report["split"]["unique"]
    assert (dup["n"], uni["n"]) == (3, 3)
    assert dup["own_group_match"] == 1.0 and uni["own_group_match"] == pytest.approx(1 / 3)
    assert dup["sim_mean"] > uni["sim_mean"]
    assert report["fd_descriptor"] == report["fd_embedded"]  # the embedded descriptor is its own fit space


@pytest.mark.parametrize("flags,message", [
    (["--reference-n", "0"], "error: --reference-n: Input should be greater than or equal to 1, got 0"),
    (["--threshold", "nan"], "error: --threshold: Input should be a finite number, got nan"),
    (["--descriptor", "sift"], "error: --descriptor: Input should be 'embedded', 'sscd', 'dino' or 'clip', got 'sift'"),
])
def test_evaluate_options_are_typed_and_refused_in_one_line_before_anything_runs(tmp_path, flags, message):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "dftrain", "evaluate", "--generations", str(tmp_path / "g"),
                             "--train-shards", str(tmp_path / "t"), "--out", str(tmp_path / "out"), *flags],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [message]
    assert not (tmp_path / "out").exists()


def test_evaluate_options_from_a_library_caller_take_paths():
    from dftrain.evaluate.options import EvaluateOptions

    opts = EvaluateOptions(cache_dir=Path("/tmp/c"), train_shards=Path("/data/a"), nlist=8)
    assert opts.cache_dir == "/tmp/c" and opts.train_shards == ["/data/a"] and opts.ivf.nlist == 8
