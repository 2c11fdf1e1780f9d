"""`dftrain detect` (Wen et al., ICLR 2024): the text-conditional noise magnitude flags a memorized prompt."""

import json

import pytest
import torch
from evaluate_helpers import scene_images, write_train_shards
from typer.testing import CliRunner

from dftrain.cli import app
from dftrain.errors import ConfigError
from dftrain.evaluate.detect import (
    DetectOptions,
    flag,
    load_prompts,
    robust_threshold,
    roc_auc,
    text_conditional_magnitudes,
)


def test_a_memorized_prompt_scores_above_the_others():
    """A tiny UNet fitted for 150 steps: prompt 0 always shows one image, prompts 1-5 and the empty
    prompt show fresh random latents (nothing to memorize)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012)
    g = torch.Generator().manual_seed(0)
    n_prompts = 6
    states = torch.randn(n_prompts + 1, 4, 16, generator=g)  # frozen "text states"; the last is the empty prompt
    image = torch.randn(4, 4, 4, generator=g)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    for _ in range(150):
        idx = torch.randint(0, n_prompts + 1, (16,), generator=g)
        z = torch.randn(16, 4, 4, 4, generator=g)
        z[idx == 0] = image
        noise = torch.randn(16, 4, 4, 4, generator=g)
        t = torch.randint(0, 1000, (16,), generator=g)
        loss = torch.nn.functional.mse_loss(
            unet(scheduler.add_noise(z, noise, t), t, encoder_hidden_states=states[idx]).sample, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    unet.eval()
    generations = 4
    cond = states[:n_prompts].repeat_interleave(generations, 0)
    uncond = states[-1:].expand(len(cond), -1, -1)
    noise = torch.randn(len(cond), 4, 4, 4, generator=g)
    d = text_conditional_magnitudes(unet, scheduler, cond, uncond, noise, steps=20, first_steps=3, guidance=3.0,
                                    generator=torch.Generator().manual_seed(1))
    assert d.shape == (len(cond), 3) and torch.all(d >= 0)
    scores = d.view(n_prompts, generations, 3).mean((1, 2)).tolist()
    assert scores[0] > 1.5 * max(scores[1:]), scores
    rows = [{"score": s} for s in scores]
    flag(rows, None)
    assert [r["flagged"] for r in rows] == [True] + [False] * 5
    assert roc_auc(scores, [True] + [False] * 5) == 1.0


def test_threshold_and_auc_definitions():
    # median 2, |x - 2| = 1, 0, 0, 1, 8 -> MAD 1
    assert robust_threshold([1, 2, 2, 3, 10]) == pytest.approx(2 + 3 * 1.4826)
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert roc_auc([0.1, 0.8, 0.9, 0.2], [True, True, False, False]) == 0.25
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert roc_auc([0.5, 0.6], [True, True]) is None
    rows = [{"score": 0.2}, {"score": 0.7}]
    assert flag(rows, 0.5) == 0.5 and [r["flagged"] for r in rows] == [False, True]
    with pytest.raises(ConfigError):
        DetectOptions(first_steps=60, steps=50).check()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from dftrain.model import build_tiny_pipeline

    tmp = tmp_path_factory.mktemp("detect")
    build_tiny_pipeline(tmp / "model", vae_steps=0, resolution=32)
    captions = [f"a specific red cube number {i}" for i in range(5)]
    write_train_shards(tmp / "train", scene_images(5, seed=0), captions=["a cube"] * 5, orig_captions=captions,
                       samples_per_shard=3)
    return tmp, captions


def test_detect_cli_writes_scores_flags_and_a_summary(tiny):
    tmp, captions = tiny
    out = tmp / "detect.jsonl"
    args = ["detect", "--model", str(tmp / "model"), "--shards", str(tmp / "train"), "--out", str(out),
            "--steps", "4", "--first-steps", "2", "--generations", "2", "--guidance", "3"]
    result = CliRunner().invoke(app, args + ["--batch-size", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["prompt"] for r in rows) == sorted(captions)  # the original captions, not txt
    assert all(len(r["per_step"]) == 2 and len(r["per_generation"]) == 2 and r["score"] > 0 for r in rows)
    assert all(r["train_key"] for r in rows)
    summary = json.loads((tmp / "detect.jsonl.summary.json").read_text())
    assert summary["prompts"] == 5 and summary["threshold_rule"].startswith("median")
    assert summary["flagged"] == sum(r["score"] > summary["threshold"] for r in rows)
    # the same prompts in other batches give the same scores (per-trajectory generators)
    again = CliRunner().invoke(app, args + ["--batch-size", "5", "--threshold", "0"])
    assert again.exit_code == 0, again.output
    rerun = {r["prompt"]: r for r in map(json.loads, out.read_text().splitlines())}
    for r in rows:
        assert rerun[r["prompt"]]["score"] == pytest.approx(r["score"], rel=1e-5) and rerun[r["prompt"]]["flagged"]


def test_prompt_sources_and_bad_input(tiny, tmp_path):
    tmp, _ = tiny
    path = tmp_path / "p.txt"
    path.write_text("a dog\n\na cat\na dog\n")
    assert [i["prompt"] for i in load_prompts(prompts_file=path)] == ["a dog", "a cat"]
    assert [i["prompt"] for i in load_prompts(texts=["x", "y"])] == ["x", "y"]
    with pytest.raises(ConfigError, match="exactly one"):
        load_prompts(prompts_file=path, texts=["x"])
    result = CliRunner().invoke(app, ["detect", "--model", str(tmp / "model"), "--prompts", str(tmp_path / "no.txt"),
                                      "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code != 0 and "not found" in str(result.exception or result.output)
