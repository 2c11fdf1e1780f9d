"""`dftrain generate` on a tiny pipeline: prompts, files, determinism, resume, rank split."""

import json

import numpy as np
import pytest
from evaluate_helpers import scene_images, write_train_shards
from PIL import Image
from typer.testing import CliRunner

from dftrain.cli import app
from dftrain.errors import ConfigError, MissingDependencyError
from dftrain.evaluate.generate import GenerateOptions, generate, plan_jobs, training_prompts
from dftrain.evaluate.run import EvaluateOptions, evaluate
from dftrain.model import build_tiny_pipeline

ORIGINAL = [f"a specific red cube number {i}" for i in range(6)]
OPTS = dict(num_prompts=4, per_prompt=2, steps=2, seed=3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    build_tiny_pipeline(tmp / "model", vae_steps=0, resolution=32)
    write_train_shards(tmp / "train", scene_images(6, seed=0), captions=["a cube"] * 6, orig_captions=ORIGINAL,
                       samples_per_shard=4)
    summary = generate(tmp / "model", tmp / "train", tmp / "gen", GenerateOptions(batch_size=3, **OPTS))
    return tmp, summary


def read_rows(folder):
    return [json.loads(line) for line in (folder / "prompts.jsonl").read_text().splitlines()]


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_images_and_prompts_use_original_captions(setup):
    tmp, summary = setup
    assert summary["generated"] == 8 and summary["complete"]
    rows = read_rows(tmp / "gen")
    assert len(rows) == 8 and all((tmp / "gen" / r["file"]).is_file() for r in rows)
    keys = [f"{i:06d}" for i in range(6)]
    for r in rows:
        assert r["prompt"] == ORIGINAL[keys.index(r["train_key"])]  # the original caption, not txt
    assert len({r["train_key"] for r in rows}) == 4  # a seeded sample of 4 prompts, 2 images each
    assert len({r["seed"] for r in rows}) == 8
    assert Image.open(tmp / "gen" / rows[0]["file"]).size == (32, 32)
    # The same seed picks the same prompts.
    assert [k for k, _ in training_prompts(tmp / "train", 4, 3)] == sorted({r["train_key"] for r in rows})


def test_resume_keeps_finished_images_and_regenerates_missing_ones(setup, tmp_path):
    tmp, _ = setup
    import shutil

    gen = tmp_path / "gen"
    shutil.copytree(tmp / "gen", gen)
    rows = read_rows(gen)
    before = {r["file"]: pixels(gen / r["file"]) for r in rows}
    (gen / rows[1]["file"]).unlink()
    (gen / rows[6]["file"]).unlink()
    (gen / "prompts.jsonl").write_text("")  # a merged file lost too
    kept_mtime = (gen / rows[0]["file"]).stat().st_mtime_ns
    summary = generate(tmp / "model", tmp / "train", gen, GenerateOptions(batch_size=3, **OPTS))
    assert summary["generated"] == 2 and summary["already_done"] == 6 and summary["complete"]
    assert (gen / rows[0]["file"]).stat().st_mtime_ns == kept_mtime
    assert read_rows(gen) == rows
    for r in rows:  # per-image generators: the regenerated images are the same images
        assert np.abs(pixels(gen / r["file"]) - before[r["file"]]).max() <= 2
    again = generate(tmp / "model", tmp / "train", gen, GenerateOptions(batch_size=3, **OPTS))
    assert again["generated"] == 0 and again["merged"] == 8


def test_two_ranks_split_prompts_and_merge(setup, tmp_path):
    tmp, _ = setup
    gen = tmp_path / "gen"
    first = generate(tmp / "model", tmp / "train", gen, GenerateOptions(batch_size=4, rank=1, world_size=2, **OPTS))
    assert first["this_rank"] == 4 and not first["complete"]
    rank1_keys = {r["train_key"] for r in read_rows(gen)}
    second = generate(tmp / "model", tmp / "train", gen, GenerateOptions(batch_size=4, rank=0, world_size=2, **OPTS))
    assert second["complete"] and second["generated"] == 4
    rows = read_rows(gen)
    assert rows == read_rows(tmp / "gen")  # same plan, same lines, same order as one rank
    assert not rank1_keys & {r["train_key"] for r in rows if int(r["file"][:6]) % 2 == 0}
    for r in rows:
        assert np.abs(pixels(gen / r["file"]) - pixels(tmp / "gen" / r["file"])).max() <= 2


def test_resume_with_other_settings_is_refused(setup):
    tmp, _ = setup
    with pytest.raises(ConfigError, match="other settings.*steps"):
        generate(tmp / "model", tmp / "train", tmp / "gen", GenerateOptions(**{**OPTS, "steps": 3}))


def test_missing_model_is_a_clear_error(setup, tmp_path):
    tmp, _ = setup
    with pytest.raises(MissingDependencyError, match="model_index.json"):
        generate(tmp_path / "nomodel", tmp / "train", tmp_path / "gen", GenerateOptions(**OPTS))


def test_plan_is_deterministic():
    prompts = [("a", "x"), ("b", "y")]
    jobs = plan_jobs(prompts, 3, seed=1)
    assert [j.file for j in jobs] == [f"{i:06d}_{k:03d}.png" for i in range(2) for k in range(3)]
    assert len({j.seed for j in jobs}) == 6 and jobs == plan_jobs(prompts, 3, seed=1)
    assert not {j.seed for j in jobs} & {j.seed for j in plan_jobs(prompts, 3, seed=2)}
    with pytest.raises(ConfigError):
        plan_jobs(prompts, 0, seed=1)


def test_generate_cli_then_evaluate(setup, tmp_path):
    tmp, _ = setup
    result = CliRunner().invoke(app, ["generate", "--model", str(tmp / "model"), "--shards", str(tmp / "train"),
                                      "--out", str(tmp_path / "gen"), "--num-prompts", "2", "--per-prompt", "2",
                                      "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert "lists 4 of 4 images (complete)" in result.output
    report = evaluate(tmp_path / "gen", tmp / "train", tmp_path / "eval", EvaluateOptions(no_cache=True))
    assert report["n_generations"] == 4 and report["n_train"] == 6
    assert report["diversity_prompts"] == 2 and report["diversity"] is not None
    assert report["own_match_rate"] is not None


def test_original_caption_precedence():
    from dftrain.evaluate.inputs import original_caption

    assert original_caption({"json": {"orig_caption": "orig", "caption": "cap"}, "txt": "gen"}) == "orig"
    assert original_caption({"json": {"caption": "cap"}, "txt": "gen"}) == "cap"
    assert original_caption({"json": {}, "txt": "gen"}) == "gen"
    assert original_caption({"json": {"caption": "  "}, "txt": b"bytes caption"}) == "bytes caption"
    assert original_caption({"json": None, "txt": ""}) is None


# ---- inference-time mitigations of the prior study (Somepalli et al. 2023) ------------------------
def test_prompt_noise_adds_sigma_times_a_seeded_normal_to_both_embeddings(setup):
    import torch

    from dftrain.evaluate.generate import Job, conditioning, load_pipeline
    from dftrain.evaluate.inference_mitigations import NOISE_SEED_OFFSET

    tmp, _ = setup
    pipe = load_pipeline(tmp / "model", "cpu", "fp32")
    batch = [Job(0, 0, "a.png", "a red cube", None, 11), Job(0, 1, "b.png", "a blue cube", None, 12)]
    assert conditioning(pipe, batch, GenerateOptions()) == {"prompt": ["a red cube", "a blue cube"]}
    sigma = 0.1
    args = conditioning(pipe, batch, GenerateOptions(prompt_noise=True, guidance=3.0))
    clean, clean_negative = pipe.encode_prompt(["a red cube", "a blue cube"], "cpu", 1, True)
    for i, job in enumerate(batch):
        g = torch.Generator().manual_seed(job.seed + NOISE_SEED_OFFSET)
        n_cond, n_uncond = torch.randn(clean.shape[1:], generator=g), torch.randn(clean.shape[1:], generator=g)
        assert torch.allclose(args["prompt_embeds"][i], clean[i] + sigma * n_cond, atol=1e-6)
        assert torch.allclose(args["negative_prompt_embeds"][i], clean_negative[i] + sigma * n_uncond, atol=1e-6)
    diff = (args["prompt_embeds"] - clean) / sigma
    assert abs(diff.mean().item()) < 0.05 and abs(diff.std().item() - 1) < 0.05
    # without guidance there is no negative prompt to noise
    assert set(conditioning(pipe, batch, GenerateOptions(prompt_noise=True, guidance=1.0))) == {"prompt_embeds"}


def test_prompt_augmentations_follow_the_published_definitions(setup):
    from dftrain.evaluate.generate import prompt_augmenter

    tmp, _ = setup
    prompt = "a specific red cube number"
    words = prompt.split()
    numbers = prompt_augmenter(tmp / "model", GenerateOptions(prompt_augment="rand_numb_add"))(prompt, 7)
    added = [w for w in numbers.split() if w.isdigit()]
    assert len(numbers.split()) == len(words) + 4 and len(added) == 4  # theirs: 4 repeats by default
    assert all(0 <= int(x) < 100_000 for x in added)
    repeat = prompt_augmenter(tmp / "model", GenerateOptions(prompt_augment="rand_word_repeat",
                                                             prompt_augment_repeats=2))
    out = repeat(prompt, 7).split()
    assert len(out) == len(words) + 2 and set(out) <= set(words)
    assert repeat(prompt, 7) == repeat(prompt, 7) and any(repeat(prompt, s) != repeat(prompt, 7) for s in range(8))
    tokens = prompt_augmenter(tmp / "model", GenerateOptions(prompt_augment="rand_word_add"))(prompt, 3)
    pieces = tokens.split(" ")  # their insert_rand_word splits and joins on single spaces
    assert len(pieces) == len(words) + 4
    it = iter(pieces)
    assert all(w in it for w in words)  # the prompt's words, in order, around the 4 decoded tokens
    with pytest.raises(ConfigError, match="prompt-augment"):
        prompt_augmenter(tmp / "model", GenerateOptions(prompt_augment="shout"))


def test_generate_with_mitigations_records_the_prompt_used(setup, tmp_path):
    tmp, _ = setup
    opts = dict(num_prompts=2, per_prompt=1, steps=1, seed=3)
    plain = generate(tmp / "model", tmp / "train", tmp_path / "plain", GenerateOptions(**opts))
    assert plain["complete"] and "prompt_used" not in read_rows(tmp_path / "plain")[0]
    gen = tmp_path / "aug"
    summary = generate(tmp / "model", tmp / "train", gen, GenerateOptions(
        prompt_augment="rand_numb_add", prompt_noise=True, **opts))
    assert summary["complete"]
    for row in read_rows(gen):
        assert row["prompt"] in ORIGINAL and row["prompt_used"] != row["prompt"]
        assert len(row["prompt_used"].split()) == len(row["prompt"].split()) + 4
        # same seed, same initial latent: the image differs only through the conditioning
        assert np.abs(pixels(gen / row["file"]) - pixels(tmp_path / "plain" / row["file"])).max() > 0
    config = json.loads((gen / "generate.json").read_text())
    assert config["prompt_noise_sigma"] == 0.1 and config["prompt_augment_repeats"] == 4
    with pytest.raises(ConfigError, match="other settings"):
        generate(tmp / "model", tmp / "train", gen, GenerateOptions(**opts))
