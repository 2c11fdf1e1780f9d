"""Fixtures for the trainer tests: a very small SD-shaped pipeline and small shard sets.

Kept deliberately tiny (32 px images, 8x8 latents) so that DeepSpeed steps on 2 shared
CPU cores take a fraction of a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from process_helpers import run_group

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
RESOLUTION = 32


def build_test_pipeline(out_dir: Path) -> Path:
    """The embedded tiny pipeline at 32 px (VAE not fitted: weights do not matter for these tests)."""
    from dftrain.model import build_tiny_pipeline

    return build_tiny_pipeline(out_dir, resolution=RESOLUTION, vae_steps=0)


def build_small_random_pipeline(out_dir: Path) -> Path:
    """An even smaller pipeline with random weights (UNet, VAE, CLIP text encoder, byte-level tokenizer)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from dftrain.model.configs import scheduler_config
    from dftrain.model.tokenizer import write_clip_tokenizer

    torch.manual_seed(0)
    out_dir = Path(out_dir)
    tok_dir = write_clip_tokenizer(out_dir / "_tok", [], max_length=77)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=RESOLUTION,
    )
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 4, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32), layers_per_block=1, attention_head_dim=2, cross_attention_dim=32,
        norm_num_groups=8, use_linear_projection=True,
    )
    scheduler = DDPMScheduler.from_config(scheduler_config("epsilon"))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    import shutil

    shutil.rmtree(tok_dir)
    return out_dir


def build_test_shards(root: Path, n_train: int = 8, n_per_class: int = 2, samples_per_shard: int = 4,
                      size: int = RESOLUTION) -> tuple[Path, Path]:
    """root/train (images + captions) and root/objects (labelled object bank), as shard folders."""
    from dftrain.shards import ShardWriter
    from dftrain.synthetic import synthetic_object_samples, synthetic_train_samples

    train, objects = Path(root) / "train", Path(root) / "objects"
    with ShardWriter(train, samples_per_shard=samples_per_shard, kind="train") as w:
        for sample in synthetic_train_samples(n_train, size, 0.0, 0):
            w.write(sample)
    with ShardWriter(objects, samples_per_shard=1000, kind="objects") as w:
        for sample in synthetic_object_samples(n_per_class, size, 0):
            w.write(sample)
    return train, objects


def cpu_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", PYTHONPATH=str(REPO), **extra)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def torchrun_cmd(nproc: int, *train_args: str) -> list[str]:
    return [PYTHON, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "dftrain", "train", *train_args]


def run(cmd: list[str], timeout: float = 240, **extra_env: str) -> subprocess.CompletedProcess:
    return run_group(cmd, env=cpu_env(**extra_env), cwd=REPO, timeout=timeout)


def read_metrics(run_dir: Path) -> list[dict]:
    import json

    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def shared_assets(tmp_path_factory) -> dict[str, Path]:
    """Model + shards built once per pytest session (under the session's base temp folder)."""
    root = tmp_path_factory.getbasetemp() / "train_assets"
    if not (root / "model" / "model_index.json").is_file():
        build_test_pipeline(root / "model")
    if not (root / "data" / "objects" / "manifest.json").is_file():
        build_test_shards(root / "data")
    return {"model": root / "model", "shards": root / "data" / "train", "objects": root / "data" / "objects"}


def quick_config(assets: dict, out: Path, **overrides):
    """A config that trains the test model fast and reliably (high lr, no warm-up, fp32)."""
    from dftrain.train.config import build_config

    values = dict(
        model=str(assets["model"]), shards=str(assets["shards"]), objects=str(assets["objects"]), out=str(out),
        steps=6, micro_batch_size=2, lr=1e-3, warmup_steps=0, precision="fp32", checkpoint_every=3,
        log_every=1, progress=False, shuffle_buffer=4,
    )
    values.update(overrides)
    return build_config(None, values)


def in_process_env(monkeypatch) -> None:
    """One DeepSpeed process inside pytest: what `dftrain train` sets for a plain process."""
    from dftrain.train.environment import free_port

    for key, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                           DS_ACCELERATOR="cpu").items():
        monkeypatch.setenv(key, value)
    if "MASTER_PORT" not in os.environ:
        monkeypatch.setenv("MASTER_PORT", str(free_port()))


def unet_weights(run_dir: Path):
    from dftrain.train import checkpoint as ckpt
    from dftrain.train.export import consolidated_unet_state

    ckpt_dir, tag = ckpt.resolve_checkpoint(run_dir)
    meta = ckpt.read_meta(ckpt_dir, tag)
    return meta["step"], consolidated_unet_state(ckpt_dir, tag, meta["zero_stage"])
